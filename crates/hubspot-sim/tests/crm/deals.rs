//! Deals: CRUD, list paging, batch limits and 207s, traffic statistics.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{DATED_DEALS, DEALS, assert_error, start};
use hubspot_sim::SimConfig;

fn deal(name: &str, stage: &str) -> Value {
    json!({"properties": {"dealname": name, "dealstage": stage}})
}

#[tokio::test]
async fn deal_crud() {
    let sim = start(SimConfig::default()).await;
    let body = json!({"properties": {"dealname": "Acme", "dealstage": "qualifiedtobuy", "amount": 1500, "closedate": "2026-12-01T00:00:00Z"},
        "associations": []});
    let (status, created) = sim.json(Method::POST, "tok", DEALS, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let props = &created["properties"];
    assert_eq!(props["pipeline"], "default");
    assert_eq!(props["amount"], "1500");
    assert_eq!(props["hs_object_id"], id.as_str());
    // Datetimes come back as ISO-8601, like HubSpot's.
    let iso = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("datetime")).expect("ISO-8601").timestamp_millis()
    };
    let createdate = iso(&props["createdate"]);
    assert_eq!(props["hs_lastmodifieddate"], props["createdate"]);
    assert!(created["createdAt"].as_str().expect("createdAt").ends_with('Z'));

    // Defaults when `properties` is omitted; the three always-returned ones when it is given.
    let (status, got) = sim.json(Method::GET, "tok", &format!("{DEALS}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let keys: HashSet<&str> = got["properties"].as_object().expect("props").keys().map(String::as_str).collect();
    let expected: HashSet<&str> = [
        "dealname",
        "amount",
        "closedate",
        "pipeline",
        "dealstage",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    ]
    .into();
    assert_eq!(keys, expected);
    let (_, got) = sim
        .json(Method::GET, "tok", &format!("{DATED_DEALS}/{id}?properties=amount,hubspot_owner_id,nope"), None)
        .await;
    let props = got["properties"].as_object().expect("props");
    assert_eq!(props.len(), 5, "{got}");
    assert_eq!(props["amount"], "1500");
    assert_eq!(props["hubspot_owner_id"], Value::Null);

    for bad in [
        json!({"properties": {"dealname": "No stage"}}),
        json!({"properties": {"dealstage": "closedwon"}}),
        deal("Bad stage", "nope"),
        json!({"properties": {"dealname": "x", "dealstage": "closedwon", "pipeline": "nope"}}),
        json!({"properties": {"dealname": "x", "dealstage": "closedwon", "amount": "lots"}}),
        json!({"properties": {"dealname": "x", "dealstage": "closedwon", "no_such_prop": "1"}}),
        json!({"dealname": "no properties wrapper"}),
    ] {
        let (status, body) = sim.json(Method::POST, "tok", DEALS, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert_error(&body, "VALIDATION_ERROR");
    }

    tokio::time::sleep(Duration::from_millis(5)).await;
    let path = format!("/crm/v3/objects/0-3/{id}");
    let (status, patched) = sim
        .json(Method::PATCH, "tok", &path, Some(json!({"properties": {"dealstage": "closedwon", "amount": ""}})))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["properties"]["dealstage"], "closedwon");
    assert!(patched["properties"].get("amount").is_none(), "an empty string clears the value");
    let modified = iso(&patched["properties"]["hs_lastmodifieddate"]);
    assert!(modified > createdate);
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"properties": {"dealstage": "nope"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"properties": {"hs_object_id": "1"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sim.sim.deal("tok", &id).expect("helper")["properties"]["dealstage"], "closedwon");

    let resp = sim.call(Method::DELETE, "tok", &format!("{DEALS}/{id}"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = sim.call(Method::DELETE, "tok", &format!("{DEALS}/{id}"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "archive is idempotent");
    let (status, body) = sim.json(Method::GET, "tok", &format!("{DEALS}/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "OBJECT_NOT_FOUND");
    let (status, archived) = sim.json(Method::GET, "tok", &format!("{DEALS}/{id}?archived=true"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["archived"], true);
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"properties": {"dealname": "x"}}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sim.sim.deal_count("tok"), 0);
    assert_eq!(sim.sim.deal("tok", &id).expect("archived deal")["archived"], true);
    // Another portal cannot see it.
    let (status, _) = sim.json(Method::GET, "other", &format!("{DEALS}/{id}?archived=true"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_paging() {
    let sim = start(SimConfig::default()).await;
    let ids = sim.sim.create_deals("tok", 25, "appointmentscheduled", "default");
    assert_eq!(ids.len(), 25);
    assert_eq!(sim.sim.deal_count("tok"), 25);
    assert!(sim.sim.create_deals("tok", 1, "closedwon", "nope").is_empty());

    let (status, page) = sim.json(Method::GET, "tok", DEALS, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(10));

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after.as_ref().map_or(String::new(), |a| format!("&after={a}"));
        let (status, page) =
            sim.json(Method::GET, "tok", &format!("{DEALS}?limit=7&properties=dealname{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for deal in page["results"].as_array().expect("results") {
            seen.push(deal["id"].as_str().expect("id").to_owned());
            assert!(deal["properties"]["dealname"].is_string());
        }
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    for bad in ["limit=101", "limit=0", "limit=x", "after=abc", "archived=maybe"] {
        let (status, _) = sim.json(Method::GET, "tok", &format!("{DEALS}?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _) = sim.json(Method::GET, "tok", &format!("{DEALS}?limit=100"), None).await;
    assert_eq!(status, StatusCode::OK);

    assert!(sim.sim.delete_deal("tok", &ids[3]));
    assert!(!sim.sim.delete_deal("tok", &ids[3]));
    let (_, archived) = sim.json(Method::GET, "tok", &format!("{DEALS}?archived=true"), None).await;
    assert_eq!(archived["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(archived["results"][0]["id"], ids[3].as_str());
    let (_, live) = sim.json(Method::GET, "tok", &format!("{DEALS}?limit=100"), None).await;
    assert_eq!(live["results"].as_array().map(Vec::len), Some(24));
}

#[tokio::test]
async fn batch_endpoints_and_limits() {
    let sim = start(SimConfig::default()).await;
    let create = json!({"inputs": [deal("A", "closedwon"), deal("B", "closedlost"), deal("C", "contractsent")]});
    let (status, created) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/create"), Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "COMPLETE");
    let ids: Vec<String> = created["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    // All-or-nothing create.
    let bad = json!({"inputs": [deal("D", "closedwon"), deal("E", "nope")]});
    let (status, _) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/create"), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sim.sim.deal_count("tok"), 3);

    // Read with one missing id → 207.
    let read = json!({"inputs": [{"id": ids[0]}, {"id": "999"}, {"id": ids[1]}], "properties": ["dealname"]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/read"), Some(read)).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["errors"][0]["context"]["ids"], json!(["999"]));

    // History.
    sim.sim.update_deal("tok", &ids[0], [("dealname", "A2")]).expect("update");
    let read = json!({"inputs": [{"id": ids[0]}], "propertiesWithHistory": ["dealname"]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/read"), Some(read)).await;
    assert_eq!(status, StatusCode::OK);
    let history = body["results"][0]["propertiesWithHistory"]["dealname"].as_array().expect("history");
    assert_eq!(history.iter().map(|h| h["value"].clone()).collect::<Vec<_>>(), [json!("A2"), json!("A")]);

    // Limits.
    let inputs = |n: usize| (0..n).map(|i| json!({"id": i.to_string()})).collect::<Vec<_>>();
    let (status, body) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/read"), Some(json!({"inputs": inputs(101)}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().expect("msg").contains("100"), "{body}");
    let (status, _) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/read"), Some(json!({"inputs": inputs(100)}))).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let read = json!({"inputs": inputs(51), "propertiesWithHistory": ["dealname"]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/read"), Some(read)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VALIDATION_ERROR");
    assert!(
        body["message"]
            .as_str()
            .expect("msg")
            .starts_with("The maximum number of inputs supported in a batch request for property histories is 50"),
        "{body}"
    );
    let many: Vec<Value> = (0..101).map(|i| deal(&format!("D{i}"), "closedwon")).collect();
    let (status, _) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/create"), Some(json!({"inputs": many}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/archive"), Some(json!({"inputs": inputs(101)}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Update with a missing id → 207; the others are applied.
    let update = json!({"inputs": [
        {"id": ids[1], "properties": {"amount": "42"}},
        {"id": "12345", "properties": {"amount": "1"}}
    ]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/update"), Some(update)).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["results"][0]["properties"]["amount"], "42");
    let update = json!({"inputs": [{"id": ids[1], "properties": {"amount": "x"}}]});
    let (status, _) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/update"), Some(update)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sim.sim.deal("tok", &ids[1]).expect("deal")["properties"]["amount"], "42");

    let archive = json!({"inputs": [{"id": ids[0]}, {"id": "777"}, {"id": ids[2]}]});
    let resp = sim.call(Method::POST, "tok", &format!("{DEALS}/batch/archive"), Some(archive)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.sim.deal_count("tok"), 1);
}

#[tokio::test]
async fn traffic_statistics() {
    let config = SimConfig { burst_limit: 3, burst_window: Duration::from_secs(10), ..SimConfig::default() };
    let sim = start(config).await;
    for _ in 0..5 {
        sim.call(Method::GET, "tok", DEALS, None).await;
    }
    let id = sim.sim.portal_id("tok").expect("portal");
    assert_eq!(sim.sim.max_requests_in_any_window(id), 5, "rejected requests were received too");
    assert_eq!(sim.sim.rate_limited_count(id), 2);
    assert_eq!(sim.sim.max_requests_in_any_window(1), 0);
    assert_eq!(sim.sim.rate_limited_count(1), 0);
    assert!(sim.sim.update_deal("nobody", "1", [("dealname", "x")]).is_err());
    assert!(sim.sim.update_deal("tok", "1", [("dealname", "x")]).is_err());
}

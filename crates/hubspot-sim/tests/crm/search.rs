//! Search: operators, sorting, paging, limits, archived deals, the secondly limit, index lag.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{DATED_DEALS, DEALS, Sim, assert_error, start};
use hubspot_sim::SimConfig;

const SEARCH: &str = "/crm/v3/objects/deals/search";

/// Enough budget that the operator tests never hit the secondly limit.
fn roomy() -> SimConfig {
    SimConfig { search_per_second: 1000, ..SimConfig::default() }
}

async fn seed(sim: &Sim) -> Vec<String> {
    let deals = [
        ("Big renewal", "closedwon", Some("5000"), Some("2026-01-15")),
        ("Small renewal", "closedlost", Some("50"), Some("2026-03-01")),
        ("New logo Acme", "qualifiedtobuy", Some("1200"), None),
        ("Upsell Acme", "contractsent", None, Some("2026-02-10T12:00:00Z")),
        ("Expansion", "closedwon", Some("900"), Some("1767225600000")),
    ];
    let inputs: Vec<Value> = deals
        .iter()
        .map(|(name, stage, amount, close)| {
            let mut props = json!({"dealname": name, "dealstage": stage});
            if let Some(a) = amount {
                props["amount"] = json!(a);
            }
            if let Some(c) = close {
                props["closedate"] = json!(c);
            }
            json!({ "properties": props })
        })
        .collect();
    let (status, body) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/create"), Some(json!({"inputs": inputs}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["results"].as_array().expect("results").iter().map(|d| d["id"].as_str().expect("id").to_owned()).collect()
}

async fn names(sim: &Sim, body: Value) -> Vec<String> {
    let (status, result) = sim.json(Method::POST, "tok", SEARCH, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {result}");
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|d| d["properties"]["dealname"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn one(property: &str, operator: &str, extra: Value) -> Value {
    let mut filter = json!({"propertyName": property, "operator": operator});
    if let (Some(f), Some(e)) = (filter.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    json!({"filterGroups": [{"filters": [filter]}], "sorts": [{"propertyName": "dealname", "direction": "ASCENDING"}],
        "properties": ["dealname"]})
}

#[tokio::test]
async fn operators_sorting_and_paging() {
    let sim = start(roomy()).await;
    seed(&sim).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (one("dealstage", "EQ", json!({"value": "CLOSEDWON"})), vec!["Big renewal", "Expansion"]),
        (one("dealstage", "NEQ", json!({"value": "closedwon"})), vec!["New logo Acme", "Small renewal", "Upsell Acme"]),
        (one("amount", "LT", json!({"value": "900"})), vec!["Small renewal"]),
        (one("amount", "LTE", json!({"value": 900})), vec!["Expansion", "Small renewal"]),
        (one("amount", "GT", json!({"value": "1000"})), vec!["Big renewal", "New logo Acme"]),
        (one("amount", "GTE", json!({"value": "1200"})), vec!["Big renewal", "New logo Acme"]),
        (one("amount", "BETWEEN", json!({"value": "100", "highValue": "1200"})), vec!["Expansion", "New logo Acme"]),
        (
            one("dealstage", "IN", json!({"values": ["closedlost", "contractsent"]})),
            vec!["Small renewal", "Upsell Acme"],
        ),
        (
            one("dealstage", "NOT_IN", json!({"values": ["closedwon", "closedlost"]})),
            vec!["New logo Acme", "Upsell Acme"],
        ),
        (one("amount", "HAS_PROPERTY", json!({})), vec!["Big renewal", "Expansion", "New logo Acme", "Small renewal"]),
        (one("amount", "NOT_HAS_PROPERTY", json!({})), vec!["Upsell Acme"]),
        (one("dealname", "CONTAINS_TOKEN", json!({"value": "acme"})), vec!["New logo Acme", "Upsell Acme"]),
        (
            one("dealname", "NOT_CONTAINS_TOKEN", json!({"value": "renewal"})),
            vec!["Expansion", "New logo Acme", "Upsell Acme"],
        ),
        // Dates compare as epoch ms whatever form they were written in.
        (
            one("closedate", "GTE", json!({"value": "1768435200000"})),
            vec!["Big renewal", "Small renewal", "Upsell Acme"],
        ),
        (one("closedate", "LT", json!({"value": "2026-01-15"})), vec!["Expansion"]),
    ];
    for (body, expected) in cases {
        assert_eq!(names(&sim, body.clone()).await, expected, "{body}");
    }

    // AND within a group, OR across groups.
    let body = json!({"filterGroups": [
        {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
                     {"propertyName": "amount", "operator": "GT", "value": "1000"}]},
        {"filters": [{"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": "upsell"}]}
    ], "sorts": ["dealname"]});
    assert_eq!(names(&sim, body).await, ["Big renewal", "Upsell Acme"]);

    // Numeric sort, descending (string form), missing values last; free-text query.
    let body = json!({"sorts": ["-amount"], "properties": ["dealname", "amount"]});
    assert_eq!(names(&sim, body).await, ["Big renewal", "New logo Acme", "Expansion", "Small renewal", "Upsell Acme"]);
    assert_eq!(names(&sim, json!({"query": "renewal"})).await.len(), 2);

    // Paging with an offset cursor; total stays the full count.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let body = json!({"limit": 2, "after": after, "sorts": [{"propertyName": "amount", "direction": "ASCENDING"}]});
        let (status, page) = sim.json(Method::POST, "tok", SEARCH, Some(body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 5);
        seen.extend(page["results"].as_array().expect("results").iter().map(|d| d["id"].clone()));
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = json!(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);

    // Requested properties plus the three HubSpot always returns; default set otherwise.
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(json!({"properties": ["amount"], "limit": 1}))).await;
    let keys: Vec<&String> = result["results"][0]["properties"].as_object().expect("props").keys().collect();
    assert_eq!(keys, ["amount", "createdate", "hs_lastmodifieddate", "hs_object_id"]);
    let (_, result) = sim.json(Method::POST, "tok", &format!("{DATED_DEALS}/search"), Some(json!({}))).await;
    assert_eq!(result["results"][0]["properties"].as_object().map(|p| p.len()), Some(8));
}

#[tokio::test]
async fn archived_deals_are_never_returned() {
    let sim = start(roomy()).await;
    let ids = seed(&sim).await;
    assert!(sim.sim.delete_deal("tok", &ids[0]));
    let resp = sim.call(Method::DELETE, "tok", &format!("{DEALS}/{}", ids[1]), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(json!({"limit": 100}))).await;
    assert_eq!(result["total"], 3);
    let (_, result) =
        sim.json(Method::POST, "tok", SEARCH, Some(one("hs_object_id", "EQ", json!({"value": ids[0]})))).await;
    assert_eq!(result["total"], 0);
}

#[tokio::test]
async fn limits_are_enforced() {
    let sim = start(roomy()).await;
    let filter = json!({"propertyName": "amount", "operator": "HAS_PROPERTY"});
    let group = |n: usize| json!({"filters": vec![filter.clone(); n]});
    let cases = [
        json!({"filterGroups": vec![group(1); 6]}),
        json!({"filterGroups": [group(7)]}),
        json!({"filterGroups": vec![group(5); 4]}),
        json!({"limit": 201}),
        json!({"limit": 100, "after": "9901"}),
        json!({"limit": 10, "after": 10000}),
        json!({"sorts": ["amount", "dealname"]}),
        json!({"filterGroups": [{"filters": [{"propertyName": "amount", "operator": "ABOUT", "value": "1"}]}]}),
        json!({"filterGroups": [{"filters": [{"propertyName": "amount", "operator": "BETWEEN", "value": "1"}]}]}),
        json!({"query": "x".repeat(3001)}),
    ];
    for body in cases {
        let (status, result) = sim.json(Method::POST, "tok", SEARCH, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {result}");
        assert_error(&result, "VALIDATION_ERROR");
    }
    for body in [
        json!({"filterGroups": vec![group(1); 5]}),
        json!({"filterGroups": vec![group(6); 3]}),
        json!({"limit": 200, "after": "9800"}),
    ] {
        let (status, result) = sim.json(Method::POST, "tok", SEARCH, Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body} -> {result}");
    }
}

#[tokio::test]
async fn search_has_a_separate_secondly_limit() {
    let sim = Arc::new(start(SimConfig::default()).await);
    let resp = sim.call(Method::GET, "tok", DEALS, None).await;
    assert_eq!(resp.headers()["x-hubspot-ratelimit-remaining"], "99");
    // Six searches at once, so they surely fall within one second even on a loaded machine.
    let mut set = JoinSet::new();
    for _ in 0..6 {
        let sim = Arc::clone(&sim);
        set.spawn(async move {
            let resp = sim.call(Method::POST, "tok", SEARCH, Some(json!({}))).await;
            let has_headers = resp.headers().keys().any(|h| h.as_str().starts_with("x-hubspot-ratelimit"));
            (resp.status(), has_headers, resp.json::<Value>().await.expect("json"))
        });
    }
    let mut limited = Vec::new();
    let mut ok = 0;
    while let Some(joined) = set.join_next().await {
        let (status, has_headers, body) = joined.expect("task");
        assert!(!has_headers, "search responses carry no rate-limit headers");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited.push(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, limited.len()), (5, 1));
    assert_eq!(limited[0]["message"], "You have reached your secondly limit.");
    assert_eq!(limited[0]["policyName"], "SECONDLY");
    assert_eq!(limited[0]["errorType"], "RATE_LIMIT");

    // Other endpoints and other portals are unaffected; searches did not use the burst budget.
    let resp = sim.call(Method::GET, "tok", DEALS, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-hubspot-ratelimit-remaining"], "98");
    // Searches do count against the daily budget: 2 GETs + 5 admitted searches.
    assert_eq!(resp.headers()["x-hubspot-ratelimit-daily-remaining"], "249993");
    let resp = sim.call(Method::POST, "other", SEARCH, Some(json!({}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let portal = sim.sim.portal_id("tok").expect("portal");
    assert_eq!(sim.sim.rate_limited_count(portal), 1);
    assert_eq!(sim.sim.max_requests_in_any_window(portal), 2, "searches are not burst traffic");

    tokio::time::sleep(Duration::from_millis(1050)).await;
    let resp = sim.call(Method::POST, "tok", SEARCH, Some(json!({}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn index_lag_delays_visibility() {
    // Generous lag so a loaded machine cannot outrun it between a write and the next search.
    let sim = start(SimConfig { search_index_lag: Duration::from_millis(600), ..roomy() }).await;
    let ids = sim.sim.create_deals("tok", 2, "closedwon", "default");
    let count = |v: &Value| v["total"].as_u64().expect("total");
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(json!({}))).await;
    assert_eq!(count(&result), 0, "not indexed yet");
    tokio::time::sleep(Duration::from_millis(650)).await;
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(json!({}))).await;
    assert_eq!(count(&result), 2);

    // Updates show their old value until the lag passes, but GET is immediate.
    sim.sim.update_deal("tok", &ids[0], [("dealstage", "closedlost")]).expect("update");
    let stage_query = one("dealstage", "EQ", json!({"value": "closedlost"}));
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(stage_query.clone())).await;
    assert_eq!(count(&result), 0);
    assert_eq!(sim.sim.deal("tok", &ids[0]).expect("deal")["properties"]["dealstage"], "closedlost");
    tokio::time::sleep(Duration::from_millis(650)).await;
    let (_, result) = sim.json(Method::POST, "tok", SEARCH, Some(stage_query)).await;
    assert_eq!(count(&result), 1);
}

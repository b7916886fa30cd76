//! Gaps HubSpot's official clients found: batch upsert, pipeline/stage audits, associations,
//! ISO datetimes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{DEALS, PIPELINES, start};
use hubspot_sim::SimConfig;

#[tokio::test]
async fn batch_upsert_by_unique_property() {
    let sim = start(SimConfig::default()).await;
    let property = json!({"name": "ext_id", "label": "External id", "type": "string", "fieldType": "text",
                          "groupName": "gomark", "hasUniqueValue": true});
    let (status, _) = sim.json(Method::POST, "tok", "/crm/v3/properties/deals", Some(property)).await;
    assert_eq!(status, StatusCode::CREATED);
    let upsert = |name: &str| {
        json!({"inputs": [
            {"id": "X-1", "idProperty": "ext_id", "properties": {"dealname": name, "dealstage": "closedwon"}},
            {"id": "X-2", "idProperty": "ext_id", "properties": {"dealname": name, "dealstage": "closedwon"}},
        ]})
    };
    for (round, name) in [(0, "first"), (1, "second")] {
        for base in [DEALS, "/crm/objects/2026-09/deals"] {
            let (status, body) =
                sim.json(Method::POST, "tok", &format!("{base}/batch/upsert"), Some(upsert(name))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let results = body["results"].as_array().expect("results");
            assert_eq!(results.len(), 2);
            let expect_new = round == 0 && base == DEALS;
            assert!(results.iter().all(|r| r["new"] == expect_new), "{body}");
            assert!(results.iter().all(|r| r["properties"]["dealname"] == name));
        }
    }
    assert_eq!(sim.sim.deal_count("tok"), 2, "upserts by ext_id create each deal once");
    // Unknown hs_object_id: a 207 error; a non-unique idProperty: 400.
    let by_id = json!({"inputs": [{"id": "999", "idProperty": "hs_object_id", "properties": {"amount": "1"}}]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/upsert"), Some(by_id)).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    let bad = json!({"inputs": [{"id": "a", "idProperty": "dealname", "properties": {}}]});
    let (status, _) = sim.json(Method::POST, "tok", &format!("{DEALS}/batch/upsert"), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pipeline_and_stage_audits() {
    let sim = start(SimConfig::default()).await;
    let body = json!({"label": "Renewals", "displayOrder": 1,
                      "stages": [{"label": "Open", "displayOrder": 0, "metadata": {"probability": "0.5"}}]});
    let (_, pipeline) = sim.json(Method::POST, "tok", PIPELINES, Some(body)).await;
    let id = pipeline["id"].as_str().expect("id").to_owned();
    let stage = pipeline["stages"][0]["id"].as_str().expect("stage").to_owned();
    sim.json(Method::PATCH, "tok", &format!("{PIPELINES}/{id}"), Some(json!({"label": "Renewals 2"}))).await;
    let resp = sim
        .client
        .patch(format!("{}{PIPELINES}/{id}/stages/{stage}", sim.base))
        .bearer_auth("tok")
        .header("X-HubSpot-Sim-UI-User", "9")
        .json(&json!({"label": "Open deals", "metadata": {"probability": "0.5"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    for base in [PIPELINES, "/crm/pipelines/2026-09/deals"] {
        let (status, audit) = sim.json(Method::GET, "tok", &format!("{base}/{id}/audit"), None).await;
        assert_eq!(status, StatusCode::OK);
        let actions: Vec<&str> =
            audit["results"].as_array().expect("results").iter().filter_map(|a| a["action"].as_str()).collect();
        assert_eq!(actions, ["UPDATE", "CREATE"], "newest first");
        assert_eq!(audit["results"][0]["rawObject"]["label"], "Renewals 2");
        assert_eq!(audit["results"][0]["identifier"], id.as_str());
        let (status, audit) = sim.json(Method::GET, "tok", &format!("{base}/{id}/stages/{stage}/audit"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(audit["results"][0]["action"], "UPDATE");
        assert_eq!(audit["results"][0]["fromUserId"], 9);
        assert_eq!(audit["results"][0]["rawObject"]["label"], "Open deals");
    }
    let (status, audit) = sim.json(Method::GET, "tok", &format!("{PIPELINES}/default/audit"), None).await;
    assert_eq!((status, audit["results"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, _) = sim.json(Method::GET, "tok", &format!("{PIPELINES}/nope/audit"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn new_deal(sim: &crate::Sim) -> String {
    let body = json!({"properties": {"dealname": "A", "dealstage": "closedwon"}});
    let (_, deal) = sim.json(Method::POST, "tok", DEALS, Some(body)).await;
    deal["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn associations_v4_and_dated() {
    let sim = start(SimConfig::default()).await;
    let deal = new_deal(&sim).await;
    let (status, body) = sim
        .json(Method::PUT, "tok", &format!("/crm/v4/objects/deals/{deal}/associations/default/contacts/501"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["associationSpec"]["associationTypeId"], 3);
    let labeled = json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}]);
    let path = format!("/crm/objects/2026-03/deals/{deal}/associations/companies/601");
    let (status, body) = sim.json(Method::PUT, "tok", &path, Some(labeled)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["labels"], json!(["Primary"]));
    let (status, list) =
        sim.json(Method::GET, "tok", &format!("/crm/v4/objects/deals/{deal}/associations/contacts"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["results"],
        json!([{"toObjectId": 501, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": null}]}])
    );
    // From the contact's side, the reverse type.
    let (_, back) = sim.json(Method::GET, "tok", "/crm/v4/objects/contacts/501/associations/deals", None).await;
    assert_eq!(back["results"][0]["associationTypes"][0]["typeId"], 4);
    let read = json!({"inputs": [{"id": deal}, {"id": "1"}]});
    for base in ["/crm/v4/associations", "/crm/associations/2026-09"] {
        let (status, batch) =
            sim.json(Method::POST, "tok", &format!("{base}/deals/companies/batch/read"), Some(read.clone())).await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{batch}");
        assert_eq!(batch["results"][0]["to"][0]["toObjectId"], 601);
    }
    let (_, labels) = sim.json(Method::GET, "tok", "/crm/associations/v4/deals/companies/labels", None).await;
    let ids: Vec<u64> =
        labels["results"].as_array().expect("labels").iter().filter_map(|l| l["typeId"].as_u64()).collect();
    assert_eq!(ids, [341, 5]);
    let (status, _) =
        sim.json(Method::DELETE, "tok", &format!("/crm/v4/objects/deals/{deal}/associations/contacts/501"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) =
        sim.json(Method::GET, "tok", &format!("/crm/v4/objects/deals/{deal}/associations/contacts"), None).await;
    assert_eq!(list["results"], json!([]));
    let (status, _) =
        sim.json(Method::PUT, "tok", "/crm/v4/objects/deals/1/associations/default/contacts/2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown deal");
    let create = json!({"inputs": [{"from": {"id": deal}, "to": {"id": "777"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]});
    let (status, _) =
        sim.json(Method::POST, "tok", "/crm/v4/associations/deals/contacts/batch/create", Some(create)).await;
    assert_eq!(status, StatusCode::CREATED);
    // Associations given on create are made too.
    let body = json!({"properties": {"dealname": "B", "dealstage": "closedwon"},
                      "associations": [{"to": {"id": 888}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}]}]});
    let (status, created) = sim.json(Method::POST, "tok", DEALS, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/crm/v4/objects/deals/{}/associations/companies", created["id"].as_str().expect("id"));
    let (_, list) = sim.json(Method::GET, "tok", &path, None).await;
    assert_eq!(list["results"][0]["toObjectId"], 888);
    let bad = json!({"properties": {"dealname": "C", "dealstage": "closedwon"},
                     "associations": [{"to": {"id": 1}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 999}]}]});
    let (status, _) = sim.json(Method::POST, "tok", DEALS, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let archive = json!({"inputs": [{"from": {"id": deal}, "to": [{"id": "777"}]}]});
    let (status, _) =
        sim.json(Method::POST, "tok", "/crm/v4/associations/deals/contacts/batch/archive", Some(archive)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn datetimes_are_iso_and_accept_epoch_ms() {
    let sim = start(SimConfig::default()).await;
    let body = json!({"properties": {"dealname": "D", "dealstage": "closedwon", "closedate": "1767225600000"}});
    let (status, deal) = sim.json(Method::POST, "tok", DEALS, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let props: &Value = &deal["properties"];
    assert_eq!(props["closedate"], "2026-01-01T00:00:00.000Z", "epoch ms in, ISO out");
    for name in ["createdate", "hs_lastmodifieddate"] {
        let value = props[name].as_str().expect(name);
        assert!(chrono::DateTime::parse_from_rfc3339(value).is_ok(), "{name}: {value}");
    }
    // Search still compares dates numerically, whichever form the filter uses.
    let filter = |value: &str| json!({"filterGroups": [{"filters": [{"propertyName": "closedate", "operator": "GTE", "value": value}]}]});
    for value in ["1767225600000", "2026-01-01T00:00:00Z"] {
        let (status, found) = sim.json(Method::POST, "tok", &format!("{DEALS}/search"), Some(filter(value))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found["total"], 1, "{value}");
    }
}

#[tokio::test]
async fn push_webhook_settings_and_subscriptions_by_api() {
    let sim = start(SimConfig::default()).await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut req = sim.client.request(method, format!("{}{path}?hapikey=dev", sim.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    for base in ["/webhooks/v3/1", "/webhooks/2026-03/1", "/app-webhooks/2026-09/1"] {
        let settings = json!({"targetUrl": "http://127.0.0.1:9/hook", "throttling": {"maxConcurrentRequests": 5}});
        let resp = call(Method::PUT, format!("{base}/settings"), Some(settings)).await.expect("put");
        assert_eq!(resp.status(), StatusCode::OK, "{base}");
        let sub = json!({"eventType": "deal.propertyChange", "propertyName": "dealstage", "active": true});
        let resp = call(Method::POST, format!("{base}/subscriptions"), Some(sub)).await.expect("create");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let created: Value = resp.json().await.expect("json");
        let path = format!("{base}/subscriptions/{}", created["id"].as_str().expect("id"));
        let resp = call(Method::PATCH, path.clone(), Some(json!({"active": false}))).await.expect("patch");
        let patched: Value = resp.json().await.expect("json");
        assert_eq!(patched["active"], false);
        assert_eq!(call(Method::DELETE, path, None).await.expect("delete").status(), StatusCode::NO_CONTENT);
    }
    sim.sim.create_deals("tok", 1, "closedwon", "default");
    assert_eq!(sim.sim.pending_webhook_events(), 1, "settings started delivery");
    let resp = call(Method::GET, "/webhooks/v3/2/settings".into(), None).await.expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "another app");
    let resp = sim.client.get(format!("{}/webhooks/v3/1/settings", sim.base)).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

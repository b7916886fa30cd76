//! Property validation rules: the API, and enforcement on 2026-09 record writes only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Sim, assert_error, start};
use hubspot_sim::SimConfig;

const RULES: &str = "/crm/property-validations/2026-03/0-3";

async fn put_rule(sim: &Sim, property: &str, rule_type: &str, args: Value) -> StatusCode {
    let path = format!("{RULES}/{property}/rule-type/{rule_type}");
    sim.json(Method::PUT, "tok", &path, Some(json!({"ruleArguments": args}))).await.0
}

fn closedwon(name: &str) -> Value {
    json!({"properties": {"dealname": name, "dealstage": "closedwon"}})
}

#[tokio::test]
async fn rules_api_reads_writes_and_deletes() {
    let sim = start(SimConfig::default()).await;
    assert_eq!(put_rule(&sim, "dealname", "MAX_LENGTH", json!([20])).await, StatusCode::NO_CONTENT);
    assert_eq!(put_rule(&sim, "dealname", "MAX_LENGTH", json!(["10"])).await, StatusCode::NO_CONTENT, "replaces");
    assert_eq!(
        put_rule(&sim, "closedate", "CONDITIONALLY_REQUIRED", json!(["dealstage", "closedwon"])).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(put_rule(&sim, "dealname", "NOT_A_RULE", json!([1])).await, StatusCode::BAD_REQUEST);
    assert_eq!(put_rule(&sim, "dealname", "MIN_NUMBER", json!(["x"])).await, StatusCode::BAD_REQUEST);
    assert_eq!(put_rule(&sim, "no_such_property", "MAX_LENGTH", json!([1])).await, StatusCode::NOT_FOUND);

    for base in [RULES, "/crm/v3/property-validations/deals", "/crm/property-validations/2026-09/0-3"] {
        let (status, all) = sim.json(Method::GET, "tok", base, None).await;
        assert_eq!(status, StatusCode::OK, "{base}");
        let names: Vec<&str> =
            all["results"].as_array().expect("results").iter().filter_map(|r| r["propertyName"].as_str()).collect();
        assert_eq!(names, ["closedate", "dealname"]);
    }
    let (_, one) = sim.json(Method::GET, "tok", &format!("{RULES}/dealname"), None).await;
    assert_eq!(
        one["results"],
        json!([{"ruleType": "MAX_LENGTH", "ruleArguments": ["10"], "shouldApplyNormalization": false}])
    );
    let path = format!("{RULES}/dealname/rule-type/MAX_LENGTH");
    let (status, rule) = sim.json(Method::GET, "tok", &path, None).await;
    assert_eq!((status, rule["ruleType"].as_str()), (StatusCode::OK, Some("MAX_LENGTH")));
    assert_eq!(sim.json(Method::DELETE, "tok", &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(sim.json(Method::GET, "tok", &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(sim.json(Method::DELETE, "tok", &path, None).await.0, StatusCode::NOT_FOUND);
    // Rule changes are journaled, with who made them.
    let kinds: Vec<String> = sim
        .sim
        .journal_events(sim.sim.portal_id("tok").expect("portal"))
        .iter()
        .filter_map(|e| e["subscriptionType"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        kinds,
        [
            "propertyValidation.creation",
            "propertyValidation.change",
            "propertyValidation.creation",
            "propertyValidation.deletion"
        ]
    );
}

#[tokio::test]
async fn conditional_required_refuses_2026_09_writes_only() {
    let sim = start(SimConfig::default()).await;
    put_rule(&sim, "closedate", "CONDITIONALLY_REQUIRED", json!(["dealstage", "closedwon"])).await;
    for old in ["/crm/v3/objects/deals", "/crm/objects/2026-03/deals"] {
        let (status, _) = sim.json(Method::POST, "tok", old, Some(closedwon("old"))).await;
        assert_eq!(status, StatusCode::CREATED, "{old} is not validated");
    }
    let current = "/crm/objects/2026-09/deals";
    let (status, err) = sim.json(Method::POST, "tok", current, Some(closedwon("new"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&err, "VALIDATION_ERROR");
    assert_eq!(err["subCategory"], "MISSING_CONDITIONAL_REQUIRED_PROPERTY");
    assert_eq!(err["context"]["propertyName"], json!(["closedate"]));
    let message = err["message"].as_str().expect("message");
    assert!(message.contains("\"closedate\" is required when \"dealstage\" is \"closedwon\""), "{message}");
    assert_eq!(err["errors"][0]["code"], "MISSING_CONDITIONAL_REQUIRED_PROPERTY");
    assert_eq!(err["errors"][0]["context"]["ruleType"], json!(["CONDITIONALLY_REQUIRED"]));
    assert_eq!(err["errors"][0]["context"]["ruleArguments"], json!(["dealstage", "closedwon"]));

    let mut ok = closedwon("new");
    ok["properties"]["closedate"] = json!("2026-12-24T00:00:00Z");
    let (status, _) = sim.json(Method::POST, "tok", current, Some(ok)).await;
    assert_eq!(status, StatusCode::CREATED);

    // An update that moves a deal to closedwon without a close date is refused too, as is a
    // batch (all or nothing).
    let open = json!({"properties": {"dealname": "open", "dealstage": "qualifiedtobuy"}});
    let (_, deal) = sim.json(Method::POST, "tok", current, Some(open)).await;
    let path = format!("{current}/{}", deal["id"].as_str().expect("id"));
    let (status, _) =
        sim.json(Method::PATCH, "tok", &path, Some(json!({"properties": {"dealstage": "closedwon"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"properties": {"amount": "5"}}))).await;
    assert_eq!(status, StatusCode::OK, "unrelated writes pass");
    let count = sim.sim.deal_count("tok");
    let batch = json!({"inputs": [json!({"properties": {"dealname": "b1", "dealstage": "appointmentscheduled"}}), closedwon("b2")]});
    let (status, _) = sim.json(Method::POST, "tok", &format!("{current}/batch/create"), Some(batch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(sim.sim.deal_count("tok"), count);
}

#[tokio::test]
async fn value_rules_are_enforced_on_2026_09_writes() {
    let sim = start(SimConfig::default()).await;
    put_rule(&sim, "dealname", "MAX_LENGTH", json!([5])).await;
    put_rule(&sim, "amount", "MIN_NUMBER", json!([0])).await;
    let (status, err) = sim.json(Method::POST, "tok", "/crm/objects/2026-09/deals", Some(closedwon("too long"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["subCategory"], "PROPERTY_VALIDATION_RULE_VIOLATION");
    assert_eq!(err["errors"][0]["context"]["ruleType"], json!(["MAX_LENGTH"]));
    let (status, deal) = sim.json(Method::POST, "tok", "/crm/objects/2026-09/deals", Some(closedwon("ok"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = deal["id"].as_str().expect("id");
    let body = json!({"properties": {"amount": "-1"}});
    let (status, err) =
        sim.json(Method::PATCH, "tok", &format!("/crm/objects/2026-09/deals/{id}"), Some(body.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["context"]["propertyName"], json!(["amount"]));
    let (status, _) = sim.json(Method::PATCH, "tok", &format!("/crm/v3/objects/deals/{id}"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "v3 writes are not validated");
}

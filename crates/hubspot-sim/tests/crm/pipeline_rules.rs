//! Pipeline rules (2026-09-beta): the API on 2026-09 only, and enforcement on 2026-09 deal
//! moves (VALIDATION_ERROR naming the rule).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Sim, assert_error, start};
use hubspot_sim::SimConfig;

const RULES: &str = "/crm/pipelines-rules/2026-09-beta/0-3/default";
const DEALS: &str = "/crm/objects/2026-09/deals";

async fn deal_in(sim: &Sim, stage: &str) -> String {
    let body = json!({"properties": {"dealname": "d", "dealstage": stage}});
    let (status, deal) = sim.json(Method::POST, "tok", "/crm/v3/objects/deals", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    deal["id"].as_str().expect("id").to_owned()
}

async fn move_to(sim: &Sim, base: &str, id: &str, stage: &str) -> (StatusCode, Value) {
    let body = json!({"properties": {"dealstage": stage}});
    sim.json(Method::PATCH, "tok", &format!("{base}/{id}"), Some(body)).await
}

#[tokio::test]
async fn rules_api_is_served_on_2026_09_only() {
    let sim = start(SimConfig::default()).await;
    let (status, empty) = sim.json(Method::GET, "tok", RULES, None).await;
    assert_eq!((status, empty), (StatusCode::OK, json!({"governanceValidationRules": {}})));
    let rules = json!({"governanceValidationRules": {
        "noBackwardsMovementRule": {"enabledForAllStages": true, "pipelineStageIds": []},
        "objectCreationRule": {"pipelineStageIds": ["appointmentscheduled"]},
    }});
    let (status, _) = sim.json(Method::PUT, "tok", RULES, Some(rules.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (_, read) = sim.json(Method::GET, "tok", "/crm/pipelines-rules/2026-09/0-3/default", None).await;
    assert_eq!(read, rules);
    let patch = json!({"noSkippingStagesRule": {"enabledForAllStages": false, "pipelineStageIds": ["qualifiedtobuy"]}});
    let (status, patched) = sim.json(Method::PATCH, "tok", RULES, Some(patch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        patched["governanceValidationRules"]["noSkippingStagesRule"]["pipelineStageIds"],
        json!(["qualifiedtobuy"])
    );
    assert_eq!(
        patched["governanceValidationRules"]["objectCreationRule"],
        rules["governanceValidationRules"]["objectCreationRule"],
        "kept"
    );

    let unknown_stage = json!({"governanceValidationRules": {"objectCreationRule": {"pipelineStageIds": ["nope"]}}});
    assert_eq!(sim.json(Method::PUT, "tok", RULES, Some(unknown_stage)).await.0, StatusCode::BAD_REQUEST);
    let no_pipeline = "/crm/pipelines-rules/2026-09-beta/0-3/404";
    assert_eq!(sim.json(Method::GET, "tok", no_pipeline, None).await.0, StatusCode::NOT_FOUND);
    for old in [
        "/crm/pipelines-rules/2026-03-beta/0-3/default",
        "/crm/pipelines-rules/v3/0-3/default",
        "/crm/v3/pipelines-rules/0-3/default",
    ] {
        assert_eq!(sim.json(Method::GET, "tok", old, None).await.0, StatusCode::NOT_FOUND, "{old}");
    }
    assert_eq!(sim.json(Method::DELETE, "tok", RULES, None).await.0, StatusCode::NO_CONTENT);
    let (_, read) = sim.json(Method::GET, "tok", RULES, None).await;
    assert_eq!(read, json!({"governanceValidationRules": {}}));
}

#[tokio::test]
async fn rules_refuse_2026_09_deal_moves_naming_the_rule() {
    let sim = start(SimConfig::default()).await;
    let rules = json!({"governanceValidationRules": {
        "noBackwardsMovementRule": {"enabledForAllStages": true},
        "noSkippingStagesRule": {"enabledForAllStages": true},
        "objectCreationRule": {"pipelineStageIds": ["appointmentscheduled", "qualifiedtobuy"]},
    }});
    assert_eq!(sim.json(Method::PUT, "tok", RULES, Some(rules)).await.0, StatusCode::OK);

    let id = deal_in(&sim, "qualifiedtobuy").await;
    // Backwards: refused on 2026-09, allowed on older versions.
    let (status, err) = move_to(&sim, DEALS, &id, "appointmentscheduled").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&err, "VALIDATION_ERROR");
    assert_eq!(err["subCategory"], "PIPELINE_RULE_VIOLATION");
    assert_eq!(err["errors"][0]["context"]["ruleType"], json!(["NO_BACKWARDS_MOVEMENT"]));
    assert!(err["message"].as_str().expect("message").contains("NO_BACKWARDS_MOVEMENT"));
    // Skipping an open stage: refused; the next stage and a closed stage: allowed.
    let (status, err) = move_to(&sim, DEALS, &id, "decisionmakerboughtin").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["errors"][0]["context"]["ruleType"], json!(["NO_SKIPPING_STAGES"]));
    assert_eq!(move_to(&sim, DEALS, &id, "presentationscheduled").await.0, StatusCode::OK);
    assert_eq!(move_to(&sim, DEALS, &id, "closedlost").await.0, StatusCode::OK);
    assert_eq!(move_to(&sim, "/crm/objects/2026-03/deals", &id, "appointmentscheduled").await.0, StatusCode::OK);

    // Creation only in the listed stages.
    let body = json!({"properties": {"dealname": "late", "dealstage": "contractsent"}});
    let (status, err) = sim.json(Method::POST, "tok", DEALS, Some(body.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["errors"][0]["context"]["ruleType"], json!(["OBJECT_CREATION"]));
    assert_eq!(sim.json(Method::POST, "tok", "/crm/v3/objects/deals", Some(body)).await.0, StatusCode::CREATED);
    let body = json!({"properties": {"dealname": "ok", "dealstage": "appointmentscheduled"}});
    assert_eq!(sim.json(Method::POST, "tok", DEALS, Some(body)).await.0, StatusCode::CREATED);
}

//! Pipeline rules as desired state, end to end (issue 16): a rule declared in the document
//! is planned and applied to the (2026-09) portal, a hand change to it is drift, and a
//! declared "no backwards moves" rule makes GoMark's own backwards deal move fail once with
//! the rule named, as the plan warned.

use crate::scenarios::create_company;
use crate::support::{eventually, roll_out, start_at_version};
use gomark::Embedded;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn document(company: &str, with_negotiation: bool) -> String {
    let negotiation = if with_negotiation {
        "        - {id: negotiation, label: Negotiation, displayOrder: 1, probability: 0.6}\n"
    } else {
        ""
    };
    // Negotiation's deals go back to Open: a backwards move.
    let removed = if with_negotiation { "" } else { "      removedStages: [{id: negotiation, moveDealsTo: open}]\n" };
    format!(
        "baseline:\n  pipelines:\n    - id: sales\n      label: Sales\n      stages:\n\
         \x20       - {{id: open, label: Open, displayOrder: 0, probability: 0.2}}\n{negotiation}\
         \x20       - {{id: won, label: Won, displayOrder: 2, probability: 1.0, closed: true}}\n{removed}\
         \x20     rules:\n        noBackwardsMovement: {{allStages: true}}\n\
         companies:\n  r:\n    companyId: \"{company}\"\n    settings: {{driftPolicy: alert}}\n"
    )
}

#[tokio::test]
async fn a_declared_pipeline_rule_is_applied_drift_checked_and_refuses_gomarks_backwards_move_once() {
    let (gomark, api, _dir) = start_at_version("2026-09").await;
    let (token, portal) = ("pipeline-rules-token", 1611u64);
    let company = create_company(&api, &gomark.hubspot_sim, "Pipeline Rules Co", token, portal).await;

    // Declared, planned as its own action, applied.
    let first = document(&company, true);
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"document": first, "message": "plan"}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let actions = plan.body["companies"][0]["actions"].as_array().expect("actions").clone();
    assert!(actions.iter().any(|a| a["targetKind"] == "pipeline_rules" && a["target"] == "sales"), "{actions:?}");
    assert_eq!(roll_out(&api, &first).await["state"], "completed");
    let http = reqwest::Client::new();
    let pipelines: Value = http
        .get(format!("{}/crm/v3/pipelines/deals", gomark.hubspot_sim_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("pipelines")
        .json()
        .await
        .expect("json");
    let sales = pipelines["results"].as_array().into_iter().flatten().find(|p| p["label"] == "Sales").expect("Sales");
    let pipeline = sales["id"].as_str().expect("id").to_owned();
    let stage = |label: &str| {
        sales["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["label"] == label)
            .and_then(|s| s["id"].as_str())
            .map(str::to_owned)
            .expect("stage")
    };
    let rules_url = format!("{}/crm/pipelines-rules/2026-09-beta/0-3/{pipeline}", gomark.hubspot_sim_url);
    let held: Value = http.get(&rules_url).bearer_auth(token).send().await.expect("rules").json().await.expect("json");
    assert_eq!(held["governanceValidationRules"]["noBackwardsMovementRule"]["enabledForAllStages"], true, "{held}");

    // Someone turns the rule off by hand: drift.
    let off = json!({"governanceValidationRules": {}});
    assert_eq!(http.put(&rules_url).bearer_auth(token).json(&off).send().await.expect("hand edit").status(), 200);
    let checked = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    let record = eventually("a drift record", WAIT, || async {
        let listed = api.send(Method::GET, &format!("/v1/drift?companyId={company}"), None).await;
        listed.body["items"].as_array().and_then(|items| items.first().cloned())
    })
    .await;
    assert!(record.to_string().contains("pipeline_rules") || record.to_string().contains("pipeline rules"), "{record}");

    // Two deals wait in Negotiation; the new document moves them back to Open (and restores
    // the rule first): the plan warns, the step fails once naming the rule.
    let deals = gomark.hubspot_sim.create_deals(token, 2, &stage("Negotiation"), &pipeline);
    let second = document(&company, false);
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"document": second, "message": "plan"}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let actions = plan.body["companies"][0]["actions"].as_array().expect("actions").clone();
    let moves = actions.iter().find(|a| a["targetKind"] == "stage_deals").expect("a deal move is planned");
    let warned = moves["warnings"].as_array().into_iter().flatten().any(|w| {
        w["code"] == "rule_rejects_writes" && w["message"].as_str().is_some_and(|m| m.contains("NO_BACKWARDS_MOVEMENT"))
    });
    assert!(warned, "{moves}");
    let writes =
        |g: &Embedded| g.hubspot_sim.writes(Some(portal)).iter().filter(|w| w.path.ends_with("/batch/update")).count();
    let before = writes(&gomark);
    let rollout = roll_out(&api, &second).await;
    let step = &rollout["steps"][0];
    assert_eq!(step["state"], "failed", "{rollout}");
    assert_eq!(step["attempts"], 0, "a refusal is not a transient failure: {rollout}");
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("rule NO_BACKWARDS_MOVEMENT"), "{detail}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(writes(&gomark) - before, 1, "one deal write, never retried");
    for id in &deals {
        let deal = gomark.hubspot_sim.deal(token, id).expect("deal");
        assert_eq!(deal["properties"]["dealstage"], stage("Negotiation").as_str(), "{deal}");
    }

    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

//! Write validation and drift sources, end to end (issue 16): on API 2026-09 a portal's
//! conditional-required rule makes a GoMark deal write fail — the plan warned, the rollout
//! step fails once with the rule named in its detail and audit, nothing retries it — and a
//! drift record says who made the drift, its policy going by that source.

use crate::scenarios::create_company;
use crate::support::{eventually, roll_out, start_at_version};
use gomark::Embedded;
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The HubSpot pipeline id and stage ids (by label) of the portal's pipeline `label`.
async fn hubspot_stages(sim_url: &str, token: &str, label: &str) -> (String, Vec<(String, String)>) {
    let pipelines: Value = reqwest::Client::new()
        .get(format!("{sim_url}/crm/v3/pipelines/deals"))
        .bearer_auth(token)
        .send()
        .await
        .expect("pipelines")
        .json()
        .await
        .expect("json");
    let p = pipelines["results"].as_array().into_iter().flatten().find(|p| p["label"] == label).expect("pipeline");
    let stages = p["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["label"].as_str().unwrap_or_default().to_owned(), s["id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    (p["id"].as_str().unwrap_or_default().to_owned(), stages)
}

fn sales_pipeline(with_negotiation: bool) -> String {
    let negotiation = if with_negotiation {
        "        - {id: negotiation, label: Negotiation, displayOrder: 1, probability: 0.6}\n"
    } else {
        ""
    };
    let removed = if with_negotiation { "" } else { "      removedStages: [{id: negotiation, moveDealsTo: won}]\n" };
    format!(
        "  pipelines:\n    - id: sales\n      label: Sales\n      stages:\n\
         \x20       - {{id: open, label: Open, displayOrder: 0, probability: 0.2}}\n{negotiation}\
         \x20       - {{id: won, label: Won, displayOrder: 2, probability: 1.0, closed: true}}\n{removed}"
    )
}

fn batch_updates(sim: &HubSpotSim, portal: u64) -> usize {
    sim.writes(Some(portal)).iter().filter(|w| w.path.ends_with("/batch/update")).count()
}

#[tokio::test]
async fn a_conditional_required_rule_fails_gomarks_deal_move_once_as_the_plan_warned() {
    let (gomark, api, _dir) = start_at_version("2026-09").await;
    let (token, portal) = ("rules-token", 1601u64);
    let company = create_company(&api, &gomark.hubspot_sim, "Rules Co", token, portal).await;
    let header = format!("companies:\n  r:\n    companyId: \"{company}\"\n");
    let first = format!("baseline:\n{}{header}", sales_pipeline(true));
    assert_eq!(roll_out(&api, &first).await["state"], "completed");

    // Three deals wait in Negotiation; only one has a close date.
    let (pipeline, stages) = hubspot_stages(&gomark.hubspot_sim_url, token, "Sales").await;
    let stage = |label: &str| stages.iter().find(|(l, _)| l == label).map(|(_, id)| id.clone()).expect("stage");
    let deals = gomark.hubspot_sim.create_deals(token, 3, &stage("Negotiation"), &pipeline);
    gomark.hubspot_sim.update_deal(token, &deals[0], [("closedate", "2026-11-30T00:00:00Z")]).expect("close date");

    // Negotiation goes, its deals to Won; the portal requires a close date in Won.
    let won = stage("Won");
    let second = format!(
        "baseline:\n{}  validationRules:\n    - {{property: closedate, ruleType: CONDITIONALLY_REQUIRED, ruleArguments: [dealstage, \"{won}\"]}}\n{header}",
        sales_pipeline(false)
    );
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"document": second, "message": "plan"}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let actions = plan.body["companies"][0]["actions"].as_array().expect("actions").clone();
    let moves = actions.iter().find(|a| a["targetKind"] == "stage_deals").expect("a deal move is planned");
    assert_eq!(moves["target"], "sales/negotiation", "{moves}");
    let warning = &moves["warnings"][0];
    assert_eq!(warning["code"], "rule_rejects_writes", "{moves}");
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("2 of 3 deals have no closedate") && message.contains("CONDITIONALLY_REQUIRED"),
        "{message}"
    );

    // Rolled out: the step fails once, naming the rule; the one refused write is not retried.
    let before = batch_updates(&gomark.hubspot_sim, portal);
    let rollout = roll_out(&api, &second).await;
    let step = &rollout["steps"][0];
    assert_eq!(step["state"], "failed", "{rollout}");
    assert_eq!(step["attempts"], 0, "a refusal is not a transient failure: {rollout}");
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("rule CONDITIONALLY_REQUIRED on property closedate"), "{detail}");
    assert!(detail.contains("deals in stage sales/negotiation"), "{detail}");
    let audit = api.send(Method::GET, &format!("/v1/companies/{company}/audit"), None).await;
    let applied = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "config.apply" && e["after"]["state"] == "failed")
        .cloned()
        .expect("the failed apply is audited");
    assert!(applied["after"]["detail"].as_str().is_some_and(|d| d.contains("CONDITIONALLY_REQUIRED")), "{applied}");
    // Time for any retry to show (the rollout's backoff starts at 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(batch_updates(&gomark.hubspot_sim, portal) - before, 1, "one deal write, never retried");
    let rollout_id = rollout["id"].as_str().expect("id");
    let later = api.send(Method::GET, &format!("/v1/rollouts/{rollout_id}"), None).await;
    assert_eq!(later.body["steps"][0]["state"], "failed", "{}", later.body);
    // The deals stayed where they were, and so did their stage.
    for id in &deals {
        let deal = gomark.hubspot_sim.deal(token, id).expect("deal");
        assert_eq!(deal["properties"]["dealstage"], stage("Negotiation").as_str(), "{deal}");
    }
    let (_, after) = hubspot_stages(&gomark.hubspot_sim_url, token, "Sales").await;
    assert!(after.iter().any(|(l, _)| l == "Negotiation"), "{after:?}");

    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// A request to the simulated portal as `headers` say who makes it.
fn as_source(request: reqwest::RequestBuilder, token: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    headers.iter().fold(request.bearer_auth(token), |r, (k, v)| r.header(*k, *v))
}

/// Sets a deal's `gomark_tier`: HubSpot pushes a webhook for it, naming who did it.
async fn edit_value(gomark: &Embedded, token: &str, headers: &[(&str, &str)], deal: &str) {
    let http = reqwest::Client::new();
    let url = format!("{}/crm/v3/objects/deals/{deal}", gomark.hubspot_sim_url);
    let r = as_source(http.patch(url), token, headers)
        .json(&json!({"properties": {"gomark_tier": "high"}}))
        .send()
        .await
        .expect("edit a value");
    assert_eq!(r.status(), 200);
}

/// Relabels `gomark_tier`: drift. HubSpot pushes no webhook for a definition change (only its
/// journal carries one), so who is at work on the property is known from its values' events.
async fn edit_label(gomark: &Embedded, token: &str, headers: &[(&str, &str)], label: &str) {
    let http = reqwest::Client::new();
    let url = format!("{}/crm/v3/properties/deals/gomark_tier", gomark.hubspot_sim_url);
    let r = as_source(http.patch(url), token, headers).json(&json!({"label": label})).send().await.expect("relabel");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn drift_records_say_who_and_the_policy_follows_the_source() {
    let (gomark, api, _dir) = start_at_version("v3").await;
    let admin_edits = create_company(&api, &gomark.hubspot_sim, "Admin edits", "src-user", 1701).await;
    let app_edits = create_company(&api, &gomark.hubspot_sim, "App edits", "src-app", 1702).await;
    let doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_tier, label: Tier, type: enumeration, fieldType: select, groupName: dealinformation, \
         options: [{{label: Low, value: low}}, {{label: High, value: high}}]}}\ncompanies:\n\
         \x20 a:\n    companyId: \"{admin_edits}\"\n    settings: {{driftPolicy: alert, driftPolicyBySource: {{user: adopt}}}}\n\
         \x20 b:\n    companyId: \"{app_edits}\"\n    settings: {{driftPolicy: alert, driftPolicyBySource: {{integration: enforce}}}}\n"
    );
    assert_eq!(roll_out(&api, &doc).await["state"], "completed");
    let deal_a = gomark.hubspot_sim.create_deals("src-user", 1, "appointmentscheduled", "default");
    let deal_b = gomark.hubspot_sim.create_deals("src-app", 1, "appointmentscheduled", "default");

    // A person in HubSpot's UI, and another app (id 777), work on the property: its values
    // (their webhooks reach GoMark, saying who), then its label.
    let user = [("X-HubSpot-Sim-UI-User", "42")];
    let app = [("X-HubSpot-Sim-Change-Source", "INTEGRATION"), ("X-HubSpot-Sim-Source-Id", "777")];
    let sent = gomark.hubspot_sim.webhook_stats().events_sent;
    edit_value(&gomark, "src-user", &user, &deal_a[0]).await;
    edit_value(&gomark, "src-app", &app, &deal_b[0]).await;
    eventually("the value webhooks taken", WAIT, || async {
        let stats = gomark.hubspot_sim.webhook_stats();
        (stats.events_sent >= sent + 2 && gomark.hubspot_sim.pending_webhook_events() == 0).then_some(())
    })
    .await;
    edit_label(&gomark, "src-user", &user, "Tier (admin)").await;
    edit_label(&gomark, "src-app", &app, "Tier (app)").await;
    let checked = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    let record = |company: String| {
        let api = &api;
        async move {
            eventually("a drift record", WAIT, || async {
                let listed = api.send(Method::GET, &format!("/v1/drift?companyId={company}"), None).await;
                listed.body["items"].as_array().and_then(|items| items.first().cloned())
            })
            .await
        }
    };

    // The person's edit is adopted: reality becomes a new revision.
    let adopted = record(admin_edits.clone()).await;
    assert_eq!(adopted["source"]["kind"], "user", "{adopted}");
    assert_eq!(
        (adopted["source"]["changeSource"].as_str(), adopted["source"]["sourceId"].as_str()),
        (Some("CRM_UI"), Some("userId:42"))
    );
    assert_eq!(adopted["policy"], "adopt", "{adopted}");
    assert!(adopted["resolution"].as_str().is_some_and(|r| r.starts_with("revision/")), "{adopted}");
    assert_eq!(
        gomark.hubspot_sim.property("src-user", "gomark_tier").map(|p| p["label"].clone()),
        Some(json!("Tier (admin)"))
    );

    // The app's edit is enforced against: the declared label comes back.
    let enforced = record(app_edits.clone()).await;
    assert_eq!(enforced["source"]["kind"], "integration", "{enforced}");
    assert_eq!(
        (enforced["source"]["changeSource"].as_str(), enforced["source"]["sourceId"].as_str()),
        (Some("INTEGRATION"), Some("777"))
    );
    assert_eq!(enforced["policy"], "enforce", "{enforced}");
    assert!(enforced["resolution"].as_str().is_some_and(|r| r.starts_with("rollout/")), "{enforced}");
    eventually("the label restored", WAIT, || async {
        gomark.hubspot_sim.property("src-app", "gomark_tier").filter(|p| p["label"] == "Tier").map(|_| ())
    })
    .await;

    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

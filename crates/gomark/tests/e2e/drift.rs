//! Drift: a property deleted by hand in a portal is detected, and handled by the company's
//! policy: `enforce` restores it, `alert` reports it, `adopt` makes reality a new revision.

use crate::scenarios::create_company;
use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn drift_is_detected_and_handled_by_each_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let policies = ["enforce", "alert", "adopt"];
    let mut companies = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        let token = format!("drift-{policy}");
        let id = create_company(&api, &gomark.hubspot_sim, &format!("Drift {policy}"), &token, 1000 + i as u64).await;
        companies.push((id, token, *policy));
    }
    let mut doc = String::from(
        "baseline:\n  dealProperties:\n    - {name: gomark_seats, label: Seats, type: number, fieldType: number, groupName: dealinformation}\ncompanies:\n",
    );
    for (i, (id, _, policy)) in companies.iter().enumerate() {
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n    settings: {{driftPolicy: {policy}}}\n"));
    }
    let revision =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "seats"}))).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let rollout = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    let id = rollout.body["id"].as_str().expect("id").to_owned();
    eventually("rollout", Duration::from_secs(30), || async {
        (api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await.body["state"] == "completed").then_some(())
    })
    .await;

    // Nothing has drifted yet.
    let quiet = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    assert_eq!(
        (quiet.body["checked"].as_u64(), quiet.body["drifted"].as_array().map(Vec::len)),
        (Some(3), Some(0)),
        "{}",
        quiet.body
    );

    // Someone deletes the property by hand in every portal.
    let http = reqwest::Client::new();
    for (_, token, _) in &companies {
        let r = http
            .delete(format!("{}/crm/v3/properties/deals/gomark_seats", gomark.hubspot_sim_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("delete by hand");
        assert_eq!(r.status(), 204);
    }
    let found = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    let drifted = found.body["drifted"].as_array().expect("drifted").clone();
    assert_eq!(drifted.len(), 3, "{}", found.body);
    for record in &drifted {
        assert!(record["actions"].to_string().contains("gomark_seats"), "{record}");
    }
    let by_policy = |p: &str| drifted.iter().find(|d| d["policy"] == p).cloned().expect("record");

    // enforce: a rollout puts the property back.
    let enforce = by_policy("enforce");
    assert!(enforce["resolution"].as_str().is_some_and(|r| r.starts_with("rollout/")), "{enforce}");
    let (_, enforce_token, _) = &companies[0];
    eventually("the property restored", Duration::from_secs(30), || async {
        gomark.hubspot_sim.property(enforce_token, "gomark_seats").filter(|p| p["archived"] == false).map(|_| ())
    })
    .await;

    // alert: recorded and reported, nothing written.
    let alert = by_policy("alert");
    assert!(alert.get("resolution").is_none(), "{alert}");
    assert_eq!(
        gomark.hubspot_sim.property(&companies[1].1, "gomark_seats").map(|p| p["archived"].clone()),
        Some(json!(true))
    );

    // adopt: reality becomes a new revision, so the company is in line again.
    let adopt = by_policy("adopt");
    assert!(adopt["resolution"].as_str().is_some_and(|r| r.starts_with("revision/")), "{adopt}");
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"companyIds": [companies[2].0]}))).await;
    assert_eq!(plan.body["companies"][0]["actions"].as_array().map(Vec::len), Some(0), "{}", plan.body);

    // A drift already reported is not reported again.
    let again = api.send(Method::POST, "/v1/drift/check", Some(json!({"companyIds": [companies[1].0]}))).await;
    assert_eq!(again.body["drifted"].as_array().map(Vec::len), Some(0), "{}", again.body);
    let listed = api.send(Method::GET, &format!("/v1/drift?companyId={}", companies[1].0), None).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    let audit = api.send(Method::GET, &format!("/v1/companies/{}/audit", companies[1].0), None).await;
    assert!(audit.body["items"].as_array().expect("items").iter().any(|e| e["action"] == "drift.detected"));
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn activity_in_a_portal_triggers_a_drift_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let token = "drift-webhook";
    let company = create_company(&api, &gomark.hubspot_sim, "Webhook Drift", token, 1100).await;
    let doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_seats, label: Seats, type: number, fieldType: number, groupName: dealinformation}}\n\
         companies:\n  w:\n    companyId: \"{company}\"\n    settings: {{driftPolicy: enforce}}\n"
    );
    api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "seats"}))).await;
    let rollout = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    let id = rollout.body["id"].as_str().expect("id").to_owned();
    eventually("rollout", Duration::from_secs(30), || async {
        (api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await.body["state"] == "completed").then_some(())
    })
    .await;

    let deleted = reqwest::Client::new()
        .delete(format!("{}/crm/v3/properties/deals/gomark_seats", gomark.hubspot_sim_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete by hand");
    assert_eq!(deleted.status(), 204);
    // No one asks GoMark to look: a deal created in the portal (its webhook) is the trigger.
    gomark.hubspot_sim.create_deals(token, 1, "appointmentscheduled", "default");
    eventually("the drift found and enforced", Duration::from_secs(30), || async {
        gomark.hubspot_sim.property(token, "gomark_seats").filter(|p| p["archived"] == false).map(|_| ())
    })
    .await;
    let drift = api.send(Method::GET, &format!("/v1/drift?companyId={company}"), None).await;
    assert_eq!(drift.body["items"][0]["policy"], "enforce", "{}", drift.body);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

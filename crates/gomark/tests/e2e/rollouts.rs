//! Apply as a durable rollout: a revision reaches every portal (canary wave first), a
//! second run writes nothing, a rollback undoes it, and progress streams as SSE.

use crate::scenarios::create_company;
use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn document(companies: &[(String, u32)], with_pipeline: bool, seats_label: &str) -> String {
    let pipeline = if with_pipeline {
        r#"
  pipelines:
    - id: upsell
      label: Upsell
      stages:
        - {id: qualify, label: Qualify, probability: 0.3, closed: false}
        - {id: won, label: Won, probability: 1.0, closed: true}
        - {id: lost, label: Lost, probability: 0.0, closed: true}"#
    } else {
        ""
    };
    let mut doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_seats, label: {seats_label}, type: number, fieldType: number, groupName: dealinformation}}{pipeline}\ncompanies:\n"
    );
    for (i, (id, wave)) in companies.iter().enumerate() {
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n    settings: {{rolloutWave: {wave}}}\n"));
    }
    doc
}

async fn finish(api: &Api, id: &str) -> Value {
    eventually("the rollout to finish", Duration::from_secs(60), || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        matches!(r.body["state"].as_str(), Some("completed" | "halted" | "cancelled")).then_some(r.body)
    })
    .await
}

#[tokio::test]
async fn a_rollout_applies_a_revision_and_a_rollback_undoes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let mut companies = Vec::new();
    for i in 0..4u32 {
        let id = create_company(
            &api,
            &gomark.hubspot_sim,
            &format!("Rollout {i}"),
            &format!("rollout-{i}"),
            990 + u64::from(i),
        )
        .await;
        companies.push((id, if i == 0 { 0 } else { 1 }));
    }
    let revision = |doc: String, message: &str| {
        let body = json!({"document": doc, "message": message});
        let api = &api;
        async move {
            let r = api.send(Method::POST, "/v1/config/revisions", Some(body)).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["number"].as_i64().expect("number")
        }
    };
    let first = revision(document(&companies, false, "Seats"), "seats").await;
    let second = revision(document(&companies, true, "Licensed seats"), "upsell pipeline, clearer label").await;

    let started = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": second, "concurrency": 2}))).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();
    assert_eq!(started.body["total"], 4);

    // Progress streams as server-sent events until the rollout completes.
    let sse = reqwest::Client::new()
        .get(format!("{}/v1/rollouts/{id}/events", gomark.gateway_url))
        .bearer_auth(gomark.admin_api_key.as_deref().expect("key"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("events");
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let stream = sse.text().await.expect("stream ends when the rollout does");
    assert!(stream.contains("event: progress") && stream.contains("\"state\":\"completed\""), "{stream}");

    let done = finish(&api, &id).await;
    assert_eq!((done["state"].as_str(), done["done"].as_u64()), (Some("completed"), Some(4)), "{done}");
    // A listing shows each rollout's counts, as its own page does, but not its steps.
    let listed = api.send(Method::GET, "/v1/rollouts", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().expect("items");
    let item = items.iter().find(|r| r["id"] == id.as_str()).expect("the rollout is listed");
    for field in ["state", "total", "done", "failed", "running", "pending", "waiting"] {
        assert_eq!(item[field], done[field], "{field}: {item}");
    }
    assert!(item["steps"].as_array().is_none_or(Vec::is_empty), "{item}");
    for step in done["steps"].as_array().expect("steps") {
        assert!(step["applied"].as_u64() >= Some(2), "the property and the pipeline were written: {step}");
    }
    for (company, _) in &companies {
        let observed = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/observed"), None).await.body;
        let upsell = observed["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["label"] == "Upsell")
            .expect("pipeline")
            .clone();
        let probabilities: Vec<&str> =
            upsell["stages"].as_array().expect("stages").iter().filter_map(|s| s["probability"].as_str()).collect();
        assert_eq!(probabilities, ["0.3", "1.0", "0.0"]);
        let seats = observed["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .find(|p| p["name"] == "gomark_seats")
            .expect("seats")
            .clone();
        assert_eq!(seats["label"], "Licensed seats");
    }
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"revision": second}))).await;
    assert!(
        plan.body["companies"]
            .as_array()
            .expect("companies")
            .iter()
            .all(|c| c["actions"].as_array().is_some_and(Vec::is_empty)),
        "{}",
        plan.body
    );

    // Applying the same revision again writes nothing.
    let writes_before = gomark.hubspot_sim.requests().iter().filter(|r| r.method != "GET").count();
    let again = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": second}))).await;
    let again = finish(&api, again.body["id"].as_str().expect("id")).await;
    assert_eq!(again["state"], "completed");
    assert!(again["steps"].as_array().expect("steps").iter().all(|s| s["applied"] == 0), "{again}");
    assert_eq!(gomark.hubspot_sim.requests().iter().filter(|r| r.method != "GET").count(), writes_before);

    // Rollback: a new revision equal to the first, rolled out like any other.
    let rollback = api.send(Method::POST, "/v1/config/rollback", Some(json!({"to": first}))).await;
    let back = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": rollback.body["number"]}))).await;
    let back = finish(&api, back.body["id"].as_str().expect("id")).await;
    assert_eq!(back["state"], "completed", "{back}");
    for (company, _) in &companies {
        let observed = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/observed"), None).await.body;
        assert!(
            !observed["pipelines"].as_array().expect("pipelines").iter().any(|p| p["label"] == "Upsell"),
            "pipeline removed: {observed}"
        );
        let seats = observed["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .find(|p| p["name"] == "gomark_seats")
            .expect("seats")
            .clone();
        assert_eq!(seats["label"], "Seats");
    }
    let audit = api.send(Method::GET, &format!("/v1/companies/{}/audit", companies[0].0), None).await;
    assert!(
        audit.body["items"].as_array().expect("items").iter().any(|e| e["action"] == "config.apply"),
        "each apply is audited"
    );

    // Pause, resume and cancel only where they make sense.
    let finished = api.send(Method::POST, &format!("/v1/rollouts/{id}/pause"), None).await;
    finished.problem(422);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn a_company_is_in_at_most_one_unfinished_rollout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let a = create_company(&api, &gomark.hubspot_sim, "Busy A", "busy-a", 1201).await;
    let b = create_company(&api, &gomark.hubspot_sim, "Busy B", "busy-b", 1202).await;
    let companies = [(a.clone(), 0), (b.clone(), 0)];
    let revision = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&companies, false, "Seats"), "message": "seats"})),
        )
        .await;
    assert_eq!(revision.status, 201, "{}", revision.body);

    // 0 is the contract's "default" internally; a caller sending it gets told the range.
    for (field, body) in
        [("concurrency", json!({"concurrency": 0})), ("failureThresholdPct", json!({"failureThresholdPct": 0}))]
    {
        let bad = api.send(Method::POST, "/v1/rollouts", Some(body)).await;
        assert_eq!(bad.problem(400)["errors"][0]["field"], field, "{}", bad.body);
    }

    // A's portal is down, so the rollout keeps retrying A and stays unfinished.
    gomark.hubspot_sim.fail_next("busy-a", 100_000, 503);
    let first = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.body["id"].as_str().expect("id").to_owned();
    for body in [json!({}), json!({"companyIds": [a]}), json!({"companyIds": [b]})] {
        let clash = api.send(Method::POST, "/v1/rollouts", Some(body)).await;
        let detail = clash.problem(422)["detail"].as_str().unwrap_or_default().to_owned();
        assert!(detail.contains(&first) && detail.contains("cancel"), "names the rollout in the way: {detail}");
    }

    let cancelled = api.send(Method::POST, &format!("/v1/rollouts/{first}/cancel"), None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    gomark.hubspot_sim.fail_next("busy-a", 0, 503);
    let second = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    assert_eq!(second.status, 201, "once the first is cancelled: {}", second.body);
    let done = finish(&api, second.body["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "completed", "{done}");
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn a_later_edit_supersedes_the_queued_rollout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    burst_of_edits(&api, &gomark.hubspot_sim, "burst", 1301).await;
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// A burst of edits to one company whose rollout cannot finish: each edit's rollout
/// supersedes the one queued before it, so once the portal is back it is converged once,
/// to the revision that holds every edit, and each property is written exactly once.
pub async fn burst_of_edits(api: &Api, sim: &HubSpotSim, token: &str, portal: u64) {
    let company = create_company(api, sim, "Burst", token, portal).await;
    let create = |i: usize| {
        json!({"name": format!("gomark_burst_{i}"), "label": format!("Burst {i}"), "type": "string",
               "fieldType": "text", "groupName": "dealinformation"})
    };
    let base = format!("/v1/companies/{company}/deal-properties");

    // The portal is down: the first edit's rollout keeps retrying, and the rest queue.
    sim.fail_next(token, 100_000, 503);
    let mut rollouts = Vec::new();
    for i in 0..5 {
        let created = api.send(Method::POST, &base, Some(create(i))).await;
        assert_eq!(created.status, 201, "{}", created.body);
        rollouts.push(created.body["rolloutId"].as_str().expect("rolloutId").to_owned());
    }
    let state = |id: &str| {
        let path = format!("/v1/rollouts/{id}");
        async move { api.send(Method::GET, &path, None).await.body }
    };
    assert_eq!(state(&rollouts[0]).await["state"], "running");
    for (i, id) in rollouts.iter().enumerate().take(4).skip(1) {
        let r = state(id).await;
        assert_eq!(r["state"], "superseded", "edit {i}: {r}");
        let by = &rollouts[i + 1];
        assert!(r["reason"].as_str().is_some_and(|why| why.contains(by.as_str())), "names its successor: {r}");
        assert!(r["finishedAt"].is_string(), "{r}");
        assert_eq!(r["steps"][0]["state"], "cancelled", "{r}");
        assert_eq!(r["steps"][0]["attempts"], 0, "never ran: {r}");
    }
    assert_eq!(state(&rollouts[4]).await["state"], "queued");
    let cancel = api.send(Method::POST, &format!("/v1/rollouts/{}/cancel", rollouts[1]), None).await;
    cancel.problem(422);
    let audit = api.send(Method::GET, "/v1/audit?action=rollout.supersede", None).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let resources: Vec<&str> =
        audit.body["items"].as_array().expect("items").iter().filter_map(|e| e["resource"].as_str()).collect();
    for id in &rollouts[1..4] {
        assert!(resources.contains(&format!("rollout/{id}").as_str()), "{id} audited: {resources:?}");
    }

    // The portal comes back: the first rollout finishes, then the last applies every edit.
    sim.fail_next(token, 0, 503);
    let last = finish(api, &rollouts[4]).await;
    assert_eq!(last["state"], "completed", "{last}");
    for i in 0..5 {
        crate::scenarios::wait_synced(api, &company, &format!("gomark_burst_{i}"), None).await;
    }
    for i in 0..5 {
        let created = crate::scenarios::property_creates(sim, token, &format!("gomark_burst_{i}"));
        assert_eq!(created, 1, "gomark_burst_{i} created once: {:?}", sim.writes(Some(sim.portal_id_for(token))));
    }
}

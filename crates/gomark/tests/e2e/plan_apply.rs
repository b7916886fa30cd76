//! One desired state, one planner: what a plan shows is exactly what applying it does, in
//! both run modes. The scenarios take a running GoMark (embedded here, distributed in
//! `distributed.rs`) and make their own companies.

use crate::scenarios::{create_company, wait_synced};
use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DONE: Duration = Duration::from_secs(60);

/// Companies of one scenario: (id, token).
pub async fn companies(
    api: &Api,
    sim: &HubSpotSim,
    prefix: &str,
    first_portal: u64,
    n: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let token = format!("{prefix}-token-{i}");
        let id = create_company(api, sim, &format!("{prefix} {i}"), &token, first_portal + i as u64).await;
        out.push((id, token));
    }
    out
}

/// The saved plan's action ids per company.
fn planned(plan: &Value) -> BTreeMap<String, Vec<String>> {
    plan["companies"]
        .as_array()
        .expect("companies")
        .iter()
        .map(|c| {
            let ids =
                c["actions"].as_array().expect("actions").iter().filter_map(|a| a["id"].as_str()).map(str::to_owned);
            (c["companyId"].as_str().expect("id").to_owned(), ids.collect())
        })
        .collect()
}

/// `op kind target` of each company's actions.
fn described(plan: &Value) -> BTreeMap<String, BTreeSet<String>> {
    plan["companies"]
        .as_array()
        .expect("companies")
        .iter()
        .map(|c| {
            let actions = c["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .map(|a| {
                    format!(
                        "{} {} {}",
                        a["op"].as_str().unwrap_or(""),
                        a["targetKind"].as_str().unwrap_or(""),
                        a["target"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (c["companyId"].as_str().expect("id").to_owned(), actions)
        })
        .collect()
}

async fn plan(api: &Api, body: Value) -> Value {
    let reply = api.send(Method::POST, "/v1/config/plan", Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["planId"].is_string(), "{}", reply.body);
    reply.body
}

/// Applies a saved plan and waits for its rollout to end; returns the rollout.
pub async fn apply(api: &Api, plan: &Value) -> Value {
    let id = plan["planId"].as_str().expect("plan id");
    let applied =
        api.send(Method::POST, &format!("/v1/config/plans/{id}/apply"), Some(json!({"concurrency": 8}))).await;
    assert_eq!(applied.status, 201, "{}", applied.body);
    let rollout = applied.body["rollout"]["id"].as_str().expect("rollout").to_owned();
    eventually("the rollout", DONE, || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{rollout}"), None).await;
        matches!(r.body["state"].as_str(), Some("completed" | "halted")).then_some(r.body)
    })
    .await
}

/// The actions each step performed, by id.
fn performed(rollout: &Value) -> BTreeMap<String, Vec<String>> {
    rollout["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let ids = s["performed"]
                .as_array()
                .map(|p| p.iter().filter_map(|a| a["id"].as_str()).map(str::to_owned).collect());
            (s["companyId"].as_str().expect("id").to_owned(), ids.unwrap_or_default())
        })
        .collect()
}

/// The actions of a plan that are applicable (not blocked), by id.
fn applicable(plan: &Value) -> BTreeMap<String, Vec<String>> {
    plan["companies"]
        .as_array()
        .expect("companies")
        .iter()
        .map(|c| {
            let ids = c["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .filter(|a| a.get("blocked").is_none())
                .filter_map(|a| a["id"].as_str())
                .map(str::to_owned);
            (c["companyId"].as_str().expect("id").to_owned(), ids.collect())
        })
        .collect()
}

fn latest_document(revision: &Value) -> gtm_config::Document {
    gtm_config::Document::from_yaml(revision["document"].as_str().expect("document")).expect("yaml")
}

/// Import, add a baseline property, then plan a rollback to the import: the plan lists the
/// archive in every company, and applying it archives exactly there, nothing else. Every
/// apply performs exactly its plan's actions; afterwards nothing is left to plan or drift.
pub async fn rollback_archives_exactly_what_the_plan_shows(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let companies = companies(api, sim, "Rollback", first_portal, 3).await;
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let base = imported.body["revision"]["number"].as_i64().expect("number");
    let quiet = plan(api, json!({})).await;
    assert!(planned(&quiet).values().all(Vec::is_empty), "an import plans nothing: {quiet}");

    let mut document = latest_document(&api.send(Method::GET, "/v1/config", None).await.body);
    document.baseline.deal_properties.push(gtm_config::DealProperty {
        name: "gomark_plan_check".into(),
        label: "Plan check".into(),
        property_type: gtm_config::PropertyType::String,
        field_type: gtm_config::FieldType::Text,
        group_name: "dealinformation".into(),
        description: None,
        options: vec![],
        has_unique_value: false,
    });
    let yaml = document.to_yaml().expect("yaml");
    let add = plan(api, json!({"document": yaml, "message": "plan check"})).await;
    assert_eq!(add["revision"], 0, "a proposed document is not stored yet");
    for (company, actions) in described(&add) {
        assert_eq!(actions, BTreeSet::from(["create deal_property gomark_plan_check".to_owned()]), "{company}");
    }
    let applied = apply(api, &add).await;
    assert_eq!((applied["state"].as_str(), applied["done"].as_u64()), (Some("completed"), Some(3)), "{applied}");
    assert_eq!(performed(&applied), applicable(&add), "applied exactly what was planned");
    for (_, token) in &companies {
        assert!(sim.property(token, "gomark_plan_check").is_some_and(|p| p["archived"] == false));
    }

    // The plan of the import's revision now shows the archive, in every company.
    let back = plan(api, json!({"rollbackTo": base, "message": "undo plan check"})).await;
    for (company, actions) in described(&back) {
        assert_eq!(actions, BTreeSet::from(["archive deal_property gomark_plan_check".to_owned()]), "{company}");
    }
    let stored = plan(api, json!({"revision": base})).await;
    assert_eq!(described(&stored), described(&back), "planning the stored revision says the same");
    let undone = apply(api, &back).await;
    assert_eq!(undone["state"], "completed", "{undone}");
    assert_eq!(performed(&undone), applicable(&back), "the rollback did exactly what it showed");
    for (_, token) in &companies {
        assert!(sim.property(token, "gomark_plan_check").is_some_and(|p| p["archived"] == true));
    }
    let after = plan(api, json!({})).await;
    assert!(planned(&after).values().all(Vec::is_empty), "{after}");
    let drift = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    assert_eq!(drift.body["checked"].as_u64(), Some(3), "{}", drift.body);
    assert_eq!(drift.body["drifted"], json!([]), "{}", drift.body);
    // A plan applies once.
    let id = back["planId"].as_str().expect("id");
    api.send(Method::POST, &format!("/v1/config/plans/{id}/apply"), Some(json!({}))).await.problem(422);
}

/// A saved plan whose portal changed since does not do something else: its step stops
/// with "plan is stale" and writes nothing.
pub async fn a_stale_plan_writes_nothing(api: &Api, sim: &HubSpotSim, sim_url: &str, first_portal: u64) {
    let companies = companies(api, sim, "Stale", first_portal, 1).await;
    let (company, token) = &companies[0];
    let doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_stale_a, label: A, type: string, fieldType: text, groupName: dealinformation}}\ncompanies:\n  stale:\n    companyId: \"{company}\"\n"
    );
    let first = plan(api, json!({"document": doc, "message": "a"})).await;
    assert_eq!(apply(api, &first).await["state"], "completed");
    let doc2 = doc.replace("label: A,", "label: A2,");
    let relabel = plan(api, json!({"document": doc2, "message": "relabel", "companyIds": [company]})).await;
    assert_eq!(described(&relabel)[company], BTreeSet::from(["update deal_property gomark_stale_a".to_owned()]));
    // Someone archives the property by hand before the plan is applied: the plan would now
    // need a create it never showed.
    let http = reqwest::Client::new();
    let deleted = http
        .delete(format!("{sim_url}/crm/v3/properties/deals/gomark_stale_a"))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete by hand");
    assert_eq!(deleted.status(), 204);
    let writes_before = sim.requests().iter().filter(|r| r.method != "GET").count();
    let rollout = apply(api, &relabel).await;
    let step = &rollout["steps"][0];
    assert_eq!(step["state"], "failed", "{rollout}");
    assert!(step["detail"].as_str().is_some_and(|d| d.contains("plan is stale")), "{rollout}");
    let writes_after = sim.requests().iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes_after, writes_before, "a stale plan writes nothing");
    // The revision it proposed was stored (the plan was approved), but the portal was not
    // touched; planning again shows the create it now needs.
    let again = plan(api, json!({"companyIds": [company]})).await;
    assert_eq!(described(&again)[company], BTreeSet::from(["create deal_property gomark_stale_a".to_owned()]));
}

/// A property relabelled through the REST route, then a rollout of the whole revision:
/// the REST read, the revision and the portal agree.
pub async fn rest_edits_and_rollouts_agree(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let companies = companies(api, sim, "Agree", first_portal, 2).await;
    let mut doc = String::from(
        "baseline:\n  dealProperties:\n    - {name: gomark_agree, label: Agree, type: string, fieldType: text, groupName: dealinformation}\ncompanies:\n",
    );
    for (i, (id, _)) in companies.iter().enumerate() {
        doc.push_str(&format!("  agree-{i}:\n    companyId: \"{id}\"\n"));
    }
    let first = plan(api, json!({"document": doc, "message": "agree"})).await;
    assert_eq!(apply(api, &first).await["state"], "completed");
    let (company, token) = &companies[0];
    let base = format!("/v1/companies/{company}/deal-properties");
    // The REST list shows what rollouts created.
    let listed = api.send(Method::GET, &base, None).await;
    let names: Vec<&str> =
        listed.body["items"].as_array().expect("items").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["gomark_agree"], "{}", listed.body);
    assert_eq!(listed.body["items"][0]["sync"]["state"], "applied");

    let relabelled =
        api.send(Method::PATCH, &format!("{base}/gomark_agree"), Some(json!({"label": "Agreed by REST"}))).await;
    assert_eq!(relabelled.status, 200, "{}", relabelled.body);
    wait_synced(api, company, "gomark_agree", Some("Agreed by REST")).await;
    // A rollout of the latest revision (which holds the REST edit) changes nothing back.
    let rollout = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    assert_eq!(rollout.status, 201, "{}", rollout.body);
    let id = rollout.body["id"].as_str().expect("id").to_owned();
    let done = eventually("the rollout", DONE, || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        (r.body["state"] == "completed").then_some(r.body)
    })
    .await;
    assert!(done["steps"].as_array().expect("steps").iter().all(|s| s["applied"] == 0), "nothing to undo: {done}");
    let read = api.send(Method::GET, &format!("{base}/gomark_agree"), None).await;
    assert_eq!(
        (read.body["label"].as_str(), read.body["sync"]["state"].as_str()),
        (Some("Agreed by REST"), Some("applied"))
    );
    assert_eq!(sim.property(token, "gomark_agree").expect("in portal")["label"], "Agreed by REST");
    let other = &companies[1].1;
    assert_eq!(sim.property(other, "gomark_agree").expect("in portal")["label"], "Agree", "only that company changed");
}

/// A declined apply (a plan never applied) stores nothing, and drift still checks every
/// company, whatever the latest revision is.
pub async fn a_declined_apply_stores_nothing(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let companies = companies(api, sim, "Declined", first_portal, 2).await;
    let mut doc = String::from("baseline: {}\ncompanies:\n");
    for (i, (id, _)) in companies.iter().enumerate() {
        doc.push_str(&format!("  declined-{i}:\n    companyId: \"{id}\"\n"));
    }
    assert_eq!(apply(api, &plan(api, json!({"document": doc, "message": "adopt"})).await).await["state"], "completed");
    let revisions = api.send(Method::GET, "/v1/config/revisions", None).await.body["items"].clone();
    let proposed = doc.replace("baseline: {}", "baseline:\n  dealProperties:\n    - {name: gomark_never, label: Never, type: string, fieldType: text, groupName: dealinformation}");
    let declined = plan(api, json!({"document": proposed, "message": "declined"})).await;
    assert!(described(&declined).values().all(|a| a.contains("create deal_property gomark_never")));
    assert_eq!(api.send(Method::GET, "/v1/config/revisions", None).await.body["items"], revisions, "nothing stored");
    // An import of one company makes a new latest revision; the other company is still
    // checked against what was applied to it.
    let only = api.send(Method::POST, "/v1/config/import", Some(json!({"companyIds": [companies[0].0]}))).await;
    assert_eq!(only.status, 201, "{}", only.body);
    let drift = api.send(Method::POST, "/v1/drift/check", Some(json!({}))).await;
    assert!(drift.body["checked"].as_u64() >= Some(2), "every company is checked: {}", drift.body);
    assert!(sim.property(&companies[0].1, "gomark_never").is_none());
}

/// Two pipelines declared without displayOrder are created at their list positions, so
/// the next check finds no drift (HubSpot's default order 0 used to read as drift forever).
pub async fn pipelines_without_display_order_do_not_drift(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let companies = companies(api, sim, "Order", first_portal, 2).await;
    let mut doc = String::from(
        "baseline:\n  pipelines:\n    - id: renewals\n      label: Renewals\n      stages:\n        - {id: open, label: Open, probability: 0.5}\n        - {id: won, label: Won, probability: 1.0, closed: true}\n    - id: expansion\n      label: Expansion\n      stages:\n        - {id: open, label: Open, probability: 0.3}\n        - {id: lost, label: Lost, probability: 0.0, closed: true}\ncompanies:\n",
    );
    for (i, (id, _)) in companies.iter().enumerate() {
        doc.push_str(&format!("  order-{i}:\n    companyId: \"{id}\"\n    settings: {{driftPolicy: enforce}}\n"));
    }
    let created = apply(api, &plan(api, json!({"document": doc, "message": "two pipelines"})).await).await;
    assert_eq!(created["state"], "completed", "{created}");
    let ids: Vec<String> = companies.iter().map(|(id, _)| id.clone()).collect();
    let drift = api.send(Method::POST, "/v1/drift/check", Some(json!({"companyIds": ids}))).await;
    assert_eq!(drift.body["checked"].as_u64(), Some(2), "{}", drift.body);
    assert_eq!(drift.body["drifted"], json!([]), "{}", drift.body);
    let again = plan(api, json!({"companyIds": ids})).await;
    assert!(planned(&again).values().all(Vec::is_empty), "{again}");
}

/// `POST path` with `Accept: text/event-stream`: the status, content type and the events
/// (name, JSON data) of the whole stream.
async fn post_events(api: &Api, path: &str, body: &Value) -> (u16, String, Vec<(String, Value)>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", api.base))
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(30))
        .json(body);
    if let Some(token) = api.token() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = response.text().await.expect("the stream ends after the plan");
    let events = text
        .split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
            let data = field("data:")?;
            Some((field("event:").unwrap_or("message").to_owned(), serde_json::from_str(data).unwrap_or(Value::Null)))
        })
        .collect();
    (status, content_type, events)
}

/// The streamed plan counts every company up to all of them, then is the plan the plain
/// request gives; a request that cannot be planned gets the plain problem response.
pub async fn a_streamed_plan_counts_companies_then_is_the_plan(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let ids: Vec<String> =
        companies(api, sim, "Progress", first_portal, 3).await.into_iter().map(|(id, _)| id).collect();
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({"companyIds": ids}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let body = json!({"companyIds": ids});
    let plain = plan(api, body.clone()).await;

    let (status, content_type, events) = post_events(api, "/v1/config/plan", &body).await;
    assert_eq!(status, 200, "{events:?}");
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.0, "plan", "the stream ends with the plan: {events:?}");
    assert!(rest.iter().all(|(name, _)| name == "progress"), "{events:?}");
    let done = counts(&events, 3);
    assert_eq!(done.last(), Some(&3), "the count reaches all companies: {events:?}");
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{events:?}");

    let streamed = &last.1;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<BTreeSet<_>>()).unwrap_or_default();
    assert_eq!(keys(streamed), keys(&plain), "the same JSON body: {streamed}");
    assert_eq!(described(streamed), described(&plain), "the same plan");
    assert_ne!(streamed["planId"], plain["planId"], "saved under its own id");
    let id = streamed["planId"].as_str().expect("planId");
    let saved = api.send(Method::GET, &format!("/v1/config/plans/{id}"), None).await;
    assert_eq!(&saved.body, streamed, "the streamed plan is the saved plan");

    // A company not in the document: the problem the plain request gets, not a stream.
    let bad = json!({"companyIds": ["no-such-company"]});
    let plain = api.send(Method::POST, "/v1/config/plan", Some(bad.clone())).await;
    let expected = plain.problem(plain.status.as_u16());
    assert!(plain.status.is_client_error(), "{}", plain.body);
    let streamed = api.send_with(Method::POST, "/v1/config/plan", Some(bad), &[("accept", "text/event-stream")]).await;
    assert_eq!(&streamed.problem(plain.status.as_u16()).clone(), expected);
}

/// The `progress` counts of a stream, each checked to be of `total` companies.
fn counts(events: &[(String, Value)], total: u64) -> Vec<u64> {
    events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, c)| {
            assert_eq!(c["total"].as_u64(), Some(total), "{events:?}");
            c["done"].as_u64().expect("done")
        })
        .collect()
}

/// The streamed import counts every portal read, then is the import the plain request
/// gives (a 201 there); a request that cannot be carried out gets the plain problem.
pub async fn a_streamed_import_counts_portals_then_is_the_import(api: &Api, sim: &HubSpotSim, first_portal: u64) {
    let ids: Vec<String> =
        companies(api, sim, "Imported", first_portal, 2).await.into_iter().map(|(id, _)| id).collect();
    let body = json!({"companyIds": ids, "message": "streamed import"});
    let plain = api.send(Method::POST, "/v1/config/import", Some(body.clone())).await;
    assert_eq!(plain.status, 201, "{}", plain.body);

    let (status, content_type, events) = post_events(api, "/v1/config/import", &body).await;
    assert_eq!(status, 200, "{events:?}");
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (last, _) = events.split_last().expect("events");
    assert_eq!(last.0, "import", "the stream ends with the import: {events:?}");
    assert_eq!(counts(&events, 2).last(), Some(&2), "the count reaches every portal: {events:?}");
    let streamed = &last.1;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<BTreeSet<_>>()).unwrap_or_default();
    assert_eq!(keys(streamed), keys(&plain.body), "the same JSON body: {streamed}");
    assert_eq!(keys(&streamed["revision"]), keys(&plain.body["revision"]), "{streamed}");
    assert_eq!(streamed["companies"], plain.body["companies"], "the same portals adopted the same way");

    let bad = json!({"companyIds": ["no-such-company"]});
    let plain = api.send(Method::POST, "/v1/config/import", Some(bad.clone())).await;
    assert!(plain.status.is_client_error(), "{}", plain.body);
    let expected = plain.problem(plain.status.as_u16());
    let streamed =
        api.send_with(Method::POST, "/v1/config/import", Some(bad), &[("accept", "text/event-stream")]).await;
    assert_eq!(&streamed.problem(plain.status.as_u16()).clone(), expected);
}

async fn embedded(dir: &std::path::Path) -> (Embedded, Api) {
    let options = EmbeddedOptions {
        data_dir: dir.to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    (gomark, api)
}

#[tokio::test]
async fn embedded_plan_equals_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gomark, api) = embedded(dir.path()).await;
    rollback_archives_exactly_what_the_plan_shows(&api, &gomark.hubspot_sim, 3100).await;
    rest_edits_and_rollouts_agree(&api, &gomark.hubspot_sim, 3200).await;
    pipelines_without_display_order_do_not_drift(&api, &gomark.hubspot_sim, 3300).await;
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn embedded_stale_and_declined_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gomark, api) = embedded(dir.path()).await;
    a_stale_plan_writes_nothing(&api, &gomark.hubspot_sim, &gomark.hubspot_sim_url, 3400).await;
    a_declined_apply_stores_nothing(&api, &gomark.hubspot_sim, 3500).await;
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn embedded_streamed_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gomark, api) = embedded(dir.path()).await;
    a_streamed_plan_counts_companies_then_is_the_plan(&api, &gomark.hubspot_sim, 3900).await;
    a_streamed_import_counts_portals_then_is_the_import(&api, &gomark.hubspot_sim, 3950).await;
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

//! Embedded mode: `gomark serve` as a library, on port 0, in a temporary data folder.

use crate::scenarios;
use crate::support::{Api, SERVING, eventually, health};
use gomark::{DEMO_COMPANIES, Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use std::time::Duration;

async fn start(dir: &std::path::Path, demo: bool) -> Embedded {
    let options = EmbeddedOptions { data_dir: dir.to_path_buf(), port: 0, demo, ..EmbeddedOptions::default() };
    Embedded::start(options, Shutdown::new()).await.expect("embedded gomark starts")
}

fn api(gomark: &Embedded) -> Api {
    Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("a fresh data folder shows its admin key"))
}

async fn stop(gomark: Embedded) {
    gomark.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), gomark.wait())
        .await
        .expect("stops within its grace")
        .expect("stops cleanly");
}

#[tokio::test]
async fn deal_properties_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    let api = api(&gomark);
    scenarios::property_lifecycle(&api, &gomark.hubspot_sim, "token-lifecycle", 901).await;
    stop(gomark).await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    scenarios::bad_input(&api(&gomark), &gomark.hubspot_sim, "token-validation", 902).await;
    stop(gomark).await;
}

#[tokio::test]
async fn the_previous_gomark_routes_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    scenarios::legacy_routes(&api(&gomark), &gomark.hubspot_sim, "token-legacy", 903).await;
    stop(gomark).await;
}

#[tokio::test]
async fn every_service_is_healthy_and_metrics_are_exposed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    assert_eq!(gomark.services.len(), 5);
    for (name, addr) in &gomark.services {
        assert_eq!(health(*addr).await, Some(SERVING), "{name} is SERVING");
    }
    let api = api(&gomark);
    api.send(Method::GET, "/v1/companies", None).await;
    let metrics = reqwest::get(format!("http://{}/metrics", gomark.admin_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in
        ["grpc_server_requests_total", "grpc_server_request_duration_seconds_bucket", "http_server_requests_total"]
    {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    let shutdown = gomark.shutdown.clone();
    let addr = gomark.grpc_addr("orchestrator").expect("orchestrator");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), gomark.wait()).await.expect("drains").expect("clean");
    assert_ne!(health(addr).await, Some(SERVING), "not serving after shutdown");
}

#[tokio::test]
async fn the_demo_portfolio_is_loaded_and_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), true).await;
    let api = api(&gomark);
    let page = api.send(Method::GET, "/v1/companies?limit=100", None).await;
    let companies = page.body["items"].as_array().expect("items").clone();
    assert_eq!(companies.len(), DEMO_COMPANIES.len());
    assert!(DEMO_COMPANIES.len() >= 20);
    let last = companies.last().and_then(|c| c["id"].as_str()).expect("id").to_owned();
    scenarios::wait_synced(&api, &last, "gomark_customer_tier", None).await;
    stop(gomark).await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    let api = api(&gomark);
    let id = scenarios::create_company(&api, &gomark.hubspot_sim, "Durable Co", "token-durable", 904).await;

    let key = gomark.admin_api_key.clone().expect("first start shows the key");
    stop(gomark).await;

    let again = start(dir.path(), true).await;
    assert_eq!(again.admin_api_key, None, "the admin key is shown once, on the first start only");
    let api = Api::new(&again.gateway_url, &key);
    let reply = eventually("company after restart", Duration::from_secs(5), || async {
        let r = api.send(Method::GET, &format!("/v1/companies/{id}"), None).await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert_eq!(reply["name"], "Durable Co");
    let all = api.send(Method::GET, "/v1/companies?limit=100", None).await;
    assert_eq!(
        all.body["items"].as_array().map(Vec::len),
        Some(1),
        "no demo seeded into an installation that has data"
    );
    stop(again).await;
}

#[tokio::test]
async fn one_process_per_data_folder_and_a_restart_resumes_at_once_what_a_killed_run_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gomark = start(dir.path(), false).await;
    let options = EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..Default::default() };
    let second = Embedded::start(options, Shutdown::new()).await;
    let refused = format!("{:#}", second.err().expect("a second process on the same folder is refused"));
    assert!(refused.contains("is in use by another GoMark process"), "{refused}");
    assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");

    let key = gomark.admin_api_key.clone().expect("first start shows the key");
    let api = api(&gomark);
    let company = scenarios::create_company(&api, &gomark.hubspot_sim, "Resumed Co", "token-resumed", 905).await;
    let body = serde_json::json!({"name": "gomark_resumed", "label": "Resumed", "type": "string", "fieldType": "text", "groupName": "dealinformation"});
    let created = api.send(Method::POST, &format!("/v1/companies/{company}/deal-properties"), Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let rollout = created.body["rolloutId"].as_str().expect("rollout").to_owned();
    scenarios::wait_synced(&api, &company, "gomark_resumed", None).await;
    stop(gomark).await;

    // As a kill -9 in the middle of the step leaves it: the rollout running, its step held
    // under the dead process's lease for ten more minutes.
    let settings = gomark_storage::DatabaseSettings {
        url: gomark_platform::settings::Secret::new(format!(
            "sqlite://{}",
            dir.path().join("orchestrator.db").display()
        )),
        schema: "main".into(),
        max_connections: 1,
        acquire_timeout_secs: 5,
    };
    let db = gomark_storage::Database::connect(&settings).await.expect("orchestrator.db");
    let sql = gomark_storage::sqlx::query("UPDATE rollouts SET state = 'running' WHERE id = $1").bind(&rollout);
    assert_eq!(sql.execute(db.pool()).await.expect("update").rows_affected(), 1);
    let held_until = gomark_storage::now_ms() + 600_000;
    let sql = gomark_storage::sqlx::query(
        "UPDATE rollout_steps SET state = 'running', lease_owner = 'the-killed-run', lease_until = $1 WHERE rollout_id = $2",
    )
    .bind(held_until)
    .bind(&rollout);
    assert_eq!(sql.execute(db.pool()).await.expect("update").rows_affected(), 1);
    db.close().await;

    let again = start(dir.path(), false).await;
    let api = Api::new(&again.gateway_url, &key);
    let finished = eventually("the rollout completes at once, not in ten minutes", Duration::from_secs(15), || async {
        let reply = api.send(Method::GET, &format!("/v1/rollouts/{rollout}"), None).await;
        (reply.body["state"] != "running").then_some(reply.body)
    })
    .await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["done"], 1, "{finished}");
    stop(again).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_is_private_and_holds_no_key_secret() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let gomark = start(&data, false).await;
    let api = api(&gomark);
    let admin_key = gomark.admin_api_key.clone().expect("admin key");
    let created = api
        .send_with(
            Method::POST,
            "/v1/api-keys",
            Some(serde_json::json!({"name": "ci", "role": "viewer"})),
            &[("idempotency-key", "once")],
        )
        .await;
    let secret = created.body["key"].as_str().expect("secret shown once").to_owned();
    let retry = api
        .send_with(
            Method::POST,
            "/v1/api-keys",
            Some(serde_json::json!({"name": "ci", "role": "viewer"})),
            &[("idempotency-key", "once")],
        )
        .await;
    assert!(!retry.body.to_string().contains(&secret), "a replay never shows the secret: {}", retry.body);
    stop(gomark).await;

    let mode = |meta: std::fs::Metadata| meta.permissions().mode() & 0o777;
    assert_eq!(mode(std::fs::metadata(&data).expect("exists")), 0o700, "the data folder");
    for entry in std::fs::read_dir(&data).expect("list").flatten() {
        let path = entry.path();
        // A WAL or shared-memory file may go as the last connection closes: skip it then.
        let (Ok(meta), Ok(bytes)) = (std::fs::metadata(&path), std::fs::read(&path)) else { continue };
        assert_eq!(mode(meta), 0o600, "{}", path.display());
        for key in [&secret, &admin_key] {
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "{} holds a key secret", path.display());
        }
    }
}

#[tokio::test]
async fn a_restarted_demo_is_the_same_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = |activity| EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: true,
        demo_activity: activity,
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options(Some(Duration::from_millis(20))), Shutdown::new()).await.expect("starts");
    let key = gomark.admin_api_key.clone().expect("first start shows the key");
    let api = Api::new(&gomark.gateway_url, &key);
    let page = api.send(Method::GET, "/v1/companies?limit=100", None).await;
    let first = page.body["items"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(gomark.demo_ready(Duration::from_secs(60)).await, gomark::DemoState::Ready);
    scenarios::wait_synced(&api, &first, "gomark_customer_tier", None).await;
    // The property list pages like every list: one at a time gives the whole list, in order
    // (the gateway's tests walk longer lists).
    let properties = format!("/v1/companies/{first}/deal-properties");
    let whole = api.send(Method::GET, &format!("{properties}?limit=500"), None).await.body;
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
    };
    let (mut paged, mut cursor) = (Vec::new(), String::new());
    loop {
        let page = api.send(Method::GET, &format!("{properties}?limit=1&cursor={cursor}"), None).await.body;
        paged.extend(names(&page));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert!(!paged.is_empty(), "{whole}");
    assert_eq!(paged, names(&whole), "{whole}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = gomark::demo_token(0);
    let portal_id = gomark.hubspot_sim.portal_id(&token);
    stop(gomark).await;

    let mut deals_before: Vec<(String, String)> = Vec::new();
    {
        // The state the first run saved at shutdown.
        let bytes = std::fs::read(dir.path().join("hubspot-sim.json")).expect("saved state");
        let sim = hubspot_sim::HubSpotSim::new(hubspot_sim::SimConfig::default());
        sim.restore(&bytes).expect("restore");
        deals_before.extend(sim.deal_stages(&token));
    }
    assert!(!deals_before.is_empty(), "the demo activity had created deals");
    assert!(dir.path().join("upso-sim.json").exists(), "the Upso simulator saved its accounts");

    let again = Embedded::start(options(None), Shutdown::new()).await.expect("restarts");
    assert_eq!(again.hubspot_sim.portal_id(&token), portal_id, "same portal");
    let mut deals_after = again.hubspot_sim.deal_stages(&token);
    deals_after.sort();
    deals_before.sort();
    assert_eq!(deals_after, deals_before, "same deals in the same stages");
    assert!(again.hubspot_sim.property(&token, "gomark_customer_tier").is_some(), "configuration still applied");
    let accounts = |bytes: &[u8]| -> Vec<serde_json::Value> {
        let all: Vec<serde_json::Value> = serde_json::from_slice(bytes).expect("upso state is JSON");
        all.iter().map(|a| a["account"]["id"].clone()).collect()
    };
    assert_eq!(accounts(&again.upso_sim.snapshot()).len(), DEMO_COMPANIES.len(), "same Upso accounts, none added");
    let api = Api::new(&again.gateway_url, &key);
    let all = api.send(Method::GET, "/v1/companies?limit=100", None).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(DEMO_COMPANIES.len()), "the demo is not loaded twice");
    stop(again).await;
}

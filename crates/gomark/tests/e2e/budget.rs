//! A rate limit is not a failure (issue 21): a rollout to portals whose HubSpot budget is
//! nearly spent, or whose every call is slow, completes with each write made once, in
//! about the time the budget allows, and shows which companies wait and until when.

use crate::scenarios::create_company;
use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Properties relabelled per company: one PATCH each.
const WRITES_PER_COMPANY: usize = 10;
/// A canary (wave 0) and one more company (wave 1): 20 writes in all.
const COMPANIES: usize = 2;
/// The portal allows 5 requests per rolling 10 s (the rest is used by other integrations).
const BURST: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);
/// The three reads a plan needs (properties, groups, pipelines), made at once.
const READS: usize = 3;

fn document(companies: &[String], label: &str) -> String {
    let mut doc = String::from("baseline:\n  dealProperties:\n");
    for i in 0..WRITES_PER_COMPANY {
        doc.push_str(&format!(
            "    - {{name: gomark_budget_{i}, label: \"{label} {i}\", type: string, fieldType: text, groupName: dealinformation}}\n"
        ));
    }
    doc.push_str("companies:\n");
    for (i, id) in companies.iter().enumerate() {
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n    settings: {{rolloutWave: {}}}\n", i.min(1)));
    }
    doc
}

async fn roll_out(api: &Api, doc: String) -> String {
    let revision = api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "t"}))).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let started = api
        .send(Method::POST, "/v1/rollouts", Some(json!({"revision": revision.body["number"], "concurrency": 4})))
        .await;
    assert_eq!(started.status, 201, "{}", started.body);
    started.body["id"].as_str().expect("id").to_owned()
}

/// Polls the rollout until it finishes; also returns the first progress that showed a
/// company waiting for its portal's budget.
async fn follow(api: &Api, id: &str, limit: Duration) -> (Value, Option<Value>) {
    let mut seen_waiting = None;
    let started = Instant::now();
    loop {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await.body;
        if seen_waiting.is_none() && r["waiting"].as_u64().unwrap_or(0) > 0 {
            seen_waiting = Some(r.clone());
        }
        if matches!(r["state"].as_str(), Some("completed" | "halted" | "cancelled")) {
            return (r, seen_waiting);
        }
        assert!(started.elapsed() < limit, "the rollout did not finish in {limit:?}: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The least time `requests` to one portal can take at the budget and the latency: the
/// first `BURST` go at once, each further `BURST` a window later; the reads go together,
/// the writes one after another.
fn floor(requests: usize, latency: Duration) -> Duration {
    let by_budget = WINDOW * u32::try_from((requests - 1) / BURST as usize).expect("small");
    let by_latency = latency * u32::try_from(1 + requests - READS).expect("small");
    by_budget.max(by_latency)
}

async fn relabel_under_a_tight_budget(latency: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let sim = &gomark.hubspot_sim;
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let mut companies = Vec::new();
    for i in 0..COMPANIES {
        let portal = 7_100 + i as u64;
        companies.push(create_company(&api, sim, &format!("Budget {i}"), &format!("budget-{i}"), portal).await);
    }
    let (first, _) = follow(&api, &roll_out(&api, document(&companies, "Field")).await, Duration::from_secs(60)).await;
    assert_eq!(first["state"], "completed", "{first}");

    // Other integrations leave the portal 5 requests per 10 s; HubSpot is this slow.
    sim.set_burst_limit(BURST, WINDOW);
    sim.set_latency(latency);
    tokio::time::sleep(WINDOW).await;
    sim.clear_requests();
    // A fresh connection: the gateway may have closed the idle one meanwhile.
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let started = Instant::now();
    let id = roll_out(&api, document(&companies, "Relabelled")).await;
    let (done, seen_waiting) = follow(&api, &id, Duration::from_secs(300)).await;
    let elapsed = started.elapsed();

    assert_eq!((done["state"].as_str(), done["failed"].as_u64()), (Some("completed"), Some(0)), "{done}");
    for step in done["steps"].as_array().expect("steps") {
        assert_eq!(step["applied"], WRITES_PER_COMPANY, "every write of every attempt is reported: {step}");
        assert_eq!(step["attempts"], 0, "waiting is not a failed attempt: {step}");
    }
    let requests = sim.requests();
    assert!(requests.iter().all(|r| r.status != 429), "the budget kept every request under the limit");
    let mut per_portal: BTreeMap<u64, (usize, Vec<String>)> = BTreeMap::new();
    for r in requests.iter().filter(|r| crate::support::v3_path(&r.path).contains("/properties/deals")) {
        let entry = per_portal.entry(r.portal_id.expect("portal")).or_default();
        entry.0 += 1;
        if r.method == "PATCH" {
            entry.1.push(r.path.clone());
        }
    }
    assert_eq!(per_portal.len(), COMPANIES);
    let mut floor_total = Duration::ZERO;
    for (portal, (calls, mut writes)) in per_portal {
        let n = writes.len();
        writes.dedup();
        assert_eq!((n, writes.len()), (WRITES_PER_COMPANY, WRITES_PER_COMPANY), "portal {portal}: each write once");
        // The waves run one after the other; the floor counts only the reads one plan needs.
        floor_total += floor(READS + WRITES_PER_COMPANY, latency);
        println!("portal {portal}: {calls} property calls for {WRITES_PER_COMPANY} writes");
    }
    let ratio = elapsed.as_secs_f64() / floor_total.as_secs_f64();
    println!(
        "budget {BURST}/{WINDOW:?}, latency {latency:?}: {} writes in {elapsed:.1?}; floor {floor_total:?}; ratio {ratio:.2}",
        COMPANIES * WRITES_PER_COMPANY
    );
    assert!(ratio < 2.5, "took {elapsed:?}, {ratio:.2} times what the budget allows");
    if latency.is_zero() {
        let waiting = seen_waiting.expect("progress showed a company waiting for its budget");
        let step = waiting["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["waitingUntil"].is_string())
            .expect("a step says until when it waits")
            .clone();
        assert!(step["detail"].as_str().is_some_and(|d| d.contains("rate limit")), "{step}");
    }
}

#[tokio::test]
async fn a_portal_out_of_budget_makes_a_rollout_wait_not_fail() {
    relabel_under_a_tight_budget(Duration::ZERO).await;
}

#[tokio::test]
async fn a_slow_portal_makes_a_rollout_wait_not_fail() {
    relabel_under_a_tight_budget(Duration::from_millis(4_000)).await;
}

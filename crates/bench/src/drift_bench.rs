//! The drift benchmark (issue 17), a part of the `scale` binary: a baseline is rolled out
//! to many portals, then a person edits a property by hand in some of them, at random
//! moments; each edit is timed until GoMark records the drift. HubSpot sends no webhook for
//! a property's definition, so only the scheduled checks can notice: the figure is bounded
//! by the check interval, and the cost is the reads those checks make, per portal per day
//! against HubSpot's daily budget (250,000 for a private app).

use super::live_bench::percentile;
use super::{company, start, wait_rollout};
use anyhow::{Context as _, Result};
use gomark::EmbeddedOptions;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// HubSpot's daily request budget of a privately distributed app (CONTRACT.md).
const DAILY_BUDGET: f64 = 250_000.0;
const PROPERTIES: usize = 5;

/// A small, seeded generator: the same portals and moments in every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub struct Figures {
    pub row: String,
    pub p99: Duration,
}

/// `edits` portals of `portals` edited by hand at random moments within `window`.
pub async fn run(portals: usize, edits: usize, interval: Duration, window: Duration) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        drift_interval: interval,
        ..EmbeddedOptions::default()
    };
    let (gomark, api) = start(options).await?;
    let mut doc = String::from("baseline:\n  dealProperties:\n");
    for p in 0..PROPERTIES {
        doc.push_str(&format!(
            "    - {{name: gomark_drift_{p}, label: Drift {p}, type: string, fieldType: text, groupName: dealinformation}}\n"
        ));
    }
    doc.push_str("companies:\n");
    eprintln!("drift: registering {portals} companies…");
    let mut ids = Vec::with_capacity(portals);
    for i in 0..portals {
        let id = company(&api, &gomark, &format!("Drift {i}"), &format!("drift-{i}"), 90_000 + i as u64).await?;
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
        ids.push(id);
    }
    api.call(reqwest::Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "drift bench"})))
        .await?;
    let rollout = api.call(reqwest::Method::POST, "/v1/rollouts", Some(json!({"concurrency": 64}))).await?;
    let finished = wait_rollout(&api, rollout["id"].as_str().context("rollout id")?).await?;
    let state = finished["state"].as_str().unwrap_or("?");
    anyhow::ensure!(state == "completed", "the baseline rollout ended {state}");

    // Open loop: the edits happen at their moments whatever GoMark is doing.
    let mut rng = SplitMix(17);
    let mut chosen: Vec<usize> = (0..portals).collect();
    for i in (1..chosen.len()).rev() {
        chosen.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    chosen.truncate(edits.min(portals));
    let mut plan: Vec<(Duration, usize)> =
        chosen.into_iter().map(|i| (Duration::from_millis(rng.next() % window.as_millis().max(1) as u64), i)).collect();
    plan.sort();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    gomark.hubspot_sim.clear_requests();
    let started = Instant::now();
    let mut edited: HashMap<String, Instant> = HashMap::new();
    let mut detected: HashMap<String, Duration> = HashMap::new();
    let mut next = 0;
    let deadline = window + interval + Duration::from_secs(30);
    let mut last_poll = Instant::now();
    while started.elapsed() < deadline && (next < plan.len() || detected.len() < plan.len()) {
        while let Some(&(at, i)) = plan.get(next) {
            if started.elapsed() < at {
                break;
            }
            http.patch(format!("{}/crm/v3/properties/deals/gomark_drift_0", gomark.hubspot_sim_url))
                .bearer_auth(format!("drift-{i}"))
                .json(&json!({"label": "Edited by hand"}))
                .send()
                .await?
                .error_for_status()?;
            edited.insert(ids[i].clone(), started + at);
            next += 1;
        }
        if last_poll.elapsed() >= Duration::from_millis(500) {
            last_poll = Instant::now();
            let page = api.call(reqwest::Method::GET, "/v1/drift?limit=500", None).await?;
            for record in page["items"].as_array().into_iter().flatten() {
                let company = record["companyId"].as_str().unwrap_or_default();
                if let Some(at) = edited.get(company) {
                    detected.entry(company.to_owned()).or_insert_with(|| at.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let requests = gomark.hubspot_sim.requests();
    gomark.shutdown.trigger();
    gomark.wait().await?;

    let mut times: Vec<Duration> = detected.values().copied().collect();
    times.sort();
    let per_portal_day = requests.len() as f64 / portals as f64 * (86_400.0 / elapsed.as_secs_f64());
    let p99 = percentile(&times, 99.0);
    let row = format!(
        "| {portals} | {} | {} s | {} | {} | **{:.1} s** | **{:.1} s** | {:.1} s | {:.0} | {:.2} % |\n",
        plan.len(),
        interval.as_secs(),
        detected.len(),
        plan.len() - detected.len(),
        percentile(&times, 50.0).as_secs_f64(),
        p99.as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64(),
        per_portal_day,
        per_portal_day / DAILY_BUDGET * 100.0,
    );
    Ok(Figures { row, p99 })
}

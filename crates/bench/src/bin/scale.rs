//! Scale benchmarks, each written into its own section of BENCHMARKS.md:
//!
//! - `ingest`: deals ingested per second, from HubSpot's webhook to the `deal.upserted`
//!   event (embedded mode; and distributed, on Postgres, NATS and Redis, when the
//!   `GOMARK_TEST_*` variables are set);
//! - `rollout`: a 50-property baseline rolled out to 1,000 simulated portals with 100 ms of
//!   latency and 100 requests per 10 s each, in wall time and HubSpot calls, against the
//!   floor the batch endpoints allow.

// Shared with the gateway benchmark, which uses the rest of it.
#[allow(dead_code)]
#[path = "../report.rs"]
mod report;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use gomark::{Embedded, EmbeddedOptions};
use gomark_events::bus::ConsumerSpec;
use gomark_events::event_types;
use gomark_platform::Shutdown;
use hubspot_sim::{SimConfig, WebhookConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "GoMark scale benchmarks")]
struct Args {
    /// Write the section into this file (omit to only print it).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Deals ingested per second, webhook to event.
    Ingest {
        #[arg(long, default_value_t = 5000)]
        deals: usize,
    },
    /// A 50-property baseline rolled out to many portals.
    Rollout {
        #[arg(long, default_value_t = 1000)]
        portals: usize,
        #[arg(long, default_value_t = 50)]
        properties: usize,
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
    },
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("calling {path}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }
}

async fn start(options: EmbeddedOptions) -> Result<(Embedded, Api)> {
    let gomark = Embedded::start(options, Shutdown::new()).await?;
    let key = gomark.admin_api_key.clone().context("a fresh data folder shows its admin key")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let api = Api { http, base: gomark.gateway_url.clone(), key };
    Ok((gomark, api))
}

async fn company(api: &Api, gomark: &Embedded, name: &str, token: &str, portal: u64) -> Result<String> {
    gomark.hubspot_sim.register_portal(token, portal);
    let body = json!({"name": name, "hubspotPortalId": portal.to_string(), "hubspotToken": token});
    let created = api.call(reqwest::Method::POST, "/v1/companies", Some(body)).await?;
    created["id"].as_str().map(str::to_owned).context("company id")
}

/// Deals created in a portal, until every one of them came out of the bus as `deal.upserted`.
async fn ingest(deals: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        webhooks: WebhookConfig { batch_size: 100, batch_delay: Duration::from_millis(20), ..WebhookConfig::default() },
        ..EmbeddedOptions::default()
    };
    let (gomark, api) = start(options).await?;
    company(&api, &gomark, "Ingest Co", "ingest-token", 70_001).await?;
    let mut stream = gomark.bus.subscribe(&ConsumerSpec::new("bench.ingest", event_types::DEAL_UPSERTED)).await?;
    // The first webhook pass warms every path; only the second batch of deals is timed.
    let warm = 200;
    gomark.hubspot_sim.create_deals("ingest-token", warm, "appointmentscheduled", "default");
    let mut seen = 0;
    while seen < warm {
        let delivery = tokio::time::timeout(Duration::from_secs(60), stream.next()).await?.context("bus closed")??;
        delivery.ack().await?;
        seen += 1;
    }
    let started = Instant::now();
    gomark.hubspot_sim.create_deals("ingest-token", deals, "appointmentscheduled", "default");
    let mut latest = Duration::ZERO;
    let mut got = 0;
    while got < deals {
        let delivery = tokio::time::timeout(Duration::from_secs(120), stream.next()).await?.context("bus closed")??;
        delivery.ack().await?;
        got += 1;
        latest = started.elapsed();
    }
    let rate = deals as f64 / latest.as_secs_f64();
    gomark.shutdown.trigger();
    gomark.wait().await?;
    Ok(format!(
        "| embedded (SQLite, in-process bus) | {deals} | {:.2} s | **{rate:.0} deals/s** |\n",
        latest.as_secs_f64()
    ))
}

async fn rollout(portals: usize, properties: usize, latency_ms: u64, concurrency: u32) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        sim: SimConfig { burst_limit: 100, burst_window: Duration::from_secs(10), ..SimConfig::default() },
        ..EmbeddedOptions::default()
    };
    let (gomark, api) = start(options).await?;
    let mut doc = String::from("baseline:\n  dealProperties:\n");
    for p in 0..properties {
        doc.push_str(&format!("    - {{name: gomark_bench_{p:03}, label: Bench {p}, type: string, fieldType: text, groupName: dealinformation}}\n"));
    }
    doc.push_str("companies:\n");
    eprintln!("registering {portals} companies…");
    for i in 0..portals {
        let id = company(&api, &gomark, &format!("Scale {i}"), &format!("scale-{i}"), 80_000 + i as u64).await?;
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
    }
    api.call(reqwest::Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "bench"}))).await?;
    gomark.hubspot_sim.clear_requests();
    gomark.hubspot_sim.set_latency(Duration::from_millis(latency_ms));
    eprintln!("rolling out…");
    let started = Instant::now();
    let rollout = api.call(reqwest::Method::POST, "/v1/rollouts", Some(json!({"concurrency": concurrency}))).await?;
    let id = rollout["id"].as_str().context("rollout id")?.to_owned();
    let finished = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = api.call(reqwest::Method::GET, &format!("/v1/rollouts/{id}"), None).await?;
        if matches!(r["state"].as_str(), Some("completed" | "halted" | "cancelled")) {
            break r;
        }
    };
    let wall = started.elapsed();
    let requests = gomark.hubspot_sim.requests();
    // Configuration writes; searches are POSTs too, but reads (the deal sync's own, of the
    // newly registered portals).
    let writes = requests.iter().filter(|r| r.method != "GET" && !r.path.ends_with("/search")).count();
    let reads = requests.len() - writes;
    let limited = requests.iter().filter(|r| r.status == 429).count();
    let max_window =
        (0..portals).map(|i| gomark.hubspot_sim.max_requests_in_any_window(80_000 + i as u64)).max().unwrap_or(0);
    gomark.shutdown.trigger();
    gomark.wait().await?;
    // The fewest calls: one batch create per portal (≤100 properties each) to write, and one
    // read of the properties to know what to write.
    let batches = properties.div_ceil(100);
    let floor_writes = portals * batches;
    let floor_calls = floor_writes + portals;
    let floor_wall = Duration::from_millis(latency_ms * (1 + batches as u64)) * (portals as u32).div_ceil(concurrency);
    Ok(format!(
        "| {portals} | {properties} | {latency_ms} ms | {concurrency} | {} | {:.1} s | {} ({writes} writes, {reads} reads) | {floor_calls} ({floor_writes} writes, {portals} reads) | {:.2}× | {:.1} s | {limited} | {max_window} |\n",
        finished["state"].as_str().unwrap_or("?"),
        wall.as_secs_f64(),
        requests.len(),
        requests.len() as f64 / floor_calls as f64,
        floor_wall.as_secs_f64(),
    ))
}

/// Replaces (or appends) the section under `heading`, leaving the rest of the file alone.
fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let start = existing.find(heading);
    let updated = match start {
        Some(at) => {
            let rest = &existing[at + heading.len()..];
            let end = rest.find("\n## ").map_or(existing.len(), |e| at + heading.len() + e + 1);
            format!("{}{section}{}", &existing[..at], &existing[end..])
        }
        None => format!("{}\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let machine = report::Machine::detect();
    let date = report::utc_now();
    let where_ =
        format!("{} on {} CPUs ({}), {}, {}", date, machine.cpus, machine.cpu_model, machine.memory, machine.os);
    let (heading, section) = match args.bench {
        Bench::Ingest { deals } => {
            let row = ingest(deals).await?;
            let heading = "## Deal ingest, webhook to event (issue 4)";
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- ingest --deals {deals} --out BENCHMARKS.md`.\n\n\
                 Deals are created in a simulated portal; its webhooks (signed, batches of 100) reach the gateway, hubspot-sync \
                 dedupes them, re-reads the deals in batches of 100 from the simulator and publishes `deal.upserted` through its \
                 outbox; the figure is from the first deal created to the last event received. 200 deals warm the path first.\n\n\
                 | mode | deals | time | rate |\n|---|---:|---:|---:|\n{row}\n\
                 The distributed mode (Postgres, NATS, Redis) is not measured yet: its end-to-end tests run, but this harness \
                 starts the embedded mode only.\n"
            );
            (heading, section)
        }
        Bench::Rollout { portals, properties, latency_ms, concurrency } => {
            let row = rollout(portals, properties, latency_ms, concurrency).await?;
            let heading = "## Rollout at scale (issue 5)";
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- rollout --portals {portals} \
                 --properties {properties} --latency-ms {latency_ms} --concurrency {concurrency} --out BENCHMARKS.md`, embedded mode.\n\n\
                 A baseline of {properties} deal properties is rolled out to {portals} simulated portals, each answering every \
                 call after {latency_ms} ms and allowing 100 requests per 10 s. Each step reads the portal (properties, groups, \
                 pipelines, in parallel) and writes what is missing (one batch create). The calls also count what the deal \
                 sync does on its own for the newly registered portals (backfill lists, searches), as HubSpot would.\n\n\
                 The floor is the fewest calls the batch endpoints allow (one read to know what to write, one batch create per \
                 100 properties) and the shortest wall time at this latency and concurrency.\n\n\
                 | portals | properties | latency | concurrency | state | wall time | HubSpot calls | floor | calls / floor | floor wall time | 429s | most requests in any 10 s window of one portal |\n\
                 |---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n{row}"
            );
            (heading, section)
        }
    };
    println!("{section}");
    if let Some(path) = args.out {
        write_section(&path, heading, &section)?;
    }
    Ok(())
}

//! Scale benchmarks, each written into its own section of BENCHMARKS.md:
//!
//! - `ingest`: deals ingested per second, from HubSpot's webhook to the `deal.upserted`
//!   event (embedded mode; and distributed, on Postgres, NATS and Redis, when the
//!   `GOMARK_TEST_*` variables are set);
//! - `funnel`: pipeline-tracker's ingest of deal events (events/s, a backlog of them) and
//!   the latency from a deal changed in HubSpot to the update on a `WatchFunnel` stream,
//!   both modes, beside the machine's Postgres insert ceiling (pgbench, same row shape);
//! - `live`: deal changes arriving open-loop at a fixed rate over many portals, each timed
//!   until a `WatchFunnel` stream shows it, per second and overall, both modes, and again
//!   at a tenth of the portals and rate;
//! - `drift`: hand edits in random portals at random moments, timed until the drift is
//!   recorded, with the HubSpot calls the checks cost per portal per day, at full size and
//!   a tenth;
//! - `startup`: embedded GoMark from start until all five services answer SERVING, fresh,
//!   restarted and with the demo;
//! - `rollup`: the portfolio roll-up of many companies' deals read from cache, and one deal
//!   change timed until its company's summary counts it, at two history sizes and at a
//!   tenth of the companies;
//! - `rollout`: a 50-property baseline rolled out to 1,000 simulated portals with 100 ms of
//!   latency and 100 requests per 10 s each, in wall time and HubSpot calls, against the
//!   floor the batch endpoints allow;
//! - `footprint`: resident memory at rest of `gomark serve` and of each of `gomark
//!   cluster`'s five service processes.

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
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

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
        /// Portals the deals are spread over: one portal's budget (100 requests per 10 s,
        /// 100 deals per read) caps it near 900 deals/s once its first window is spent.
        #[arg(long, default_value_t = 1)]
        portals: usize,
    },
    /// pipeline-tracker: events/s ingested and deal-to-stream latency, both modes, beside pgbench.
    Funnel {
        /// Deal events in the backlog ingested (half the deals, two versions each).
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Deals timed one after another for the latency.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Open-loop deal changes over many portals, timed to the funnel stream, both modes.
    Live {
        #[arg(long, default_value_t = 200)]
        portals: usize,
        /// Deal changes per second, over all portals.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// What each change is: a stage move of an existing deal, or a new deal.
        #[arg(long, value_enum, default_value_t = live_bench::Kind::Moves)]
        changes: live_bench::Kind,
        /// pipeline-tracker replicas in distributed mode; they share the deal consumers, and
        /// the watchers are on the first.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
        tracker_replicas: u8,
    },
    /// Hand edits in random portals, timed until GoMark records the drift.
    Drift {
        #[arg(long, default_value_t = 1000)]
        portals: usize,
        #[arg(long, default_value_t = 100)]
        edits: usize,
        /// The drift check interval given to the orchestrator.
        #[arg(long, default_value_t = 45)]
        interval_secs: u64,
        /// The edits happen at random moments within this window.
        #[arg(long, default_value_t = 120)]
        window_secs: u64,
    },
    /// Embedded start until all five services are SERVING (fresh, restart, demo).
    Startup {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Portfolio roll-up from cache and one deal change's recompute, at full size and a tenth.
    Rollup {
        #[arg(long, default_value_t = 1000)]
        companies: usize,
        /// Deals per company.
        #[arg(long, default_value_t = 1000)]
        deals: usize,
        /// Cached roll-up reads timed.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Deal changes timed per history size.
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// Resident memory at rest: `gomark serve`, and each service of `gomark cluster`.
    Footprint {
        /// Seconds left alone after start-up before sampling.
        #[arg(long, default_value_t = 20)]
        settle_secs: u64,
        /// Samples, one a second.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// The gomark binary to run (default: the one beside this benchmark); the shipped
        /// one is `target/image/gomark` (`cargo build --profile image -p gomark`).
        #[arg(long)]
        gomark: Option<PathBuf>,
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

/// Polls a rollout until it ends (completed, halted or cancelled); returns its last state,
/// without its steps. (The list, not `GET /v1/rollouts/{id}`: a thousand steps with what each
/// performed exceed the gateway's 4 MB limit on an answer from the orchestrator.)
async fn wait_rollout(api: &Api, id: &str) -> Result<Value> {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let page = api.call(reqwest::Method::GET, "/v1/rollouts?limit=20", None).await?;
        let items = page["items"].as_array().context("rollouts")?;
        let r = items.iter().find(|r| r["id"].as_str() == Some(id)).context("the rollout is listed")?;
        if matches!(r["state"].as_str(), Some("completed" | "halted" | "cancelled")) {
            return Ok(r.clone());
        }
    }
}

/// Shuts a running GoMark down and cleans up what it made.
type Stop = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>>;

/// What the ingest measurement needs from a running GoMark, whichever the mode.
struct Running {
    api: Api,
    /// pipeline-tracker's gRPC address.
    tracker: std::net::SocketAddr,
    sim: hubspot_sim::HubSpotSim,
    bus: std::sync::Arc<dyn gomark_events::EventBus>,
    stop: Stop,
}

async fn embedded_for_ingest(dir: &Path, webhook_delay: Duration) -> Result<Running> {
    let options = EmbeddedOptions {
        data_dir: dir.to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        webhooks: WebhookConfig { batch_size: 100, batch_delay: webhook_delay, ..WebhookConfig::default() },
        ..EmbeddedOptions::default()
    };
    let (gomark, api) = start(options).await?;
    let tracker = gomark.grpc_addr(gomark_pipeline_tracker::NAME).context("pipeline-tracker")?;
    let sim = gomark.hubspot_sim.clone();
    let bus = gomark.bus.clone();
    Ok(Running {
        api,
        tracker,
        sim,
        bus,
        stop: Box::new(move || {
            Box::pin(async move {
                gomark.shutdown.trigger();
                gomark.wait().await
            })
        }),
    })
}

/// The distributed mode on the machine's Postgres, NATS and Redis (the `GOMARK_TEST_*`
/// variables), each service on a fresh schema, all in this process.
async fn distributed_for_ingest(webhook_delay: Duration) -> Result<Option<Running>> {
    distributed_with(webhook_delay, 1).await
}

/// [`distributed_for_ingest`] with `tracker_replicas` pipeline-trackers on one schema (the
/// first serves the watchers).
async fn distributed_with(webhook_delay: Duration, tracker_replicas: u8) -> Result<Option<Running>> {
    use gomark_platform::settings::{Secret, ServerSettings};
    use gomark_service::{Backends, CommonSettings};
    let (true, Some(nats), Some(redis)) =
        (gomark_testkit::distributed_configured(), gomark_testkit::nats_url(), gomark_testkit::redis_url())
    else {
        return Ok(None);
    };
    let token = gomark_testkit::unique("bench");
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let bus = gomark_events::BusSettings {
        kind: gomark_events::bus::BusKind::Nats,
        nats_url: nats,
        stream: token.to_uppercase(),
        subject_prefix: token.clone(),
    };
    // Fresh schemas, dropped when `databases` is.
    let mut databases = Vec::new();
    let mut common = || -> Result<CommonSettings> {
        let database = gomark_testkit::TestDatabase::postgres().context("postgres configured")?;
        let settings = CommonSettings {
            server: ServerSettings {
                grpc_addr: loopback(0),
                admin_addr: loopback(0),
                shutdown_grace_secs: 10,
                ..Default::default()
            },
            database: gomark_storage::DatabaseSettings { max_connections: 10, ..database.settings.clone() },
            bus: bus.clone(),
            cache: gomark_cache::CacheSettings {
                kind: gomark_cache::CacheKind::Redis,
                redis_url: redis.clone(),
                key_prefix: token.clone(),
                ..Default::default()
            },
            ..CommonSettings::default()
        };
        databases.push(database);
        Ok(settings)
    };
    let shutdown = Shutdown::new();
    let (sim, sim_addr) = hubspot_sim::spawn(SimConfig::default(), loopback(0)).await?;
    let sync_settings = gomark_hubspot_sync::Settings {
        common: common()?,
        hubspot: gomark_hubspot_sync::HubSpotSettings {
            base_url: format!("http://{sim_addr}"),
            credential_keys: Secret::new(gomark_hubspot_sync::credentials::Vault::generate_setting("b")),
            ..Default::default()
        },
        deals: gomark_hubspot_sync::DealSyncSettings { interval_secs: 30, index_lag_secs: 0, ..Default::default() },
        journal: gomark_hubspot_sync::JournalSettings::default(),
    };
    let backends = Backends::connect(&sync_settings.common).await?;
    let sync = gomark_hubspot_sync::start(sync_settings, backends, shutdown.clone()).await?;
    let orchestrator_settings = gomark_orchestrator::Settings {
        common: common()?,
        orchestrator: gomark_orchestrator::OrchestratorSettings {
            hubspot_sync_url: format!("http://{}", sync.grpc_addr),
            ..Default::default()
        },
    };
    let backends = Backends::connect(&orchestrator_settings.common).await?;
    let orchestrator = gomark_orchestrator::start(orchestrator_settings, backends, shutdown.clone()).await?;
    let tracker_settings = gomark_pipeline_tracker::Settings {
        common: common()?,
        tracker: gomark_pipeline_tracker::TrackerSettings {
            hubspot_sync_url: format!("http://{}", sync.grpc_addr),
            orchestrator_url: format!("http://{}", orchestrator.grpc_addr),
            ..Default::default()
        },
    };
    let mut more_trackers = Vec::new();
    for _ in 1..tracker_replicas {
        let backends = Backends::connect(&tracker_settings.common).await?;
        more_trackers.push(gomark_pipeline_tracker::start(tracker_settings.clone(), backends, shutdown.clone()).await?);
    }
    let backends = Backends::connect(&tracker_settings.common).await?;
    let tracker = gomark_pipeline_tracker::start(tracker_settings, backends, shutdown.clone()).await?;
    let gateway_common = common()?;
    let backends = Backends::connect(&gateway_common).await?;
    let listener = tokio::net::TcpListener::bind(loopback(0)).await?;
    let webhook_url = format!("http://{}/webhooks/hubspot", listener.local_addr()?);
    let secret = format!("bench-secret-{token}");
    let gateway = gomark_gateway::start_gateway_on(
        listener,
        gomark_gateway::Settings {
            server: gateway_common.server.clone(),
            gateway: gomark_gateway::GatewaySettings {
                http_addr: loopback(0),
                orchestrator_url: format!("http://{}", orchestrator.grpc_addr),
                hubspot_sync_url: format!("http://{}", sync.grpc_addr),
                pipeline_tracker_url: format!("http://{}", tracker.grpc_addr),
                ..Default::default()
            },
            auth: gomark_gateway::AuthSettings {
                rate_limit_per_minute: 1_000_000,
                hubspot_webhook_secret: Some(Secret::new(secret.clone())),
                hubspot_webhook_url: webhook_url.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
        backends.db,
        backends.cache,
        shutdown.clone(),
    )
    .await?;
    sim.configure_webhooks(WebhookConfig {
        target_url: webhook_url,
        client_secret: secret,
        batch_size: 100,
        batch_delay: webhook_delay,
        ..WebhookConfig::default()
    });
    let key = gateway.bootstrap_admin_key.clone().context("fresh gateway schema")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let api = Api { http, base: format!("http://{}", gateway.http_addr), key };
    let nats = std::sync::Arc::new(gomark_events::nats::NatsBus::connect(&bus).await?);
    let tracker_addr = tracker.grpc_addr;
    let mut services = vec![sync, orchestrator, tracker, gateway.service];
    services.extend(more_trackers);
    let nats_for_stop = nats.clone();
    Ok(Some(Running {
        api,
        tracker: tracker_addr,
        sim,
        bus: nats,
        stop: Box::new(move || {
            Box::pin(async move {
                shutdown.trigger();
                for service in services {
                    service.wait().await?;
                }
                nats_for_stop.delete_stream().await?;
                drop(databases);
                Ok(())
            })
        }),
    }))
}

/// Deals created over `portals` portals, until every one of them came out of the bus as
/// `deal.upserted`.
async fn measure_ingest(running: Running, label: &str, deals: usize, portals: usize) -> Result<String> {
    let Running { api, sim, bus, stop, .. } = running;
    let portals = portals.max(1);
    let mut tokens = Vec::with_capacity(portals);
    for i in 0..portals {
        let token = format!("ingest-token-{i}");
        let portal = 70_001 + i as u64;
        sim.register_portal(&token, portal);
        let body =
            json!({"name": format!("Ingest Co {i}"), "hubspotPortalId": portal.to_string(), "hubspotToken": token});
        api.call(reqwest::Method::POST, "/v1/companies", Some(body)).await?;
        tokens.push(token);
    }
    let mut stream = bus.subscribe(&ConsumerSpec::new("bench.ingest", event_types::DEAL_UPSERTED)).await?;
    // The first webhook pass warms every path; only the second batch of deals is timed.
    let warm = 200;
    sim.create_deals(&tokens[0], warm, "appointmentscheduled", "default");
    for _ in 0..warm {
        let delivery = tokio::time::timeout(Duration::from_secs(60), stream.next()).await?.context("bus closed")??;
        delivery.ack().await?;
    }
    let started = Instant::now();
    for (i, token) in tokens.iter().enumerate() {
        // An even share each; the first portals take the remainder.
        let share = deals / portals + usize::from(i < deals % portals);
        sim.create_deals(token, share, "appointmentscheduled", "default");
    }
    let mut latest = Duration::ZERO;
    for _ in 0..deals {
        let delivery = tokio::time::timeout(Duration::from_secs(120), stream.next()).await?.context("bus closed")??;
        delivery.ack().await?;
        latest = started.elapsed();
    }
    stop().await?;
    let rate = deals as f64 / latest.as_secs_f64();
    Ok(format!("| {label} | {portals} | {deals} | {:.2} s | **{rate:.0} deals/s** |\n", latest.as_secs_f64()))
}

async fn ingest(deals: usize, portals: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut rows = measure_ingest(
        embedded_for_ingest(dir.path(), INGEST_WEBHOOK_DELAY).await?,
        "embedded (SQLite, in-process bus)",
        deals,
        portals,
    )
    .await?;
    match distributed_for_ingest(INGEST_WEBHOOK_DELAY).await? {
        Some(running) => rows.push_str(&measure_ingest(running, "distributed (Postgres, NATS JetStream, Redis)", deals, portals).await?),
        None => rows.push_str("| distributed | – | – | – | not run: set GOMARK_TEST_POSTGRES_URL, GOMARK_TEST_NATS_URL, GOMARK_TEST_REDIS_URL |\n"),
    }
    Ok(rows)
}

/// How long the simulator gathers webhook events before sending a batch.
const INGEST_WEBHOOK_DELAY: Duration = Duration::from_millis(20);
const LATENCY_WEBHOOK_DELAY: Duration = Duration::from_millis(1);

#[path = "../drift_bench.rs"]
mod drift_bench;
#[path = "../footprint_bench.rs"]
mod footprint_bench;
#[path = "../funnel_bench.rs"]
mod funnel_bench;
#[path = "../live_bench.rs"]
mod live_bench;
#[path = "../rollup_bench.rs"]
mod rollup_bench;
#[path = "../startup_bench.rs"]
mod startup_bench;

/// One rollout measured: its table row and the figures compared between sizes.
struct RolloutRun {
    row: String,
    portals: usize,
    wall: Duration,
    calls: usize,
}

/// True for a request of the deal sync (deal reads, lists, searches), not of a rollout.
fn deal_sync_call(r: &hubspot_sim::RecordedRequest) -> bool {
    r.path.contains("/objects/")
}

/// Waits until every company's first full read of its deals (its onboarding) is done.
async fn wait_onboarded(api: &Api, companies: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut pending: Vec<&String> = companies.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let status = api.call(reqwest::Method::GET, &format!("/v1/companies/{id}/hubspot/sync"), None).await?;
            if status["backfillState"].as_str() != Some("done") {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                bail!("{} companies still onboarding after 600 s", pending.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// Where a rollout's wall time goes, from the simulator's log: how long each portal's step
/// held HubSpot (its first call to the end of its last), the gap between a step's read and
/// its write (hubspot-sync's own work), and how many steps were at HubSpot on average.
fn step_timing(requests: &[hubspot_sim::RecordedRequest], latency_ms: u64) -> String {
    let mut by_portal: BTreeMap<u64, Vec<SystemTime>> = BTreeMap::new();
    for r in requests {
        if let Some(portal) = r.portal_id {
            by_portal.entry(portal).or_default().push(r.timestamp);
        }
    }
    let latency = Duration::from_millis(latency_ms);
    let (mut held, mut gaps) = (Vec::new(), Vec::new());
    for times in by_portal.values_mut() {
        times.sort();
        let (first, last) = (times[0], times[times.len() - 1]);
        held.push((last + latency).duration_since(first).unwrap_or_default());
        for pair in times.windows(2) {
            gaps.push(pair[1].duration_since(pair[0] + latency).unwrap_or_default());
        }
    }
    let span = match (requests.iter().map(|r| r.timestamp).min(), requests.iter().map(|r| r.timestamp).max()) {
        (Some(a), Some(b)) => (b + latency).duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let busy: Duration = held.iter().sum();
    held.sort();
    gaps.sort();
    let ms = |v: &[Duration], q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "rollout steps at HubSpot: p50 {:.0} ms, p99 {:.0} ms; between a step's calls p50 {:.1} ms, p99 {:.1} ms; {:.1} steps at HubSpot on average",
        ms(&held, 0.5),
        ms(&held, 0.99),
        ms(&gaps, 0.5),
        ms(&gaps, 0.99),
        busy.as_secs_f64() / span.as_secs_f64().max(0.001)
    )
}

async fn rollout(portals: usize, properties: usize, latency_ms: u64, concurrency: u32) -> Result<RolloutRun> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        rate_limit_per_minute: 1_000_000,
        sim: SimConfig { burst_limit: 100, burst_window: Duration::from_secs(10), ..SimConfig::default() },
        // Drift checks read the same endpoints as a step; the drift bench measures them.
        drift_interval: Duration::from_secs(3600),
        ..EmbeddedOptions::default()
    };
    let (gomark, api) = start(options).await?;
    let mut doc = String::from("baseline:\n  dealProperties:\n");
    for p in 0..properties {
        doc.push_str(&format!("    - {{name: gomark_bench_{p:03}, label: Bench {p}, type: string, fieldType: text, groupName: dealinformation}}\n"));
    }
    doc.push_str("companies:\n");
    eprintln!("registering {portals} companies…");
    let mut ids = Vec::with_capacity(portals);
    for i in 0..portals {
        let id = company(&api, &gomark, &format!("Scale {i}"), &format!("scale-{i}"), 80_000 + i as u64).await?;
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
        ids.push(id);
    }
    api.call(reqwest::Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "bench"}))).await?;
    // The deal sync onboards each new portal (a full read of its deals): that is not the
    // rollout's work, so it is finished, counted apart, and the rollout counted alone.
    eprintln!("waiting for the deal sync to onboard {portals} portals…");
    wait_onboarded(&api, &ids).await?;
    let onboarding = gomark.hubspot_sim.requests().len();
    gomark.hubspot_sim.clear_requests();
    gomark.hubspot_sim.set_latency(Duration::from_millis(latency_ms));
    eprintln!("rolling out…");
    let started = chrono::Utc::now();
    let rollout = api.call(reqwest::Method::POST, "/v1/rollouts", Some(json!({"concurrency": concurrency}))).await?;
    let answered = chrono::Utc::now();
    let finished = wait_rollout(&api, rollout["id"].as_str().context("rollout id")?).await?;
    // Until the rollout's recorded end, not until the poll that saw it (250 ms apart).
    let ended = finished["finishedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
    let wall = (ended - started).to_std().unwrap_or_default();
    let all = gomark.hubspot_sim.requests();
    let (synced, requests): (Vec<_>, Vec<_>) = all.into_iter().partition(deal_sync_call);
    let since = |t: chrono::DateTime<chrono::Utc>| (t - started).to_std().unwrap_or_default().as_secs_f64();
    let first = requests.iter().map(|r| r.timestamp).min().map(chrono::DateTime::<chrono::Utc>::from);
    let last = requests.iter().map(|r| r.timestamp).max().map(chrono::DateTime::<chrono::Utc>::from);
    eprintln!(
        "rollout timeline: answered {:.2} s, first HubSpot call {:.2} s, last {:.2} s, ended {:.2} s",
        since(answered),
        first.map_or(f64::NAN, since),
        last.map_or(f64::NAN, since),
        since(ended)
    );
    eprintln!("{}", step_timing(&requests, latency_ms));
    let writes = requests.iter().filter(|r| r.method != "GET").count();
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
    let row = format!(
        "| {portals} | {properties} | {latency_ms} ms | {concurrency} | {} | {:.2} s | {:.1} s | {:.2}× | {} ({writes} writes, {reads} reads) | {floor_calls} ({floor_writes} writes, {portals} reads) | {:.2}× | {limited} | {max_window} | {onboarding} | {} |\n",
        finished["state"].as_str().unwrap_or("?"),
        wall.as_secs_f64(),
        floor_wall.as_secs_f64(),
        wall.as_secs_f64() / floor_wall.as_secs_f64().max(0.001),
        requests.len(),
        requests.len() as f64 / floor_calls as f64,
        synced.len(),
    );
    Ok(RolloutRun { row, portals, wall, calls: requests.len() })
}

/// One row of the roll-up table and the ratio of one figure between sizes.
fn rollup_row(mode: &str, f: &rollup_bench::Figures) -> String {
    use crate::live_bench::percentile;
    use rollup_bench::ms;
    format!(
        "| {mode} | {} | {} | {:.1} s | {} | {} | **{}** | {} | **{}** | {} | {} | {} | {} | {:.2}× |\n",
        f.companies,
        f.deals,
        f.ingest.as_secs_f64(),
        ms(f.warm),
        f.reads.len(),
        ms(percentile(&f.reads, 50.0)),
        ms(percentile(&f.reads, 90.0)),
        ms(percentile(&f.reads, 99.0)),
        ms(percentile(&f.change_full, 50.0)),
        ms(percentile(&f.change_full, 99.0)),
        ms(percentile(&f.change_tenth, 50.0)),
        ms(percentile(&f.change_tenth, 99.0)),
        percentile(&f.change_full, 50.0).as_secs_f64()
            / percentile(&f.change_tenth, 50.0).as_secs_f64().max(f64::EPSILON),
    )
}

async fn rollup_section(
    heading: &str,
    where_: &str,
    companies: usize,
    deals: usize,
    requests: usize,
    samples: usize,
) -> Result<String> {
    let tenth = (companies / 10).max(1);
    let mut rows = String::new();
    let mut ratios = String::new();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
    let mut runs = vec![("embedded (SQLite, in-process bus)", false)];
    if gomark_testkit::distributed_configured() {
        runs.push(("distributed (Postgres, NATS JetStream, Redis)", true));
    } else {
        rows.push_str("| distributed | – | – | – | – | – | – | – | – | – | – | – | – | not run: set the GOMARK_TEST_* variables |\n");
    }
    for (mode, distributed) in runs {
        let mut figures = Vec::new();
        for n in [companies, tenth] {
            eprintln!("{mode}: {n} companies × {deals} deals");
            let f = if distributed {
                rollup_bench::distributed(n, deals, requests, samples).await?.context("distributed configured")?
            } else {
                rollup_bench::embedded(n, deals, requests, samples).await?
            };
            rows.push_str(&rollup_row(mode, &f));
            figures.push(f);
        }
        if let [big, small] = &figures[..] {
            use crate::live_bench::percentile;
            let _ = writeln!(
                ratios,
                "| {mode} | {:.2}× | {:.2}× | {:.2}× |",
                ratio(percentile(&big.reads, 50.0), percentile(&small.reads, 50.0)),
                ratio(percentile(&big.reads, 99.0), percentile(&small.reads, 99.0)),
                ratio(percentile(&big.change_full, 50.0), percentile(&small.change_full, 50.0)),
            );
        }
    }
    Ok(format!(
        "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- rollup --companies {companies} \
         --deals {deals} --requests {requests} --samples {samples} --out BENCHMARKS.md`.\n\n\
         A fresh pipeline-tracker (its own database, bus and cache; no HubSpot or orchestrator behind it) is fed \
         `deal.upserted` events straight on its bus: {companies} companies × {deals} deals (USD amounts, spread over open, \
         won and lost stages), plus 10 companies with a tenth of the deals; the bench waits until every event is stored \
         (*ingest*). **Roll-up from cache**: `GetPortfolio` over every company (gRPC, first page of 50 rows, totals over \
         all), once to warm the per-company cache (*warm*), then {requests} requests one after another. **One deal \
         change**: a new open deal is published on the bus for one company and timed until `GetPortfolio` of that company \
         counts it (polled every 1 ms): ingest, cache invalidation and recompute of that company. It alternates between \
         companies with the full history ({deals} deals) and with a tenth ({} deals), {samples} changes each; the last \
         column is the ratio of their p50s (1.0× would mean the cost does not depend on history size). The whole run is \
         repeated with a tenth of the companies. Goal: roll-up from cache < 50 ms at 1,000 × 1,000, and one change's \
         cost independent of history size.\n\n\
         | mode | companies | deals each | ingest | warm | reads | p50 | p90 | p99 | change, full history p50 | p99 | change, a tenth p50 | p99 | full / tenth |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n\
         Full size over a tenth of the companies:\n\n\
         | mode | read p50 | read p99 | change (full history) p50 |\n|---|---:|---:|---:|\n{ratios}\n",
        (deals / 10).max(1)
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
    gomark_platform::allocator::configure();
    let args = Args::parse();
    // Quiet by default (the report is the output); `RUST_LOG=warn` shows what the services
    // under test log, on stderr, to find out why a run went wrong.
    let _telemetry = match std::env::var("RUST_LOG") {
        Ok(level) if !level.trim().is_empty() => {
            let settings = gomark_platform::settings::TelemetrySettings {
                log_format: gomark_platform::settings::LogFormat::Pretty,
                log_level: level,
                otlp_endpoint: None,
            };
            Some(gomark_platform::telemetry::init(&settings, "scale")?)
        }
        _ => None,
    };
    let machine = report::Machine::detect();
    let date = report::utc_now();
    let where_ =
        format!("{} on {} CPUs ({}), {}, {}", date, machine.cpus, machine.cpu_model, machine.memory, machine.os);
    let (heading, section) = match args.bench {
        Bench::Ingest { deals, portals } => {
            let row = ingest(deals, portals).await?;
            let heading = "## Deal ingest, webhook to event (issue 4)";
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- ingest --deals {deals} --portals {portals} --out BENCHMARKS.md`.\n\n\
                 Deals are created in simulated portals (an even share each); their webhooks (signed, batches of 100) reach the gateway, hubspot-sync \
                 dedupes them, re-reads the deals in batches of 100 from the simulator and publishes `deal.upserted` through its \
                 outbox; the figure is from the first deal created to the last event received. 200 deals warm the path first.\n\n\
                 | mode | portals | deals | time | rate |\n|---|---:|---:|---:|---:|\n{row}\n\
                 Distributed mode runs when the `GOMARK_TEST_*` variables name a Postgres, NATS and Redis; every service \
                 is on its own schema, all in this process, on the same 2 CPUs as the servers. Before the outbox relay \
                 pipelined its publishes (it waited for one JetStream ack and ran one UPDATE per event), distributed mode \
                 measured 382 deals/s here; the figures move with the machine's load, so compare the modes within a run.\n\n"
            );
            (heading, section)
        }
        Bench::Funnel { events, samples } => {
            let heading = "## Funnels: ingest and live latency (issue 6)";
            let dir = tempfile::tempdir()?;
            let embedded = embedded_for_ingest(dir.path(), LATENCY_WEBHOOK_DELAY).await?;
            let distributed = distributed_for_ingest(LATENCY_WEBHOOK_DELAY).await?;
            let body = funnel_bench::run(events, samples, embedded, distributed).await?;
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- funnel --events {events} \
                 --samples {samples} --out BENCHMARKS.md`.\n\n{body}"
            );
            (heading, section)
        }
        Bench::Live { portals, rate, secs, changes, tracker_replicas } => {
            let heading = "## Live latency at load (issue 17)";
            let small = ((portals / 10).max(1), (rate / 10).max(1));
            let mut rows = String::new();
            let mut seconds = String::new();
            let mut ratios = String::new();
            for (mode, distributed) in [("embedded", false), ("distributed", true)] {
                let mut p99s = Vec::new();
                for (n, r) in [(portals, rate), small] {
                    let dir = tempfile::tempdir()?;
                    let running = if distributed {
                        match distributed_with(LATENCY_WEBHOOK_DELAY, tracker_replicas).await? {
                            Some(running) => running,
                            None => {
                                rows.push_str("| distributed | – | – | – | – | not run: set the GOMARK_TEST_* variables | | | |\n");
                                break;
                            }
                        }
                    } else {
                        embedded_for_ingest(dir.path(), LATENCY_WEBHOOK_DELAY).await?
                    };
                    let replicas = if distributed && tracker_replicas > 1 {
                        format!(", {tracker_replicas} tracker replicas")
                    } else {
                        String::new()
                    };
                    let label = format!("{mode}, {n} portals, {}{replicas}", changes.label());
                    let figures = live_bench::run(&label, running, n, r, secs, changes).await?;
                    rows.push_str(&figures.row);
                    seconds.push_str(&figures.per_second);
                    p99s.push(figures.p99);
                }
                if let [big, small] = p99s[..] {
                    let _ = writeln!(
                        ratios,
                        "| {mode} | {:.2}× |",
                        big.as_secs_f64() / small.as_secs_f64().max(f64::EPSILON)
                    );
                }
            }
            let replicas_arg =
                if tracker_replicas > 1 { format!(" --tracker-replicas {tracker_replicas}") } else { String::new() };
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- live --portals {portals} \
                 --rate {rate} --secs {secs}{replicas_arg} --out BENCHMARKS.md`.\n\n\
                 Deals are changed open-loop at a fixed rate, round-robin over the portals (each portal allows 100 requests \
                 per 10 s), in a burst every 10 ms, and each change is timed from its burst's planned moment until its \
                 company's `WatchFunnel` stream shows it: \
                 the signed webhook, hubspot-sync's dedupe, re-read and outbox, the bus, pipeline-tracker's write and \
                 recompute. The same run is repeated at a tenth of the portals and rate; the ratio of the p99s shows how \
                 cost grows. Goal: p99 ≤ 50 ms at 2,000 changes/s over 200 portals.\n\n\
                 | run | portals | rate | deals | not seen within 60 s | p50 | p90 | p99 | max |\n\
                 |---|---:|---|---:|---:|---:|---:|---:|---:|\n{rows}\n\
                 p99 at full size over p99 at a tenth:\n\n| mode | ratio |\n|---|---:|\n{ratios}\n\
                 Per second of the run (by the second each deal was due):\n\n\
                 | run | second | deals | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n{seconds}\n"
            );
            (heading, section)
        }
        Bench::Drift { portals, edits, interval_secs, window_secs } => {
            let heading = "## Drift detection at scale (issue 17)";
            let interval = Duration::from_secs(interval_secs);
            let window = Duration::from_secs(window_secs);
            let full = drift_bench::run(portals, edits, interval, window).await?;
            let tenth = drift_bench::run((portals / 10).max(1), (edits / 10).max(1), interval, window).await?;
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- drift --portals {portals} \
                 --edits {edits} --interval-secs {interval_secs} --window-secs {window_secs} --out BENCHMARKS.md`, embedded mode.\n\n\
                 A baseline of 5 deal properties is rolled out to every portal; then one property is relabelled by hand \
                 in randomly chosen portals, at random moments within {window_secs} s, and each edit is timed until \
                 `GET /v1/drift` lists its company (polled every 500 ms). HubSpot sends no webhook when a property's \
                 definition changes, so only the scheduled checks (every company once per interval, spread across it) \
                 can notice; the calls are every HubSpot request during the run, per portal, scaled to a day, against \
                 the 250,000 a day a private app may make. Goal: p99 ≤ 60 s within ≤ 5 % of the daily budget.\n\n\
                 | portals | edits | interval | detected | missed | p50 | p99 | max | calls per portal per day | of the daily budget |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{}{}\n\
                 p99 at full size over p99 at a tenth: {:.2}×.\n\n",
                full.row,
                tenth.row,
                full.p99.as_secs_f64() / tenth.p99.as_secs_f64().max(f64::EPSILON)
            );
            (heading, section)
        }
        Bench::Startup { runs } => {
            let heading = "## Start-up, embedded (issue 17)";
            let rows = startup_bench::run(runs).await?;
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- startup --runs {runs} \
                 --out BENCHMARKS.md`.\n\n\
                 Each run times `Embedded::start` until all five services answer SERVING on their gRPC health ports and \
                 the gateway answers `/healthz`: on a fresh data folder (migrations, keys), on a restart of that folder, \
                 and with the demo (SERVING; then until the demo's revisions, rollout, customers and drift are in place, \
                 which happens in the background after SERVING). Goal: ≤ 200 ms to SERVING.\n\n\
                 | case | runs | p50 | p90 | max |\n|---|---:|---:|---:|---:|\n{rows}\n"
            );
            (heading, section)
        }
        Bench::Footprint { settle_secs, samples, gomark } => {
            let heading = "## Idle footprint (issue 17)";
            let gomark = footprint_bench::gomark_binary(gomark)?;
            let binary = format!(
                "`{}` ({:.1} MiB)",
                gomark.display(),
                std::fs::metadata(&gomark).map(|m| m.len()).unwrap_or_default() as f64 / 1048576.0
            );
            let settle = Duration::from_secs(settle_secs);
            let mut rows = footprint_bench::embedded(&gomark, settle, samples).await?;
            match footprint_bench::distributed(&gomark, settle, samples).await? {
                Some(services) => rows.push_str(&services),
                None => {
                    rows.push_str("| distributed | – | – | – | ≤ 25 MiB | not run: set the GOMARK_TEST_* variables |\n")
                }
            }
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo build --release -p gomark && cargo run --release -p gomark-bench \
                 --bin scale -- footprint --settle-secs {settle_secs} --samples {samples} --out BENCHMARKS.md`, \
                 binary {binary}.\n\n\
                 Resident memory at rest, as an operator runs GoMark: `gomark serve` (one \
                 process: SQLite, in-process bus and cache, the simulators), without the demo and with the demo \
                 portfolio loaded (its simulated sales activity off), and `gomark cluster` on Postgres, NATS and \
                 Redis, whose five services run as separate processes (the cluster process itself only holds the \
                 simulators and is not counted). Each is left alone for {settle_secs} s after it answers `/healthz`, \
                 then `VmRSS` is read from `/proc` once a second, {samples} times: the median is reported, and \
                 `VmHWM`, the process's peak since it started (start-up and migrations included). \
                 Goals: services ≤ 25 MiB each, embedded ≤ 60 MiB.\n\n\
                 | mode | process | resident at rest (median) | peak since start | goal | |\n\
                 |---|---|---:|---:|---:|---|\n{rows}\n"
            );
            (heading, section)
        }
        Bench::Rollup { companies, deals, requests, samples } => {
            let heading = "## Portfolio roll-up (issue 19)";
            let section = rollup_section(heading, &where_, companies, deals, requests, samples).await?;
            (heading, section)
        }
        Bench::Rollout { portals, properties, latency_ms, concurrency } => {
            let full = rollout(portals, properties, latency_ms, concurrency).await?;
            let tenth = rollout((portals / 10).max(1), properties, latency_ms, concurrency).await?;
            let per_portal = |r: &RolloutRun| r.wall.as_secs_f64() / r.portals as f64;
            let calls_per_portal = |r: &RolloutRun| r.calls as f64 / r.portals as f64;
            let heading = "## Rollout at scale (issue 5)";
            let section = format!(
                "{heading}\n\nRun {where_} with `cargo run --release -p gomark-bench --bin scale -- rollout --portals {portals} \
                 --properties {properties} --latency-ms {latency_ms} --concurrency {concurrency} --out BENCHMARKS.md`, embedded mode.\n\n\
                 A baseline of {properties} deal properties is rolled out to {portals} simulated portals (and, in the same run, \
                 to a tenth of them), each answering every call after {latency_ms} ms and allowing 100 requests per 10 s. The \
                 portals are registered first and the deal sync's onboarding of each (its full read of the portal's deals) is \
                 waited for; its calls are the onboarding column. The calls are then those the rollout made, from its start \
                 to its end: each step reads the portal's properties (and their validation rules only when one of the declared \
                 properties exists) and writes what is missing (one batch create). The deal sync's own calls during the \
                 rollout (its incremental syncs) are counted apart; drift checks are off (the drift bench measures them).\n\n\
                 The floor is the fewest calls the batch endpoints allow (one read to know what to write, one batch create per \
                 100 properties) and the shortest wall time at this latency and concurrency (two calls per portal, \
                 {concurrency} portals at a time).\n\n\
                 | portals | properties | latency | concurrency | state | wall time | floor wall time | wall / floor | HubSpot calls of the rollout | floor | calls / floor | 429s | most requests in any 10 s window of one portal | onboarding calls before | deal sync calls during |\n\
                 |---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{}{}\n\
                 Per portal, full size over a tenth: wall time {:.2}×, calls {:.2}× (1.00× is linear; a tenth has \
                 fewer portals than the concurrency allows at once for fewer rounds, so its wall per portal is the higher).\n\n",
                full.row,
                tenth.row,
                per_portal(&full) / per_portal(&tenth).max(f64::EPSILON),
                calls_per_portal(&full) / calls_per_portal(&tenth).max(f64::EPSILON),
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

//! The funnel benchmark (issue 6), a part of the `scale` binary:
//!
//! - latency: a deal created in the HubSpot simulator, until a `WatchFunnel` stream shows
//!   it (webhook, hubspot-sync's re-read and outbox, the bus, pipeline-tracker's batch
//!   write, its recompute), one deal at a time;
//! - ingest: a backlog of `deal.upserted` events already on the bus, drained by a freshly
//!   started pipeline-tracker (a backfill), in events/s;
//! - the ceiling: pgbench inserting the same row shape into the same Postgres, one row
//!   per transaction and 500 rows per statement, in the same run.

use super::Running;
use crate::live_bench::percentile;
use anyhow::{Context as _, Result, bail};
use gomark_cache::Cache;
use gomark_events::EventBus;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_platform::settings::ServerSettings;
use gomark_platform::{Caller, Shutdown};
use gomark_proto::events::v1::DealUpserted;
use gomark_proto::pipeline_tracker::v1::GetFunnelRequest;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use gomark_service::{Backends, CommonSettings};
use gomark_storage::{Database, DatabaseSettings};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP_DEALS: usize = 20;
/// One deal per this long: each costs hubspot-sync a re-read, and the portal allows 100
/// requests per 10 s; faster, the budget (rightly) holds the re-reads back.
const DEAL_SPACING: Duration = Duration::from_millis(200);
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(600);
const COMPANIES: usize = 50;
const PGBENCH_SECS: u32 = 10;

pub async fn run(events: usize, samples: usize, embedded: Running, distributed: Option<Running>) -> Result<String> {
    let mut latency_rows = latency("embedded (SQLite, in-process bus)", embedded, samples).await?;
    match distributed {
        Some(running) => {
            latency_rows.push_str(&latency("distributed (Postgres, NATS JetStream, Redis)", running, samples).await?);
        }
        None => latency_rows.push_str("| distributed | – | – | – | – | not run: set the GOMARK_TEST_* variables |\n"),
    }

    let mut ingest_rows = String::new();
    let dir = tempfile::tempdir()?;
    let sqlite = DatabaseSettings {
        url: gomark_platform::settings::Secret::new(format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())),
        schema: "main".into(),
        max_connections: 4,
        acquire_timeout_secs: 10,
    };
    let bus: Arc<dyn EventBus> = Arc::new(gomark_events::memory::MemoryBus::with_retention(events + 100));
    let cache: Arc<dyn Cache> = Arc::new(gomark_cache::MemoryCache::new("bench"));
    let took = backlog(events, sqlite, bus, cache).await?;
    let _ = writeln!(
        ingest_rows,
        "| embedded (SQLite, in-process bus) | {events} | {:.2} s | **{:.0} events/s** |",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let mut ceiling = String::new();
    if let (true, Some(nats), Some(redis)) =
        (gomark_testkit::distributed_configured(), gomark_testkit::nats_url(), gomark_testkit::redis_url())
    {
        let token = gomark_testkit::unique("fbench");
        let settings = gomark_events::BusSettings {
            kind: gomark_events::bus::BusKind::Nats,
            nats_url: nats,
            stream: token.to_uppercase(),
            subject_prefix: token.clone(),
        };
        let nats = Arc::new(gomark_events::nats::NatsBus::connect(&settings).await?);
        let cache: Arc<dyn Cache> = Arc::new(gomark_cache::RedisCache::new(&redis, &token, Duration::from_secs(2))?);
        let database = gomark_testkit::TestDatabase::postgres().context("postgres")?;
        let db = DatabaseSettings { max_connections: 10, ..database.settings.clone() };
        let took = backlog(events, db, nats.clone(), cache).await;
        nats.delete_stream().await?;
        let took = took?;
        let ingested = events as f64 / took.as_secs_f64();
        let _ = writeln!(
            ingest_rows,
            "| distributed (Postgres, NATS JetStream, Redis) | {events} | {:.2} s | **{ingested:.0} events/s** |",
            took.as_secs_f64(),
        );
        for (rows, clients) in [(1, 1), (500, 1), (500, 2)] {
            match pgbench(rows, clients).await {
                Ok(rate) => {
                    let share = 100.0 * ingested / rate;
                    let _ = writeln!(ceiling, "| {rows} | {clients} | {rate:.0} rows/s | {share:.0} % |");
                }
                Err(err) => {
                    let _ = writeln!(ceiling, "| {rows} | {clients} | not measured: {err:#} | |");
                }
            }
        }
    } else {
        ingest_rows.push_str("| distributed | – | – | not run: set the GOMARK_TEST_* variables |\n");
    }

    Ok(format!(
        "**Live latency**: one deal at a time, one every {} ms (within the portal's 100 requests per 10 s), is created in \
         a simulated portal (its webhook batches leave after 1 ms); \
         the time is from that change until a `WatchFunnel` stream on pipeline-tracker shows the deal. It covers the \
         signed webhook to the gateway, hubspot-sync's dedupe and re-read from the simulator, its outbox and relay, \
         the bus, pipeline-tracker's batch write, the cache invalidation and the recompute. {WARMUP_DEALS} deals warm \
         the path first.\n\n\
         | mode | deals timed | p50 | p99 | max | |\n|---|---:|---:|---:|---:|---|\n{latency_rows}\n\
         **Ingest**: {events} `deal.upserted` events ({} deals of {COMPANIES} companies, two versions each) wait on the \
         bus; a freshly started pipeline-tracker drains them (batches of up to 500 events per transaction) until every version is \
         stored.\n\n\
         | mode | events | time | rate |\n|---|---:|---:|---:|\n{ingest_rows}\n\
         **The machine's Postgres insert ceiling**, same run: pgbench inserting rows of the same shape (the \
         `deal_history` columns and primary key) into the same server for {PGBENCH_SECS} s.\n\n\
         | rows per statement | clients | rate | distributed ingest (events/s) as a share of it |\n|---:|---:|---:|---:|\n{ceiling}\n\
         pipeline-tracker writes each batch in one transaction, one batch at a time (`tracker.batch_in_flight`), so \
         the comparable ceiling is the 500-row, 1-client line; for each event it also upserts the read \
         model (one row per deal) and counts the change per company in the same transaction, \
         and it reads its events from NATS and acknowledges them on the same 2 CPUs.\n\n",
        DEAL_SPACING.as_millis(),
        events / 2
    ))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(label: &str, running: Running, samples: usize) -> Result<String> {
    let Running { api, tracker, sim, stop, .. } = running;
    sim.register_portal("funnel-token", 70_101);
    let body = json!({"name": "Funnel Co", "hubspotPortalId": "70101", "hubspotToken": "funnel-token"});
    let company = api.call(reqwest::Method::POST, "/v1/companies", Some(body)).await?;
    let company_id = company["id"].as_str().context("company id")?.to_owned();
    // Signs the caller with this process's key, like the services' own channels.
    let channel = gomark_platform::grpc_client::channel(&format!("http://{tracker}"), Duration::from_secs(10))?;
    let mut client = PipelineTrackerServiceClient::new(channel);
    let watch = GetFunnelRequest { company_id, ..Default::default() };
    let mut stream = client.watch_funnel(Caller::system("bench").request(watch)).await?.into_inner();
    let mut expected =
        tokio::time::timeout(STREAM_TIMEOUT, stream.message()).await??.context("stream ended")?.open_count;
    let mut timings = Vec::with_capacity(samples);
    for i in 0..WARMUP_DEALS + samples {
        let started = Instant::now();
        let next_deal = started + DEAL_SPACING;
        sim.create_deals("funnel-token", 1, "appointmentscheduled", "default");
        expected += 1;
        loop {
            let funnel = tokio::time::timeout(STREAM_TIMEOUT, stream.message())
                .await
                .with_context(|| format!("deal {i} not seen on the stream within {STREAM_TIMEOUT:?}"))??
                .context("stream ended")?;
            if funnel.open_count >= expected {
                break;
            }
        }
        if i >= WARMUP_DEALS {
            timings.push(started.elapsed());
        }
        tokio::time::sleep_until(next_deal.into()).await;
    }
    drop(stream);
    stop().await?;
    timings.sort();
    Ok(format!(
        "| {label} | {samples} | **{}** | **{}** | {} | |\n",
        ms(percentile(&timings, 50.0)),
        ms(percentile(&timings, 99.0)),
        ms(timings.last().copied().unwrap_or_default())
    ))
}

/// `events` deal versions: half as many deals, each created then moved a stage on.
fn deal_events(events: usize) -> Vec<gomark_events::EventEnvelope> {
    let start = gomark_storage::now_ms() - 90 * 86_400_000;
    (0..events)
        .map(|i| {
            let deal = i / 2;
            let company = format!("bench-company-{}", deal % COMPANIES);
            let payload = DealUpserted {
                company_id: company.clone(),
                portal_id: "1".into(),
                deal_id: deal.to_string(),
                name: format!("Deal {deal}"),
                pipeline_id: "default".into(),
                stage_id: if i % 2 == 0 { "appointmentscheduled" } else { "qualifiedtobuy" }.into(),
                amount_money: Some(gomark_proto::common::v1::Money {
                    currency_code: "USD".into(),
                    units: 1_000 + (deal % 97) as i64 * 100,
                    nanos: 0,
                }),
                owner_id: String::new(),
                ..DealUpserted::default()
            }
            .with_times(
                start + 120 * 86_400_000,
                start + (deal as i64 % 1_000) * 60_000 + (i % 2) as i64 * 86_400_000,
                start,
            );
            new_event(&company, event_types::DEAL_UPSERTED, &payload)
        })
        .collect()
}

/// Publishes the backlog, then times a fresh pipeline-tracker storing all of it.
async fn backlog(
    events: usize,
    db: DatabaseSettings,
    bus: Arc<dyn EventBus>,
    cache: Arc<dyn Cache>,
) -> Result<Duration> {
    for chunk in deal_events(events).chunks(1_000) {
        bus.publish_all(chunk).await?;
    }
    let database = Database::connect(&db).await?;
    let settings = standalone_tracker(db);
    let shutdown = Shutdown::new();
    let backends = Backends { db: database.clone(), bus, cache, exclusive: false };
    let started = Instant::now();
    let service = gomark_pipeline_tracker::start(settings, backends, shutdown.clone()).await?;
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deal_history").fetch_one(database.pool()).await?;
        if stored as usize >= events {
            break;
        }
        if started.elapsed() > BACKLOG_TIMEOUT {
            bail!("only {stored} of {events} events stored after {BACKLOG_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    shutdown.trigger();
    service.wait().await?;
    database.close().await;
    Ok(took)
}

/// pgbench inserting `rows` rows of `deal_history`'s shape per transaction: rows/s.
async fn pgbench(rows: usize, clients: u32) -> Result<f64> {
    let url = gomark_testkit::postgres_url().context("no Postgres configured")?;
    let database = gomark_testkit::TestDatabase::postgres().context("postgres")?;
    let db = Database::connect(&database.settings).await?;
    let schema = database.settings.schema.clone();
    sqlx::query(
        "CREATE TABLE bench_rows (company_id TEXT NOT NULL, deal_id TEXT NOT NULL, modified_ms BIGINT NOT NULL, \
         pipeline_id TEXT NOT NULL, stage_id TEXT NOT NULL, amount DOUBLE PRECISION NOT NULL, close_date_ms BIGINT NOT NULL, \
         created_ms BIGINT NOT NULL, deleted BIGINT NOT NULL, PRIMARY KEY (company_id, deal_id, modified_ms))",
    )
    .execute(db.pool())
    .await?;
    db.close().await;
    let script = format!(
        "INSERT INTO \"{schema}\".bench_rows SELECT 'bench-company-' || (random() * 50)::int, md5(random()::text), \
         (random() * 1e12)::bigint, 'default', 'appointmentscheduled', random() * 100000, 0, 0, 0 \
         FROM generate_series(1, {rows}) ON CONFLICT DO NOTHING;\n"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("insert.sql");
    std::fs::write(&path, script)?;
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", &clients.to_string(), "-T", &PGBENCH_SECS.to_string(), "-f"])
        .arg(&path)
        .arg(&url)
        .output()
        .await
        .context("pgbench (Debian's postgresql-client) not found")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or_default());
    }
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))?;
    Ok(tps * rows as f64)
}

/// Settings for a pipeline-tracker on its own, on loopback ports the OS picks: fed deal
/// events straight on its bus, it needs neither the portals nor the configuration.
pub fn standalone_tracker(db: DatabaseSettings) -> gomark_pipeline_tracker::Settings {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    gomark_pipeline_tracker::Settings {
        common: CommonSettings {
            server: ServerSettings {
                grpc_addr: loopback,
                admin_addr: loopback,
                shutdown_grace_secs: 10,
                ..Default::default()
            },
            database: db,
            ..CommonSettings::default()
        },
        tracker: gomark_pipeline_tracker::TrackerSettings {
            hubspot_sync_url: "http://127.0.0.1:9".into(),
            orchestrator_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        },
    }
}

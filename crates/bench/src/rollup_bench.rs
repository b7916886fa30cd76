//! The portfolio roll-up benchmark (issue 19), a part of the `scale` binary:
//!
//! - a pipeline-tracker is fed `companies × deals` `deal.upserted` events straight on its
//!   bus (as the funnel benchmark's backlog), plus a few companies with a tenth of the
//!   deals, and the bench waits until every one is stored;
//! - the roll-up from cache: `GetPortfolio` over every company, warmed once, then timed
//!   request after request;
//! - one deal change: a new deal published on the bus for one company, timed until
//!   `GetPortfolio` of that company counts it (ingest, cache invalidation, recompute), for
//!   companies with the full and with a tenth of the history, so the two can be compared.

use anyhow::{Context as _, Result, bail};
use gomark_cache::Cache;
use gomark_events::EventBus;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_platform::grpc_client::TracedChannel as Channel;
use gomark_platform::settings::Secret;
use gomark_platform::{Caller, Shutdown};
use gomark_proto::common::v1::{Money, PageRequest};
use gomark_proto::events::v1::DealUpserted;
use gomark_proto::pipeline_tracker::v1::GetPortfolioRequest;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use gomark_service::Backends;
use gomark_storage::{Database, DatabaseSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Companies with a tenth of the history, for the one-change comparison.
const SMALL_COMPANIES: usize = 10;
/// Events published before the bench waits for pipeline-tracker to catch up: bounds what
/// the in-process bus must hold.
const PUBLISH_AHEAD: usize = 50_000;
const INGEST_TIMEOUT: Duration = Duration::from_secs(1_800);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between reads while waiting for a change to show.
const POLL: Duration = Duration::from_millis(1);

/// What one run measured.
pub struct Figures {
    /// Companies, deals per company.
    pub companies: usize,
    pub deals: usize,
    pub ingest: Duration,
    pub warm: Duration,
    /// Cached roll-up reads, sorted.
    pub reads: Vec<Duration>,
    /// Deal event to the company's summary counting it, full history then a tenth, sorted.
    pub change_full: Vec<Duration>,
    pub change_tenth: Vec<Duration>,
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the benchmark on a fresh embedded-style pipeline-tracker (SQLite, in-process bus,
/// in-memory cache).
pub async fn embedded(companies: usize, deals: usize, requests: usize, samples: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let db = DatabaseSettings {
        url: Secret::new(format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())),
        schema: "main".into(),
        max_connections: 4,
        acquire_timeout_secs: 10,
    };
    let bus: Arc<dyn EventBus> = Arc::new(gomark_events::memory::MemoryBus::with_retention(4 * PUBLISH_AHEAD));
    let cache: Arc<dyn Cache> = Arc::new(gomark_cache::MemoryCache::new("bench"));
    run(companies, deals, requests, samples, db, bus, cache).await
}

/// The same on Postgres, NATS JetStream and Redis, when the `GOMARK_TEST_*` variables name
/// them.
pub async fn distributed(companies: usize, deals: usize, requests: usize, samples: usize) -> Result<Option<Figures>> {
    let (true, Some(nats), Some(redis)) =
        (gomark_testkit::distributed_configured(), gomark_testkit::nats_url(), gomark_testkit::redis_url())
    else {
        return Ok(None);
    };
    let token = gomark_testkit::unique("rbench");
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
    let figures = run(companies, deals, requests, samples, db, nats.clone(), cache).await;
    nats.delete_stream().await?;
    Ok(Some(figures?))
}

fn company_id(i: usize) -> String {
    format!("rollup-company-{i:04}")
}

fn small_company_id(i: usize) -> String {
    format!("rollup-small-{i:02}")
}

/// One open deal of `company`, created 90 days ago.
fn deal_event(company: &str, deal: &str, n: usize) -> gomark_events::EventEnvelope {
    let now = gomark_storage::now_ms();
    let created = now - 90 * 86_400_000;
    let payload = DealUpserted {
        company_id: company.to_owned(),
        portal_id: "1".into(),
        deal_id: deal.to_owned(),
        name: format!("Deal {deal}"),
        pipeline_id: "default".into(),
        // Spread over the stages so the roll-up has every kind to sum.
        stage_id: ["appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost"][n % 4].into(),
        amount_money: Some(Money { currency_code: "USD".into(), units: 1_000 + (n % 97) as i64 * 100, nanos: 0 }),
        owner_id: String::new(),
        ..DealUpserted::default()
    }
    .with_times(now + 30 * 86_400_000, created + (n as i64 % 1_000) * 60_000, created);
    new_event(company, event_types::DEAL_UPSERTED, &payload)
}

async fn stored(database: &Database) -> Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deal_history").fetch_one(database.pool()).await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Waits until at least `target` deal versions are stored.
async fn wait_stored(database: &Database, target: usize, started: Instant) -> Result<()> {
    loop {
        let n = stored(database).await?;
        if n >= target {
            return Ok(());
        }
        if started.elapsed() > INGEST_TIMEOUT {
            bail!("only {n} of {target} deal events stored after {INGEST_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn portfolio(
    client: &mut PipelineTrackerServiceClient<Channel>,
    company_ids: Vec<String>,
) -> Result<gomark_proto::pipeline_tracker::v1::Portfolio> {
    let req = GetPortfolioRequest {
        company_ids,
        page: Some(PageRequest { page_size: 50, page_token: String::new() }),
        fx_as_of: None,
    };
    Ok(client.get_portfolio(Caller::system("bench").request(req)).await?.into_inner())
}

/// Publishes one new deal of `company` and times it until the company's summary counts it.
async fn one_change(
    client: &mut PipelineTrackerServiceClient<Channel>,
    bus: &Arc<dyn EventBus>,
    company: &str,
    n: usize,
) -> Result<Duration> {
    let before = portfolio(client, vec![company.to_owned()]).await?.totals.map(|t| t.open_count).unwrap_or(0);
    // Stage 0 of `deal_event`: open, so the open count goes up by one.
    let event = deal_event(company, &format!("change-{n}"), 0);
    let started = Instant::now();
    bus.publish_all(std::slice::from_ref(&event)).await?;
    loop {
        let now = portfolio(client, vec![company.to_owned()]).await?.totals.map(|t| t.open_count).unwrap_or(0);
        if now > before {
            return Ok(started.elapsed());
        }
        if started.elapsed() > CHANGE_TIMEOUT {
            bail!("the change to {company} not counted within {CHANGE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn run(
    companies: usize,
    deals: usize,
    requests: usize,
    samples: usize,
    db: DatabaseSettings,
    bus: Arc<dyn EventBus>,
    cache: Arc<dyn Cache>,
) -> Result<Figures> {
    let database = Database::connect(&db).await?;
    let settings = crate::funnel_bench::standalone_tracker(db);
    let shutdown = Shutdown::new();
    let backends = Backends { db: database.clone(), bus: bus.clone(), cache, exclusive: false };
    let service = gomark_pipeline_tracker::start(settings, backends, shutdown.clone()).await?;
    let result = measure(companies, deals, requests, samples, &database, &bus, service.grpc_addr).await;
    shutdown.trigger();
    service.wait().await?;
    database.close().await;
    result
}

async fn measure(
    companies: usize,
    deals: usize,
    requests: usize,
    samples: usize,
    database: &Database,
    bus: &Arc<dyn EventBus>,
    tracker: std::net::SocketAddr,
) -> Result<Figures> {
    // Deal by deal round the companies, so every company grows while the backlog drains.
    let small_deals = (deals / 10).max(1);
    let total = companies * deals + SMALL_COMPANIES * small_deals;
    eprintln!("publishing {total} deal events ({companies} × {deals}, {SMALL_COMPANIES} × {small_deals})…");
    let started = Instant::now();
    let mut published = 0;
    let mut chunk = Vec::with_capacity(1_000);
    for d in 0..deals {
        for c in 0..companies + SMALL_COMPANIES {
            let company = if c < companies {
                company_id(c)
            } else if d < small_deals {
                small_company_id(c - companies)
            } else {
                continue;
            };
            chunk.push(deal_event(&company, &format!("d{d}"), d));
            if chunk.len() == 1_000 {
                bus.publish_all(&std::mem::take(&mut chunk)).await?;
                published += 1_000;
                if published % PUBLISH_AHEAD == 0 {
                    wait_stored(database, published.saturating_sub(PUBLISH_AHEAD), started).await?;
                }
            }
        }
    }
    if !chunk.is_empty() {
        bus.publish_all(&chunk).await?;
    }
    wait_stored(database, total, started).await?;
    let ingest = started.elapsed();
    eprintln!("stored in {:.1} s", ingest.as_secs_f64());

    let channel = gomark_platform::grpc_client::channel(&format!("http://{tracker}"), Duration::from_secs(600))?;
    let mut client = PipelineTrackerServiceClient::new(channel);
    let started = Instant::now();
    let first = portfolio(&mut client, Vec::new()).await?;
    let warm = started.elapsed();
    let expected = (companies + SMALL_COMPANIES) as u64;
    if first.company_count != expected {
        bail!("the roll-up covers {} companies, not {expected}", first.company_count);
    }
    let mut reads = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let p = portfolio(&mut client, Vec::new()).await?;
        reads.push(started.elapsed());
        if p.company_count != expected {
            bail!("a read covered {} companies", p.company_count);
        }
    }
    reads.sort();

    // Alternating sizes, so drift in the machine's load affects both alike.
    let mut change_full = Vec::with_capacity(samples);
    let mut change_tenth = Vec::with_capacity(samples);
    for n in 0..samples {
        let full = company_id(n % companies);
        change_full.push(one_change(&mut client, bus, &full, 2 * n).await?);
        let tenth = small_company_id(n % SMALL_COMPANIES);
        change_tenth.push(one_change(&mut client, bus, &tenth, 2 * n + 1).await?);
    }
    change_full.sort();
    change_tenth.sort();
    Ok(Figures { companies, deals, ingest, warm, reads, change_full, change_tenth })
}

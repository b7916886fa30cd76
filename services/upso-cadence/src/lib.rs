//! upso-cadence: owns everything GoMark does in Upso, the portfolio's outreach platform.
//! It applies the cadences of the desired state (plan, apply, drift), keeps each company's
//! Upso token sealed, and runs the upsell engine: per-company rules score customers from
//! their HubSpot deals, guardrails decide who may be contacted, and the winners are
//! enrolled into the company's upsell cadence, every decision recorded and published.

pub mod cadences;
pub mod credentials;
pub mod deals;
pub mod engine;
mod error;
mod grpc;
pub mod guardrails;
pub mod outreach;
pub mod portfolio;
pub mod rules;
mod settings;
pub mod store;

pub use error::{Error, Result};
pub use settings::{EngineSettings, Settings, UpsoSettings};

use gomark_events::ConsumerSpec;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_proto::upso_cadence::v1::upso_cadence_service_server::UpsoCadenceServiceServer;
use gomark_service::{Backends, RunningService};
use gomark_storage::Migrations;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub const NAME: &str = "upso-cadence";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/upso-cadence/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/upso-cadence/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// Connects the backends the settings describe, then [`start`]s (the binary's entry).
pub async fn start_with_backends(settings: Settings, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    let backends = Backends::connect(&settings.common).await?;
    start(settings, backends, shutdown).await
}

/// Starts upso-cadence: migrations, gRPC, outbox relay, the deal consumer and the engine loop.
pub async fn start(settings: Settings, backends: Backends, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    backends.db.migrate(&MIGRATIONS).await?;
    let vault = Arc::new(credentials::Vault::from_setting(settings.upso.credential_keys.expose())?);
    let store = store::Store::new(backends.db.clone(), vault);
    let client = upso_client::UpsoClient::new(settings.upso.client_config())?;
    let vendor: Arc<dyn outreach::OutreachVendor> = Arc::new(outreach::UpsoVendor::new(client));
    let waker = RelayWaker::default();
    let cadences = cadences::Cadences::new(store.clone(), vendor.clone());
    let engine = engine::Engine::new(store.clone(), vendor.clone(), cadences.clone(), waker.clone());
    let triggers = Arc::new(deals::EngineTriggers::default());

    let listener = gomark_platform::server::bind(settings.common.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let routes = tonic::service::Routes::new(UpsoCadenceServiceServer::new(grpc::UpsoCadenceGrpc {
        store: store.clone(),
        vendor,
        cadences,
        engine: engine.clone(),
    }));
    let grace = settings.common.server.shutdown_grace();
    let reflection = settings.common.server.reflection;
    let sd = shutdown.clone();
    let readiness = service.readiness();
    service.watch_dependencies(backends.dependencies());
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.upso_cadence.v1.UpsoCadenceService"]);
        Ok(serve_grpc(listener, routes, names, readiness, sd, grace, reflection).await?)
    });
    service.spawn_loop(OutboxRelay::new(backends.db.clone(), backends.bus.clone(), waker).run(shutdown.clone()));
    service.spawn_loop(gomark_events::consumer::run_batch_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(deals::CONSUMER, gomark_events::event_types::DEAL_UPSERTED),
        Arc::new(deals::DealEvents { store: store.clone(), triggers: triggers.clone() }),
        gomark_events::consumer::BatchLimits::default(),
        shutdown.clone(),
    ));
    service.spawn_loop(gomark_events::consumer::run_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(deals::DELETIONS_CONSUMER, gomark_events::event_types::DEAL_DELETED),
        Arc::new(deals::DealDeletions { store: store.clone() }),
        shutdown.clone(),
    ));
    service.spawn_loop(run_engine_loop(engine, store, triggers, settings.engine, shutdown));
    Ok(service)
}

/// Runs the engine for companies whose deals changed (after a short debounce, so a burst
/// of events is one run) and for every configured company once per interval.
async fn run_engine_loop(
    engine: engine::Engine,
    store: store::Store,
    triggers: Arc<deals::EngineTriggers>,
    settings: EngineSettings,
    shutdown: Shutdown,
) {
    let interval = (settings.interval_secs > 0).then(|| Duration::from_secs(settings.interval_secs));
    let mut next_scheduled = interval.map(|i| tokio::time::Instant::now() + i);
    // Runs that failed (the database or Upso down) are tried again after a bounded backoff,
    // not only at the next trigger or schedule; the outage is logged once.
    let mut outage = gomark_platform::Outage::new("upsell runs");
    let mut retry_in = RETRY_MIN;
    let mut failed: std::collections::BTreeSet<String> = Default::default();
    loop {
        let retry = async {
            if failed.is_empty() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(retry_in).await;
        };
        let scheduled = async {
            match next_scheduled {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut companies = tokio::select! {
            () = shutdown.wait() => return,
            () = triggers.wait() => {
                tokio::time::sleep(Duration::from_millis(settings.debounce_ms)).await;
                triggers.take()
            }
            () = scheduled => {
                next_scheduled = interval.map(|i| tokio::time::Instant::now() + i);
                match store.companies_with_config().await {
                    Ok(all) => all.into_iter().collect(),
                    Err(err) => {
                        outage.failed(&format!("scheduled run cannot list companies: {err}"));
                        // Retried with the failed runs, instead of an interval later.
                        next_scheduled = Some(tokio::time::Instant::now() + RETRY_MAX);
                        Default::default()
                    }
                }
            }
            () = retry => std::mem::take(&mut failed),
        };
        companies.extend(triggers.take());
        companies.extend(std::mem::take(&mut failed));
        for company_id in companies {
            if shutdown.is_triggered() {
                return;
            }
            // One trace per company's run, with its calls to Upso.
            let span = gomark_platform::telemetry::root_span("upsell run");
            let ran = engine.run(&company_id, false, gomark_storage::now_ms()).instrument(span.clone()).await;
            let _entered = span.enter();
            match ran {
                Ok(_) => outage.ok(),
                Err(err) => {
                    tracing::debug!(company_id = %company_id, error = %err, "upsell engine run failed");
                    outage.failed(&format!("company {company_id}: {err}"));
                    failed.insert(company_id);
                }
            }
        }
        retry_in = if failed.is_empty() { RETRY_MIN } else { (retry_in * 2).min(RETRY_MAX) };
    }
}

/// Bounds of the backoff between retries of failed upsell runs.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

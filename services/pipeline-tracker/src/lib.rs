//! pipeline-tracker: turns deal events into live sales funnels per company and a
//! portfolio roll-up, and streams them as they change.
//!
//! - [`ingest`]: deal events, stored a batch at a time, in any order, exactly once in effect.
//! - [`funnel`]: the arithmetic (funnel, time travel, waterfall, periods), pure.
//! - [`portfolio`]: canonical stages and the roll-up; [`stage_config`] reads the mapping
//!   from the desired-state configuration.
//! - [`kpi`]: metrics under the configured definitions, and benchmarks across companies.
//! - [`tracker`]: the cached read side; [`grpc`]: the contract, with watch streams;
//!   [`replicas`]: each replica tells the others what it stored.

pub mod catalog;
mod error;
pub mod funnel;
mod grpc;
pub mod ingest;
pub mod kpi;
pub mod live;
pub mod portfolio;
pub mod replicas;
mod rollup;
mod settings;
pub mod stage_config;
pub mod store;
pub mod tracker;

pub use error::{Error, Result};
pub use settings::{Settings, TrackerSettings};

use gomark_events::ConsumerSpec;
use gomark_events::consumer::{BatchLimits, run_batch_consumer, run_consumer};
use gomark_events::event_types;
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_server::PipelineTrackerServiceServer;
use gomark_service::{Backends, RunningService};
use gomark_storage::Migrations;
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "pipeline-tracker";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/pipeline-tracker/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/pipeline-tracker/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// Starts pipeline-tracker: migrations, the deal and company consumers, the stage-mapping
/// refresher and gRPC.
pub async fn start(settings: Settings, backends: Backends, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    backends.db.migrate(&MIGRATIONS).await?;
    let t = &settings.tracker;
    let hubspot_sync = gomark_platform::grpc_client::channel(&t.hubspot_sync_url, t.call_timeout())?;
    let orchestrator = gomark_platform::grpc_client::channel(&t.orchestrator_url, t.call_timeout())?;
    let store = store::Store::new(backends.db.clone());
    let catalog = catalog::Catalog::new(store.clone(), Some(hubspot_sync), Duration::from_secs(t.stage_refresh_secs));
    let tracker = Arc::new(
        tracker::Tracker::new(
            store,
            catalog,
            backends.cache.clone(),
            Duration::from_secs(settings.common.cache.ttl_secs),
        )
        .with_replicas(replicas::Replicas::new(backends.bus.clone())),
    );

    let listener = gomark_platform::server::bind(settings.common.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let grpc =
        grpc::PipelineTrackerGrpc::new(tracker.clone(), Duration::from_millis(t.watch_poll_ms), shutdown.clone());
    let routes = tonic::service::Routes::new(PipelineTrackerServiceServer::new(grpc));
    let grace = settings.common.server.shutdown_grace();
    let reflection = settings.common.server.reflection;
    let sd = shutdown.clone();
    let readiness = service.readiness();
    service.watch_dependencies(backends.dependencies());
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.pipeline_tracker.v1.PipelineTrackerService"]);
        Ok(serve_grpc(listener, routes, names, readiness, sd, grace, reflection).await?)
    });

    let limits = BatchLimits {
        max_events: t.batch_max_events,
        linger: Duration::from_millis(t.batch_linger_ms),
        in_flight: t.batch_in_flight,
    };
    for (durable, event_type) in [
        (ingest::DEALS_UPSERTED_CONSUMER, event_types::DEAL_UPSERTED),
        (ingest::DEALS_DELETED_CONSUMER, event_types::DEAL_DELETED),
    ] {
        service.spawn_loop(run_batch_consumer(
            backends.bus.clone(),
            ConsumerSpec::new(durable, event_type),
            Arc::new(ingest::DealEvents { tracker: tracker.clone() }),
            limits,
            shutdown.clone(),
        ));
    }
    service.spawn_loop(run_batch_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(ingest::DEALS_MOVED_CONSUMER, event_types::DEAL_STAGE_CHANGED),
        Arc::new(ingest::DealMoves { tracker: tracker.clone() }),
        limits,
        shutdown.clone(),
    ));
    service.spawn_loop(run_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(ingest::COMPANIES_CONSUMER, event_types::COMPANY_CREATED),
        Arc::new(ingest::CompanyEvents { tracker: tracker.clone() }),
        shutdown.clone(),
    ));
    let stages = Arc::new(stage_config::StageConfig::new(orchestrator, Duration::from_secs(t.config_refresh_secs)));
    service.spawn_loop(run_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(stage_config::CONSUMER, event_types::REVISION_CREATED),
        Arc::new(stage_config::RevisionEvents { config: stages.clone(), tracker: tracker.clone() }),
        shutdown.clone(),
    ));
    service.spawn_loop(replicas::listen(tracker.clone(), shutdown.clone()));
    service.spawn_loop(stages.run(tracker, shutdown));
    Ok(service)
}

//! The orchestrator: the single source of truth for how every portfolio company must be
//! configured. Desired state is one thing, the revisions of the configuration document;
//! every change makes one, with its audit entry. Plans are asked of the services that own
//! the vendors and saved; rollouts apply them company by company; drift compares each
//! portal with the revision last applied to it.

mod companies;
pub mod drift;
mod error;
mod grpc;
mod import;
mod outreach;
mod planning;
mod portal_activity;
mod property_edits;
pub mod revisions;
pub mod rollout;
mod settings;
pub mod store;

pub use companies::{Actor, Companies};
pub use error::{Error, Result};
pub use settings::{OrchestratorSettings, Settings};
pub use store::Store;

use gomark_events::ConsumerSpec;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer;
use gomark_service::{Backends, RunningService};
use gomark_storage::Migrations;
use std::sync::Arc;

pub const NAME: &str = "orchestrator";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/orchestrator/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/orchestrator/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// Starts the orchestrator on the given backends: migrations, gRPC, outbox relay, rollouts
/// and drift watch.
pub async fn start(settings: Settings, backends: Backends, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    backends.db.migrate(&MIGRATIONS).await?;
    let hubspot_sync = gomark_platform::grpc_client::channel(
        &settings.orchestrator.hubspot_sync_url,
        settings.orchestrator.call_timeout(),
    )?;
    // Optional: without upso-cadence, plans and rollouts cover HubSpot only.
    let upso_cadence = match settings.orchestrator.upso_cadence_url.as_str() {
        "" => None,
        url => Some(gomark_platform::grpc_client::channel(url, settings.orchestrator.call_timeout())?),
    };
    let waker = RelayWaker::default();
    let store = Store::new(backends.db.clone());
    let revisions = Arc::new(revisions::Revisions::new(store.clone(), waker.clone()));
    let planner =
        Arc::new(planning::Planner::new(store.clone(), revisions.clone(), hubspot_sync.clone(), upso_cadence.clone()));
    let rollouts = Arc::new(rollout::Rollouts::new(
        store.clone(),
        revisions.clone(),
        hubspot_sync.clone(),
        upso_cadence,
        settings.orchestrator.call_timeout(),
    ));
    let drift = Arc::new(drift::DriftWatch::new(
        store.clone(),
        revisions.clone(),
        planner.clone(),
        rollouts.clone(),
        waker.clone(),
        std::time::Duration::from_secs(settings.orchestrator.drift_interval_secs),
    ));
    if backends.exclusive {
        match rollouts.take_back_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(steps = n, "rollout steps an earlier run left running resume now"),
            Err(err) => tracing::warn!(error = %err, "rollout steps of an earlier run resume when their leases end"),
        }
    }
    let properties = Arc::new(property_edits::PropertyEdits::new(store.clone(), revisions.clone(), rollouts.clone()));
    let companies = Arc::new(Companies::new(store, hubspot_sync, waker.clone()));

    let listener = gomark_platform::server::bind(settings.common.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());

    let routes = tonic::service::Routes::new(OrchestratorServiceServer::new(grpc::OrchestratorGrpc {
        companies,
        properties,
        revisions,
        planner,
        rollouts: rollouts.clone(),
        drift: drift.clone(),
    }));
    let grace = settings.common.server.shutdown_grace();
    let reflection = settings.common.server.reflection;
    let sd = shutdown.clone();
    let readiness = service.readiness();
    service.watch_dependencies(backends.dependencies());
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.orchestrator.v1.OrchestratorService"]);
        Ok(serve_grpc(listener, routes, names, readiness, sd, grace, reflection).await?)
    });
    service.spawn_loop(OutboxRelay::new(backends.db.clone(), backends.bus.clone(), waker).run(shutdown.clone()));
    service.spawn_loop(rollouts.clone().run(shutdown.clone()));
    service.spawn_loop(gomark_events::consumer::run_batch_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(portal_activity::CONSUMER, gomark_events::event_types::DEAL_UPSERTED),
        Arc::new(portal_activity::PortalActivity { drift: drift.clone() }),
        gomark_events::consumer::BatchLimits::default(),
        shutdown.clone(),
    ));
    service.spawn_loop(drift.clone().run(shutdown));
    Ok(service)
}

//! hubspot-sync: the only GoMark service that talks to HubSpot. It keeps each company's
//! portal credentials, makes portals match the desired state the orchestrator requests,
//! and reads back what portals really hold.

mod apply;
mod grpc;
mod portals;
mod settings;

pub use apply::{ApplyChanges, CONSUMER as APPLY_CONSUMER};
pub use portals::Portals;
pub use settings::{HubSpotSettings, Settings};

use gomark_events::ConsumerSpec;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_server::HubspotSyncServiceServer;
use gomark_service::{Backends, RunningService};
use gomark_storage::Migrations;
use std::sync::Arc;

pub const NAME: &str = "hubspot-sync";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/hubspot-sync/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/hubspot-sync/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// Starts hubspot-sync: migrations, gRPC, outbox relay, and the consumer of change requests.
pub async fn start(settings: Settings, backends: Backends, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    backends.db.migrate(&MIGRATIONS).await?;
    let client = hubspot_client::HubSpotClient::new(settings.hubspot.client_config())?;
    let portals = Portals::new(backends.db.clone());
    let waker = RelayWaker::default();

    let listener = gomark_platform::server::bind(settings.common.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let routes = tonic::service::Routes::new(HubspotSyncServiceServer::new(grpc::HubspotSyncGrpc::new(
        portals.clone(),
        client.clone(),
    )));
    let grace = settings.common.server.shutdown_grace();
    let sd = shutdown.clone();
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.hubspot_sync.v1.HubspotSyncService"]);
        Ok(serve_grpc(listener, routes, names, sd, grace).await?)
    });
    service
        .spawn_loop(OutboxRelay::new(backends.db.clone(), backends.bus.clone(), waker.clone()).run(shutdown.clone()));
    let apply = ApplyChanges::new(backends.db.clone(), portals, client, waker);
    service.spawn_loop(gomark_events::consumer::run_consumer(
        backends.bus.clone(),
        ConsumerSpec::new(apply::CONSUMER, gomark_events::event_types::DEAL_PROPERTY_CHANGE_REQUESTED),
        Arc::new(apply),
        shutdown,
    ));
    Ok(service)
}

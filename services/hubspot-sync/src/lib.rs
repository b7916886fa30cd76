//! hubspot-sync: the only GoMark service that talks to HubSpot. It keeps each company's
//! portal credentials and pinned API version, plans and applies each portal's desired
//! configuration (the one planner for HubSpot, API version moves included), syncs deals
//! (webhooks journal first, push webhooks and search as well), and reads back what portals
//! really hold.

pub mod budget;
pub mod converge;
pub mod credentials;
pub mod deals;
mod grpc;
pub mod journal;
pub mod oauth;
pub mod observed;
mod portals;
mod probe;
mod settings;
pub mod sources;
pub mod stage_usage;

pub use deals::{DealSync, DealSyncSettings};
pub use journal::{JournalReader, JournalSettings};
pub use portals::{Portal, Portals};
pub use settings::{HubSpotSettings, Settings};

use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_server::HubspotSyncServiceServer;
use gomark_service::{Backends, RunningService};
use gomark_storage::Migrations;

pub const NAME: &str = "hubspot-sync";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/hubspot-sync/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/hubspot-sync/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// Starts hubspot-sync: migrations, gRPC, outbox relay, deal sync and OAuth refresh.
pub async fn start(settings: Settings, backends: Backends, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    backends.db.migrate(&MIGRATIONS).await?;
    // One budget per portal, shared by every replica through the cache.
    let portal_budget = std::sync::Arc::new(budget::PortalBudget::new(backends.cache.clone()));
    let client =
        hubspot_client::HubSpotClient::new(settings.hubspot.client_config())?.with_budget(portal_budget.clone());
    let vault = std::sync::Arc::new(credentials::Vault::from_setting(settings.hubspot.credential_keys.expose())?);
    let portals = Portals::new(backends.db.clone(), vault).with_default_version(settings.hubspot.api_version());
    let resealed = portals.reseal().await?;
    if resealed > 0 {
        tracing::info!(portals = resealed, "credentials re-sealed with the current key");
    }
    let waker = RelayWaker::default();

    let listener = gomark_platform::server::bind(settings.common.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, listener.local_addr()?, shutdown.clone());
    let sources = sources::Sources::new(backends.db.clone(), settings.hubspot.gomark_app_ids());
    let deal_sync =
        DealSync::new(backends.db.clone(), portals.clone(), client.clone(), waker.clone(), settings.deals.clone())
            .with_sources(sources.clone());
    let journal = journal::JournalReader::new(
        backends.db.clone(),
        portals.clone(),
        client.clone(),
        deal_sync.clone(),
        settings.journal.clone(),
    )
    .with_sources(sources.clone());
    if backends.exclusive {
        match journal.take_back_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(portals = n, "journals an earlier run was reading are read again now"),
            Err(err) => tracing::warn!(error = %err, "journals of an earlier run are read again when their leases end"),
        }
    }
    let routes = tonic::service::Routes::new(HubspotSyncServiceServer::new(
        grpc::HubspotSyncGrpc::new(
            portals.clone(),
            client.clone(),
            deal_sync.clone(),
            portal_budget,
            converge::Converger::new(backends.db.clone(), portals.clone(), client.clone()),
            journal.clone(),
        )
        .with_sources(sources),
    ));
    let grace = settings.common.server.shutdown_grace();
    let reflection = settings.common.server.reflection;
    let sd = shutdown.clone();
    let readiness = service.readiness();
    service.watch_dependencies(backends.dependencies());
    service.spawn("grpc", async move {
        let names = HealthNames(vec!["gomark.hubspot_sync.v1.HubspotSyncService"]);
        Ok(serve_grpc(listener, routes, names, readiness, sd, grace, reflection).await?)
    });
    service
        .spawn_loop(OutboxRelay::new(backends.db.clone(), backends.bus.clone(), waker.clone()).run(shutdown.clone()));
    service.spawn_loop(journal.run(shutdown.clone()));
    service.spawn_loop(deal_sync.run(shutdown.clone()));
    service.spawn_loop(
        oauth::OAuthRefresher {
            portals: portals.clone(),
            client: client.clone(),
            client_id: settings.hubspot.oauth_client_id.clone(),
            client_secret: settings.hubspot.oauth_client_secret.expose().to_owned(),
        }
        .run(shutdown),
    );
    Ok(service)
}

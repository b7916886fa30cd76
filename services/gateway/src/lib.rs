//! The gateway: GoMark's REST API (JSON, problem+json errors) over the services' gRPC
//! contracts. It holds no business logic: it validates the shape of requests, calls a
//! service, and maps the answer.

mod auth;
mod dto;
mod extract;
mod idempotency;
mod limits;
mod problem;
mod recent;
mod routes;
mod settings;

pub use auth::oidc::OidcSettings;
pub use settings::{AuthSettings, GatewaySettings, Settings};

use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, RequestTelemetryLayer, serve_grpc, with_grace};
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gomark_service::{Dependency, RunningService};
use gomark_storage::{Database, Migrations};
use http::{HeaderName, HeaderValue, Method};
use std::net::SocketAddr;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

/// The largest orchestrator answer the gateway reads (tonic's default is 4 MB).
const ORCHESTRATOR_ANSWER_LIMIT: usize = 64 * 1024 * 1024;

pub const NAME: &str = "gateway";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/gateway/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/gateway/sqlite");

pub const MIGRATIONS: Migrations = Migrations { postgres: &POSTGRES_MIGRATIONS, sqlite: &SQLITE_MIGRATIONS };

/// A started gateway: the service plus where its REST API listens.
pub struct Gateway {
    pub service: RunningService,
    pub http_addr: SocketAddr,
    /// The admin key generated on this first start, to show once; None afterwards.
    pub bootstrap_admin_key: Option<String>,
}

/// Headers every response carries unless a route set its own.
fn security_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
        (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
        (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ),
    ]
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::header::IF_MATCH,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([http::header::ETAG, http::header::LOCATION, HeaderName::from_static("x-request-id")]),
    )
}

/// Starts the gateway's REST API and its gRPC health endpoint on the given database and
/// cache.
pub async fn start_gateway(
    settings: Settings,
    db: Database,
    cache: Arc<dyn gomark_cache::Cache>,
    shutdown: Shutdown,
) -> anyhow::Result<Gateway> {
    let http_listener = gomark_platform::server::bind(settings.gateway.http_addr, "REST API").await?;
    start_gateway_on(http_listener, settings, db, cache, shutdown).await
}

/// [`start_gateway`] on a listener the caller bound, for callers that must know the
/// address first (the embedded mode signs webhooks for it).
pub async fn start_gateway_on(
    http_listener: tokio::net::TcpListener,
    settings: Settings,
    db: Database,
    cache: Arc<dyn gomark_cache::Cache>,
    shutdown: Shutdown,
) -> anyhow::Result<Gateway> {
    db.migrate(&MIGRATIONS).await?;
    let db_for_readiness = db.clone();
    let keys = auth::ApiKeys::new(db.clone());
    let bootstrap_admin_key =
        auth::bootstrap_admin(&keys, settings.auth.bootstrap_admin_key.as_ref().map(|k| k.expose())).await?;
    let oidc = settings.auth.oidc.clone().map(auth::oidc::OidcVerifier::new).transpose()?;
    let gw = &settings.gateway;
    let channel = |url: &str| gomark_platform::grpc_client::channel(url, gw.call_timeout());
    let state = routes::AppState::new(routes::Services {
        // A rollout's answer lists every step with what it performed: for 1,000 portals
        // and 50 properties that is ~5 MB, over tonic's 4 MB default.
        orchestrator: OrchestratorServiceClient::new(channel(&gw.orchestrator_url)?)
            .max_decoding_message_size(ORCHESTRATOR_ANSWER_LIMIT),
        upso_cadence: UpsoCadenceServiceClient::new(channel(&gw.upso_cadence_url)?),
        hubspot_sync: gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient::new(
            channel(&gw.hubspot_sync_url)?,
        ),
        pipeline_tracker:
            gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient::new(
                channel(&gw.pipeline_tracker_url)?,
            ),
        auth: Arc::new(auth::Authenticator { keys, oidc }),
        limiter: Arc::new(limits::RateLimiter::new(cache, settings.auth.rate_limit_per_minute)),
        idempotency: idempotency::IdempotencyStore::new(db, gw.request_timeout()),
        webhooks: settings.auth.hubspot_webhook_secret.as_ref().map(|secret| {
            Arc::new(routes::webhooks::WebhookConfig {
                secret: hubspot_client::webhook::WebhookSecret::new(secret.expose()),
                public_url: settings.auth.hubspot_webhook_url.clone(),
            })
        }),
        max_body_bytes: gw.max_body_bytes,
        recent_funnels: recent::RecentAnswers::new(recent::FUNNEL_FRESH_FOR),
    });
    let request_id = http::HeaderName::from_static("x-request-id");
    let mut app = routes::router(state);
    for (name, value) in security_headers() {
        app = app.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    if let Some(cors) = cors(&settings.auth.cors_origins()) {
        // Answers browsers' preflight requests before authentication sees them.
        app = app.layer(cors);
    }
    let app = app
        // Bodies past the limit are refused before they are read.
        .layer(axum::extract::DefaultBodyLimit::max(gw.max_body_bytes))
        // A request never outlives its deadline, whatever a service does.
        .layer(TimeoutLayer::with_status_code(http::StatusCode::GATEWAY_TIMEOUT, gw.request_timeout()))
        // Counts and times requests; continues the caller's trace.
        .layer(RequestTelemetryLayer::http())
        // Every response names its request, for support and log search.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));

    let http_addr = http_listener.local_addr()?;
    let grpc_listener = gomark_platform::server::bind(settings.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, grpc_listener.local_addr()?, shutdown.clone());
    let grace = settings.server.shutdown_grace();
    let reflection = settings.server.reflection;

    let sd = shutdown.clone();
    service.spawn("http", async move {
        // Header-read and idle timeouts: a slow or parked client cannot hold connections.
        let server = gomark_platform::server::serve_http(http_listener, app, sd.clone());
        with_grace(server, sd, grace, "http").await.unwrap_or(Ok(()))?;
        Ok(())
    });
    service.watch_dependencies(vec![Dependency::Database(db_for_readiness)]);
    let readiness = service.readiness();
    service.spawn("grpc", async move {
        let routes = tonic::service::Routes::default();
        Ok(serve_grpc(grpc_listener, routes, HealthNames(vec![]), readiness, shutdown, grace, reflection).await?)
    });
    Ok(Gateway { service, http_addr, bootstrap_admin_key })
}

/// [`start_gateway`] on the database and cache its settings name, shaped for
/// `gomark_service::run_main`.
pub async fn start(settings: Settings, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    let db = Database::connect(&settings.database).await?;
    let cache = gomark_cache::build(&settings.cache)?;
    let gateway = start_gateway(settings, db, cache, shutdown).await?;
    if let Some(key) = &gateway.bootstrap_admin_key {
        // Shown once, on stdout and never in logs: it is the only copy.
        println!("admin api key: {key}");
    }
    tracing::info!(http = %gateway.http_addr, "REST API listening");
    Ok(gateway.service)
}

//! The gateway: GoMark's REST API (JSON, problem+json errors) over the services' gRPC
//! contracts. It holds no business logic: it validates the shape of requests, calls a
//! service, and maps the answer.

mod dto;
mod extract;
mod problem;
mod routes;
mod settings;

pub use settings::{GatewaySettings, Settings};

use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, RequestTelemetryLayer, serve_grpc, with_grace};
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gomark_service::RunningService;
use std::net::SocketAddr;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

pub const NAME: &str = "gateway";

/// A started gateway: the service plus where its REST API listens.
pub struct Gateway {
    pub service: RunningService,
    pub http_addr: SocketAddr,
}

/// Starts the gateway's REST API and its gRPC health endpoint.
pub async fn start_gateway(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Gateway> {
    let gw = &settings.gateway;
    let state = routes::AppState {
        orchestrator: OrchestratorServiceClient::new(gomark_platform::grpc_client::channel(
            &gw.orchestrator_url,
            gw.call_timeout(),
        )?),
        upso_cadence: UpsoCadenceServiceClient::new(gomark_platform::grpc_client::channel(
            &gw.upso_cadence_url,
            gw.call_timeout(),
        )?),
    };
    let request_id = http::HeaderName::from_static("x-request-id");
    let app = routes::router(state)
        // Bodies past the limit are refused before they are read.
        .layer(axum::extract::DefaultBodyLimit::max(gw.max_body_bytes))
        // A request never outlives its deadline, whatever a service does.
        .layer(TimeoutLayer::with_status_code(http::StatusCode::GATEWAY_TIMEOUT, gw.request_timeout()))
        // Counts and times requests; continues the caller's trace.
        .layer(RequestTelemetryLayer::http())
        // Every response names its request, for support and log search.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));

    let http_listener = gomark_platform::server::bind(gw.http_addr, "REST API").await?;
    let http_addr = http_listener.local_addr()?;
    let grpc_listener = gomark_platform::server::bind(settings.server.grpc_addr, "gRPC").await?;
    let mut service = RunningService::new(NAME, grpc_listener.local_addr()?, shutdown.clone());
    let grace = settings.server.shutdown_grace();

    let sd = shutdown.clone();
    service.spawn("http", async move {
        let stop = sd.clone();
        let server = axum::serve(http_listener, app).with_graceful_shutdown(async move { stop.wait().await });
        with_grace(server.into_future(), sd, grace, "http").await.unwrap_or(Ok(()))?;
        Ok(())
    });
    service.spawn("grpc", async move {
        Ok(serve_grpc(grpc_listener, tonic::service::Routes::default(), HealthNames(vec![]), shutdown, grace).await?)
    });
    Ok(Gateway { service, http_addr })
}

/// [`start_gateway`], shaped for `gomark_service::run_main`.
pub async fn start(settings: Settings, shutdown: Shutdown) -> anyhow::Result<RunningService> {
    let gateway = start_gateway(settings, shutdown).await?;
    tracing::info!(http = %gateway.http_addr, "REST API listening");
    Ok(gateway.service)
}

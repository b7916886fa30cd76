//! The REST routes, one module per resource.

pub mod api_keys;
pub mod companies;
pub mod deal_properties;
pub mod legacy;

use crate::auth::Authenticator;
use crate::limits::RateLimiter;
use crate::problem::Problem;
use axum::Router;
use axum::http::StatusCode;
use gomark_platform::grpc_client::TracedChannel;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use std::sync::Arc;

/// What every handler needs: clients of the services behind the gateway, and how to
/// tell who is calling.
#[derive(Clone)]
pub struct AppState {
    pub orchestrator: OrchestratorServiceClient<TracedChannel>,
    pub upso_cadence: UpsoCadenceServiceClient<TracedChannel>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api_keys::routes())
        .merge(companies::routes())
        .merge(deal_properties::routes())
        .merge(legacy::routes())
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { Problem::http(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::http(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        // Every route but the public ones needs a caller; see `auth::PUBLIC_PATHS`.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_caller))
        .with_state(state)
}

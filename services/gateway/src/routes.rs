//! The REST routes, one module per resource. Each route is registered and documented by
//! the same `routes!` call, so the OpenAPI document cannot drift from the router.

pub mod api_keys;
pub mod assets;
pub mod benchmarks;
pub mod companies;
pub mod config;
pub mod dashboard;
pub mod deal_properties;
pub mod docs;
pub mod drift;
pub mod funnels;
pub mod hubspot;
pub mod legacy;
pub mod rollouts;
pub mod suppressions;
pub mod upsell;
pub mod webhooks;

use crate::auth::Authenticator;
use crate::idempotency::IdempotencyStore;
use crate::limits::RateLimiter;
use crate::problem::Problem;
use axum::Router;
use axum::http::StatusCode;
use gomark_platform::grpc_client::TracedChannel;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

/// What every handler needs, behind one `Arc`: axum clones the state for every request,
/// and cloning the four tonic clients each time (each holds a tower `Buffer` sender) was
/// the gateway's largest own cost. Handlers clone a client only when they call it.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Clients of the services behind the gateway, and how to tell who is calling.
pub struct Services {
    pub orchestrator: OrchestratorServiceClient<TracedChannel>,
    pub upso_cadence: UpsoCadenceServiceClient<TracedChannel>,
    pub hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    pub pipeline_tracker: PipelineTrackerServiceClient<TracedChannel>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    pub idempotency: IdempotencyStore,
    pub webhooks: Option<Arc<webhooks::WebhookConfig>>,
    /// Largest request body read, also by the idempotency layer.
    pub max_body_bytes: usize,
    /// Funnels ("now") answered a moment ago, per caller.
    pub recent_funnels: crate::recent::RecentAnswers,
}

/// Every documented route, and the OpenAPI document describing them.
pub fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = declared();
    (router, docs::finish(openapi))
}

/// The routes and the document as the handlers declare them, before [`docs::finish`].
fn declared() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(docs::base())
        .merge(api_keys::routes())
        .merge(companies::routes())
        .merge(config::routes())
        .merge(rollouts::routes())
        .merge(drift::routes())
        .merge(funnels::routes())
        .merge(benchmarks::routes())
        .merge(dashboard::routes())
        .merge(deal_properties::routes())
        .merge(hubspot::routes())
        .merge(upsell::routes())
        .merge(suppressions::routes())
        .merge(legacy::routes())
        .merge(webhooks::routes())
        .merge(docs::routes())
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let (documented, _) = documented();
    documented
        // Swagger UI's files for /docs: served, but not API operations to document.
        .route("/docs/assets/{file}", axum::routing::get(docs::asset))
        // The dashboard's chart library, stylesheet and script: the same, for /dashboard.
        .route("/dashboard/assets/{file}", axum::routing::get(dashboard::asset))
        .fallback(|| async { Problem::http(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::http(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        // POSTs with an Idempotency-Key are answered once and replayed after; needs the caller.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::replay_or_record))
        // Every route but the public ones needs a caller; see `auth::PUBLIC_PATHS`.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_caller))
        .with_state(state)
}

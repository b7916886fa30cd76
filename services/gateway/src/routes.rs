//! The REST routes, one module per resource.

pub mod companies;
pub mod deal_properties;
pub mod legacy;

use crate::problem::Problem;
use axum::Router;
use axum::http::StatusCode;
use gomark_platform::grpc_client::TracedChannel;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;

/// What every handler needs: clients of the services behind the gateway.
#[derive(Clone)]
pub struct AppState {
    pub orchestrator: OrchestratorServiceClient<TracedChannel>,
    pub upso_cadence: UpsoCadenceServiceClient<TracedChannel>,
}

/// Until API keys exist every caller is anonymous; the services still record who acted.
const ACTOR: &str = "api:anonymous";

/// A gRPC request carrying the acting caller.
pub fn call<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("x-gomark-actor", tonic::metadata::MetadataValue::from_static(ACTOR));
    req
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(companies::routes())
        .merge(deal_properties::routes())
        .merge(legacy::routes())
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { Problem::http(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::http(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .with_state(state)
}

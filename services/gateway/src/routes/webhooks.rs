//! `POST /webhooks/hubspot`: HubSpot's batched webhook events, accepted only with a valid,
//! fresh v3 signature over the public URL HubSpot called. No bearer token: the signature
//! is the authentication.

use super::AppState;
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use gomark_platform::ErrorKind;
use hubspot_client::webhook::{self, SignedRequest, VerifyOptions, WebhookSecret};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The HubSpot app's client secret and the URL it signs.
pub struct WebhookConfig {
    pub secret: WebhookSecret,
    pub public_url: String,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(hubspot))
}

#[derive(Debug, Serialize, ToSchema)]
struct Accepted {
    /// Events in the batch.
    accepted: usize,
}

/// Receives a batch of HubSpot webhook events (a JSON array), signed with
/// `X-HubSpot-Signature-v3`. Answers fast; events are hints to re-read, never applied as is.
#[utoipa::path(post, path = "/webhooks/hubspot", tag = "webhooks", security(()),
    params(("x-hubspot-signature-v3" = String, Header, description = "base64 HMAC-SHA256 of method + URL + body + timestamp"),
        ("x-hubspot-request-timestamp" = String, Header, description = "Epoch milliseconds; older than 5 minutes is refused")),
    request_body(content = Vec<Object>, content_type = "application/json"),
    responses((status = 202, description = "Accepted", body = Accepted)))]
async fn hubspot(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let Some(config) = &s.webhooks else {
        return Err(Problem::new(
            ErrorKind::Unauthenticated,
            "webhook signatures cannot be checked: no HubSpot secret is configured",
        ));
    };
    let request = SignedRequest { method: "POST", uri: &config.public_url, body: &body, headers: &headers };
    if let Err(err) = webhook::verify(&config.secret, &request, gomark_storage::now_ms(), &VerifyOptions::default()) {
        tracing::warn!(reason = %err, "webhook refused");
        return Err(Problem::new(ErrorKind::Unauthenticated, format!("webhook signature refused: {err}")));
    }
    let events = webhook::parse_batch(&body)
        .map_err(|e| Problem::invalid("body", format!("not a batch of HubSpot events: {e}")))?;
    metrics::counter!("hubspot_webhook_events_total").increment(events.len() as u64);
    tracing::info!(events = events.len(), "hubspot webhook accepted");
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: events.len() })))
}

//! `POST /webhooks/hubspot`: HubSpot's batched webhook events, accepted only with a valid,
//! fresh v3 signature over the public URL HubSpot called. No bearer token: the signature
//! is the authentication.

use super::AppState;
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use gomark_platform::{Caller, ErrorKind};
use gomark_proto::hubspot_sync::v1::{IngestWebhookEventsRequest, WebhookEvent};
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
    /// Events taken for processing.
    accepted: u32,
    /// Events seen before (HubSpot redelivers), ignored.
    duplicates: u32,
    /// Events of portals GoMark does not manage, ignored.
    unknown_portal: u32,
}

/// Receives a batch of HubSpot webhook events (a JSON array), signed with
/// `X-HubSpot-Signature-v3`. Answers fast; events are hints to re-read, never applied as is.
#[utoipa::path(post, path = "/webhooks/hubspot", operation_id = "receiveHubspotWebhook", tag = "webhooks", security(()),
    params(("x-hubspot-signature-v3" = String, Header, description = "base64 HMAC-SHA256 of method + URL + body + timestamp"),
        ("x-hubspot-request-timestamp" = String, Header, description = "Epoch milliseconds; older than 5 minutes is refused")),
    request_body(content = Vec<Object>, content_type = "application/json"),
    responses((status = 202, description = "Accepted", body = Accepted), (status = 401, description = "The signature is missing, wrong or stale")))]
async fn hubspot(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    // An oversized body is refused as problem+json like every other error, not axum's text.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::http(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large"),
        status => Problem::http(status, "the request body could not be read"),
    })?;
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
    let request = IngestWebhookEventsRequest {
        events: events
            .into_iter()
            .map(|e| WebhookEvent {
                event_id: e.event_id,
                subscription_id: e.subscription_id,
                portal_id: e.portal_id,
                app_id: e.app_id,
                occurred_time: gomark_proto::time::timestamp_opt(e.occurred_at),
                subscription_type: e.subscription_type,
                attempt_number: e.attempt_number,
                object_id: e.object_id.unwrap_or_default(),
                property_name: e.property_name.unwrap_or_default(),
                property_value: e.property_value.unwrap_or_default(),
                change_source: e.change_source.unwrap_or_default(),
                source_id: e.source_id.unwrap_or_default(),
            })
            .collect(),
    };
    // If hubspot-sync cannot take them, the 503 makes HubSpot deliver the batch again.
    let done = s
        .hubspot_sync
        .clone()
        .ingest_webhook_events(Caller::system("gateway-webhooks").request(request))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted { accepted: done.accepted, duplicates: done.duplicates, unknown_portal: done.unknown_portal }),
    ))
}

//! Push-webhook management for the simulated app, at `/webhooks/v3/{appId}/…`,
//! `/webhooks/2026-03/{appId}/…` and `/app-webhooks/2026-09/{appId}/…` (developer auth:
//! `?hapikey=` or any bearer token; `appId` must be the simulator's app id, else 404):
//!
//! - `GET|PUT|DELETE …/settings`: PUT `{"targetUrl", "throttling": {"maxConcurrentRequests", "period"?}}`
//!   starts delivering every portal's deal events to `targetUrl`, signed (v3) with the app's
//!   client secret; DELETE stops delivery. Answers `{"targetUrl", "throttling", "createdAt", "updatedAt"}`.
//! - `GET|POST …/subscriptions`, `GET|PATCH|DELETE …/subscriptions/{id}`,
//!   `POST …/subscriptions/batch/update`: stored and listed (`{"id", "eventType",
//!   "propertyName"?, "active", "createdAt", "updatedAt"}`); delivery does not filter on them.
//!
//! Not behind the portal gate: no rate limit, not in the request log.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, batch_response, parse, parse_value};
use crate::error::ApiError;
use crate::model::now_timestamp;
use crate::{HubSpotSim, WebhookConfig, lock};

pub(super) fn routes(sim: HubSpotSim) -> Router {
    let mut router = Router::new();
    for base in ["/webhooks/v3/{app_id}", "/webhooks/2026-03/{app_id}", "/app-webhooks/2026-09/{app_id}"] {
        router = router
            .route(&format!("{base}/settings"), get(get_settings).put(put_settings).delete(delete_settings))
            .route(&format!("{base}/subscriptions"), get(list_subscriptions).post(create_subscription))
            .route(&format!("{base}/subscriptions/batch/update"), post(batch_update))
            .route(
                &format!("{base}/subscriptions/{{id}}"),
                get(get_subscription).patch(patch_subscription).delete(delete_subscription),
            );
    }
    router.with_state(sim)
}

#[derive(Debug, Default, Deserialize)]
struct DevAuth {
    hapikey: Option<String>,
}

/// Developer auth and the app id.
fn check(sim: &HubSpotSim, headers: &HeaderMap, auth: &DevAuth, app_id: &str) -> ApiResult<()> {
    if auth.hapikey.as_deref().is_none_or(str::is_empty) && crate::gate::bearer_token(headers).is_none() {
        return Err(ApiError::unauthenticated());
    }
    if app_id.trim().parse::<u64>().ok() != Some(sim.app_id()) {
        return Err(ApiError::not_found(format!("No app {app_id}")).with_context("appId", vec![app_id.to_owned()]));
    }
    Ok(())
}

async fn get_settings(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
) -> ApiResult<Json<Value>> {
    check(&sim, &headers, &auth, &app_id)?;
    let admin = lock(&sim.inner.journal_admin);
    admin.push_settings.clone().map(Json).ok_or_else(|| ApiError::not_found("No webhook settings for this app"))
}

async fn put_settings(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check(&sim, &headers, &auth, &app_id)?;
    let input = parse_value(&body)?;
    let target = input["targetUrl"].as_str().filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let target = target.ok_or_else(|| ApiError::validation("'targetUrl' is required and must be an http(s) URL"))?;
    if input["throttling"]["maxConcurrentRequests"].as_u64().is_none() {
        return Err(ApiError::validation("'throttling.maxConcurrentRequests' is required"));
    }
    sim.configure_webhooks(WebhookConfig {
        target_url: target.to_owned(),
        client_secret: sim.inner.app.client_secret.clone(),
        app_id: sim.app_id(),
        ..WebhookConfig::default()
    });
    let now = now_timestamp();
    let mut admin = lock(&sim.inner.journal_admin);
    let created = admin.push_settings.as_ref().and_then(|s| s["createdAt"].as_str().map(str::to_owned));
    let settings = json!({
        "targetUrl": target,
        "throttling": input["throttling"],
        "createdAt": created.unwrap_or_else(|| now.clone()),
        "updatedAt": now,
    });
    admin.push_settings = Some(settings.clone());
    Ok(Json(settings))
}

async fn delete_settings(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
) -> ApiResult<StatusCode> {
    check(&sim, &headers, &auth, &app_id)?;
    sim.stop_webhooks();
    lock(&sim.inner.journal_admin).push_settings = None;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_subscriptions(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
) -> ApiResult<Json<Value>> {
    check(&sim, &headers, &auth, &app_id)?;
    let admin = lock(&sim.inner.journal_admin);
    Ok(Json(json!({ "results": admin.push_subscriptions.values().collect::<Vec<_>>() })))
}

async fn create_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check(&sim, &headers, &auth, &app_id)?;
    let input = parse_value(&body)?;
    let event_type = input["eventType"].as_str().ok_or_else(|| ApiError::validation("'eventType' is required"))?;
    let mut admin = lock(&sim.inner.journal_admin);
    admin.next_push_subscription += 1;
    let id = admin.next_push_subscription;
    let now = now_timestamp();
    let mut subscription = json!({
        "id": id.to_string(),
        "eventType": event_type,
        "active": input["active"].as_bool().unwrap_or(false),
        "createdAt": now,
        "updatedAt": now,
    });
    if let Some(name) = input["propertyName"].as_str() {
        subscription["propertyName"] = json!(name);
    }
    admin.push_subscriptions.insert(id, subscription.clone());
    Ok((StatusCode::CREATED, Json(subscription)).into_response())
}

fn subscription_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Subscription {id} not found")).with_context("id", vec![id.to_owned()])
}

async fn get_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path((app_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check(&sim, &headers, &auth, &app_id)?;
    let admin = lock(&sim.inner.journal_admin);
    let found = id.parse::<u64>().ok().and_then(|n| admin.push_subscriptions.get(&n)).cloned();
    found.map(Json).ok_or_else(|| subscription_not_found(&id))
}

#[derive(Debug, Deserialize)]
struct ActiveInput {
    active: bool,
}

fn set_active(sim: &HubSpotSim, id: &str, active: bool) -> ApiResult<Value> {
    let mut admin = lock(&sim.inner.journal_admin);
    let subscription = id
        .parse::<u64>()
        .ok()
        .and_then(|n| admin.push_subscriptions.get_mut(&n))
        .ok_or_else(|| subscription_not_found(id))?;
    subscription["active"] = json!(active);
    subscription["updatedAt"] = json!(now_timestamp());
    Ok(subscription.clone())
}

async fn patch_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path((app_id, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check(&sim, &headers, &auth, &app_id)?;
    let input: ActiveInput = parse(&body)?;
    set_active(&sim, &id, input.active).map(Json)
}

async fn delete_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path((app_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check(&sim, &headers, &auth, &app_id)?;
    let mut admin = lock(&sim.inner.journal_admin);
    match id.parse::<u64>().ok().and_then(|n| admin.push_subscriptions.remove(&n)) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(subscription_not_found(&id)),
    }
}

#[derive(Debug, Deserialize)]
struct BatchActive {
    inputs: Vec<BatchActiveInput>,
}

#[derive(Debug, Deserialize)]
struct BatchActiveInput {
    id: Value,
    active: bool,
}

async fn batch_update(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(auth): Query<DevAuth>,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check(&sim, &headers, &auth, &app_id)?;
    let started = now_timestamp();
    let input: BatchActive = parse(&body)?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for entry in input.inputs {
        let id = match &entry.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match set_active(&sim, &id, entry.active) {
            Ok(subscription) => results.push(subscription),
            Err(err) => errors.push(err.batch_entry()),
        }
    }
    Ok(batch_response(results, errors, started, StatusCode::OK))
}

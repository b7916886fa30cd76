//! The HTTP API. A gate in front of every route authenticates the bearer token, applies
//! the account's rolling rate limit and any injected failure, and adds the rate headers.

use crate::error::{ApiError, ApiResult};
use crate::{AccountRef, UpsoSim, lock};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::time::Instant;
use upso_client::*;

pub(crate) fn router(sim: UpsoSim) -> Router {
    Router::new()
        .route("/v1/account", get(account))
        .route("/v1/mailboxes", get(list_mailboxes).post(create_mailbox))
        .route("/v1/cadences", get(list_cadences).post(create_cadence))
        .route("/v1/cadences/{id}", get(get_cadence).put(replace_cadence))
        .route("/v1/cadences/{id}/archive", post(archive_cadence))
        .route("/v1/enrollments", get(list_enrollments).post(enroll))
        .route("/v1/enrollments/{id}", get(get_enrollment))
        .route("/v1/enrollments/{id}/{action}", post(transition))
        .route("/v1/opt-outs", get(list_opt_outs).post(create_opt_out))
        .route("/v1/activities", get(list_activities))
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(sim.clone(), gate))
        // The simulator's own admin routes: no token, no rate limit, not logged.
        .route("/_sim/writes", get(list_writes))
        .route("/_sim/account-id", get(account_id))
        .route("/_sim/accounts", post(open_account))
        .with_state(sim)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WritesQuery {
    account_id: Option<String>,
}

/// `GET /_sim/writes[?accountId=]`: every write received, oldest first.
async fn list_writes(State(sim): State<UpsoSim>, Query(q): Query<WritesQuery>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "results": sim.writes(q.account_id.as_deref()) }))
}

#[derive(Debug, Deserialize)]
struct NewAccount {
    token: String,
    name: String,
}

/// `POST /_sim/accounts` `{"token","name"}`: opens an account for `token` (the same token
/// again: the same account), as signing up with Upso would; answers its id. This is how a
/// company created in embedded mode gets an Upso account to register.
async fn open_account(State(sim): State<UpsoSim>, Json(new): Json<NewAccount>) -> Response {
    let token = new.token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return ApiError::invalid("token", "must be visible ASCII characters, without spaces").into_response();
    }
    if new.name.trim().is_empty() {
        return ApiError::invalid("name", "is required").into_response();
    }
    let id = sim.register_account(token, new.name.trim());
    (StatusCode::CREATED, Json(serde_json::json!({ "accountId": id }))).into_response()
}

/// `GET /_sim/account-id` with `Authorization: Bearer <token>`: the token's account id.
async fn account_id(State(sim): State<UpsoSim>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token.and_then(|t| sim.account(t)) {
        Some(account) => Json(serde_json::json!({ "accountId": lock(&account).account.id })).into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown token").into_response(),
    }
}

async fn gate(State(sim): State<UpsoSim>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(account) = token.and_then(|t| sim.account(t)) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown token").into_response();
    };
    let latency = sim.config().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (limit, window) = (sim.config().rate_limit, sim.config().rate_window);
    let (remaining, refused) = {
        let mut state = lock(&account);
        state.requests += 1;
        let now = Instant::now();
        while state.window.front().is_some_and(|t| now.duration_since(*t) >= window) {
            state.window.pop_front();
        }
        if let Some((n, status)) = state.fail_next {
            state.fail_next = (n > 1).then_some((n - 1, status));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return ApiError::new(status, "internal", "injected failure").into_response();
        }
        if state.window.len() >= limit as usize {
            state.rate_limited += 1;
            let oldest = state.window.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.duration_since(oldest));
            (0, Some(wait))
        } else {
            state.window.push_back(now);
            (limit as usize - state.window.len(), None)
        }
    };
    // A write's body is kept for the write log; reading it here leaves the handler a copy.
    let write = if request.method() != axum::http::Method::GET {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_WRITE_BODY).await else {
            return ApiError::invalid("body", "too large").into_response();
        };
        request = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        Some((request.method().to_string(), request.uri().path().to_owned(), bytes))
    } else {
        None
    };
    let account_id = lock(&account).account.id.clone();
    let mut response = match refused {
        Some(wait) => {
            let mut r =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "rate limit reached").into_response();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        None => {
            request.extensions_mut().insert(account);
            next.run(request).await
        }
    };
    if let Some((method, path, body)) = write {
        let cut = &body[..body.len().min(MAX_LOGGED_BODY)];
        sim.record_write(crate::RecordedWrite {
            account_id,
            method,
            path,
            body: String::from_utf8_lossy(cut).into_owned(),
            status: response.status().as_u16(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        });
    }
    let headers = response.headers_mut();
    for (name, value) in [("x-ratelimit-limit", limit as usize), ("x-ratelimit-remaining", remaining)] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
    response
}

/// Largest write body accepted, and the part of it kept in the write log.
const MAX_WRITE_BODY: usize = 4 * 1024 * 1024;
const MAX_LOGGED_BODY: usize = 8 * 1024;

type Acc = Extension<AccountRef>;

fn list<T>(data: Vec<T>) -> Json<List<T>> {
    Json(List { data })
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("invalid JSON: {e}")))
}

async fn account(Extension(a): Acc) -> Json<Account> {
    Json(lock(&a).account.clone())
}

async fn list_mailboxes(State(sim): State<UpsoSim>, Extension(a): Acc) -> Json<List<Mailbox>> {
    let now = sim.now_ms();
    let a = lock(&a);
    list(a.mailboxes.iter().filter_map(|m| a.mailbox_view(&m.id, now)).collect())
}

async fn create_mailbox(State(sim): State<UpsoSim>, Extension(a): Acc, body: axum::body::Bytes) -> ApiResult<Response> {
    let input: MailboxInput = json_body(&body)?;
    let now = sim.now_ms();
    Ok((StatusCode::CREATED, Json(sim.with(&a, |s| s.add_mailbox(input, now)))).into_response())
}

#[derive(Debug, Deserialize)]
struct CadenceQuery {
    state: Option<CadenceState>,
}

async fn list_cadences(Extension(a): Acc, Query(q): Query<CadenceQuery>) -> Json<List<Cadence>> {
    list(lock(&a).cadences.iter().filter(|c| q.state.is_none_or(|s| c.state == s)).cloned().collect())
}

async fn create_cadence(State(sim): State<UpsoSim>, Extension(a): Acc, body: axum::body::Bytes) -> ApiResult<Response> {
    let input: CadenceInput = json_body(&body)?;
    let now = sim.now_ms();
    let cadence = sim.with(&a, |s| s.create_cadence(input, now))?;
    Ok((StatusCode::CREATED, Json(cadence)).into_response())
}

async fn get_cadence(Extension(a): Acc, Path(id): Path<String>) -> ApiResult<Json<Cadence>> {
    Ok(Json(lock(&a).cadence(&id)?.clone()))
}

async fn replace_cadence(
    State(sim): State<UpsoSim>,
    Extension(a): Acc,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Cadence>> {
    let input: CadenceInput = json_body(&body)?;
    let if_match = match headers.get("if-match").and_then(|v| v.to_str().ok()) {
        Some(v) => Some(
            v.trim_matches('"')
                .parse::<u64>()
                .map_err(|_| ApiError::invalid("If-Match", "must be a cadence version"))?,
        ),
        None => None,
    };
    let now = sim.now_ms();
    Ok(Json(sim.with(&a, |s| s.replace_cadence(&id, input, if_match, "api", now))?))
}

async fn archive_cadence(
    State(sim): State<UpsoSim>,
    Extension(a): Acc,
    Path(id): Path<String>,
) -> ApiResult<Json<Cadence>> {
    let now = sim.now_ms();
    Ok(Json(sim.with(&a, |s| s.archive_cadence(&id, now))?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollmentQuery {
    cadence_id: Option<String>,
    state: Option<EnrollmentState>,
    email: Option<String>,
}

async fn list_enrollments(Extension(a): Acc, Query(q): Query<EnrollmentQuery>) -> Json<List<Enrollment>> {
    let email = q.email.map(|e| e.trim().to_ascii_lowercase());
    list(
        lock(&a)
            .enrollments
            .iter()
            .map(|e| &e.enrollment)
            .filter(|e| q.cadence_id.as_ref().is_none_or(|c| &e.cadence_id == c))
            .filter(|e| q.state.is_none_or(|s| e.state == s))
            .filter(|e| email.as_ref().is_none_or(|m| &e.contact.email == m))
            .cloned()
            .collect(),
    )
}

async fn enroll(State(sim): State<UpsoSim>, Extension(a): Acc, body: axum::body::Bytes) -> ApiResult<Response> {
    let input: EnrollmentInput = json_body(&body)?;
    let now = sim.now_ms();
    let enrollment = sim.with(&a, |s| s.enroll(input, now))?;
    Ok((StatusCode::CREATED, Json(enrollment)).into_response())
}

async fn get_enrollment(Extension(a): Acc, Path(id): Path<String>) -> ApiResult<Json<Enrollment>> {
    let a = lock(&a);
    let i = a.enrollment_index(&id)?;
    Ok(Json(a.enrollments[i].enrollment.clone()))
}

async fn transition(
    State(sim): State<UpsoSim>,
    Extension(a): Acc,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Enrollment>> {
    if !matches!(action.as_str(), "pause" | "resume" | "finish") {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"));
    }
    let now = sim.now_ms();
    Ok(Json(sim.with(&a, |s| s.transition(&id, &action, now))?))
}

async fn list_opt_outs(Extension(a): Acc) -> Json<List<OptOut>> {
    list(lock(&a).opt_outs.values().cloned().collect())
}

async fn create_opt_out(
    State(sim): State<UpsoSim>,
    Extension(a): Acc,
    body: axum::body::Bytes,
) -> ApiResult<Json<OptOut>> {
    let input: OptOutInput = json_body(&body)?;
    let now = sim.now_ms();
    Ok(Json(sim.with(&a, |s| s.opt_out(input, now))?))
}

#[derive(Debug, Deserialize)]
struct ActivityQuery {
    since: Option<String>,
    email: Option<String>,
}

async fn list_activities(Extension(a): Acc, Query(q): Query<ActivityQuery>) -> Json<List<Activity>> {
    list(lock(&a).activities_since(q.since.as_deref(), q.email.as_deref()))
}

async fn list_webhooks(Extension(a): Acc) -> Json<List<Webhook>> {
    list(lock(&a).webhooks.iter().map(|w| w.webhook.clone()).collect())
}

async fn create_webhook(Extension(a): Acc, body: axum::body::Bytes) -> ApiResult<Response> {
    let input: WebhookInput = json_body(&body)?;
    if !(input.url.starts_with("http://") || input.url.starts_with("https://")) {
        return Err(ApiError::invalid("url", "must be an http(s) URL"));
    }
    let mut state = lock(&a);
    let id = format!("whk_{}", state.webhooks.len() + 1);
    let secret = format!("whsec_{:032x}", rand_u128());
    let webhook = Webhook { id, url: input.url, events: input.events, secret: None };
    state.webhooks.push(crate::account::StoredWebhook { webhook: webhook.clone(), secret: secret.clone() });
    Ok((StatusCode::CREATED, Json(Webhook { secret: Some(secret), ..webhook })).into_response())
}

/// Good enough randomness for a simulator's webhook secret, without another dependency.
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let a = h.finish();
    h.write_u64(a);
    (u128::from(a) << 64) | u128::from(h.finish())
}

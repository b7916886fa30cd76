//! The webhooks journal API (2026-03) and the OAuth token endpoint that issues its
//! client-credentials tokens. App-level routes: they are not behind the portal gate (no
//! portal rate limit, not in the request log).
//!
//! Journal (bearer = client-credentials token with `developer.webhooks_journal.read`):
//! - `GET /webhooks-journal/journal/2026-03/earliest|latest` and
//!   `GET /webhooks-journal/journal/2026-03/offset/{offset}/next`: every portal's entries;
//! - `GET /webhooks-journal/journal-local/2026-03/earliest|latest|offset/{offset}/next`
//!   `?installPortalId=<portal>`: one portal's entries (all portals without the parameter).
//!
//! Each answers `200 {"currentOffset": "<uuid>", "expiresAt": "<ISO, url expiry>",
//! "url": "<pre-signed URL>", "installPortalId": <portal>}`; `url` serves the entry's JSON
//! file (a JSON array of events, shape in `events.rs`) without authorisation for 5 minutes.
//! An empty journal answers 404 to earliest/latest; `next` answers **404** for an offset that
//! is unknown or has expired (older than 3 days) and **204** (no body) when nothing newer has
//! been written yet.
//!
//! Subscriptions (`…subscriptions.read` / `.write`): `GET|POST /webhooks-journal/subscriptions/2026-03`,
//! `GET|DELETE /webhooks-journal/subscriptions/2026-03/{id}`. Stored and listed as HubSpot
//! does; the simulator journals every change whatever the subscriptions.
//!
//! Snapshots (`…snapshots.write` / `.read`): `POST /webhooks-journal/snapshots/2026-03/crm`
//! `{"snapshotRequests": [{"portalId", "objectId", "objectTypeId": "0-3", "properties": [..]}]}`
//! → `{"snapshotResponses": [{"portalId", "objectId", "objectTypeId", "snapshotStatusId"}]}`;
//! each snapshot is appended to the portal's journal at once as an `object.snapshot` event with
//! the requested properties (all when empty), and
//! `GET /webhooks-journal/snapshots/2026-03/crm/status/{snapshotStatusId}` answers
//! `{"snapshotStatusId", "status": "SUCCESS"|"FAILED", "portalId", "objectId", "objectTypeId", …}`.
//!
//! OAuth: `POST /oauth/v1/token`, `/oauth/v3/token`, `/oauth/2026-03/token` (form body):
//! `grant_type=client_credentials` (`client_id`, `client_secret`, `scope` space-separated
//! `developer.webhooks_journal.*`, default all) → `{"access_token", "token_type": "bearer",
//! "expires_in": 1800, "token_use": "access_token", "scopes": [..]}`;
//! `grant_type=refresh_token` (`client_id`, `client_secret`, `refresh_token` registered with
//! `HubSpotSim::register_refresh_token`) → the same plus `refresh_token` and `hub_id`.
//! Errors are 400 `{"status": "BAD_CLIENT_ID"|"BAD_REFRESH_TOKEN"|"BAD_GRANT_TYPE"|"BAD_SCOPES", "message", …}`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubspot_client::webhook::{WebhookSecret, sign_v3};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiResult;
use crate::auth::{Credential, Grant, JOURNAL_SCOPES};
use crate::error::ApiError;
use crate::journal::{Entry, Next};
use crate::model::{iso_from_ms, now_ms, now_timestamp};
use crate::source::ChangeSource;
use crate::{HubSpotSim, gate, lock, source};

/// How long a journal file URL stays valid.
const FILE_URL_TTL_MS: i64 = 5 * 60 * 1000;
const READ: &str = "developer.webhooks_journal.read";
const SUBSCRIPTIONS_READ: &str = "developer.webhooks_journal.subscriptions.read";
const SUBSCRIPTIONS_WRITE: &str = "developer.webhooks_journal.subscriptions.write";
const SNAPSHOTS_READ: &str = "developer.webhooks_journal.snapshots.read";
const SNAPSHOTS_WRITE: &str = "developer.webhooks_journal.snapshots.write";

/// App-level state: journal subscriptions, snapshot statuses, and the push-webhook settings
/// and subscriptions of `routes/webhook_settings.rs`.
#[derive(Debug, Default)]
pub(crate) struct AppAdmin {
    subscriptions: BTreeMap<u64, Value>,
    next_subscription: u64,
    snapshots: HashMap<Uuid, Value>,
    pub(super) push_settings: Option<Value>,
    pub(super) push_subscriptions: BTreeMap<u64, Value>,
    pub(super) next_push_subscription: u64,
}

pub(super) fn routes(sim: HubSpotSim) -> Router {
    let mut router = Router::new()
        .route("/webhooks-journal/files/{offset}", get(entry_file))
        .route("/webhooks-journal/subscriptions/2026-03", get(list_subscriptions).post(create_subscription))
        .route("/webhooks-journal/subscriptions/2026-03/{id}", get(get_subscription).delete(delete_subscription))
        .route("/webhooks-journal/snapshots/2026-03/crm", post(create_snapshots))
        .route("/webhooks-journal/snapshots/2026-03/crm/status/{id}", get(snapshot_status));
    for variant in ["journal", "journal-local"] {
        let base = format!("/webhooks-journal/{variant}/2026-03");
        router = router
            .route(&format!("{base}/earliest"), get(earliest))
            .route(&format!("{base}/latest"), get(latest))
            .route(&format!("{base}/offset/{{offset}}/next"), get(next));
    }
    for version in ["v1", "v3", "2026-03"] {
        router = router.route(&format!("/oauth/{version}/token"), post(token));
    }
    router.with_state(sim)
}

/// Requires a client-credentials token carrying `scope`.
pub(super) fn require_app_scope(sim: &HubSpotSim, headers: &HeaderMap, scope: &str) -> ApiResult<()> {
    let token = gate::bearer_token(headers).ok_or_else(ApiError::unauthenticated)?;
    match lock(&sim.inner.auth).resolve(&token, Instant::now()) {
        Credential::App { scopes } if scopes.iter().any(|s| s == scope) => Ok(()),
        Credential::Expired => Err(ApiError::expired_token()),
        _ => Err(ApiError::for_status(
            StatusCode::FORBIDDEN,
            format!("This API requires a client credentials token with the {scope} scope"),
        )
        .with_context("requiredScopes", vec![scope.to_owned()])),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortalQuery {
    install_portal_id: Option<String>,
}

fn portal_filter(query: &PortalQuery) -> ApiResult<Option<u64>> {
    match query.install_portal_id.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| ApiError::validation(format!("Invalid installPortalId '{raw}': must be an integer"))),
    }
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn file_signature(sim: &HubSpotSim, offset: &str, expires_ms: i64) -> String {
    let secret = WebhookSecret::new(sim.inner.app.client_secret.clone());
    sign_v3(&secret, "GET", &format!("/webhooks-journal/files/{offset}"), b"", expires_ms)
}

fn entry_answer(sim: &HubSpotSim, headers: &HeaderMap, entry: &Entry) -> Response {
    let offset = entry.offset.to_string();
    let expires = now_ms() + FILE_URL_TTL_MS;
    let signature = file_signature(sim, &offset, expires);
    let file = format!("{}/webhooks-journal/files/{offset}", base_url(headers));
    let url = reqwest::Url::parse_with_params(&file, &[("expires", expires.to_string()), ("signature", signature)])
        .map_or(file, String::from);
    Json(json!({
        "currentOffset": offset,
        "expiresAt": iso_from_ms(expires),
        "url": url,
        "installPortalId": entry.portal_id,
    }))
    .into_response()
}

fn no_entries() -> ApiError {
    ApiError::not_found("The journal has no entries for this app and portal")
}

async fn earliest(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(query): Query<PortalQuery>,
) -> ApiResult<Response> {
    require_app_scope(&sim, &headers, READ)?;
    let portal = portal_filter(&query)?;
    let mut journal = lock(&sim.inner.journal);
    let entry = journal.earliest(portal, now_ms()).ok_or_else(no_entries)?;
    Ok(entry_answer(&sim, &headers, entry))
}

async fn latest(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Query(query): Query<PortalQuery>,
) -> ApiResult<Response> {
    require_app_scope(&sim, &headers, READ)?;
    let portal = portal_filter(&query)?;
    let mut journal = lock(&sim.inner.journal);
    let entry = journal.latest(portal, now_ms()).ok_or_else(no_entries)?;
    Ok(entry_answer(&sim, &headers, entry))
}

async fn next(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(offset): Path<String>,
    Query(query): Query<PortalQuery>,
) -> ApiResult<Response> {
    require_app_scope(&sim, &headers, READ)?;
    let portal = portal_filter(&query)?;
    let expired = || {
        ApiError::not_found(format!("Offset {offset} does not exist or has expired (entries are kept for 3 days)"))
            .with_context("offset", vec![offset.clone()])
    };
    let parsed = Uuid::parse_str(offset.trim()).map_err(|_| expired())?;
    let mut journal = lock(&sim.inner.journal);
    match journal.next(parsed, portal, now_ms()) {
        Next::Entry(entry) => Ok(entry_answer(&sim, &headers, entry)),
        Next::UpToDate => Ok(StatusCode::NO_CONTENT.into_response()),
        Next::Expired => Err(expired()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// The pre-signed entry file: a JSON array of events.
async fn entry_file(
    State(sim): State<HubSpotSim>,
    Path(offset): Path<String>,
    Query(query): Query<FileQuery>,
) -> ApiResult<Response> {
    let (Some(expires), Some(signature)) = (query.expires, query.signature) else {
        return Err(ApiError::for_status(StatusCode::FORBIDDEN, "Missing URL signature"));
    };
    if signature != file_signature(&sim, &offset, expires) || expires < now_ms() {
        return Err(ApiError::for_status(StatusCode::FORBIDDEN, "The URL signature is invalid or has expired"));
    }
    let parsed = Uuid::parse_str(&offset).map_err(|_| ApiError::not_found("No such journal entry"))?;
    let mut journal = lock(&sim.inner.journal);
    let entry = journal.get(parsed, now_ms()).ok_or_else(|| ApiError::not_found("The journal entry has expired"))?;
    Ok(Json(&entry.events).into_response())
}

// ----- subscriptions ---------------------------------------------------------

async fn list_subscriptions(State(sim): State<HubSpotSim>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    require_app_scope(&sim, &headers, SUBSCRIPTIONS_READ)?;
    let admin = lock(&sim.inner.journal_admin);
    Ok(Json(json!({ "results": admin.subscriptions.values().collect::<Vec<_>>() })))
}

async fn create_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    require_app_scope(&sim, &headers, SUBSCRIPTIONS_WRITE)?;
    let mut input = super::parse_value(&body)?;
    for field in ["subscriptionType", "actions", "objectTypeId"] {
        if input.get(field).is_none_or(Value::is_null) {
            return Err(
                ApiError::validation(format!("'{field}' is required")).with_context("field", vec![field.into()])
            );
        }
    }
    let mut admin = lock(&sim.inner.journal_admin);
    admin.next_subscription += 1;
    let id = admin.next_subscription;
    let now = now_timestamp();
    input["id"] = json!(id);
    input["appId"] = json!(sim.inner.app.id);
    input["createdAt"] = json!(now);
    input["updatedAt"] = json!(now);
    admin.subscriptions.insert(id, input.clone());
    Ok((StatusCode::CREATED, Json(input)).into_response())
}

fn subscription_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Subscription {id} not found")).with_context("id", vec![id.to_owned()])
}

async fn get_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_app_scope(&sim, &headers, SUBSCRIPTIONS_READ)?;
    let admin = lock(&sim.inner.journal_admin);
    let found = id.parse::<u64>().ok().and_then(|n| admin.subscriptions.get(&n)).cloned();
    found.map(Json).ok_or_else(|| subscription_not_found(&id))
}

async fn delete_subscription(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_app_scope(&sim, &headers, SUBSCRIPTIONS_WRITE)?;
    let mut admin = lock(&sim.inner.journal_admin);
    match id.parse::<u64>().ok().and_then(|n| admin.subscriptions.remove(&n)) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(subscription_not_found(&id)),
    }
}

// ----- snapshots -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRequest {
    portal_id: u64,
    object_id: u64,
    object_type_id: String,
    #[serde(default)]
    properties: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotBody {
    snapshot_requests: Vec<SnapshotRequest>,
}

async fn create_snapshots(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    require_app_scope(&sim, &headers, SNAPSHOTS_WRITE)?;
    let body: SnapshotBody = super::parse(&body)?;
    let mut responses = Vec::with_capacity(body.snapshot_requests.len());
    let snapshot_source =
        ChangeSource { change_source: "SNAPSHOT".into(), source_id: Some(sim.inner.app.id.to_string()) };
    for request in body.snapshot_requests {
        let ok = super::DEAL_OBJECT_TYPES.contains(&request.object_type_id.as_str())
            && sim.portal_by_id(request.portal_id).is_some_and(|portal| {
                source::in_thread(snapshot_source.clone(), || {
                    sim.write(&portal, |p| p.snapshot_deal(request.object_id, &request.properties))
                })
            });
        let id = Uuid::new_v4();
        let now = now_timestamp();
        lock(&sim.inner.journal_admin).snapshots.insert(
            id,
            json!({
                "snapshotStatusId": id.to_string(),
                "status": if ok { "SUCCESS" } else { "FAILED" },
                "portalId": request.portal_id,
                "objectId": request.object_id,
                "objectTypeId": request.object_type_id,
                "createdAt": now,
                "completedAt": now,
            }),
        );
        responses.push(json!({
            "portalId": request.portal_id,
            "objectId": request.object_id,
            "objectTypeId": request.object_type_id,
            "snapshotStatusId": id.to_string(),
        }));
    }
    Ok(Json(json!({ "snapshotResponses": responses })))
}

async fn snapshot_status(
    State(sim): State<HubSpotSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_app_scope(&sim, &headers, SNAPSHOTS_READ)?;
    let admin = lock(&sim.inner.journal_admin);
    Uuid::parse_str(&id)
        .ok()
        .and_then(|id| admin.snapshots.get(&id))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("Snapshot status {id} not found")))
}

// ----- OAuth -------------------------------------------------------------------

fn oauth_error(status: &str, message: &str) -> Response {
    let body = json!({
        "status": status,
        "message": message,
        "correlationId": Uuid::new_v4().to_string(),
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn token(State(sim): State<HubSpotSim>, Form(form): Form<HashMap<String, String>>) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let app = &sim.inner.app;
    if field("client_id") != app.client_id || field("client_secret") != app.client_secret {
        return oauth_error("BAD_CLIENT_ID", "missing or unknown client_id / client_secret");
    }
    let now = Instant::now();
    let ttl = crate::auth::ACCESS_TOKEN_TTL.as_secs();
    match field("grant_type") {
        "client_credentials" => {
            let requested: Vec<String> = field("scope").split_whitespace().map(str::to_owned).collect();
            if let Some(bad) = requested.iter().find(|s| !JOURNAL_SCOPES.contains(&s.as_str())) {
                return oauth_error("BAD_SCOPES", &format!("scope {bad} is not available to client credentials"));
            }
            let scopes: Vec<String> =
                if requested.is_empty() { JOURNAL_SCOPES.iter().map(|s| (*s).to_owned()).collect() } else { requested };
            let token = lock(&sim.inner.auth).issue(Grant::App { scopes: scopes.clone() }, now);
            Json(json!({
                "access_token": token,
                "token_type": "bearer",
                "token_use": "access_token",
                "expires_in": ttl,
                "scopes": scopes,
            }))
            .into_response()
        }
        "refresh_token" => {
            let refresh = field("refresh_token");
            let Some(portal_token) = lock(&sim.inner.auth).refresh_target(refresh) else {
                return oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token");
            };
            let hub_id = sim.portal_id_for(&portal_token);
            let token = lock(&sim.inner.auth).issue(Grant::Portal { portal_token }, now);
            Json(json!({
                "access_token": token,
                "refresh_token": refresh,
                "token_type": "bearer",
                "token_use": "access_token",
                "expires_in": ttl,
                "hub_id": hub_id,
            }))
            .into_response()
        }
        other => oauth_error("BAD_GRANT_TYPE", &format!("unsupported grant_type '{other}'")),
    }
}

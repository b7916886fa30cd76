//! HTTP routes: properties (`/crm/v3/properties/…`), pipelines (`/crm/v3/pipelines/…`, in
//! `routes/pipelines.rs`) and deals (`/crm/v3/objects/…`, in `routes/deals.rs`), each also
//! served under the date-versioned paths (`/crm/properties/2026-03/…` etc.).

mod associations;
mod deals;
mod journal;
mod pipeline_rules;
mod pipelines;
mod validations;
mod webhook_settings;

pub(crate) use journal::AppAdmin;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::events::{Action, ChangeKind};
use crate::model::{
    BatchCreate, BatchNames, BatchRead, GroupCreate, GroupUpdate, OptionInput, PropertyCreate, PropertyUpdate,
    now_timestamp,
};
use crate::portal::property_not_found;
use crate::version::ApiVersion;
use crate::{HubSpotSim, PortalRef, gate, lock};

/// Object types accepted as deals.
const DEAL_OBJECT_TYPES: &[&str] = &["deals", "0-3"];

/// Fields a PropertyUpdate may not carry.
const IMMUTABLE_PROPERTY_FIELDS: &[&str] = &["name", "hasUniqueValue"];

pub(crate) fn router(sim: HubSpotSim) -> Router {
    let properties = Router::new()
        .route("/{object_type}", get(list_properties).post(create_property))
        .route("/{object_type}/batch/read", post(batch_read))
        .route("/{object_type}/batch/create", post(batch_create))
        .route("/{object_type}/batch/archive", post(batch_archive))
        .route("/{object_type}/groups", get(list_groups).post(create_group))
        .route("/{object_type}/groups/{group_name}", get(get_group).patch(update_group).delete(archive_group))
        .route("/{object_type}/{name}", get(get_property).patch(update_property).delete(archive_property));
    let pipelines = pipelines::routes();
    let objects = deals::routes().merge(associations::object_routes());
    let association_batches = associations::batch_routes();
    let validations = validations::routes();
    let mut app = Router::new();
    // The Pipeline Rules API is a 2026-09 beta: served there only (older versions' paths
    // fall through to 404, as in HubSpot).
    for path in ["/crm/pipelines-rules/2026-09-beta", "/crm/pipelines-rules/2026-09"] {
        let version = ApiVersion::V2026_09;
        app = app.nest(
            path,
            pipeline_rules::routes()
                .layer(Extension(version))
                .layer(middleware::from_fn_with_state(version, crate::version::layer)),
        );
    }
    // One router per version; the version reaches the handlers as an extension and portal code
    // through `version::current()`.
    for version in ApiVersion::ALL {
        // `/crm/v3/{api}` for v3, `/crm/{api}/{date}` for the date versions.
        let path = |api: &str| match version {
            ApiVersion::V3 => format!("/crm/v3/{api}"),
            dated => format!("/crm/{api}/{}", dated.segment()),
        };
        let versioned = |router: Router| {
            router.layer(Extension(version)).layer(middleware::from_fn_with_state(version, crate::version::layer))
        };
        app = app
            .nest(&path("properties"), versioned(properties.clone()))
            .nest(&path("pipelines"), versioned(pipelines.clone()))
            .nest(&path("objects"), versioned(objects.clone()))
            .nest(&path("property-validations"), versioned(validations.clone()));
        if version != ApiVersion::V3 {
            app = app.nest(&path("associations"), versioned(association_batches.clone()));
        }
    }
    // Associations v4 (numbered like v3, before the date versions).
    let v4 = |router: Router| {
        router
            .layer(Extension(ApiVersion::V3))
            .layer(middleware::from_fn_with_state(ApiVersion::V3, crate::version::layer))
    };
    app = app
        .nest("/crm/v4/objects", v4(associations::object_routes()))
        .nest("/crm/v4/associations", v4(association_batches.clone()))
        .nest("/crm/associations/v4", v4(association_batches));
    let api = app.fallback(unknown_route).layer(middleware::from_fn_with_state(sim.clone(), gate::gate));
    // The simulator's own admin routes: no portal, no rate limit, not logged.
    let admin = Router::new()
        .route("/writes", get(list_writes))
        .route("/portal-id", get(portal_id))
        .route("/service-keys", post(register_service_key))
        .route("/oauth/refresh-tokens", post(register_refresh_token))
        .route("/oauth/expire-access-tokens", post(expire_access_tokens))
        .route("/journal/age", post(age_journal))
        .route("/stats", get(portal_stats))
        .route("/seed-deals", post(seed_deals))
        .with_state(sim.clone());
    Router::new()
        .nest("/_sim", admin)
        .merge(journal::routes(sim.clone()))
        .merge(webhook_settings::routes(sim))
        .merge(api)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WritesQuery {
    portal_id: Option<u64>,
}

/// `GET /_sim/writes[?portalId=]`: every write received, oldest first.
async fn list_writes(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    Query(q): Query<WritesQuery>,
) -> Json<Value> {
    Json(json!({ "results": sim.writes(q.portal_id) }))
}

/// `GET /_sim/portal-id` with `Authorization: Bearer <token>`: the token's portal id (a new
/// token gets its portal now, as on its first request).
async fn portal_id(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    headers: axum::http::HeaderMap,
) -> Response {
    match gate::bearer_token(&headers) {
        Some(token) => {
            // An OAuth access token answers for its portal, like on the API.
            let token = match lock(&sim.inner.auth).resolve(&token, std::time::Instant::now()) {
                crate::auth::Credential::OAuth { portal_token } => portal_token,
                _ => token,
            };
            let id = sim.portal_id_for(&token);
            Json(json!({ "portalId": id, "appId": crate::private_app_id(id) })).into_response()
        }
        None => ApiError::unauthenticated().into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceKeyInput {
    key: String,
    portal_id: u64,
}

/// `POST /_sim/service-keys {"key", "portalId"}`: see [`HubSpotSim::register_service_key`].
async fn register_service_key(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let input: ServiceKeyInput = parse(&body)?;
    sim.register_service_key(&input.key, input.portal_id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshTokenInput {
    refresh_token: String,
    portal_token: String,
}

/// `POST /_sim/oauth/refresh-tokens {"refreshToken", "portalToken"}`: see
/// [`HubSpotSim::register_refresh_token`].
async fn register_refresh_token(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let input: RefreshTokenInput = parse(&body)?;
    sim.register_refresh_token(&input.refresh_token, &input.portal_token);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /_sim/oauth/expire-access-tokens`: every issued access token answers 401 from now on.
async fn expire_access_tokens(axum::extract::State(sim): axum::extract::State<HubSpotSim>) -> StatusCode {
    sim.expire_access_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsQuery {
    portal_id: u64,
}

/// `GET /_sim/stats?portalId=`: `{"rateLimited": <429s answered>, "maxRequestsInWindow": n}`.
async fn portal_stats(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    Query(q): Query<StatsQuery>,
) -> Json<Value> {
    Json(json!({
        "rateLimited": sim.rate_limited_count(q.portal_id),
        "maxRequestsInWindow": sim.max_requests_in_any_window(q.portal_id),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeedInput {
    portal_token: String,
    count: usize,
    #[serde(default = "default_stage")]
    stage: String,
    #[serde(default = "default_pipeline")]
    pipeline: String,
}

fn default_stage() -> String {
    "appointmentscheduled".to_owned()
}

fn default_pipeline() -> String {
    crate::pipelines::DEFAULT_PIPELINE_ID.to_owned()
}

/// `POST /_sim/seed-deals {"portalToken", "count", "stage"?, "pipeline"?}`: creates deals
/// directly (no rate limit), like [`HubSpotSim::create_deals`]; answers `{"ids": [..]}`.
async fn seed_deals(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let input: SeedInput = parse(&body)?;
    if input.count > 100_000 {
        return Err(ApiError::validation("count must be at most 100000"));
    }
    let ids = sim.create_deals(&input.portal_token, input.count, &input.stage, &input.pipeline);
    Ok(Json(json!({ "ids": ids })))
}

#[derive(Debug, Deserialize)]
struct AgeInput {
    seconds: u64,
}

/// `POST /_sim/journal/age {"seconds": N}`: moves every journal entry N seconds into the past.
async fn age_journal(
    axum::extract::State(sim): axum::extract::State<HubSpotSim>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let input: AgeInput = parse(&body)?;
    sim.age_journal(std::time::Duration::from_secs(input.seconds));
    Ok(StatusCode::NO_CONTENT)
}

type ApiResult<T> = Result<T, ApiError>;

fn check_object_type(object_type: &str) -> ApiResult<()> {
    if DEAL_OBJECT_TYPES.contains(&object_type) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "Unable to infer object type from: {object_type} (hubspot-sim only simulates deals)"
        )))
    }
}

fn parse_value(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("Request body is required"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::validation(format!("Invalid input JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::validation("Invalid input JSON: request body must be a JSON object"))
    }
}

fn from_value<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| ApiError::validation(format!("Invalid input JSON: {e}")))
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    from_value(parse_value(body)?)
}

/// A batch answer. Its results are serialized straight from their models (a batch of 100
/// properties through `serde_json::Value` first was the largest cost of a rollout in profiles).
fn batch_response<T: serde::Serialize>(
    results: Vec<T>,
    errors: Vec<Value>,
    started_at: String,
    ok: StatusCode,
) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Batch<T> {
        status: &'static str,
        results: Vec<T>,
        started_at: String,
        completed_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        num_errors: Option<usize>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Value>,
    }
    let status = if errors.is_empty() { ok } else { StatusCode::MULTI_STATUS };
    let num_errors = (!errors.is_empty()).then_some(errors.len());
    let body = Batch { status: "COMPLETE", results, started_at, completed_at: now_timestamp(), num_errors, errors };
    (status, Json(body)).into_response()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Raw query pairs; repeated keys are kept (`properties=a&properties=b`).
type QueryPairs = Query<Vec<(String, String)>>;

/// All values of `key`, comma-separated lists flattened, empties dropped.
fn query_list(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean query parameter, default false. Case-insensitive: the Python client sends
/// `True`/`False`, which HubSpot accepts.
fn query_bool(pairs: &[(String, String)], key: &str) -> ApiResult<bool> {
    Ok(query_bool_opt(pairs, key)?.unwrap_or(false))
}

/// A boolean query parameter, `None` when absent (or empty).
fn query_bool_opt(pairs: &[(String, String)], key: &str) -> ApiResult<Option<bool>> {
    match query_value(pairs, key) {
        None => Ok(None),
        Some("") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::validation(format!("Invalid boolean '{v}' for query parameter '{key}'"))),
    }
}

/// 2026-03 and later require `displayOrder` on every option input.
fn check_option_orders(version: ApiVersion, options: Option<&[OptionInput]>) -> ApiResult<()> {
    if !version.option_display_order_required() {
        return Ok(());
    }
    match options.unwrap_or_default().iter().position(|o| o.display_order.is_none()) {
        Some(index) => Err(ApiError::validation(format!(
            "options[{index}].displayOrder is required (API version {})",
            version.segment()
        ))
        .with_context("options", vec![index.to_string()])),
        None => Ok(()),
    }
}

// ----- properties ------------------------------------------------------------

async fn list_properties(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let results = lock(&portal).list_properties(query_bool(&query, "archived")?);
    Ok(Json(json!({ "results": results })))
}

async fn get_property(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, name)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let property = lock(&portal).get_property(&name, query_bool(&query, "archived")?)?;
    Ok(Json(to_json(&property)))
}

async fn create_property(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let input: PropertyCreate = parse(&body)?;
    check_option_orders(version, input.options.as_deref())?;
    let mut portal = lock(&portal);
    let property = portal.create_property(input)?;
    portal.definition_changed(ChangeKind::PropertyDefinition { action: Action::Created, name: property.name.clone() });
    Ok((StatusCode::CREATED, Json(property)).into_response())
}

async fn update_property(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path((object_type, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let value = parse_value(&body)?;
    if let Some(field) = IMMUTABLE_PROPERTY_FIELDS.iter().find(|f| value.get(**f).is_some()) {
        return Err(ApiError::validation(format!(
            "'{field}' cannot be changed after a property is created and is not allowed in a PropertyUpdate"
        )));
    }
    let update: PropertyUpdate = from_value(value)?;
    check_option_orders(version, update.options.as_deref())?;
    let mut portal = lock(&portal);
    let property = portal.update_property(&name, update)?;
    portal.definition_changed(ChangeKind::PropertyDefinition { action: Action::Updated, name });
    Ok(Json(to_json(&property)))
}

async fn archive_property(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let mut portal = lock(&portal);
    portal.archive_property(&name)?;
    portal.definition_changed(ChangeKind::PropertyDefinition { action: Action::Archived, name });
    Ok(StatusCode::NO_CONTENT)
}

async fn batch_read(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let input: BatchRead = parse(&body)?;
    let portal = lock(&portal);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for entry in input.inputs {
        match portal.get_property(&entry.name, input.archived) {
            Ok(property) => results.push(property),
            Err(_) => errors.push(property_not_found(&entry.name).batch_entry()),
        }
    }
    Ok(batch_response(results, errors, started_at, StatusCode::OK))
}

async fn batch_create(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let input: BatchCreate = parse(&body)?;
    let mut portal = lock(&portal);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for raw in input.inputs {
        let name = raw.get("name").and_then(Value::as_str).map(str::to_owned);
        let created = from_value::<PropertyCreate>(raw)
            .and_then(|c| check_option_orders(version, c.options.as_deref()).map(|()| c))
            .and_then(|c| portal.create_property(c));
        match created {
            Ok(property) => {
                portal.definition_changed(ChangeKind::PropertyDefinition {
                    action: Action::Created,
                    name: property.name.clone(),
                });
                results.push(property);
            }
            Err(mut err) => {
                if err.context.is_none() {
                    if let Some(name) = name {
                        err = err.with_context("name", vec![name]);
                    }
                }
                errors.push(err.batch_entry());
            }
        }
    }
    Ok(batch_response(results, errors, started_at, StatusCode::CREATED))
}

async fn batch_archive(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let input: BatchNames = parse(&body)?;
    let mut portal = lock(&portal);
    for entry in input.inputs {
        // Idempotent: unknown, already archived, protected or in-use names are skipped.
        if portal.archive_property(&entry.name).is_ok() {
            portal.definition_changed(ChangeKind::PropertyDefinition { action: Action::Archived, name: entry.name });
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

// ----- groups ----------------------------------------------------------------

async fn list_groups(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let results = lock(&portal).list_groups(query_bool(&query, "archived")?);
    Ok(Json(json!({ "results": results })))
}

async fn get_group(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, group_name)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let group = lock(&portal).get_group(&group_name, query_bool(&query, "archived")?)?;
    Ok(Json(to_json(&group)))
}

async fn create_group(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let input: GroupCreate = parse(&body)?;
    let mut portal = lock(&portal);
    let group = portal.create_group(input)?;
    portal.definition_changed(ChangeKind::Group { action: Action::Created, name: group.name.clone() });
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

async fn update_group(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, group_name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let value = parse_value(&body)?;
    if value.get("name").is_some() {
        return Err(ApiError::validation("'name' cannot be changed after a property group is created"));
    }
    let update: GroupUpdate = from_value(value)?;
    let mut portal = lock(&portal);
    let group = portal.update_group(&group_name, update)?;
    portal.definition_changed(ChangeKind::Group { action: Action::Updated, name: group_name });
    Ok(Json(to_json(&group)))
}

async fn archive_group(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, group_name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let mut portal = lock(&portal);
    portal.archive_group(&group_name)?;
    portal.definition_changed(ChangeKind::Group { action: Action::Archived, name: group_name });
    Ok(StatusCode::NO_CONTENT)
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "No resource at {method} {} (hubspot-sim serves /crm/v3/{{properties,pipelines,objects}}/deals and \
         /crm/{{properties,pipelines,objects}}/{{version}}/deals)",
        uri.path()
    ))
}

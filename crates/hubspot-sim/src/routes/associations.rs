//! Associations v4 routes (model in `associations.rs`), served at
//! `/crm/v4/objects/{type}/{id}/associations/…` and the date-versioned
//! `/crm/objects/{date}/{type}/{id}/associations/…` (object routes), and
//! `/crm/v4/associations/{from}/{to}/…`, `/crm/associations/v4/…`,
//! `/crm/associations/{date}/…` (batch and labels):
//!
//! - `GET …/{type}/{id}/associations/{toType}?limit&after` →
//!   `{"results": [{"toObjectId", "associationTypes": [{"category", "typeId", "label"}]}], "paging"?}`
//! - `PUT …/{type}/{id}/associations/default/{toType}/{toId}` → 200 batch of
//!   `{"from": {"id"}, "to": {"id"}, "associationSpec": {"associationCategory", "associationTypeId"}}`
//! - `PUT …/{type}/{id}/associations/{toType}/{toId}` `[{"associationCategory", "associationTypeId"}]`
//!   → 201 `{"fromObjectTypeId", "fromObjectId", "toObjectTypeId", "toObjectId", "labels"}`
//! - `DELETE …/{type}/{id}/associations/{toType}/{toId}` → 204
//! - `POST …/{from}/{to}/batch/read|create|associate/default|archive`, `GET …/{from}/{to}/labels`

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, QueryPairs, batch_response, parse, query_value};
use crate::associations::{AssocType, Kind, render_types, types};
use crate::error::ApiError;
use crate::model::now_timestamp;
use crate::{PortalRef, lock};

const DEFAULT_LIMIT: usize = 500;

/// Object-level routes, merged into the objects router (same parameter names).
pub(super) fn object_routes() -> Router {
    Router::new()
        .route("/{object_type}/{deal_id}/associations/{to_type}", get(list))
        .route("/{object_type}/{deal_id}/associations/default/{to_type}/{to_id}", put(create_default))
        .route("/{object_type}/{deal_id}/associations/{to_type}/{to_id}", put(create_labeled).delete(remove))
}

/// Batch and label routes.
pub(super) fn batch_routes() -> Router {
    Router::new()
        .route("/{from}/{to}/batch/read", post(batch_read))
        .route("/{from}/{to}/batch/create", post(batch_create))
        .route("/{from}/{to}/batch/associate/default", post(batch_default))
        .route("/{from}/{to}/batch/archive", post(batch_archive))
        .route("/{from}/{to}/labels", get(labels))
}

fn id(raw: &str) -> ApiResult<u64> {
    raw.trim().parse().map_err(|_| ApiError::validation(format!("Invalid object id '{raw}': ids are numeric")))
}

fn value_id(value: &Value) -> ApiResult<u64> {
    match value {
        Value::String(s) => id(s),
        Value::Number(n) => n.as_u64().ok_or_else(|| ApiError::validation(format!("Invalid object id {n}"))),
        other => Err(ApiError::validation(format!("Invalid object id {other}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeSpec {
    #[serde(default)]
    association_category: Option<String>,
    association_type_id: u32,
}

fn type_ids(specs: &[TypeSpec]) -> ApiResult<Vec<u32>> {
    if let Some(bad) = specs.iter().find_map(|s| s.association_category.as_deref().filter(|c| *c != "HUBSPOT_DEFINED"))
    {
        return Err(ApiError::validation(format!(
            "associationCategory {bad} is not available: hubspot-sim has HUBSPOT_DEFINED types only"
        )));
    }
    Ok(specs.iter().map(|s| s.association_type_id).collect())
}

fn pair(from: Kind, from_id: u64, to: Kind, to_id: u64, type_ids: &[u32]) -> Value {
    let shown: Vec<AssocType> = types(from, to).into_iter().filter(|t| from_side(from, to, t, type_ids)).collect();
    json!({
        "fromObjectTypeId": from.type_id(),
        "fromObjectId": from_id,
        "toObjectTypeId": to.type_id(),
        "toObjectId": to_id,
        "labels": shown.iter().filter_map(|t| t.label).collect::<Vec<_>>(),
    })
}

/// Whether `t` (a type from `from` to `to`) is one of the deal-side `type_ids` chosen.
fn from_side(from: Kind, to: Kind, t: &AssocType, deal_side: &[u32]) -> bool {
    let deal_types = types(Kind::Deal, if from == Kind::Deal { to } else { from });
    let other_types = types(if from == Kind::Deal { to } else { from }, Kind::Deal);
    if from == Kind::Deal {
        deal_side.contains(&t.type_id)
    } else {
        deal_types.iter().zip(other_types.iter()).any(|(d, o)| o.type_id == t.type_id && deal_side.contains(&d.type_id))
    }
}

fn default_result(from: Kind, from_id: u64, to: Kind, to_id: u64) -> Vec<Value> {
    let spec = |a: Kind, b: Kind| types(a, b).first().map_or(0, |t| t.type_id);
    vec![
        json!({"from": {"id": from_id.to_string()}, "to": {"id": to_id.to_string()},
               "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": spec(from, to)}}),
        json!({"from": {"id": to_id.to_string()}, "to": {"id": from_id.to_string()},
               "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": spec(to, from)}}),
    ]
}

async fn list(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, object_id, to_type)): Path<(String, String, String)>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let (from, to) = (Kind::parse(&object_type)?, Kind::parse(&to_type)?);
    let object_id = id(&object_id)?;
    let limit =
        query_value(&query, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(DEFAULT_LIMIT).clamp(1, 500);
    let after = query_value(&query, "after").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let portal = lock(&portal);
    if from == Kind::Deal && portal.find_deal(&object_id.to_string(), false).is_none() {
        return Err(crate::deals::deal_not_found(&object_id.to_string()));
    }
    let all: Vec<(u64, Vec<AssocType>)> =
        portal.associations_of(from, object_id, to).into_iter().filter(|(other, _)| *other >= after).collect();
    let mut body = json!({
        "results": all.iter().take(limit).map(|(other, t)| json!({"toObjectId": other, "associationTypes": render_types(t)})).collect::<Vec<_>>(),
    });
    if let Some((next, _)) = all.get(limit) {
        body["paging"] = json!({"next": {"after": next.to_string(), "link": format!("?after={next}")}});
    }
    Ok(Json(body))
}

async fn create_default(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, object_id, to_type, to_id)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    let (from, to) = (Kind::parse(&object_type)?, Kind::parse(&to_type)?);
    let (from_id, to_id) = (id(&object_id)?, id(&to_id)?);
    let started = now_timestamp();
    lock(&portal).associate(from, from_id, to, to_id, None)?;
    Ok(batch_response(default_result(from, from_id, to, to_id), Vec::new(), started, StatusCode::OK))
}

async fn create_labeled(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, object_id, to_type, to_id)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (from, to) = (Kind::parse(&object_type)?, Kind::parse(&to_type)?);
    let (from_id, to_id) = (id(&object_id)?, id(&to_id)?);
    let specs: Vec<TypeSpec> =
        serde_json::from_slice(&body).map_err(|e| ApiError::validation(format!("Invalid input JSON: {e}")))?;
    let ids = type_ids(&specs)?;
    let chosen = lock(&portal).associate(from, from_id, to, to_id, Some(&ids))?;
    Ok((StatusCode::CREATED, Json(pair(from, from_id, to, to_id, &chosen))).into_response())
}

async fn remove(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, object_id, to_type, to_id)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let (from, to) = (Kind::parse(&object_type)?, Kind::parse(&to_type)?);
    lock(&portal).dissociate(from, id(&object_id)?, to, id(&to_id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct Inputs<T> {
    inputs: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct IdRef {
    id: Value,
}

async fn batch_read(
    Extension(portal): Extension<PortalRef>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (from, to) = (Kind::parse(&from)?, Kind::parse(&to)?);
    let input: Inputs<IdRef> = parse(&body)?;
    if input.inputs.len() > 1000 {
        return Err(ApiError::validation("The maximum number of inputs supported in a batch request is 1000"));
    }
    let started = now_timestamp();
    let portal = lock(&portal);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for entry in input.inputs {
        let object_id = value_id(&entry.id)?;
        let found = portal.associations_of(from, object_id, to);
        if found.is_empty() {
            missing.push(object_id.to_string());
            continue;
        }
        let to_list: Vec<Value> =
            found.iter().map(|(other, t)| json!({"toObjectId": other, "associationTypes": render_types(t)})).collect();
        results.push(json!({"from": {"id": object_id.to_string()}, "to": to_list}));
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![ApiError::not_found("No associations found").with_context("fromObjectIds", missing).batch_entry()]
    };
    Ok(batch_response(results, errors, started, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
struct CreateInput {
    from: IdRef,
    to: IdRef,
    #[serde(default)]
    types: Vec<TypeSpec>,
}

async fn batch_create(
    Extension(portal): Extension<PortalRef>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (from, to) = (Kind::parse(&from)?, Kind::parse(&to)?);
    let input: Inputs<CreateInput> = parse(&body)?;
    let started = now_timestamp();
    let mut portal = lock(&portal);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for entry in input.inputs {
        let (from_id, to_id) = (value_id(&entry.from.id)?, value_id(&entry.to.id)?);
        let ids = type_ids(&entry.types)?;
        let chosen = if ids.is_empty() { None } else { Some(ids.as_slice()) };
        match portal.associate(from, from_id, to, to_id, chosen) {
            Ok(chosen) => results.push(pair(from, from_id, to, to_id, &chosen)),
            Err(err) => errors.push(err.batch_entry()),
        }
    }
    Ok(batch_response(results, errors, started, StatusCode::CREATED))
}

#[derive(Debug, Deserialize)]
struct DefaultInput {
    from: IdRef,
    to: IdRef,
}

async fn batch_default(
    Extension(portal): Extension<PortalRef>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let (from, to) = (Kind::parse(&from)?, Kind::parse(&to)?);
    let input: Inputs<DefaultInput> = parse(&body)?;
    let started = now_timestamp();
    let mut portal = lock(&portal);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for entry in input.inputs {
        let (from_id, to_id) = (value_id(&entry.from.id)?, value_id(&entry.to.id)?);
        match portal.associate(from, from_id, to, to_id, None) {
            Ok(_) => results.extend(default_result(from, from_id, to, to_id)),
            Err(err) => errors.push(err.batch_entry()),
        }
    }
    Ok(batch_response(results, errors, started, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
struct ArchiveInput {
    from: IdRef,
    to: Vec<IdRef>,
}

async fn batch_archive(
    Extension(portal): Extension<PortalRef>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (from, to) = (Kind::parse(&from)?, Kind::parse(&to)?);
    let input: Inputs<ArchiveInput> = parse(&body)?;
    let mut portal = lock(&portal);
    for entry in input.inputs {
        let from_id = value_id(&entry.from.id)?;
        for target in entry.to {
            // Like HubSpot: idempotent, unknown pairs are skipped.
            let _ = portal.dissociate(from, from_id, to, value_id(&target.id)?);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn labels(Path((from, to)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let (from, to) = (Kind::parse(&from)?, Kind::parse(&to)?);
    Ok(Json(json!({ "results": render_types(&types(from, to)) })))
}

//! Deal routes (`/crm/v3/objects/deals/…` ≡ `/crm/v3/objects/0-3/…`, CONTRACT.md §6):
//! CRUD, list, batch read/create/update/upsert/archive and search.
//!
//! Batch upsert (`POST …/batch/upsert`, `{"inputs": [{"id", "idProperty", "properties"}]}`)
//! follows HubSpot: each input names a unique-value `idProperty` and its value in `id`; a deal
//! with that value is updated, otherwise one is created with `properties` plus
//! `idProperty = id`. With `idProperty` `hs_object_id` (or none) it updates existing ids only
//! (unknown ids are 207 errors). All inputs are validated before any is applied (400). The
//! answer is 200 with each result's `new` flag.
//!
//! Batch calls take at most 100 inputs (50 for a read with `propertiesWithHistory`); batch
//! create and the property values of a batch update are all-or-nothing (400), while unknown ids
//! in batch read/update give a 207 listing them. DELETE and batch archive answer 204 whatever
//! the prior state.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiResult, QueryPairs, batch_response, check_object_type, parse, query_bool, query_list, query_value};
use crate::associations::Kind;
use crate::deals::{MAX_BATCH_INPUTS, MAX_HISTORY_BATCH_INPUTS, Selection, deal_not_found, input_values};
use crate::error::ApiError;
use crate::model::{now_ms, now_timestamp};
use crate::search::SearchRequest;
use crate::{HubSpotSim, PortalRef, lock};

pub(super) fn routes() -> Router {
    Router::new()
        .route("/{object_type}", get(list_deals).post(create_deal))
        .route("/{object_type}/search", post(search_deals))
        .route("/{object_type}/batch/read", post(batch_read))
        .route("/{object_type}/batch/create", post(batch_create))
        .route("/{object_type}/batch/update", post(batch_update))
        .route("/{object_type}/batch/archive", post(batch_archive))
        .route("/{object_type}/batch/upsert", post(batch_upsert))
        .route("/{object_type}/{deal_id}", get(get_deal).patch(update_deal).delete(archive_deal))
}

const DEFAULT_LIST_LIMIT: usize = 10;
const MAX_LIST_LIMIT: usize = 100;

/// Create/update body. `associations` (`[{"to": {"id"}, "types": [{"associationCategory",
/// "associationTypeId"}]}]`) are made on create, as HubSpot does; updates ignore them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WriteInput {
    properties: Option<Map<String, Value>>,
    associations: Option<Vec<AssociationInput>>,
}

#[derive(Debug, Deserialize)]
struct AssociationInput {
    to: AssociationTarget,
    #[serde(default)]
    types: Vec<AssociationTypeInput>,
}

#[derive(Debug, Deserialize)]
struct AssociationTarget {
    id: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssociationTypeInput {
    association_type_id: u32,
}

/// `(other kind, other id, deal→other type id)` of each requested association, checked.
fn planned_associations(inputs: Option<Vec<AssociationInput>>) -> ApiResult<Vec<(Kind, u64, u32)>> {
    let mut out = Vec::new();
    for input in inputs.unwrap_or_default() {
        let to_id: u64 = id_text(Some(&input.to.id))?
            .parse()
            .map_err(|_| ApiError::validation("associations[].to.id must be a numeric object id"))?;
        for spec in input.types {
            let kind = Kind::for_deal_type(spec.association_type_id).ok_or_else(|| {
                ApiError::validation(format!(
                    "associationTypeId {} is not a HUBSPOT_DEFINED type from deals (hubspot-sim: 3 contact, 341/5 company)",
                    spec.association_type_id
                ))
            })?;
            out.push((kind, to_id, spec.association_type_id));
        }
    }
    Ok(out)
}

/// Creates a deal and its associations (called inside a write, after validation).
fn create_with_associations(
    portal: &mut crate::portal::Portal,
    values: Vec<(String, Option<String>)>,
    associations: &[(Kind, u64, u32)],
) -> ApiResult<u64> {
    let id = portal.create_deal(values, now_ms())?;
    for (kind, to_id, type_id) in associations {
        portal.associate(Kind::Deal, id, *kind, *to_id, Some(&[*type_id]))?;
    }
    Ok(id)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct BatchReadInput {
    inputs: Option<Vec<IdInput>>,
    properties: Vec<String>,
    properties_with_history: Vec<String>,
    id_property: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IdInput {
    id: Option<Value>,
    properties: Option<Map<String, Value>>,
    id_property: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BatchInputs<T> {
    inputs: Option<Vec<T>>,
}

fn required_properties(properties: Option<Map<String, Value>>) -> ApiResult<Vec<(String, Option<String>)>> {
    input_values(properties.ok_or_else(|| ApiError::validation("'properties' is required"))?)
}

fn id_text(id: Option<&Value>) -> ApiResult<String> {
    match id {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ApiError::validation("Every input needs an 'id'")),
    }
}

/// `inputs`, required and at most `max` long.
fn batch_inputs<T>(inputs: Option<Vec<T>>, max: usize) -> ApiResult<Vec<T>> {
    let inputs = inputs.ok_or_else(|| ApiError::validation("'inputs' is required"))?;
    if inputs.len() > max {
        return Err(ApiError::validation(format!(
            "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
        ))
        .with_context("inputs", vec![inputs.len().to_string()]));
    }
    Ok(inputs)
}

fn missing_ids_error(verb: &str, ids: Vec<String>) -> Value {
    ApiError::not_found(format!(
        "Could not {verb} some DEAL objects, they may be deleted or not exist. Check that ids are valid."
    ))
    .with_context("ids", ids)
    .batch_entry()
}

async fn list_deals(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let limit = match query_value(&query, "limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => {
            raw.trim().parse::<usize>().ok().filter(|l| (1..=MAX_LIST_LIMIT).contains(l)).ok_or_else(|| {
                ApiError::validation(format!("Invalid limit '{raw}': must be between 1 and {MAX_LIST_LIMIT}"))
            })?
        }
    };
    let after = match query_value(&query, "after").filter(|a| !a.is_empty()) {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::validation(format!("Invalid paging cursor after='{raw}'")))?,
    };
    let archived = query_bool(&query, "archived")?;
    let names = query_list(&query, "properties");
    let history = query_list(&query, "propertiesWithHistory");
    let portal = lock(&portal);
    let (page, next) = portal.list_deals(after, limit, archived);
    let results: Vec<Value> =
        page.into_iter().map(|d| portal.render_deal(d, Selection::from_list(&names), &history)).collect();
    let mut body = json!({ "results": results });
    if let Some(next) = next {
        body["paging"] = json!({ "next": { "after": next.to_string(), "link": format!("?after={next}") } });
    }
    Ok(Json(body))
}

async fn get_deal(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, deal_id)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let archived = query_bool(&query, "archived")?;
    let names = query_list(&query, "properties");
    let history = query_list(&query, "propertiesWithHistory");
    let id_property = query_value(&query, "idProperty").filter(|v| !v.is_empty());
    let portal = lock(&portal);
    portal.check_id_property(id_property)?;
    let deal = portal.find_deal_by(id_property, &deal_id, archived).ok_or_else(|| deal_not_found(&deal_id))?;
    Ok(Json(portal.render_deal(deal, Selection::from_list(&names), &history)))
}

async fn create_deal(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let input: WriteInput = parse(&body)?;
    let values = required_properties(input.properties)?;
    let associations = planned_associations(input.associations)?;
    let created = sim.write(&portal, |portal| {
        let id = create_with_associations(portal, values, &associations)?;
        Ok::<_, ApiError>(portal.render_by_id(id, Selection::All))
    })?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn update_deal(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path((object_type, deal_id)): Path<(String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: WriteInput = parse(&body)?;
    let values = required_properties(input.properties)?;
    let id_property = query_value(&query, "idProperty").filter(|v| !v.is_empty()).map(str::to_owned);
    let updated = sim.write(&portal, |portal| {
        portal.check_id_property(id_property.as_deref())?;
        let id = portal
            .find_deal_by(id_property.as_deref(), &deal_id, false)
            .map(|d| d.id)
            .ok_or_else(|| deal_not_found(&deal_id))?;
        portal.update_deal(id, values, now_ms())?;
        Ok::<_, ApiError>(portal.render_by_id(id, Selection::All))
    })?;
    Ok(Json(updated))
}

async fn archive_deal(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path((object_type, deal_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    // Idempotent like HubSpot: unknown or already archived ids still get 204.
    if let Ok(id) = deal_id.trim().parse::<u64>() {
        sim.write(&portal, |portal| portal.archive_deal(id, now_ms()));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn batch_read(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let archived = query_bool(&query, "archived")?;
    let input: BatchReadInput = parse(&body)?;
    let inputs = input.inputs.ok_or_else(|| ApiError::validation("'inputs' is required"))?;
    if !input.properties_with_history.is_empty() && inputs.len() > MAX_HISTORY_BATCH_INPUTS {
        return Err(ApiError::validation(
            "The maximum number of inputs supported in a batch request for property histories is 50. \
             Please reduce the number of items and try again",
        ));
    }
    let inputs = batch_inputs(Some(inputs), MAX_BATCH_INPUTS)?;
    let portal = lock(&portal);
    portal.check_id_property(input.id_property.as_deref())?;
    let selection = Selection::from_list(&input.properties);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for entry in inputs {
        let id = id_text(entry.id.as_ref())?;
        match portal.find_deal_by(input.id_property.as_deref(), &id, archived) {
            Some(deal) => results.push(portal.render_deal(deal, selection, &input.properties_with_history)),
            None => missing.push(id),
        }
    }
    let errors = if missing.is_empty() { Vec::new() } else { vec![missing_ids_error("get", missing)] };
    Ok(batch_response(results, errors, started_at, StatusCode::OK))
}

async fn batch_create(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let input: BatchInputs<WriteInput> = parse(&body)?;
    let inputs = batch_inputs(input.inputs, MAX_BATCH_INPUTS)?;
    let all_values = inputs
        .into_iter()
        .map(|i| Ok((required_properties(i.properties)?, planned_associations(i.associations)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    let results = sim.write(&portal, |portal| {
        // All-or-nothing: validate every input before creating any.
        for (index, (values, _)) in all_values.iter().enumerate() {
            portal.check_new_deal(values).map_err(|e| e.with_context("inputs", vec![index.to_string()]))?;
        }
        let mut results = Vec::with_capacity(all_values.len());
        for (values, associations) in all_values {
            let id = create_with_associations(portal, values, &associations)?;
            results.push(portal.render_by_id(id, Selection::All));
        }
        Ok::<_, ApiError>(results)
    })?;
    Ok(batch_response(results, Vec::new(), started_at, StatusCode::CREATED))
}

async fn batch_update(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let input: BatchInputs<IdInput> = parse(&body)?;
    let inputs = batch_inputs(input.inputs, MAX_BATCH_INPUTS)?;
    let mut parsed = Vec::with_capacity(inputs.len());
    for entry in inputs {
        parsed.push((id_text(entry.id.as_ref())?, entry.id_property, required_properties(entry.properties)?));
    }
    let (results, missing) = sim.write(&portal, |portal| {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (id, id_property, values) in parsed {
            portal.check_id_property(id_property.as_deref())?;
            match portal.find_deal_by(id_property.as_deref(), &id, false).map(|d| d.id) {
                Some(deal_id) => {
                    portal.check_deal_update(deal_id, &values)?;
                    found.push((deal_id, values));
                }
                None => missing.push(id),
            }
        }
        let mut results = Vec::with_capacity(found.len());
        for (deal_id, values) in found {
            portal.update_deal(deal_id, values, now_ms())?;
            results.push(portal.render_by_id(deal_id, Selection::All));
        }
        Ok::<_, ApiError>((results, missing))
    })?;
    let errors = if missing.is_empty() { Vec::new() } else { vec![missing_ids_error("update", missing)] };
    Ok(batch_response(results, errors, started_at, StatusCode::OK))
}

/// Where one upsert input goes.
enum UpsertTarget {
    Existing(u64),
    New,
}

async fn batch_upsert(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let started_at = now_timestamp();
    let input: BatchInputs<IdInput> = parse(&body)?;
    let inputs = batch_inputs(input.inputs, MAX_BATCH_INPUTS)?;
    let mut parsed = Vec::with_capacity(inputs.len());
    let mut seen = std::collections::HashSet::new();
    for entry in inputs {
        let id = id_text(entry.id.as_ref())?;
        let id_property = entry.id_property.filter(|p| !p.is_empty()).unwrap_or_else(|| "hs_object_id".to_owned());
        if !seen.insert((id_property.clone(), id.clone())) {
            return Err(ApiError::validation(format!(
                "Duplicate id '{id}' for idProperty '{id_property}' in one batch"
            ))
            .with_context("ids", vec![id]));
        }
        parsed.push((id, id_property, required_properties(entry.properties)?));
    }
    let (results, missing) = sim.write(&portal, |portal| {
        // Validate everything first: all or nothing.
        let mut plan = Vec::with_capacity(parsed.len());
        let mut missing = Vec::new();
        for (id, id_property, mut values) in parsed {
            portal.check_id_property(Some(&id_property))?;
            let by_object_id = id_property == "hs_object_id";
            match portal.find_deal_by(Some(&id_property), &id, false).map(|d| d.id) {
                Some(deal_id) => {
                    portal.check_deal_update(deal_id, &values)?;
                    plan.push((UpsertTarget::Existing(deal_id), values));
                }
                None if by_object_id => missing.push(id),
                None => {
                    values.retain(|(name, _)| *name != id_property);
                    values.push((id_property, Some(id)));
                    portal.check_new_deal(&values)?;
                    plan.push((UpsertTarget::New, values));
                }
            }
        }
        let mut results = Vec::with_capacity(plan.len());
        for (target, values) in plan {
            let (deal_id, new) = match target {
                UpsertTarget::Existing(deal_id) => {
                    portal.update_deal(deal_id, values, now_ms())?;
                    (deal_id, false)
                }
                UpsertTarget::New => (portal.create_deal(values, now_ms())?, true),
            };
            let mut rendered = portal.render_by_id(deal_id, Selection::All);
            rendered["new"] = json!(new);
            results.push(rendered);
        }
        Ok::<_, ApiError>((results, missing))
    })?;
    let errors = if missing.is_empty() { Vec::new() } else { vec![missing_ids_error("update", missing)] };
    Ok(batch_response(results, errors, started_at, StatusCode::OK))
}

async fn batch_archive(
    Extension(sim): Extension<HubSpotSim>,
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let input: BatchInputs<IdInput> = parse(&body)?;
    let inputs = batch_inputs(input.inputs, MAX_BATCH_INPUTS)?;
    let ids = inputs.iter().map(|i| id_text(i.id.as_ref())).collect::<ApiResult<Vec<_>>>()?;
    sim.write(&portal, |portal| {
        for id in ids.iter().filter_map(|id| id.parse::<u64>().ok()) {
            portal.archive_deal(id, now_ms());
        }
    });
    Ok(StatusCode::NO_CONTENT)
}

async fn search_deals(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let request: SearchRequest =
        if body.iter().all(u8::is_ascii_whitespace) { SearchRequest::default() } else { parse(&body)? };
    let search = request.validate()?;
    let results = lock(&portal).search_deals(&search, Instant::now());
    Ok(Json(results))
}

//! Pipeline and stage routes (`/crm/v3/pipelines/deals/…`, CONTRACT.md §5), with the
//! `/audit` endpoints: every change made through the API (or by a UI user, see `source.rs`) is
//! an entry `{action: CREATE|UPDATE|DELETE, identifier, portalId, timestamp, message,
//! rawObject, fromUserId?}`, newest first. The default pipeline's initial state has none.
//!
//! PUT, DELETE and stage DELETE take `validateReferencesBeforeDelete` and
//! `validateDealStageUsagesBeforeDelete`; from 2026-09 they default to true (a caller opts out
//! with `=false`), before that to false. The simulator has no workflows, so the deal-usage
//! check is what they enable: `validateDealStageUsagesBeforeDelete=true` on pipeline PUT/DELETE,
//! and either flag on stage DELETE (the spec only lists `validateReferencesBeforeDelete` there).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiResult, QueryPairs, check_object_type, parse, query_bool, query_bool_opt, to_json};
use crate::events::{Action, ChangeKind};
use crate::pipelines::{PipelineInput, StageInput};
use crate::version::ApiVersion;
use crate::{PortalRef, lock};

pub(super) fn routes() -> Router {
    Router::new()
        .route("/{object_type}", get(list_pipelines).post(create_pipeline))
        .route(
            "/{object_type}/{pipeline_id}",
            get(get_pipeline).patch(update_pipeline).put(replace_pipeline).delete(delete_pipeline),
        )
        .route("/{object_type}/{pipeline_id}/audit", get(pipeline_audit))
        .route("/{object_type}/{pipeline_id}/stages", get(list_stages).post(create_stage))
        .route("/{object_type}/{pipeline_id}/stages/{stage_id}/audit", get(stage_audit))
        .route(
            "/{object_type}/{pipeline_id}/stages/{stage_id}",
            get(get_stage).patch(update_stage).put(replace_stage).delete(delete_stage),
        )
}

const STAGE_USAGE_FLAG: &str = "validateDealStageUsagesBeforeDelete";
const REFERENCES_FLAG: &str = "validateReferencesBeforeDelete";

/// A delete-safety flag: as given, else the version's default (on from 2026-09).
fn safety_flag(query: &[(String, String)], key: &str, version: ApiVersion) -> ApiResult<bool> {
    Ok(query_bool_opt(query, key)?.unwrap_or_else(|| version.delete_safety_by_default()))
}

async fn list_pipelines(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let archived = query_bool(&query, "archived")?;
    let results = lock(&portal).list_pipelines(archived);
    Ok(Json(json!({ "results": results })))
}

async fn get_pipeline(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let archived = query_bool(&query, "archived")?;
    let portal = lock(&portal);
    Ok(Json(to_json(portal.get_pipeline(&pipeline_id, archived)?)))
}

async fn create_pipeline(
    Extension(portal): Extension<PortalRef>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let input: PipelineInput = parse(&body)?;
    let mut portal = lock(&portal);
    let pipeline = portal.create_pipeline(input)?;
    portal.definition_changed(ChangeKind::Pipeline { action: Action::Created, pipeline_id: pipeline.id.clone() });
    Ok((StatusCode::CREATED, Json(pipeline)).into_response())
}

async fn update_pipeline(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: PipelineInput = parse(&body)?;
    let mut portal = lock(&portal);
    let pipeline = portal.update_pipeline(&pipeline_id, input)?;
    portal.definition_changed(ChangeKind::Pipeline { action: Action::Updated, pipeline_id });
    Ok(Json(to_json(&pipeline)))
}

async fn replace_pipeline(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    query: QueryPairs,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let validate = safety_flag(&query, STAGE_USAGE_FLAG, version)?;
    query_bool(&query, REFERENCES_FLAG)?;
    let input: PipelineInput = parse(&body)?;
    let mut portal = lock(&portal);
    let pipeline = portal.replace_pipeline(&pipeline_id, input, validate)?;
    portal.definition_changed(ChangeKind::Pipeline { action: Action::Updated, pipeline_id });
    Ok(Json(to_json(&pipeline)))
}

async fn delete_pipeline(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let validate = safety_flag(&query, STAGE_USAGE_FLAG, version)?;
    query_bool(&query, REFERENCES_FLAG)?;
    let mut portal = lock(&portal);
    portal.delete_pipeline(&pipeline_id, validate)?;
    portal.definition_changed(ChangeKind::Pipeline { action: Action::Archived, pipeline_id });
    Ok(StatusCode::NO_CONTENT)
}

async fn list_stages(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let results = lock(&portal).list_stages(&pipeline_id)?;
    Ok(Json(json!({ "results": results })))
}

async fn get_stage(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id, stage_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let stage = lock(&portal).get_stage(&pipeline_id, &stage_id)?;
    Ok(Json(to_json(&stage)))
}

async fn create_stage(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    check_object_type(&object_type)?;
    let input: StageInput = parse(&body)?;
    let mut portal = lock(&portal);
    let stage = portal.create_stage(&pipeline_id, input)?;
    portal.definition_changed(ChangeKind::Stage { action: Action::Created, pipeline_id, stage_id: stage.id.clone() });
    Ok((StatusCode::CREATED, Json(stage)).into_response())
}

async fn update_stage(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id, stage_id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: StageInput = parse(&body)?;
    let mut portal = lock(&portal);
    let stage = portal.update_stage(&pipeline_id, &stage_id, input)?;
    portal.definition_changed(ChangeKind::Stage { action: Action::Updated, pipeline_id, stage_id });
    Ok(Json(to_json(&stage)))
}

async fn replace_stage(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id, stage_id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: StageInput = parse(&body)?;
    let mut portal = lock(&portal);
    let stage = portal.replace_stage(&pipeline_id, &stage_id, input)?;
    portal.definition_changed(ChangeKind::Stage { action: Action::Updated, pipeline_id, stage_id });
    Ok(Json(to_json(&stage)))
}

async fn delete_stage(
    Extension(portal): Extension<PortalRef>,
    Extension(version): Extension<ApiVersion>,
    Path((object_type, pipeline_id, stage_id)): Path<(String, String, String)>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let validate = safety_flag(&query, STAGE_USAGE_FLAG, version)? || safety_flag(&query, REFERENCES_FLAG, version)?;
    let mut portal = lock(&portal);
    portal.delete_stage(&pipeline_id, &stage_id, validate)?;
    portal.definition_changed(ChangeKind::Stage { action: Action::Archived, pipeline_id, stage_id });
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/{pipelineId}/audit`: the pipeline's changes, newest first (archived pipelines too).
async fn pipeline_audit(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    portal.get_pipeline(&pipeline_id, true)?;
    Ok(Json(json!({ "results": portal.audit(&pipeline_id, None) })))
}

/// `GET …/{pipelineId}/stages/{stageId}/audit`: the stage's changes, newest first (also after
/// the stage was deleted).
async fn stage_audit(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id, stage_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    portal.get_pipeline(&pipeline_id, true)?;
    let results = portal.audit(&pipeline_id, Some(&stage_id));
    if results.is_empty() {
        // No history: only a stage that exists (e.g. a default one) has an empty audit.
        portal.get_stage(&pipeline_id, &stage_id)?;
    }
    Ok(Json(json!({ "results": results })))
}

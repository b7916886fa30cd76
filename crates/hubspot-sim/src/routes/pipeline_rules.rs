//! Pipeline Rules API (beta), served at `/crm/pipelines-rules/2026-09-beta/…` (and
//! `/crm/pipelines-rules/2026-09/…`) only: the API does not exist in v3 or 2026-03, whose
//! paths answer 404 like any unknown route. Rules and their enforcement: `pipeline_rules.rs`.
//!
//! - `GET /{objectTypeId}/{pipelineId}` → `{"governanceValidationRules": {..}}` (empty when
//!   the pipeline has none)
//! - `PUT /{objectTypeId}/{pipelineId}` `{"governanceValidationRules": {..}}` → the rules
//!   (replaces all of them)
//! - `PATCH /{objectTypeId}/{pipelineId}` `{"noBackwardsMovementRule"?, ..}` → the rules
//!   (replaces the rules given, keeps the others)
//! - `DELETE /{objectTypeId}/{pipelineId}` → 204 (removes every rule)
//!
//! The pipeline must exist (404 otherwise); stage ids the rules name must be its stages.

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, check_object_type, parse};
use crate::pipeline_rules::PipelineRules;
use crate::{PortalRef, lock};

pub(super) fn routes() -> Router {
    Router::new()
        .route("/{object_type}/{pipeline_id}", get(get_rules).put(put_rules).patch(patch_rules).delete(delete_rules))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplaceInput {
    #[serde(default)]
    governance_validation_rules: PipelineRules,
}

fn body(rules: &PipelineRules) -> Json<Value> {
    Json(json!({ "governanceValidationRules": rules }))
}

async fn get_rules(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    portal.get_pipeline(&pipeline_id, false)?;
    Ok(body(&portal.pipeline_rules.get(&pipeline_id).cloned().unwrap_or_default()))
}

async fn put_rules(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: ReplaceInput = parse(&raw)?;
    let mut portal = lock(&portal);
    store(&mut portal, &pipeline_id, input.governance_validation_rules)
}

async fn patch_rules(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let input: PipelineRules = parse(&raw)?;
    let mut portal = lock(&portal);
    let mut rules = portal.pipeline_rules.get(&pipeline_id).cloned().unwrap_or_default();
    if input.no_backwards_movement_rule.is_some() {
        rules.no_backwards_movement_rule = input.no_backwards_movement_rule;
    }
    if input.no_skipping_stages_rule.is_some() {
        rules.no_skipping_stages_rule = input.no_skipping_stages_rule;
    }
    if input.object_creation_rule.is_some() {
        rules.object_creation_rule = input.object_creation_rule;
    }
    store(&mut portal, &pipeline_id, rules)
}

fn store(portal: &mut crate::portal::Portal, pipeline_id: &str, rules: PipelineRules) -> ApiResult<Json<Value>> {
    rules.check_stages(portal.get_pipeline(pipeline_id, false)?)?;
    let shown = body(&rules);
    if rules.is_empty() {
        portal.pipeline_rules.remove(pipeline_id);
    } else {
        portal.pipeline_rules.insert(pipeline_id.to_owned(), rules);
    }
    Ok(shown)
}

async fn delete_rules(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let mut portal = lock(&portal);
    portal.get_pipeline(&pipeline_id, false)?;
    portal.pipeline_rules.remove(&pipeline_id);
    Ok(StatusCode::NO_CONTENT)
}

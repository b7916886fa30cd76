//! Property validation rules API (`/crm/v3/property-validations/…`,
//! `/crm/property-validations/{2026-03|2026-09}/…`), per portal; rules and their enforcement
//! are described in `rules.rs`.
//!
//! - `GET /{objectTypeId}` → `{"results": [{"propertyName", "propertyValidationRules": [rule]}]}`
//! - `GET /{objectTypeId}/{propertyName}` → `{"results": [rule]}`
//! - `GET /{objectTypeId}/{propertyName}/rule-type/{ruleType}` → rule (404 if none)
//! - `PUT /{objectTypeId}/{propertyName}/rule-type/{ruleType}`
//!   `{"ruleArguments": [..], "shouldApplyNormalization"?}` → 204 (replaces that type's rule)
//! - `DELETE /{objectTypeId}/{propertyName}/rule-type/{ruleType}` → 204 (404 if none)
//!
//! `objectTypeId` is `0-3` or `deals`; the property must exist (404 otherwise). Rule changes
//! are journaled as `propertyValidation.*` events (see `events.rs`).

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiResult, check_object_type, parse};
use crate::error::ApiError;
use crate::events::{Action, ChangeKind};
use crate::portal::property_not_found;
use crate::rules::{RuleInput, build_rule};
use crate::{PortalRef, lock};

pub(super) fn routes() -> Router {
    Router::new()
        .route("/{object_type}", get(list_all))
        .route("/{object_type}/{property}", get(list_for_property))
        .route("/{object_type}/{property}/rule-type/{rule_type}", get(get_rule).put(put_rule).delete(delete_rule))
}

fn rule_not_found(property: &str, rule_type: &str) -> ApiError {
    ApiError::not_found(format!("Property '{property}' has no {rule_type} validation rule"))
        .with_context("propertyName", vec![property.to_owned()])
}

async fn list_all(Extension(portal): Extension<PortalRef>, Path(object_type): Path<String>) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    let results: Vec<Value> = portal
        .rules
        .iter()
        .filter(|(_, rules)| !rules.is_empty())
        .map(|(name, rules)| json!({"propertyName": name, "propertyValidationRules": rules.values().collect::<Vec<_>>()}))
        .collect();
    Ok(Json(json!({ "results": results })))
}

async fn list_for_property(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, property)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    portal.get_property(&property, false)?;
    let rules: Vec<Value> =
        portal.rules.get(&property).into_iter().flat_map(|r| r.values()).map(|r| json!(r)).collect();
    Ok(Json(json!({ "results": rules })))
}

async fn get_rule(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, property, rule_type)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    check_object_type(&object_type)?;
    let portal = lock(&portal);
    portal.get_property(&property, false)?;
    let rule = portal.rules.get(&property).and_then(|r| r.get(&rule_type));
    rule.map(|r| Json(json!(r))).ok_or_else(|| rule_not_found(&property, &rule_type))
}

async fn put_rule(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, property, rule_type)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let input: RuleInput = parse(&body)?;
    let rule = build_rule(&rule_type, input)?;
    let mut portal = lock(&portal);
    if portal.active_property(&property).is_none() {
        return Err(property_not_found(&property));
    }
    let replaced = portal.rules.entry(property.clone()).or_default().insert(rule_type.clone(), rule);
    let action = if replaced.is_some() { Action::Updated } else { Action::Created };
    portal.definition_changed(ChangeKind::ValidationRule { action, property, rule_type });
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_rule(
    Extension(portal): Extension<PortalRef>,
    Path((object_type, property, rule_type)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    check_object_type(&object_type)?;
    let mut portal = lock(&portal);
    let removed = portal.rules.get_mut(&property).and_then(|r| r.remove(&rule_type));
    if portal.rules.get(&property).is_some_and(|r| r.is_empty()) {
        portal.rules.remove(&property);
    }
    if removed.is_none() {
        return Err(rule_not_found(&property, &rule_type));
    }
    portal.definition_changed(ChangeKind::ValidationRule { action: Action::Archived, property, rule_type });
    Ok(StatusCode::NO_CONTENT)
}

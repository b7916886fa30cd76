//! The previous GoMark's three routes, kept for old callers, on top of the v1 API.
//!
//! `POST /hubspot/fields/add` `{"company_id","name","type","value"}` creates a deal
//! property. `name` may be a label ("Deal Stage"): the internal name is derived from it
//! (`deal_stage`) and the label is kept as given. A HubSpot property *definition* has no
//! value, so `value` is kept where it means something: for `type: "enumeration"` it is
//! the option list, separated by `;` (HubSpot's own multi-value format); for every other
//! type it becomes the property's description, so nothing the caller sent is lost.
//!
//! `PUT /hubspot/fields/modify/{companyId}/{oldName}` `{"new_name"}` changes the label;
//! HubSpot internal names cannot change. `old_name` may be the internal name or the
//! label-like name first given to `fields/add`.
//!
//! `PUT /upso/cadence/modify/{companyId}` `{"template","delay_hours"}` changes the body
//! and delay of the first email step of the company's upsell cadence: the orchestrator
//! records it as a new revision (audited) and rolls it out to that company, which puts it
//! in Upso.

use super::AppState;
use super::deal_properties::with_etag;
use crate::auth::Auth;
use crate::extract::{ApiJson, ApiPath};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use gomark_proto::config::v1::{DealProperty, PropertyOption};
use gomark_proto::orchestrator::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The group legacy fields land in; it exists in every portal.
const LEGACY_GROUP: &str = "dealinformation";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(add_field)).routes(routes!(modify_field)).routes(routes!(modify_cadence))
}

/// The previous GoMark's field: `name` may be a label, `value` see the route.
#[derive(Debug, Deserialize, ToSchema)]
struct AddField {
    company_id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: String,
}

/// `"Deal Stage"` → `deal_stage`: lower-case, runs of anything else become one `_`.
pub fn internal_name(label: &str) -> String {
    let mut name = String::new();
    for c in label.trim().chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') && !name.is_empty() {
            name.push('_');
        }
    }
    let mut name = name.trim_end_matches('_').to_owned();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "field_");
    }
    name.chars().take(100).collect()
}

/// The old API's loose type names, as HubSpot (type, fieldType) pairs.
fn hubspot_type(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind.to_ascii_lowercase().as_str() {
        "string" | "text" => ("string", "text"),
        "textarea" => ("string", "textarea"),
        "number" | "integer" | "float" => ("number", "number"),
        "date" => ("date", "date"),
        "datetime" => ("datetime", "date"),
        "bool" | "boolean" => ("bool", "booleancheckbox"),
        "enumeration" | "select" => ("enumeration", "select"),
        "phone_number" | "phone" => ("phone_number", "phonenumber"),
        _ => return None,
    })
}

/// (Legacy) creates a deal property. `name` may be a label ("Deal Stage" → `deal_stage`).
/// For `enumeration`, `value` is the option list separated by `;`; for other types it
/// becomes the description, since a HubSpot definition has no value.
#[utoipa::path(post, path = "/hubspot/fields/add", operation_id = "legacyAddField", tag = "legacy", request_body = AddField,
    responses((status = 201, description = "Declared", body = crate::dto::PropertyView), (status = 404, description = "The company does not exist"), (status = 412, description = "Another revision was created concurrently; retry")))]
async fn add_field(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<AddField>,
) -> ApiResult<Response> {
    if body.company_id.trim().is_empty() {
        return Err(Problem::invalid("company_id", "is required"));
    }
    let name = internal_name(&body.name);
    if name.is_empty() {
        return Err(Problem::invalid("name", "must contain at least one letter or digit"));
    }
    let (kind, field_type) = hubspot_type(&body.kind).ok_or_else(|| {
        Problem::invalid(
            "type",
            "must be one of string, textarea, number, date, datetime, bool, enumeration, phone_number",
        )
    })?;
    let (description, options) = if kind == "enumeration" {
        let options = body
            .value
            .split(';')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .enumerate()
            .map(|(i, v)| PropertyOption {
                label: v.to_owned(),
                value: internal_name(v),
                display_order: Some(i as i32),
                hidden: false,
            })
            .collect();
        (String::new(), options)
    } else {
        (body.value.clone(), Vec::new())
    };
    let spec = DealProperty {
        name,
        label: body.name.trim().to_owned(),
        r#type: kind.into(),
        field_type: field_type.into(),
        group_name: LEGACY_GROUP.into(),
        description: (!description.is_empty()).then_some(description),
        options,
        has_unique_value: false,
    };
    let req = pb::CreateDealPropertyRequest { company_id: body.company_id, spec: Some(spec) };
    let property = s.orchestrator.clone().create_deal_property(caller.request(req)).await?.into_inner();
    Ok(with_etag(StatusCode::CREATED, property))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ModifyField {
    new_name: String,
}

/// (Legacy) renames a field: a label change, internal names being immutable.
#[utoipa::path(put, path = "/hubspot/fields/modify/{companyId}/{oldName}", operation_id = "legacyModifyField", tag = "legacy",
    params(("companyId" = String, Path, description = "Company id"), ("oldName" = String, Path, description = "Internal name, or the name first given")),
    request_body = ModifyField,
    responses((status = 200, description = "Relabelled", body = crate::dto::PropertyView), (status = 412, description = "The configuration changed concurrently too often; retry")))]
async fn modify_field(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, old_name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ModifyField>,
) -> ApiResult<Response> {
    if body.new_name.trim().is_empty() {
        return Err(Problem::invalid("new_name", "is required"));
    }
    // The old API named fields by what it was given; try that, then its derived form.
    let mut candidates = vec![old_name.clone()];
    let derived = internal_name(&old_name);
    if derived != old_name {
        candidates.push(derived);
    }
    let mut last = None;
    for name in candidates {
        let req = pb::UpdateDealPropertyRequest {
            company_id: company_id.clone(),
            name,
            label: Some(body.new_name.trim().to_owned()),
            ..pb::UpdateDealPropertyRequest::default()
        };
        match s.orchestrator.clone().update_deal_property(caller.request(req)).await {
            Ok(property) => return Ok(with_etag(StatusCode::OK, property.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound || status.code() == tonic::Code::InvalidArgument => {
                last = Some(status)
            }
            Err(status) => return Err(status.into()),
        }
    }
    Err(last.map_or_else(|| Problem::invalid("old_name", "is required"), Problem::from))
}

#[derive(Debug, Deserialize, ToSchema)]
struct ModifyCadence {
    template: String,
    delay_hours: u32,
}

/// Where the legacy cadence change landed.
#[derive(Debug, Serialize, ToSchema)]
struct CadenceChanged {
    status: String,
    /// The configuration revision holding the change.
    revision: i64,
    /// The rollout applying it to the company (follow it at `/v1/rollouts/{rolloutId}`).
    rollout_id: String,
    /// The desired-state key of the cadence that changed.
    cadence_key: String,
}

/// (Legacy) changes the body and delay of the first email step of the company's upsell
/// cadence, as a new configuration revision rolled out to that company.
#[utoipa::path(put, path = "/upso/cadence/modify/{companyId}", operation_id = "legacyModifyCadence", tag = "legacy",
    params(("companyId" = String, Path, description = "Company id")),
    request_body = ModifyCadence,
    responses((status = 200, description = "Changed", body = CadenceChanged), (status = 412, description = "Another revision was created concurrently; retry"), (status = 422, description = "The company has no Upso account or its cadence no email step")))]
async fn modify_cadence(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiJson(body): ApiJson<ModifyCadence>,
) -> ApiResult<Json<CadenceChanged>> {
    let delay = Some(gomark_proto::Duration { seconds: i64::from(body.delay_hours) * 3_600, nanos: 0 });
    let req = pb::ModifyUpsellCadenceRequest { company_id, template: body.template, delay };
    let changed = s
        .orchestrator
        .clone()
        .modify_upsell_cadence(caller.request(req))
        .await
        .map_err(|e| Problem::from(e).renamed_field("delay", "delay_hours"))?
        .into_inner();
    Ok(Json(CadenceChanged {
        status: "ok".into(),
        revision: changed.revision,
        rollout_id: changed.rollout_id,
        cadence_key: changed.cadence_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::internal_name;

    #[test]
    fn labels_become_valid_internal_names() {
        assert_eq!(internal_name("Deal Stage"), "deal_stage");
        assert_eq!(internal_name("  ARR (USD) / year "), "arr_usd_year");
        assert_eq!(internal_name("2nd touch"), "field_2nd_touch");
        assert_eq!(internal_name("already_fine"), "already_fine");
        assert_eq!(internal_name("!!!"), "");
        assert_eq!(internal_name(&"x".repeat(300)).len(), 100);
    }
}

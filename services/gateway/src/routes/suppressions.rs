//! `/v1/portfolio/suppressions`: the portfolio suppression list, through upso-cadence.
//! People on it (opt-outs from any company, do-not-contact, legal holds) are contacted by
//! no company; every change is audited in upso-cadence's audit log (company `portfolio`).

use super::AppState;
use crate::auth::Auth;
use crate::extract::{ApiJson, ApiPath};
use crate::problem::ApiResult;
use axum::Json;
use axum::extract::State;
use gomark_proto::upso_cadence::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, add)).routes(routes!(remove))
}

/// One person no company may contact.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionView {
    /// The normalised email (lower case, no `+tag`): one person across companies.
    person: String,
    /// `opt_out`, `do_not_contact` or `legal_hold`
    kind: String,
    /// The company whose customer opted out; absent when set for the portfolio.
    #[serde(skip_serializing_if = "String::is_empty")]
    source_company_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    actor: String,
    created_at: String,
}

impl From<pb::Suppression> for SuppressionView {
    fn from(s: pb::Suppression) -> Self {
        Self {
            person: s.person,
            kind: s.kind,
            source_company_id: s.source_company_id,
            reason: s.reason,
            actor: s.actor,
            created_at: crate::dto::rfc3339(s.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionsView {
    items: Vec<SuppressionView>,
}

/// Adds a person to the list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuppressionCreate {
    email: String,
    /// `opt_out`, `do_not_contact` or `legal_hold`
    kind: String,
    #[serde(default)]
    reason: String,
    /// For a company-scoped key: the company the request comes from.
    #[serde(default)]
    company_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionAdded {
    suppression: Option<SuppressionView>,
    /// False when the person was already on the list (its entry is returned).
    added: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionRemoved {
    removed: bool,
}

/// The portfolio suppression list (a portfolio-wide grant).
#[utoipa::path(get, path = "/v1/portfolio/suppressions", operation_id = "listSuppressions", tag = "upsell",
    responses((status = 200, description = "Everyone on the list", body = SuppressionsView), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn list(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<SuppressionsView>> {
    let r = s.upso_cadence.clone().list_suppressions(caller.request(pb::ListSuppressionsRequest {})).await?;
    Ok(Json(SuppressionsView { items: r.into_inner().suppressions.into_iter().map(Into::into).collect() }))
}

/// Puts a person on the portfolio suppression list: no company contacts them any more.
#[utoipa::path(post, path = "/v1/portfolio/suppressions", operation_id = "addSuppression", tag = "upsell",
    request_body = SuppressionCreate,
    responses((status = 200, description = "On the list", body = SuppressionAdded), (status = 404, description = "The company does not exist")))]
async fn add(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SuppressionCreate>,
) -> ApiResult<Json<SuppressionAdded>> {
    let req = pb::AddSuppressionRequest {
        email: body.email,
        kind: body.kind,
        reason: body.reason,
        company_id: body.company_id,
    };
    let r = s.upso_cadence.clone().add_suppression(caller.request(req)).await?.into_inner();
    Ok(Json(SuppressionAdded { suppression: r.suppression.map(Into::into), added: r.added }))
}

/// Takes a person off the list (lifting a legal hold needs the admin role).
#[utoipa::path(delete, path = "/v1/portfolio/suppressions/{email}", operation_id = "removeSuppression", tag = "upsell",
    params(("email" = String, Path, description = "The person's email")),
    responses((status = 200, description = "Off the list", body = SuppressionRemoved)))]
async fn remove(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(email): ApiPath<String>,
) -> ApiResult<Json<SuppressionRemoved>> {
    let r = s.upso_cadence.clone().remove_suppression(caller.request(pb::RemoveSuppressionRequest { email })).await?;
    Ok(Json(SuppressionRemoved { removed: r.into_inner().removed }))
}

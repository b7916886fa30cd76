//! `/v1/drift`: what was changed by hand in the portals, and what GoMark did about it.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{Page, rfc3339};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;
use axum::Json;
use axum::extract::State;
use gomark_proto::orchestrator::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(check))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftView {
    id: String,
    company_id: String,
    /// The revision the portal had been brought to.
    revision: i64,
    detected_at: String,
    /// The actions that would undo the drift.
    actions: Vec<crate::dto::ActionView>,
    /// `enforce`, `alert` or `adopt`
    policy: String,
    /// `rollout/<id>` (enforce), `revision/<n>` (adopt), absent for alert.
    #[serde(skip_serializing_if = "String::is_empty")]
    resolution: String,
    /// Who made the change, where HubSpot reported it; the policy is the one for this source.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceView>,
}

/// Who made a change in a portal.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    /// `user`, `integration`, `ai_agent`, `automation`, `gomark` or `unknown`
    kind: String,
    /// HubSpot's `changeSource`, e.g. `CRM_UI`, `INTEGRATION`
    change_source: String,
    /// HubSpot's `sourceId`: the app or user id
    #[serde(skip_serializing_if = "String::is_empty")]
    source_id: String,
}

impl From<pb::DriftRecord> for DriftView {
    fn from(d: pb::DriftRecord) -> Self {
        Self {
            id: d.id,
            company_id: d.company_id,
            revision: d.revision,
            detected_at: rfc3339(d.detected_at),
            actions: d.actions.into_iter().map(crate::dto::ActionView::from).collect(),
            policy: d.policy,
            resolution: d.resolution,
            source: d.source.map(|s| SourceView {
                kind: s.kind,
                change_source: s.change_source,
                source_id: s.source_id,
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct DriftQuery {
    /// One company's drift; the portfolio's when omitted.
    company_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Drift found, newest first.
#[utoipa::path(get, path = "/v1/drift", operation_id = "listDrift", tag = "drift", params(DriftQuery),
    responses((status = 200, description = "A page of drift records", body = Page<DriftView>), (status = 404, description = "The company does not exist"), (status = 403, description = "Without `companyId`: needs a portfolio-wide grant")))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> ApiResult<Json<Page<DriftView>>> {
    let page = crate::dto::PageQuery { limit: q.limit, cursor: q.cursor }.to_proto()?;
    let req = pb::ListDriftRequest { company_id: q.company_id.unwrap_or_default(), page: Some(page) };
    let resp = s.orchestrator.clone().list_drift(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.records.into_iter().map(DriftView::from).collect(), resp.next_page_token)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckBody {
    /// Only these companies; every company the latest revision was applied to when omitted.
    #[serde(default)]
    company_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    checked: u32,
    drifted: Vec<DriftView>,
}

/// Checks for drift now (it is also checked on a schedule), and handles what is found by
/// each company's policy.
#[utoipa::path(post, path = "/v1/drift/check", operation_id = "checkDrift", tag = "drift", request_body = CheckBody,
    responses((status = 200, description = "What was checked and found", body = CheckView), (status = 404, description = "A company does not exist")))]
async fn check(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CheckBody>,
) -> ApiResult<Json<CheckView>> {
    let r = s
        .orchestrator
        .clone()
        .check_drift(caller.request(pb::CheckDriftRequest { company_ids: body.company_ids }))
        .await?
        .into_inner();
    Ok(Json(CheckView { checked: r.checked, drifted: r.drifted.into_iter().map(DriftView::from).collect() }))
}

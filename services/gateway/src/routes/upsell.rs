//! `/v1/companies/{companyId}/upsell/…` and `/v1/companies/{companyId}/upso-account`: the upsell engine
//! (dry run, run now, recorded decisions) and the company's Upso account, through
//! upso-cadence.

use super::AppState;
use crate::auth::Auth;
use crate::dto::rfc3339;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use gomark_proto::upso_cadence::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dry_run))
        .routes(routes!(run_now))
        .routes(routes!(decisions))
        .routes(routes!(register_account))
}

/// One line of a score's explanation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreReasonView {
    criterion: String,
    points: f64,
}

fn reasons(r: Vec<pb::ScoreReason>) -> Vec<ScoreReasonView> {
    r.into_iter().map(|r| ScoreReasonView { criterion: r.criterion, points: r.points }).collect()
}

/// One customer in a run: enrolled (or would be), or skipped and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidateView {
    email: String,
    deal_id: String,
    score: f64,
    reasons: Vec<ScoreReasonView>,
    /// `enroll` or `skip`
    decision: String,
    /// `opted_out`, `suppressed`, `portfolio_suppressed`, `recently_touched`,
    /// `portfolio_gap`, `portfolio_cap`, `portfolio_exclusive`, `already_enrolled`,
    /// `open_deal`, `escalation`, `holiday`, `quiet_hours`, `mailbox_cap`, `company_cap`,
    /// `rolling_cap`, `run_limit`, `below_min_score` or `outside_trigger_window`
    #[serde(skip_serializing_if = "String::is_empty")]
    skip_reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    /// The company whose touch or opt-out caused a portfolio skip (`portfolio_cap`,
    /// `portfolio_gap`, `portfolio_exclusive`, `portfolio_suppressed`).
    #[serde(skip_serializing_if = "String::is_empty")]
    caused_by_company: String,
}

/// A run of the upsell engine: every customer scored, highest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsellRunView {
    dry_run: bool,
    scored: u32,
    enrolled: u32,
    skipped: u32,
    candidates: Vec<CandidateView>,
    /// Why nothing happened, when nothing could (no rules, no Upso account).
    #[serde(skip_serializing_if = "String::is_empty")]
    note: String,
}

impl From<pb::EngineReport> for UpsellRunView {
    fn from(r: pb::EngineReport) -> Self {
        Self {
            dry_run: r.dry_run,
            scored: r.scored,
            enrolled: r.enrolled,
            skipped: r.skipped,
            candidates: r
                .candidates
                .into_iter()
                .map(|c| CandidateView {
                    email: c.customer_email,
                    deal_id: c.deal_id,
                    score: c.score,
                    reasons: reasons(c.reasons),
                    decision: c.decision,
                    skip_reason: c.skip_reason,
                    detail: c.detail,
                    caused_by_company: c.caused_by_company,
                })
                .collect(),
            note: r.note,
        }
    }
}

/// Who would be enrolled now, and why, without enrolling or sending anything.
#[utoipa::path(get, path = "/v1/companies/{companyId}/upsell/dry-run", operation_id = "dryRunUpsell", tag = "upsell",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "What a run would do now", body = UpsellRunView), (status = 422, description = "Upso refused the company's token")))]
async fn dry_run(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<UpsellRunView>> {
    let r = s.upso_cadence.clone().dry_run(caller.request(pb::EngineRequest { company_id })).await?.into_inner();
    Ok(Json(r.into()))
}

/// Runs the upsell engine for the company now (it also runs on deal events and on a
/// schedule): enrolls the winners into the upsell cadence in Upso.
#[utoipa::path(post, path = "/v1/companies/{companyId}/upsell/runs", operation_id = "runUpsell", tag = "upsell",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "What the run did", body = UpsellRunView)))]
async fn run_now(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<UpsellRunView>> {
    let r = s.upso_cadence.clone().run_engine(caller.request(pb::EngineRequest { company_id })).await?.into_inner();
    Ok(Json(r.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DecisionsQuery {
    /// How many, newest first: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One recorded enrollment or skip.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    id: String,
    rule: String,
    email: String,
    deal_id: String,
    score: f64,
    reasons: Vec<ScoreReasonView>,
    decision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    skip_reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    upso_enrollment_id: String,
    decided_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionsView {
    items: Vec<DecisionView>,
}

/// Every enrollment and skip the engine recorded for the company, newest first.
#[utoipa::path(get, path = "/v1/companies/{companyId}/upsell/decisions", operation_id = "listUpsellDecisions", tag = "upsell",
    params(("companyId" = String, Path, description = "Company id"), DecisionsQuery),
    responses((status = 200, description = "Recorded decisions", body = DecisionsView)))]
async fn decisions(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> ApiResult<Json<DecisionsView>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(crate::problem::Problem::invalid("limit", "must be between 1 and 1000"));
    }
    let req = pb::ListDecisionsRequest { company_id, limit };
    let r = s.upso_cadence.clone().list_decisions(caller.request(req)).await?.into_inner();
    Ok(Json(DecisionsView {
        items: r
            .decisions
            .into_iter()
            .map(|d| DecisionView {
                id: d.id,
                rule: d.rule_key,
                email: d.customer_email,
                deal_id: d.deal_id,
                score: d.score,
                reasons: reasons(d.reasons),
                decision: d.decision,
                skip_reason: d.skip_reason,
                detail: d.detail,
                upso_enrollment_id: d.upso_enrollment_id,
                decided_at: rfc3339(d.decided_at),
            })
            .collect(),
    }))
}

/// The company's Upso API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsoAccountBody {
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpsoAccountView {
    upso_account_id: String,
}

/// Sets the company's Upso account (its API token, checked with Upso, then sealed; it is
/// never returned).
#[utoipa::path(put, path = "/v1/companies/{companyId}/upso-account", operation_id = "setUpsoAccount", tag = "upsell",
    params(("companyId" = String, Path, description = "Company id")),
    request_body = UpsoAccountBody,
    responses((status = 200, description = "Registered", body = UpsoAccountView), (status = 409, description = "The Upso account is already bound to another company"), (status = 422, description = "Upso refused the token")))]
async fn register_account(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpsoAccountBody>,
) -> ApiResult<Json<UpsoAccountView>> {
    let req = pb::RegisterAccountRequest { company_id, upso_token: body.token };
    let r = s
        .upso_cadence
        .clone()
        .register_account(caller.request(req))
        .await
        .map_err(|status| Problem::from(status).renamed_field("upso_token", "token"))?
        .into_inner();
    Ok(Json(UpsoAccountView { upso_account_id: r.upso_account_id }))
}

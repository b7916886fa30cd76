//! `/v1/config/…`: the portfolio's GTM configuration as code: revisions of the desired-state
//! document, their diffs, rollback, and plans against each portal.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{Page, PageQuery, rfc3339};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use gomark_proto::orchestrator::v1 as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(latest))
        .routes(routes!(read))
        .routes(routes!(diff))
        .routes(routes!(rollback))
        .routes(routes!(plan))
        .routes(routes!(read_plan))
        .routes(routes!(apply_plan))
        .routes(routes!(import))
        .routes(routes!(portfolio_audit))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionCreate {
    /// The whole desired-state document, as YAML (or JSON).
    document: String,
    /// Why: shown in the revision list and the audit log.
    message: String,
    /// Accept only if the latest revision still has this number (optimistic locking).
    expected_latest: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    number: i64,
    author: String,
    message: String,
    created_at: String,
    content_hash: String,
    /// The document as YAML; omitted in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<String>,
    /// Set when this revision restored an earlier one.
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_to: Option<i64>,
}

impl From<pb::Revision> for RevisionView {
    fn from(r: pb::Revision) -> Self {
        Self {
            number: r.number,
            author: r.author,
            message: r.message,
            created_at: rfc3339(r.created_at),
            content_hash: r.content_hash,
            document: (!r.document_yaml.is_empty()).then_some(r.document_yaml),
            rolled_back_to: (r.rolled_back_to > 0).then_some(r.rolled_back_to),
        }
    }
}

/// Stores a new revision of the desired-state document (portfolio operators). Validation
/// errors name their path, e.g. `companies.acme.pipelines[1].stages[3].probability`.
/// Submitting what the latest revision already holds returns it unchanged.
#[utoipa::path(post, path = "/v1/config/revisions", operation_id = "createRevision", tag = "config", request_body = RevisionCreate,
    responses((status = 201, description = "The revision", body = RevisionView), (status = 412, description = "`expectedLatest` is no longer the latest revision")))]
async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<RevisionCreate>,
) -> ApiResult<(StatusCode, Json<RevisionView>)> {
    let req = pb::CreateRevisionRequest {
        document: body.document,
        message: body.message,
        expected_latest: body.expected_latest,
    };
    let revision = s.orchestrator.clone().create_revision(caller.request(req)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(revision.into())))
}

/// Revisions, newest first.
#[utoipa::path(get, path = "/v1/config/revisions", operation_id = "listRevisions", tag = "config", params(PageQuery),
    responses((status = 200, description = "A page of revisions", body = Page<RevisionView>), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<RevisionView>>> {
    let resp = s
        .orchestrator
        .clone()
        .list_revisions(caller.request(pb::ListRevisionsRequest { page: Some(page.to_proto()?) }))
        .await?
        .into_inner();
    Ok(Json(Page::new(resp.revisions.into_iter().map(RevisionView::from).collect(), resp.next_page_token)))
}

/// The latest revision, with its document.
#[utoipa::path(get, path = "/v1/config", operation_id = "getLatestRevision", tag = "config",
    responses((status = 200, description = "The latest revision", body = RevisionView), (status = 404, description = "No revision yet"), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn latest(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<RevisionView>> {
    let revision =
        s.orchestrator.clone().get_revision(caller.request(pb::GetRevisionRequest { number: 0 })).await?.into_inner();
    Ok(Json(revision.into()))
}

#[utoipa::path(get, path = "/v1/config/revisions/{number}", operation_id = "getRevision", tag = "config",
    params(("number" = i64, Path, description = "Revision number", minimum = 1)),
    responses((status = 200, description = "The revision, with its document", body = RevisionView), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(number): ApiPath<i64>,
) -> ApiResult<Json<RevisionView>> {
    if number < 1 {
        return Err(crate::problem::Problem::invalid("number", "must be 1 or more"));
    }
    let revision =
        s.orchestrator.clone().get_revision(caller.request(pb::GetRevisionRequest { number })).await?.into_inner();
    Ok(Json(revision.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DiffQuery {
    /// The older revision.
    #[param(minimum = 1)]
    from: i64,
    /// The newer revision; the latest when omitted.
    #[param(minimum = 1)]
    to: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeView {
    /// e.g. `baseline.dealProperties[gomark_tier].label`
    path: String,
    /// `added`, `removed` or `changed`
    kind: String,
    /// The value before: any JSON value (an object, a list of cadences, a string…);
    /// absent for an addition.
    before: Option<serde_json::Value>,
    /// The value after: any JSON value; absent for a removal.
    after: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiffView {
    from: i64,
    to: i64,
    changes: Vec<ChangeView>,
    /// The same changes, for people.
    text: String,
}

/// What changed between two revisions, keyed by names (reordering is no change).
#[utoipa::path(get, path = "/v1/config/diff", operation_id = "diffRevisions", tag = "config", params(DiffQuery),
    responses((status = 200, description = "The changes", body = DiffView), (status = 404, description = "A revision does not exist"), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn diff(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<DiffView>> {
    if q.from < 1 {
        return Err(crate::problem::Problem::invalid("from", "revisions are numbered from 1"));
    }
    if q.to.is_some_and(|t| t < 1) {
        return Err(crate::problem::Problem::invalid("to", "revisions are numbered from 1"));
    }
    let req = pb::DiffRevisionsRequest { from: q.from, to: q.to.unwrap_or(0) };
    let d = s.orchestrator.clone().diff_revisions(caller.request(req)).await?.into_inner();
    Ok(Json(DiffView {
        from: d.from,
        to: d.to,
        changes: d
            .changes
            .into_iter()
            .map(|c| ChangeView {
                path: c.path,
                kind: c.kind,
                before: c.before.as_ref().map(gomark_proto::json::from_value),
                after: c.after.as_ref().map(gomark_proto::json::from_value),
            })
            .collect(),
        text: d.text,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// The revision to restore.
    #[schema(minimum = 1)]
    to: i64,
    #[serde(default)]
    message: String,
}

/// Restores an earlier revision as a new one (applied like any other).
#[utoipa::path(post, path = "/v1/config/rollback", operation_id = "rollbackConfig", tag = "config", request_body = RollbackBody,
    responses((status = 201, description = "The new revision", body = RevisionView), (status = 404, description = "The revision does not exist"), (status = 412, description = "Another revision was created concurrently; retry")))]
async fn rollback(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<RollbackBody>,
) -> ApiResult<(StatusCode, Json<RevisionView>)> {
    let revision = s
        .orchestrator
        .clone()
        .rollback(caller.request(pb::RollbackRequest { to: body.to, message: body.message }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(revision.into())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanBody {
    /// The revision to plan; the latest when omitted (and no `document` is given).
    #[schema(minimum = 1)]
    revision: Option<i64>,
    /// A proposed document (YAML or JSON) to plan instead of a stored revision: it is
    /// stored as a revision only when the plan is applied.
    #[serde(default)]
    document: Option<String>,
    /// Plan restoring this earlier revision (a rollback).
    #[schema(minimum = 1)]
    rollback_to: Option<i64>,
    /// The message the new revision will carry (with `document` or `rollbackTo`).
    #[serde(default)]
    message: String,
    /// Only these companies; every company of the revision when omitted.
    #[serde(default)]
    company_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyPlanView {
    company_id: String,
    company_key: String,
    actions: Vec<crate::dto::ActionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    text: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// Apply the plan with `POST /v1/config/plans/{planId}/apply`.
    plan_id: String,
    /// The revision planned; 0 for a proposed document.
    revision: i64,
    /// The latest revision when the plan was made.
    base_revision: i64,
    created_at: String,
    /// Set once the plan was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout_id: Option<String>,
    companies: Vec<CompanyPlanView>,
}

impl From<pb::PlanResponse> for PlanView {
    fn from(p: pb::PlanResponse) -> Self {
        let text = |s: String| (!s.is_empty()).then_some(s);
        Self {
            plan_id: p.plan_id,
            revision: p.revision,
            base_revision: p.base_revision,
            created_at: rfc3339(p.created_at),
            rollout_id: text(p.rollout_id),
            companies: p
                .companies
                .into_iter()
                .map(|c| CompanyPlanView {
                    company_id: c.company_id,
                    company_key: c.company_key,
                    actions: c.actions.into_iter().map(crate::dto::ActionView::from).collect(),
                    error: text(c.error),
                    text: c.text,
                })
                .collect(),
        }
    }
}

/// What applying a revision (or a proposed document, or a rollback) would do to each
/// portal and Upso account, planned live by the services that own them. The plan is saved
/// under `planId`; applying it performs exactly these actions. Actions a vendor cannot do
/// are flagged with a safe alternative.
///
/// With `Accept: text/event-stream` the answer is a stream instead: `progress` events
/// (`{"done":k,"total":n}` companies) as companies are planned, then one `plan` event with
/// the JSON body above. A request that cannot be planned is answered with a problem
/// response as without the header; a failure after the stream started ends it with an
/// `error` event holding the problem document.
#[utoipa::path(post, path = "/v1/config/plan", operation_id = "createPlan", tag = "config", request_body = PlanBody,
    responses((status = 200, description = "The saved plan, per company; or, with `Accept: text/event-stream`, `progress` events (`{\"done\":k,\"total\":n}` companies) then a `plan` event (PlanView JSON) or an `error` event (Problem JSON)",
        content((PlanView = "application/json"), (crate::dto::ServerSentEvent = "text/event-stream"))),
        (status = 404, description = "The revision or a company does not exist")))]
async fn plan(
    State(s): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PlanBody>,
) -> ApiResult<Response> {
    if body.revision.is_some_and(|r| r < 1) {
        return Err(crate::problem::Problem::invalid("revision", "revisions are numbered from 1"));
    }
    if body.rollback_to.is_some_and(|r| r < 1) {
        return Err(crate::problem::Problem::invalid("rollbackTo", "revisions are numbered from 1"));
    }
    let req = pb::PlanRequest {
        revision: body.revision.unwrap_or(0),
        company_ids: body.company_ids,
        document: body.document.unwrap_or_default(),
        message: body.message,
        rollback_to: body.rollback_to.unwrap_or(0),
    };
    if !wants_event_stream(&headers) {
        let p = s.orchestrator.clone().plan(caller.request(req)).await?.into_inner();
        return Ok(Json(PlanView::from(p)).into_response());
    }
    let stream = s.orchestrator.clone().plan_with_progress(caller.request(req)).await?.into_inner();
    progress_events(stream, plan_event).await
}

/// The server-sent events of a *WithProgress stream, each message made an event by `event`.
/// The orchestrator checks the request before its first count, so the first message is
/// awaited here: a request that cannot be carried out gets the same problem response (and
/// status) as without `Accept: text/event-stream`.
async fn progress_events<M: Send + 'static>(
    mut stream: tonic::Streaming<M>,
    event: fn(Result<M, tonic::Status>) -> Option<Event>,
) -> ApiResult<Response> {
    let first = stream.message().await?.ok_or_else(|| Problem::from(gomark_platform::PublicError::internal()))?;
    let events = futures::stream::once(std::future::ready(Ok(first)))
        .chain(stream)
        .filter_map(move |m| std::future::ready(event(m).map(Ok::<_, std::convert::Infallible>)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// `name` with `view` as its JSON data, or an `error` event when it cannot be made.
fn json_event<V: Serialize>(name: &str, view: Result<V, Problem>) -> Option<Event> {
    let (name, json) = match view {
        Ok(view) => (name, serde_json::to_string(&view)),
        // Mapped as every error response is: the public kind and message, nothing internal.
        Err(problem) => ("error", serde_json::to_string(&problem)),
    };
    json.ok().map(|json| Event::default().event(name).data(json))
}

fn count_view(c: pb::CompanyCount) -> Result<CompanyCountView, Problem> {
    Ok(CompanyCountView { done: c.done, total: c.total })
}

/// How far a streamed plan or import is: the data of its `progress` events.
#[derive(Debug, Serialize)]
struct CompanyCountView {
    /// Companies done so far.
    done: u32,
    /// Companies the request covers.
    total: u32,
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

/// One message of the orchestrator's plan stream as a server-sent event.
fn plan_event(message: Result<pb::PlanProgress, tonic::Status>) -> Option<Event> {
    use pb::plan_progress::Update;
    match message {
        Ok(pb::PlanProgress { update: Some(Update::Progress(c)) }) => json_event("progress", count_view(c)),
        Ok(pb::PlanProgress { update: Some(Update::Plan(p)) }) => json_event("plan", Ok(PlanView::from(p))),
        Ok(pb::PlanProgress { update: None }) => None,
        Err(status) => json_event::<PlanView>("plan", Err(Problem::from(status))),
    }
}

/// A saved plan.
#[utoipa::path(get, path = "/v1/config/plans/{planId}", operation_id = "getPlan", tag = "config",
    params(("planId" = String, Path, description = "The plan's id")),
    responses((status = 200, description = "The plan", body = PlanView), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn read_plan(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(plan_id): ApiPath<String>,
) -> ApiResult<Json<PlanView>> {
    let p = s.orchestrator.clone().get_plan(caller.request(pb::GetPlanRequest { plan_id })).await?.into_inner();
    Ok(Json(p.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPlanBody {
    /// Companies applied at once (default 4).
    #[schema(minimum = 1, maximum = 64)]
    concurrency: Option<u32>,
    /// Halt when more than this percentage of finished companies failed (default 20).
    #[schema(minimum = 1, maximum = 100)]
    failure_threshold_pct: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedPlanView {
    revision: RevisionView,
    rollout: crate::routes::rollouts::RolloutView,
}

/// Applies a saved plan: a proposed document becomes a revision (refused if another was
/// stored since the plan was made), and a rollout performs exactly the plan's actions,
/// company by company. A company whose portal changed since then stops with "plan is stale".
#[utoipa::path(post, path = "/v1/config/plans/{planId}/apply", operation_id = "applyPlan", tag = "config",
    params(("planId" = String, Path, description = "The plan's id")),
    request_body = ApplyPlanBody,
    responses((status = 201, description = "The revision and the rollout applying it", body = AppliedPlanView), (status = 412, description = "Another revision was created concurrently; retry")))]
async fn apply_plan(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(plan_id): ApiPath<String>,
    ApiJson(body): ApiJson<ApplyPlanBody>,
) -> ApiResult<(StatusCode, Json<AppliedPlanView>)> {
    if body.concurrency.is_some_and(|c| c == 0) {
        return Err(crate::problem::Problem::invalid("concurrency", "must be 1 to 64"));
    }
    if body.failure_threshold_pct.is_some_and(|c| c == 0) {
        return Err(crate::problem::Problem::invalid("failureThresholdPct", "must be 1 to 100"));
    }
    let req = pb::ApplyPlanRequest {
        plan_id,
        concurrency: body.concurrency.unwrap_or(0),
        failure_threshold_pct: body.failure_threshold_pct.unwrap_or(0),
    };
    let applied = s.orchestrator.clone().apply_plan(caller.request(req)).await?.into_inner();
    let (Some(revision), Some(rollout)) = (applied.revision, applied.rollout) else {
        return Err(crate::problem::Problem::from(gomark_platform::PublicError::internal()));
    };
    Ok((StatusCode::CREATED, Json(AppliedPlanView { revision: revision.into(), rollout: rollout.into() })))
}

/// Portfolio-wide audit entries (configuration revisions, rollbacks), newest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "listPortfolioAudit", tag = "audit", params(crate::dto::AuditQuery),
    responses((status = 200, description = "A page of audit entries", body = Page<crate::dto::AuditEntryView>), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn portfolio_audit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<crate::dto::AuditQuery>,
) -> ApiResult<Json<Page<crate::dto::AuditEntryView>>> {
    caller.require_portfolio(gomark_platform::Role::Viewer)?;
    let req = query.to_proto(String::new())?;
    let resp = s.orchestrator.clone().list_audit_entries(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.entries.into_iter().map(crate::dto::AuditEntryView::from).collect(), resp.next_page_token)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportBody {
    /// Companies to import; every registered company when omitted.
    #[serde(default)]
    company_ids: Vec<String>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedView {
    company_id: String,
    company_key: String,
    deal_properties: u32,
    property_groups: u32,
    pipelines: u32,
    /// What could not be adopted, and why.
    skipped: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportView {
    revision: RevisionView,
    companies: Vec<ImportedView>,
}

/// Adopts what the portals hold (custom properties, groups, pipelines) as their companies'
/// overlays in a new revision: a portfolio is brought under GoMark, or rebuilt, in one call.
///
/// With `Accept: text/event-stream` the answer is a stream instead (status 200):
/// `progress` events (`{"done":k,"total":n}` companies) as portals are read, then one
/// `import` event with the JSON body of the 201 response. A request that cannot be carried
/// out is answered with a problem response as without the header; a failure after the
/// stream started ends it with an `error` event holding the problem document.
#[utoipa::path(post, path = "/v1/config/import", operation_id = "importConfig", tag = "config", request_body = ImportBody,
    responses((status = 201, description = "The new revision and what was adopted", body = ImportView),
        (status = 200, description = "With `Accept: text/event-stream`: `progress` events (`{\"done\":k,\"total\":n}` companies) then an `import` event (ImportView JSON) or an `error` event (Problem JSON)", content_type = "text/event-stream", body = crate::dto::ServerSentEvent),
        (status = 404, description = "A company does not exist"), (status = 412, description = "Another revision was created concurrently; retry")))]
async fn import(
    State(s): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult<Response> {
    let req = pb::ImportRequest { company_ids: body.company_ids, message: body.message };
    if !wants_event_stream(&headers) {
        let r = s.orchestrator.clone().import(caller.request(req)).await?.into_inner();
        return Ok((StatusCode::CREATED, Json(ImportView::try_from(r)?)).into_response());
    }
    let stream = s.orchestrator.clone().import_with_progress(caller.request(req)).await?.into_inner();
    progress_events(stream, import_event).await
}

/// One message of the orchestrator's import stream as a server-sent event.
fn import_event(message: Result<pb::ImportProgress, tonic::Status>) -> Option<Event> {
    use pb::import_progress::Update;
    match message {
        Ok(pb::ImportProgress { update: Some(Update::Progress(c)) }) => json_event("progress", count_view(c)),
        Ok(pb::ImportProgress { update: Some(Update::Imported(r)) }) => json_event("import", ImportView::try_from(r)),
        Ok(pb::ImportProgress { update: None }) => None,
        Err(status) => json_event::<ImportView>("import", Err(Problem::from(status))),
    }
}

impl TryFrom<pb::ImportResponse> for ImportView {
    type Error = Problem;

    fn try_from(r: pb::ImportResponse) -> Result<Self, Problem> {
        let revision = r
            .revision
            .map(RevisionView::from)
            .ok_or_else(|| Problem::from(gomark_platform::PublicError::internal()))?;
        Ok(ImportView {
            revision,
            companies: r
                .companies
                .into_iter()
                .map(|c| ImportedView {
                    company_id: c.company_id,
                    company_key: c.company_key,
                    deal_properties: c.deal_properties,
                    property_groups: c.property_groups,
                    pipelines: c.pipelines,
                    skipped: c.skipped,
                })
                .collect(),
        })
    }
}

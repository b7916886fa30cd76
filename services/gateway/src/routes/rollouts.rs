//! `/v1/rollouts`: applying a revision to the portfolio as a durable, resumable job, with
//! progress to poll or to follow as server-sent events.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{Page, PageQuery, rfc3339, rfc3339_opt};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use gomark_platform::Caller;
use gomark_proto::orchestrator::v1 as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(read))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(cancel))
        .routes(routes!(events))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStart {
    /// The revision to apply; the latest when omitted.
    #[schema(minimum = 1)]
    revision: Option<i64>,
    /// Only these companies; every company of the revision when omitted.
    #[serde(default)]
    company_ids: Vec<String>,
    /// Companies converged at once (default 4).
    #[schema(minimum = 1, maximum = 64)]
    concurrency: Option<u32>,
    /// Halt when more than this percentage of finished steps failed (default 20).
    #[schema(minimum = 1, maximum = 100)]
    failure_threshold_pct: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    company_id: String,
    company_key: String,
    wave: u32,
    /// `pending`, `running`, `done`, `failed` or `cancelled`
    state: String,
    /// Transient failures so far (waiting for a portal's budget is not one).
    attempts: u32,
    /// How many actions were performed, over every attempt.
    applied: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    /// The actions performed, over every attempt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    performed: Vec<crate::dto::ActionView>,
    /// While the step waits for its portal's HubSpot budget: when it resumes (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    id: String,
    revision: i64,
    /// `queued` (behind its company's earlier rollout), `running`, `paused`, `halted`,
    /// `cancelled`, `completed` or `superseded` (while queued or as it starts, by another
    /// rollout of the same companies that applies a revision at least as new, named in `reason`)
    state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    concurrency: u32,
    failure_threshold_pct: u32,
    created_by: String,
    created_at: String,
    /// When it completed, was cancelled or was superseded; absent while it may still run.
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    total: u32,
    done: u32,
    failed: u32,
    running: u32,
    pending: u32,
    /// Pending steps waiting for their portal's HubSpot budget (counted in `pending` too).
    waiting: u32,
    /// The saved plan it applies; absent when each step plans as it runs.
    #[serde(skip_serializing_if = "String::is_empty")]
    plan_id: String,
    /// Per company; omitted in lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    steps: Vec<StepView>,
}

impl From<pb::Rollout> for RolloutView {
    fn from(r: pb::Rollout) -> Self {
        Self {
            id: r.id,
            revision: r.revision,
            state: r.state,
            reason: r.reason,
            concurrency: r.concurrency,
            failure_threshold_pct: r.failure_threshold_pct,
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            finished_at: rfc3339_opt(r.finished_at),
            total: r.total,
            done: r.done,
            failed: r.failed,
            running: r.running,
            pending: r.pending,
            waiting: r.waiting,
            plan_id: r.plan_id,
            steps: r
                .steps
                .into_iter()
                .map(|s| StepView {
                    company_id: s.company_id,
                    company_key: s.company_key,
                    wave: s.wave,
                    state: s.state,
                    attempts: s.attempts,
                    applied: s.applied,
                    detail: s.detail,
                    performed: s.performed.into_iter().map(crate::dto::ActionView::from).collect(),
                    waiting_until: s.waiting_until.map(|t| rfc3339(Some(t))),
                })
                .collect(),
        }
    }
}

/// Applies a revision to its companies (portfolio operators): canary wave first, bounded
/// concurrency, retries, automatic halt on failures. Survives any crash.
#[utoipa::path(post, path = "/v1/rollouts", operation_id = "createRollout", tag = "rollouts", request_body = RolloutStart,
    responses((status = 201, description = "Started", body = RolloutView), (status = 404, description = "The revision or a company does not exist")))]
async fn start(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<RolloutStart>,
) -> ApiResult<(StatusCode, Json<RolloutView>)> {
    if body.revision.is_some_and(|r| r < 1) {
        return Err(crate::problem::Problem::invalid("revision", "revisions are numbered from 1"));
    }
    // In the gRPC contract 0 means "the default"; a caller who sends 0 means something else.
    if body.concurrency.is_some_and(|c| !(1..=64).contains(&c)) {
        return Err(crate::problem::Problem::invalid("concurrency", "must be 1 to 64"));
    }
    if body.failure_threshold_pct.is_some_and(|p| !(1..=100).contains(&p)) {
        return Err(crate::problem::Problem::invalid("failureThresholdPct", "must be 1 to 100"));
    }
    let req = pb::StartRolloutRequest {
        revision: body.revision.unwrap_or(0),
        company_ids: body.company_ids,
        concurrency: body.concurrency.unwrap_or(0),
        failure_threshold_pct: body.failure_threshold_pct.unwrap_or(0),
    };
    let rollout = s.orchestrator.clone().start_rollout(caller.request(req)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(rollout.into())))
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/v1/rollouts", operation_id = "listRollouts", tag = "rollouts", params(PageQuery),
    responses((status = 200, description = "A page of rollouts", body = Page<RolloutView>), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<RolloutView>>> {
    let resp = s
        .orchestrator
        .clone()
        .list_rollouts(caller.request(pb::ListRolloutsRequest { page: Some(page.to_proto()?) }))
        .await?
        .into_inner();
    Ok(Json(Page::new(resp.rollouts.into_iter().map(RolloutView::from).collect(), resp.next_page_token)))
}

/// A rollout with the state of every company.
#[utoipa::path(get, path = "/v1/rollouts/{rolloutId}", operation_id = "getRollout", tag = "rollouts", params(("rolloutId" = String, Path, description = "Rollout id")),
    responses((status = 200, description = "The rollout", body = RolloutView), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(
        s.orchestrator.clone().get_rollout(caller.request(pb::GetRolloutRequest { id })).await?.into_inner().into(),
    ))
}

/// Stops starting new steps; steps in flight finish.
#[utoipa::path(post, path = "/v1/rollouts/{rolloutId}/pause", operation_id = "pauseRollout", tag = "rollouts", params(("rolloutId" = String, Path, description = "Rollout id")),
    responses((status = 200, description = "Paused", body = RolloutView)))]
async fn pause(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(s.orchestrator.clone().pause_rollout(caller.request(pb::RolloutRef { id })).await?.into_inner().into()))
}

/// Resumes a paused or halted rollout (a halted one retries its failed steps).
#[utoipa::path(post, path = "/v1/rollouts/{rolloutId}/resume", operation_id = "resumeRollout", tag = "rollouts", params(("rolloutId" = String, Path, description = "Rollout id")),
    responses((status = 200, description = "Running again", body = RolloutView)))]
async fn resume(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(s.orchestrator.clone().resume_rollout(caller.request(pb::RolloutRef { id })).await?.into_inner().into()))
}

/// Cancels the steps not started yet.
#[utoipa::path(post, path = "/v1/rollouts/{rolloutId}/cancel", operation_id = "cancelRollout", tag = "rollouts", params(("rolloutId" = String, Path, description = "Rollout id")),
    responses((status = 200, description = "Cancelled", body = RolloutView)))]
async fn cancel(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RolloutView>> {
    Ok(Json(s.orchestrator.clone().cancel_rollout(caller.request(pb::RolloutRef { id })).await?.into_inner().into()))
}

const TERMINAL: &[&str] = &["completed", "cancelled", "halted", "superseded"];

/// Progress as server-sent events: a `progress` event (the rollout, as JSON) whenever it
/// changes, ending after it completes, is cancelled, halts or is superseded.
#[utoipa::path(get, path = "/v1/rollouts/{rolloutId}/events", operation_id = "streamRolloutEvents", tag = "rollouts", params(("rolloutId" = String, Path, description = "Rollout id")),
    responses((status = 200, description = "text/event-stream of `progress` events", content_type = "text/event-stream", body = crate::dto::ServerSentEvent), (status = 403, description = "Needs a portfolio-wide grant")))]
async fn events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    // Fail fast (404, 403) before the stream starts.
    let first = s
        .orchestrator
        .clone()
        .get_rollout(caller.request(pb::GetRolloutRequest { id: id.clone() }))
        .await?
        .into_inner();
    let stream = progress(s, caller, id, first);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn progress(
    s: AppState,
    caller: Caller,
    id: String,
    first: pb::Rollout,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures::stream::unfold((Some(first), String::new(), false), move |(next, last, ended)| {
        let s = s.clone();
        let caller = caller.clone();
        let id = id.clone();
        async move {
            if ended {
                return None;
            }
            let mut current = next;
            loop {
                let rollout = match current.take() {
                    Some(r) => r,
                    None => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        match s
                            .orchestrator
                            .clone()
                            .get_rollout(caller.request(pb::GetRolloutRequest { id: id.clone() }))
                            .await
                        {
                            Ok(r) => r.into_inner(),
                            Err(_) => return None,
                        }
                    }
                };
                let done = TERMINAL.contains(&rollout.state.as_str());
                let json = serde_json::to_string(&RolloutView::from(rollout)).unwrap_or_default();
                if json != last || done {
                    let event = Event::default().event("progress").data(json.clone());
                    return Some((Ok(event), (None, json, done)));
                }
            }
        }
    })
}

//! `/v1/companies/{companyId}/pipelines`, `/v1/companies/{companyId}/funnels/…` and `/v1/portfolio/…`:
//! live sales funnels from pipeline-tracker, read or watched (server-sent events).

use super::AppState;
use crate::auth::Auth;
use crate::dto::{Page, PageQuery, rfc3339_ms};
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use gomark_proto::common::v1::PageRequest;
use gomark_proto::pipeline_tracker::v1 as pb;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pipelines))
        .routes(routes!(funnel))
        .routes(routes!(waterfall))
        .routes(routes!(periods))
        .routes(routes!(funnel_events))
        .routes(routes!(portfolio))
        .routes(routes!(portfolio_events))
}

fn instant(field: &str, text: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| Problem::invalid(field, "must be an RFC 3339 instant, e.g. 2026-11-21T10:00:00Z"))
}

fn required_instant(field: &str, text: &Option<String>) -> ApiResult<i64> {
    match text {
        Some(t) => instant(field, t),
        None => Err(Problem::invalid(field, "is required")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    pipeline_id: String,
    label: String,
    deal_count: u64,
}

/// The company's pipelines: those configured in its portal and those its deals use.
#[utoipa::path(get, path = "/v1/companies/{companyId}/pipelines", operation_id = "listPipelines", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "The pipelines (one page)", body = Page<PipelineView>)))]
async fn pipelines(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<Page<PipelineView>>> {
    let resp =
        s.pipeline_tracker.clone().list_pipelines(caller.request(pb::ListPipelinesRequest { company_id })).await?;
    let items = resp
        .into_inner()
        .pipelines
        .into_iter()
        .map(|p| PipelineView { pipeline_id: p.pipeline_id, label: p.label, deal_count: p.deal_count })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunnelStageView {
    stage_id: String,
    label: String,
    /// `open`, `won` or `lost`.
    kind: String,
    probability: f64,
    deal_count: u64,
    amount: f64,
    /// amount × probability (open stages).
    weighted_amount: f64,
    /// Of the deals that reached this stage, the share that went further (open stages).
    #[serde(skip_serializing_if = "Option::is_none")]
    conversion_to_next: Option<f64>,
    avg_days_in_stage: f64,
    median_days_in_stage: f64,
    /// No longer in the pipeline configuration; its history is kept.
    removed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunnelView {
    company_id: String,
    pipeline_id: String,
    pipeline_label: String,
    /// The instant the figures describe.
    as_of: String,
    stages: Vec<FunnelStageView>,
    open_count: u64,
    open_amount: f64,
    weighted_forecast: f64,
    won_count: u64,
    won_amount: f64,
    lost_count: u64,
    lost_amount: f64,
    /// won ÷ (won + lost).
    win_rate: f64,
    /// Average days from creation to won.
    avg_cycle_days: f64,
    /// Expected revenue per day: open deals × average won amount × win rate ÷ cycle days.
    sales_velocity_per_day: f64,
}

impl From<pb::Funnel> for FunnelView {
    fn from(f: pb::Funnel) -> Self {
        Self {
            company_id: f.company_id,
            pipeline_id: f.pipeline_id,
            pipeline_label: f.pipeline_label,
            as_of: rfc3339_ms(f.as_of_ms),
            stages: f
                .stages
                .into_iter()
                .map(|s| FunnelStageView {
                    stage_id: s.stage_id,
                    label: s.label,
                    kind: s.kind,
                    probability: s.probability,
                    deal_count: s.deal_count,
                    amount: s.amount,
                    weighted_amount: s.weighted_amount,
                    conversion_to_next: s.conversion_to_next,
                    avg_days_in_stage: s.avg_days_in_stage,
                    median_days_in_stage: s.median_days_in_stage,
                    removed: s.removed,
                })
                .collect(),
            open_count: f.open_count,
            open_amount: f.open_amount,
            weighted_forecast: f.weighted_forecast,
            won_count: f.won_count,
            won_amount: f.won_amount,
            lost_count: f.lost_count,
            lost_amount: f.lost_amount,
            win_rate: f.win_rate,
            avg_cycle_days: f.avg_cycle_days,
            sales_velocity_per_day: f.sales_velocity_per_day,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelQuery {
    /// The funnel as it was at this instant (RFC 3339); now when omitted.
    pub at: Option<String>,
}

/// One pipeline's funnel: deals, amounts, weighted forecast, conversion and time per
/// stage, win rate and velocity; now (cached) or at a past instant.
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}", operation_id = "getFunnel", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id (`default` is HubSpot's)"), FunnelQuery),
    responses((status = 200, description = "The funnel", body = FunnelView)))]
async fn funnel(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<FunnelQuery>,
) -> ApiResult<Json<FunnelView>> {
    let as_of_ms = match &query.at {
        Some(t) => instant("at", t)?.max(1),
        None => 0,
    };
    let req = pb::GetFunnelRequest { company_id, pipeline_id, as_of_ms };
    Ok(Json(s.pipeline_tracker.clone().get_funnel(caller.request(req)).await?.into_inner().into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start (RFC 3339).
    pub from: Option<String>,
    /// End (RFC 3339), after `from`.
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MovementView {
    count: u64,
    amount: f64,
}

fn movement(m: Option<pb::Movement>) -> MovementView {
    let m = m.unwrap_or_default();
    MovementView { count: m.count, amount: m.amount }
}

/// `end = start + created + reopened − won − lost − removed + amountChanged`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaterfallView {
    from: String,
    to: String,
    /// Open at `from`.
    start: MovementView,
    created: MovementView,
    /// Closed (or in another pipeline) at `from`, open again at `to`.
    reopened: MovementView,
    won: MovementView,
    lost: MovementView,
    /// Deleted or moved to another pipeline.
    removed: MovementView,
    /// Open at both dates with an earlier close date at `to` (does not change the total).
    pulled_in: MovementView,
    /// Open at both dates with a later close date at `to` (does not change the total).
    pushed_out: MovementView,
    /// Net change of the amounts of deals open at both dates.
    amount_changed: f64,
    /// Open at `to`.
    end: MovementView,
}

/// What moved the open pipeline between two instants.
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}/waterfall", operation_id = "getFunnelWaterfall", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id"), RangeQuery),
    responses((status = 200, description = "The waterfall", body = WaterfallView)))]
async fn waterfall(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> ApiResult<Json<WaterfallView>> {
    let from_ms = required_instant("from", &query.from)?;
    let to_ms = required_instant("to", &query.to)?;
    let req = pb::GetWaterfallRequest { company_id, pipeline_id, from_ms, to_ms };
    let w = s.pipeline_tracker.clone().get_waterfall(caller.request(req)).await?.into_inner();
    Ok(Json(WaterfallView {
        from: rfc3339_ms(w.from_ms),
        to: rfc3339_ms(w.to_ms),
        start: movement(w.start),
        created: movement(w.created),
        reopened: movement(w.reopened),
        won: movement(w.won),
        lost: movement(w.lost),
        removed: movement(w.removed),
        pulled_in: movement(w.pulled_in),
        pushed_out: movement(w.pushed_out),
        amount_changed: w.amount_changed,
        end: movement(w.end),
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodsQuery {
    /// `day`, `week` (ISO, from Monday) or `month` (default), in UTC.
    pub period: Option<String>,
    /// Start (RFC 3339).
    pub from: Option<String>,
    /// End (RFC 3339), after `from`; at most 400 periods.
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodView {
    start: String,
    created: u64,
    won: u64,
    lost: u64,
    won_amount: f64,
}

/// Deals created, won and lost per day, week or month.
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}/periods", operation_id = "getFunnelPeriods", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id"), PeriodsQuery),
    responses((status = 200, description = "One row per period (one page)", body = Page<PeriodView>)))]
async fn periods(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<PeriodsQuery>,
) -> ApiResult<Json<Page<PeriodView>>> {
    let from_ms = required_instant("from", &query.from)?;
    let to_ms = required_instant("to", &query.to)?;
    let period = query.period.unwrap_or_else(|| "month".into());
    let req = pb::GetPeriodsRequest { company_id, pipeline_id, period, from_ms, to_ms };
    let series = s.pipeline_tracker.clone().get_periods(caller.request(req)).await?.into_inner();
    let items = series
        .periods
        .into_iter()
        .map(|p| PeriodView {
            start: rfc3339_ms(p.start_ms),
            created: p.created,
            won: p.won,
            lost: p.lost,
            won_amount: p.won_amount,
        })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

/// A stream of `funnel` events: the funnel now, then each time a deal event changes it
/// (a slow reader gets the latest figures, not every step).
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}/events", operation_id = "streamFunnelEvents", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id")),
    responses((status = 200, description = "text/event-stream of `funnel` events (FunnelView JSON)", content_type = "text/event-stream", body = crate::dto::ServerSentEvent)))]
async fn funnel_events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let req = pb::GetFunnelRequest { company_id, pipeline_id, as_of_ms: 0 };
    // Errors (404, 403) surface here, before the stream starts.
    let stream = s.pipeline_tracker.clone().watch_funnel(caller.request(req)).await?.into_inner();
    Ok(sse("funnel", stream, FunnelView::from))
}

/// Turns a gRPC watch into server-sent events named `name`; ends when the watch does.
fn sse<M: Send + Sync + 'static, V: Serialize + 'static>(
    name: &'static str,
    stream: tonic::Streaming<M>,
    view: fn(M) -> V,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let events =
        stream.take_while(|m| std::future::ready(m.is_ok())).filter_map(move |m| {
            std::future::ready(m.ok().and_then(|m| {
                serde_json::to_string(&view(m)).ok().map(|json| Ok(Event::default().event(name).data(json)))
            }))
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioStageView {
    stage_id: String,
    label: String,
    /// `open`, `won` or `lost`.
    kind: String,
    deal_count: u64,
    amount: f64,
    weighted_amount: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanySummaryView {
    /// Empty on the totals row.
    company_id: String,
    company_name: String,
    open_count: u64,
    open_amount: f64,
    weighted_forecast: f64,
    won_count: u64,
    won_amount: f64,
    lost_count: u64,
    lost_amount: f64,
    win_rate: f64,
    /// On the canonical portfolio stages.
    stages: Vec<PortfolioStageView>,
}

impl From<pb::CompanySummary> for CompanySummaryView {
    fn from(c: pb::CompanySummary) -> Self {
        Self {
            company_id: c.company_id,
            company_name: c.company_name,
            open_count: c.open_count,
            open_amount: c.open_amount,
            weighted_forecast: c.weighted_forecast,
            won_count: c.won_count,
            won_amount: c.won_amount,
            lost_count: c.lost_count,
            lost_amount: c.lost_amount,
            win_rate: c.win_rate,
            stages: c.stages.into_iter().map(stage_view).collect(),
        }
    }
}

fn stage_view(s: pb::PortfolioStage) -> PortfolioStageView {
    PortfolioStageView {
        stage_id: s.stage_id,
        label: s.label,
        kind: s.kind,
        deal_count: s.deal_count,
        amount: s.amount,
        weighted_amount: s.weighted_amount,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioView {
    /// The canonical portfolio stages, in funnel order.
    stages: Vec<PortfolioStageView>,
    /// Sums over every selected company (not only this page).
    totals: CompanySummaryView,
    company_count: u64,
    /// One page of companies, by id.
    items: Vec<CompanySummaryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl From<pb::Portfolio> for PortfolioView {
    fn from(p: pb::Portfolio) -> Self {
        Self {
            stages: p.stages.into_iter().map(stage_view).collect(),
            totals: p.totals.unwrap_or_default().into(),
            company_count: p.company_count,
            items: p.companies.into_iter().map(CompanySummaryView::from).collect(),
            next_cursor: (!p.next_page_token.is_empty()).then_some(p.next_page_token),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioQuery {
    /// Comma-separated company ids; every company the caller can see when omitted.
    pub company_ids: Option<String>,
    /// Companies per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PortfolioQuery {
    fn to_proto(&self) -> ApiResult<pb::GetPortfolioRequest> {
        let page = PageQuery { limit: self.limit, cursor: self.cursor.clone() }.to_proto()?;
        let company_ids = self
            .company_ids
            .as_deref()
            .map(|ids| ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(pb::GetPortfolioRequest { company_ids, page: Some(PageRequest { ..page }) })
    }
}

/// The portfolio roll-up: every selected company's figures on the canonical stages, and
/// their totals.
#[utoipa::path(get, path = "/v1/portfolio/funnel", operation_id = "getPortfolioFunnel", tag = "funnels", params(PortfolioQuery),
    responses((status = 200, description = "Totals and a page of companies", body = PortfolioView)))]
async fn portfolio(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<PortfolioQuery>,
) -> ApiResult<Json<PortfolioView>> {
    let req = query.to_proto()?;
    Ok(Json(s.pipeline_tracker.clone().get_portfolio(caller.request(req)).await?.into_inner().into()))
}

/// A stream of `portfolio` events: the roll-up now, then each time any selected company
/// changes (coalesced).
#[utoipa::path(get, path = "/v1/portfolio/funnel/events", operation_id = "streamPortfolioFunnelEvents", tag = "funnels", params(PortfolioQuery),
    responses((status = 200, description = "text/event-stream of `portfolio` events (PortfolioView JSON)", content_type = "text/event-stream", body = crate::dto::ServerSentEvent)))]
async fn portfolio_events(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<PortfolioQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let req = query.to_proto()?;
    let stream = s.pipeline_tracker.clone().watch_portfolio(caller.request(req)).await?.into_inner();
    Ok(sse("portfolio", stream, PortfolioView::from))
}

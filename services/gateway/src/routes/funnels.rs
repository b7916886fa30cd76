//! `/v1/companies/{companyId}/pipelines`, `/v1/companies/{companyId}/funnels/…` and `/v1/portfolio/…`:
//! live sales funnels from pipeline-tracker, read or watched (server-sent events).

use super::AppState;
use crate::auth::Auth;
use crate::dto::{Page, PageQuery, instant, rfc3339, rfc3339_opt};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use crate::recent::RecentAnswers;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use gomark_platform::ErrorKind;
use gomark_proto::Timestamp;
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
        .routes(routes!(portfolio_periods))
        .routes(routes!(funnel_events))
        .routes(routes!(portfolio))
        .routes(routes!(portfolio_events))
        .routes(routes!(put_fx_rates))
}

/// An exact amount: the decimal as a string (so no JSON parser makes it a float) and its
/// ISO 4217 currency, e.g. `{"amount": "1234.50", "currency": "EUR"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MoneyView {
    #[schema(example = "1234.50")]
    amount: String,
    #[schema(example = "EUR")]
    currency: String,
}

/// A contract amount as REST shows it; absent or malformed amounts (never sent by
/// pipeline-tracker) show as none rather than as a wrong number.
pub(crate) fn money(m: Option<gomark_proto::common::v1::Money>) -> Option<MoneyView> {
    let m = gomark_proto::money::Money::try_from(m?).ok()?;
    Some(MoneyView { amount: m.amount.to_string(), currency: m.currency.to_string() })
}

/// A span as REST shows it: days, to two decimals.
fn days(span: Option<gomark_proto::Duration>) -> f64 {
    (gomark_proto::time::days(span.as_ref()) * 100.0).round() / 100.0
}

fn required_instant(field: &str, text: &Option<String>) -> ApiResult<Timestamp> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
    /// amount × probability (open stages).
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_amount: Option<MoneyView>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    open_amount: Option<MoneyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_forecast: Option<MoneyView>,
    won_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    won_amount: Option<MoneyView>,
    lost_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_amount: Option<MoneyView>,
    /// won ÷ (won + lost), the stages and window of the metric definitions.
    win_rate: f64,
    /// Average days from creation to won.
    avg_cycle_days: f64,
    /// Expected revenue per day: open deals × average won amount × win rate ÷ cycle days.
    #[serde(skip_serializing_if = "Option::is_none")]
    sales_velocity_per_day: Option<MoneyView>,
    /// The configuration revision whose metric definitions computed win rate, cycle and
    /// velocity (see `GET /v1/metrics/definitions`).
    definition_revision: i64,
}

impl From<pb::Funnel> for FunnelView {
    fn from(f: pb::Funnel) -> Self {
        Self {
            company_id: f.company_id,
            pipeline_id: f.pipeline_id,
            pipeline_label: f.pipeline_label,
            as_of: rfc3339(f.as_of),
            stages: f
                .stages
                .into_iter()
                .map(|s| FunnelStageView {
                    stage_id: s.stage_id,
                    label: s.label,
                    kind: s.kind,
                    probability: s.probability,
                    deal_count: s.deal_count,
                    amount: money(s.amount_money),
                    weighted_amount: money(s.weighted_amount_money),
                    conversion_to_next: s.conversion_to_next,
                    avg_days_in_stage: days(s.avg_in_stage),
                    median_days_in_stage: days(s.median_in_stage),
                    removed: s.removed,
                })
                .collect(),
            open_count: f.open_count,
            open_amount: money(f.open_amount_money),
            weighted_forecast: money(f.weighted_forecast_money),
            won_count: f.won_count,
            won_amount: money(f.won_amount_money),
            lost_count: f.lost_count,
            lost_amount: money(f.lost_amount_money),
            win_rate: f.win_rate,
            avg_cycle_days: days(f.avg_cycle),
            sales_velocity_per_day: money(f.sales_velocity_per_day_money),
            definition_revision: f.definition_revision,
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
///
/// The funnel now may be up to 0.5 s old (`asOf` says when it was computed): the gateway
/// reuses its answer to the same caller for that long, so polling it stays cheap. Watch
/// `…/funnels/{pipelineId}/events` to see every change as it happens.
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}", operation_id = "getFunnel", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id (`default` is HubSpot's)"), FunnelQuery),
    responses((status = 200, description = "The funnel", body = FunnelView)))]
async fn funnel(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<FunnelQuery>,
) -> ApiResult<Response> {
    let as_of = query.at.as_deref().map(|t| instant("at", t)).transpose()?;
    // Only "now" is reused: it is what dashboards poll; a past instant is asked once.
    let key = as_of.is_none().then(|| RecentAnswers::key(&caller, &[&company_id, &pipeline_id]));
    if let Some(body) = key.as_deref().and_then(|k| s.recent_funnels.get(k)) {
        return Ok(json_body(body));
    }
    let req = pb::GetFunnelRequest { company_id, pipeline_id, as_of };
    let funnel: FunnelView = s.pipeline_tracker.clone().get_funnel(caller.request(req)).await?.into_inner().into();
    let body =
        Bytes::from(serde_json::to_vec(&funnel).map_err(|_| Problem::new(ErrorKind::Internal, "internal error"))?);
    if let Some(key) = key {
        s.recent_funnels.put(key, body.clone());
    }
    Ok(json_body(body))
}

/// A JSON answer already encoded: the same response `Json` gives.
fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct WaterfallQuery {
    /// Start (RFC 3339).
    pub from: Option<String>,
    /// End (RFC 3339), after `from`.
    pub to: Option<String>,
    /// How many deals each bar lists at most, largest amounts first (default 20, at most 200).
    pub deal_limit: Option<u32>,
}

/// A deal as it stood at one of the waterfall's dates.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaterfallDealStateView {
    stage_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
    /// Absent when the deal has no close date.
    #[serde(skip_serializing_if = "Option::is_none")]
    close_date: Option<String>,
}

/// One deal behind a bar.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaterfallDealView {
    deal_id: String,
    /// The deal's name as last seen; empty when unknown.
    name: String,
    /// What the bar counts for this deal (for amount changes: after minus before).
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
    /// The deal at `from`; absent when it was not in the pipeline then.
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<WaterfallDealStateView>,
    /// The deal at `to`; absent when it was not in the pipeline then (deleted, moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<WaterfallDealStateView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovementView {
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
    /// The deals counted, largest (absolute) amount first, at most `dealLimit` of them.
    deals: Vec<WaterfallDealView>,
    /// `deals` lists fewer than `count` deals (raise `dealLimit` for more).
    deals_truncated: bool,
}

fn deal_state(s: Option<pb::WaterfallDealState>) -> Option<WaterfallDealStateView> {
    s.map(|s| WaterfallDealStateView {
        stage_id: s.stage_id,
        amount: money(s.amount),
        close_date: rfc3339_opt(s.close_date),
    })
}

fn movement(m: Option<pb::Movement>) -> MovementView {
    let m = m.unwrap_or_default();
    MovementView {
        count: m.count,
        amount: money(m.amount_money),
        deals: m
            .deals
            .into_iter()
            .map(|d| WaterfallDealView {
                deal_id: d.deal_id,
                name: d.name,
                amount: money(d.amount),
                before: deal_state(d.before),
                after: deal_state(d.after),
            })
            .collect(),
        deals_truncated: m.deals_truncated,
    }
}

/// `end = start + created + reopened − won − lost − removed + amountChanged`; every bar
/// lists the deals behind it.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_changed: Option<MoneyView>,
    /// The deals open at both dates whose amount changed; `amount` equals `amountChanged`.
    amount_changes: MovementView,
    /// Open at `to`.
    end: MovementView,
}

/// What moved the open pipeline between two instants.
#[utoipa::path(get, path = "/v1/companies/{companyId}/funnels/{pipelineId}/waterfall", operation_id = "getFunnelWaterfall", tag = "funnels",
    params(("companyId" = String, Path, description = "Company id"),
           ("pipelineId" = String, Path, description = "Pipeline id"), WaterfallQuery),
    responses((status = 200, description = "The waterfall", body = WaterfallView)))]
async fn waterfall(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, pipeline_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<WaterfallQuery>,
) -> ApiResult<Json<WaterfallView>> {
    let from = Some(required_instant("from", &query.from)?);
    let to = Some(required_instant("to", &query.to)?);
    let deal_limit = query.deal_limit.unwrap_or(0);
    let req = pb::GetWaterfallRequest { company_id, pipeline_id, from, to, deal_limit };
    let w = s
        .pipeline_tracker
        .clone()
        .get_waterfall(caller.request(req))
        .await
        .map_err(|status| Problem::from(status).renamed_field("deal_limit", "dealLimit"))?
        .into_inner();
    Ok(Json(WaterfallView {
        from: rfc3339(w.from),
        to: rfc3339(w.to),
        start: movement(w.start),
        created: movement(w.created),
        reopened: movement(w.reopened),
        won: movement(w.won),
        lost: movement(w.lost),
        removed: movement(w.removed),
        pulled_in: movement(w.pulled_in),
        pushed_out: movement(w.pushed_out),
        amount_changed: money(w.amount_changed_money),
        amount_changes: movement(w.amount_changes),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    won_amount: Option<MoneyView>,
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
    let from = Some(required_instant("from", &query.from)?);
    let to = Some(required_instant("to", &query.to)?);
    let period = query.period.unwrap_or_else(|| "month".into());
    let req = pb::GetPeriodsRequest { company_id, pipeline_id, period, from, to };
    let series = s.pipeline_tracker.clone().get_periods(caller.request(req)).await?.into_inner();
    let items = series
        .periods
        .into_iter()
        .map(|p| PeriodView {
            start: rfc3339(p.start),
            created: p.created,
            won: p.won,
            lost: p.lost,
            won_amount: money(p.won_amount_money),
        })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioPeriodsQuery {
    /// `day`, `week` (ISO, from Monday) or `month` (default), in UTC.
    pub period: Option<String>,
    /// Start (RFC 3339).
    pub from: Option<String>,
    /// End (RFC 3339), after `from`; at most 400 periods.
    pub to: Option<String>,
    /// Comma-separated company ids; every company the caller can see when omitted.
    pub company_ids: Option<String>,
}

/// Deals created, won and lost per period, summed over the companies' default pipelines
/// (counts only: amounts are in each company's currency). A company-scoped key counts its
/// own company only.
#[utoipa::path(get, path = "/v1/portfolio/periods", operation_id = "getPortfolioPeriods", tag = "funnels",
    params(PortfolioPeriodsQuery),
    responses((status = 200, description = "One row per period (one page), no amounts", body = Page<PeriodView>)))]
async fn portfolio_periods(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<PortfolioPeriodsQuery>,
) -> ApiResult<Json<Page<PeriodView>>> {
    let from = Some(required_instant("from", &query.from)?);
    let to = Some(required_instant("to", &query.to)?);
    let period = query.period.unwrap_or_else(|| "month".into());
    let company_ids = query
        .company_ids
        .as_deref()
        .map(|ids| ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let req = pb::GetPortfolioPeriodsRequest { company_ids, period, from, to };
    let series = s.pipeline_tracker.clone().get_portfolio_periods(caller.request(req)).await?.into_inner();
    let items = series
        .periods
        .into_iter()
        .map(|p| PeriodView { start: rfc3339(p.start), created: p.created, won: p.won, lost: p.lost, won_amount: None })
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
    let req = pb::GetFunnelRequest { company_id, pipeline_id, as_of: None };
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
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_amount: Option<MoneyView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanySummaryView {
    /// Empty on the totals row.
    company_id: String,
    company_name: String,
    open_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_amount: Option<MoneyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_forecast: Option<MoneyView>,
    won_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    won_amount: Option<MoneyView>,
    lost_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_amount: Option<MoneyView>,
    win_rate: f64,
    /// On the canonical portfolio stages.
    stages: Vec<PortfolioStageView>,
    /// The rate that converted this company into the reporting currency for the totals;
    /// absent when it reports in that currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    fx_rate: Option<FxRateView>,
    /// No rate on or before the as-of date converts this company's currency: its amounts
    /// are left out of the totals.
    fx_rate_missing: bool,
    /// The configuration revision whose metric definitions computed `winRate` and `metrics`.
    definition_revision: i64,
    /// The company's metrics under those definitions (absent on the totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<super::benchmarks::CompanyMetricsView>,
}

/// One exchange rate: 1 `from` = `rate` `to`, on `date`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FxRateView {
    /// ISO 8601 date (UTC).
    #[schema(example = "2026-03-31")]
    date: String,
    #[schema(example = "EUR")]
    from: String,
    #[schema(example = "USD")]
    to: String,
    /// A positive decimal, as a string.
    #[schema(example = "1.0842")]
    rate: String,
}

impl From<pb::CompanySummary> for CompanySummaryView {
    fn from(c: pb::CompanySummary) -> Self {
        Self {
            company_id: c.company_id,
            company_name: c.company_name,
            open_count: c.open_count,
            open_amount: money(c.open_amount_money),
            weighted_forecast: money(c.weighted_forecast_money),
            won_count: c.won_count,
            won_amount: money(c.won_amount_money),
            lost_count: c.lost_count,
            lost_amount: money(c.lost_amount_money),
            win_rate: c.win_rate,
            stages: c.stages.into_iter().map(stage_view).collect(),
            fx_rate: c.fx_rate.map(|r| FxRateView {
                date: r.date,
                from: r.from_currency_code,
                to: r.to_currency_code,
                rate: r.rate,
            }),
            fx_rate_missing: c.fx_rate_missing,
            definition_revision: c.definition_revision,
            metrics: c.metrics.map(Into::into),
        }
    }
}

fn stage_view(s: pb::PortfolioStage) -> PortfolioStageView {
    PortfolioStageView {
        stage_id: s.stage_id,
        label: s.label,
        kind: s.kind,
        deal_count: s.deal_count,
        amount: money(s.amount_money),
        weighted_amount: money(s.weighted_amount_money),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortfolioView {
    /// The canonical portfolio stages, in funnel order.
    stages: Vec<PortfolioStageView>,
    /// Sums over every selected company (not only this page), in the reporting currency.
    totals: CompanySummaryView,
    /// The currency of the totals.
    reporting_currency: String,
    /// Companies left out of the totals for want of an exchange rate.
    unconverted_company_ids: Vec<String>,
    company_count: u64,
    /// One page of companies, by id.
    items: Vec<CompanySummaryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    /// The configuration revision whose metric definitions computed the figures.
    definition_revision: i64,
}

impl From<pb::Portfolio> for PortfolioView {
    fn from(p: pb::Portfolio) -> Self {
        Self {
            stages: p.stages.into_iter().map(stage_view).collect(),
            totals: p.totals.unwrap_or_default().into(),
            reporting_currency: p.reporting_currency_code,
            unconverted_company_ids: p.unconverted_company_ids,
            company_count: p.company_count,
            items: p.companies.into_iter().map(CompanySummaryView::from).collect(),
            next_cursor: (!p.next_page_token.is_empty()).then_some(p.next_page_token),
            definition_revision: p.definition_revision,
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
    /// The instant (RFC 3339) whose exchange rates convert the totals: the latest rate on
    /// or before its date. Now when omitted.
    pub fx_as_of: Option<String>,
}

impl PortfolioQuery {
    fn to_proto(&self) -> ApiResult<pb::GetPortfolioRequest> {
        let page = PageQuery { limit: self.limit, cursor: self.cursor.clone() }.to_proto()?;
        let company_ids = self
            .company_ids
            .as_deref()
            .map(|ids| ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let fx_as_of = self.fx_as_of.as_deref().map(|t| instant("fxAsOf", t)).transpose()?;
        Ok(pb::GetPortfolioRequest { company_ids, page: Some(PageRequest { ..page }), fx_as_of })
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

/// Exchange rates to store. A list inside an object: every request body of this API is a
/// JSON object.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FxRatesPut {
    rates: Vec<FxRateView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FxRatesStored {
    stored: u64,
}

/// Stores dated exchange rates (admin, portfolio-wide). A rate given again for the same
/// date and pair replaces it; portfolio totals convert with the latest rate on or before
/// their as-of date.
#[utoipa::path(put, path = "/v1/portfolio/fx-rates", operation_id = "putPortfolioFxRates", tag = "funnels",
    request_body = FxRatesPut,
    responses((status = 200, description = "How many rates were stored", body = FxRatesStored)))]
async fn put_fx_rates(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<FxRatesPut>,
) -> ApiResult<Json<FxRatesStored>> {
    let rates = body
        .rates
        .into_iter()
        .map(|r| pb::FxRate { date: r.date, from_currency_code: r.from, to_currency_code: r.to, rate: r.rate })
        .collect();
    let resp = s.pipeline_tracker.clone().put_fx_rates(caller.request(pb::PutFxRatesRequest { rates })).await?;
    // New rates change amounts: this replica's reused funnels go (others' within 0.5 s).
    s.recent_funnels.forget();
    Ok(Json(FxRatesStored { stored: resp.into_inner().stored }))
}

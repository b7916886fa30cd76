//! `/v1/metrics/definitions` and `/v1/portfolio/benchmarks`: how each portfolio metric is
//! computed (the configuration's `baseline.metrics`, with the revision it came from, so a
//! number can be linked to its definition) and where each company stands against the
//! others, grouped by a tag of the company overlays.

use super::AppState;
use super::funnels::{MoneyView, money};
use crate::auth::Auth;
use crate::extract::ApiQuery;
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use gomark_proto::pipeline_tracker::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(definitions)).routes(routes!(benchmarks))
}

/// A window as REST shows it: whole days (absent: all of history).
fn window_days(d: Option<gomark_proto::Duration>) -> Option<u32> {
    d.map(|d| u32::try_from(d.seconds / 86_400).unwrap_or(u32::MAX))
}

/// The metric definitions in force. Stage ids are canonical portfolio stages.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricDefinitionsView {
    /// The configuration revision they come from (0: none yet, the defaults). Every
    /// figure carries the `definitionRevision` it was computed with.
    revision: i64,
    /// Win rate = won ÷ (won + lost), deals closed in the window.
    win_rate_won_stages: Vec<String>,
    win_rate_lost_stages: Vec<String>,
    /// Absent: all of history.
    #[serde(skip_serializing_if = "Option::is_none")]
    win_rate_window_days: Option<u32>,
    /// Conversion from each of these stages to the next (the last one to won).
    conversion_stages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sales_cycle_window_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    velocity_window_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slip_window_days: Option<u32>,
    /// Canonical stage id → forecast category.
    forecast_categories: BTreeMap<String, String>,
    /// Fewer deals behind a company's figure: "not enough data".
    min_deals: u32,
    /// Fewer companies behind percentiles: "not enough data".
    min_companies: u32,
}

impl From<pb::MetricDefinitions> for MetricDefinitionsView {
    fn from(d: pb::MetricDefinitions) -> Self {
        Self {
            revision: d.revision,
            win_rate_won_stages: d.win_rate_won_stage_ids,
            win_rate_lost_stages: d.win_rate_lost_stage_ids,
            win_rate_window_days: window_days(d.win_rate_window),
            conversion_stages: d.conversion_stage_ids,
            sales_cycle_window_days: window_days(d.sales_cycle_window),
            velocity_window_days: window_days(d.velocity_window),
            slip_window_days: window_days(d.slip_window),
            forecast_categories: d.forecast_categories.into_iter().collect(),
            min_deals: d.min_deals,
            min_companies: d.min_companies,
        }
    }
}

/// The metric definitions in force (from `baseline.metrics` of the latest configuration
/// revision) and that revision.
#[utoipa::path(get, path = "/v1/metrics/definitions", operation_id = "getMetricDefinitions", tag = "funnels",
    responses((status = 200, description = "The definitions in force", body = MetricDefinitionsView)))]
async fn definitions(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<MetricDefinitionsView>> {
    let req = caller.request(pb::GetMetricDefinitionsRequest {});
    Ok(Json(s.pipeline_tracker.clone().get_metric_definitions(req).await?.into_inner().into()))
}

/// One metric of one company: a number, or not enough data (then no number at all).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValueView {
    /// Absent when `notEnoughData`.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    not_enough_data: bool,
    /// The deals the value stands on.
    sample_size: u64,
    /// `ratio` or `days`.
    unit: &'static str,
}

pub(crate) fn metric_value(v: Option<pb::MetricValue>) -> Option<MetricValueView> {
    let v = v?;
    let unit = match pb::MetricUnit::try_from(v.unit) {
        Ok(pb::MetricUnit::Days) => "days",
        _ => "ratio",
    };
    Some(MetricValueView {
        value: (!v.not_enough_data).then_some(v.value),
        not_enough_data: v.not_enough_data,
        sample_size: v.sample_size,
        unit,
    })
}

/// Deals in one forecast category.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForecastCategoryView {
    category: String,
    deal_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<MoneyView>,
}

/// A company's metrics under the definitions of its `definitionRevision`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyMetricsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    win_rate: Option<MetricValueView>,
    /// Canonical stage id → conversion to the next stage.
    conversion: BTreeMap<String, MetricValueView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sales_cycle: Option<MetricValueView>,
    /// Absent when not enough data.
    #[serde(skip_serializing_if = "Option::is_none")]
    velocity_per_day: Option<MoneyView>,
    /// Open amount ÷ the company's `coverageTarget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    coverage: Option<MetricValueView>,
    /// Share of open deals whose close date was pushed in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    slip: Option<MetricValueView>,
    slipped_count: u64,
    forecast: Vec<ForecastCategoryView>,
}

impl From<pb::CompanyMetrics> for CompanyMetricsView {
    fn from(m: pb::CompanyMetrics) -> Self {
        Self {
            win_rate: metric_value(m.win_rate),
            conversion: m
                .conversion
                .into_iter()
                .filter_map(|c| Some((c.stage_id, metric_value(c.conversion)?)))
                .collect(),
            sales_cycle: metric_value(m.sales_cycle),
            velocity_per_day: money(m.velocity_per_day_money),
            coverage: metric_value(m.coverage),
            slip: metric_value(m.slip),
            slipped_count: m.slipped_count,
            forecast: m
                .forecast
                .into_iter()
                .map(|f| ForecastCategoryView {
                    category: f.category,
                    deal_count: f.deal_count,
                    amount: money(f.amount_money),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct BenchmarkQuery {
    /// `winRate`, `salesCycle`, `coverage` or `slip`; all of them when omitted.
    pub metric: Option<String>,
    /// A tag key of the company overlays (`salesMotion`, `arrBand`…); one portfolio
    /// group when omitted.
    pub group_by: Option<String>,
    /// Comma-separated company ids; every company the caller can see when omitted.
    pub company_ids: Option<String>,
}

/// One company's place in its group.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BenchmarkPositionView {
    company_id: String,
    company_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<MetricValueView>,
    /// Percentile rank in its group, 0–100: (companies below + half of those equal) ÷ n
    /// × 100. Absent when the value or the group is not enough data.
    #[serde(skip_serializing_if = "Option::is_none")]
    percentile_rank: Option<f64>,
}

/// The companies sharing one value of the `groupBy` tag.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BenchmarkGroupView {
    /// The tag's value; empty for companies without the tag (or when not grouped).
    tag_value: String,
    /// Fewer companies with enough data than the minimum: no percentiles.
    not_enough_data: bool,
    /// Linear interpolation between closest ranks (Excel PERCENTILE.INC).
    #[serde(skip_serializing_if = "Option::is_none")]
    p25: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p75: Option<f64>,
    /// Companies whose value counted.
    sample_size: u32,
    companies: Vec<BenchmarkPositionView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricBenchmarkView {
    metric: String,
    groups: Vec<BenchmarkGroupView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BenchmarksView {
    /// The configuration revision whose definitions computed every value.
    definition_revision: i64,
    group_by: String,
    metrics: Vec<MetricBenchmarkView>,
}

impl From<pb::Benchmarks> for BenchmarksView {
    fn from(b: pb::Benchmarks) -> Self {
        Self {
            definition_revision: b.definition_revision,
            group_by: b.group_by,
            metrics: b
                .metrics
                .into_iter()
                .map(|m| MetricBenchmarkView {
                    metric: m.metric,
                    groups: m
                        .groups
                        .into_iter()
                        .map(|g| {
                            let band = |x: f64| (!g.not_enough_data).then_some(x);
                            BenchmarkGroupView {
                                p25: band(g.p25),
                                p50: band(g.p50),
                                p75: band(g.p75),
                                tag_value: g.tag_value,
                                not_enough_data: g.not_enough_data,
                                sample_size: g.sample_size,
                                companies: g
                                    .companies
                                    .into_iter()
                                    .map(|c| {
                                        let value = metric_value(c.value);
                                        let ranked =
                                            !g.not_enough_data && value.as_ref().is_some_and(|v| !v.not_enough_data);
                                        BenchmarkPositionView {
                                            company_id: c.company_id,
                                            company_name: c.company_name,
                                            percentile_rank: ranked.then_some(c.percentile_rank),
                                            value,
                                        }
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Each company's metric against the portfolio's 25th, 50th and 75th percentiles and its
/// percentile rank, grouped by a company tag; figures below the minimum sample are "not
/// enough data".
#[utoipa::path(get, path = "/v1/portfolio/benchmarks", operation_id = "getPortfolioBenchmarks", tag = "funnels", params(BenchmarkQuery),
    responses((status = 200, description = "Percentile bands and positions", body = BenchmarksView)))]
async fn benchmarks(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<BenchmarkQuery>,
) -> ApiResult<Json<BenchmarksView>> {
    let metric = query.metric.unwrap_or_default();
    if !metric.is_empty() && !["winRate", "salesCycle", "coverage", "slip"].contains(&metric.as_str()) {
        return Err(Problem::invalid("metric", "must be winRate, salesCycle, coverage or slip"));
    }
    let company_ids = query
        .company_ids
        .as_deref()
        .map(|ids| ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let req = pb::GetBenchmarksRequest { metric, group_by: query.group_by.unwrap_or_default(), company_ids };
    Ok(Json(s.pipeline_tracker.clone().get_benchmarks(caller.request(req)).await?.into_inner().into()))
}

//! The read side: funnels, waterfalls, periods and the portfolio, computed from the
//! store and cached per company (cache-aside; ingest invalidates).

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::funnel::{self, DealHistory, Figures, PipelineInfo};
use crate::live::Changes;
use crate::portfolio::StageMap;
use crate::store::Store;
use gomark_cache::Cache;
use gomark_platform::PublicError;
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_proto::time::{duration_from_days, timestamp};
use prost::Message;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// HubSpot's pipeline when a request names none.
pub const DEFAULT_PIPELINE: &str = "default";
/// More periods than this in one request is refused.
pub const MAX_PERIODS: usize = 400;

pub struct Tracker {
    store: Store,
    catalog: Catalog,
    cache: Arc<dyn Cache>,
    cache_ttl: Duration,
    stage_map: RwLock<StageMap>,
    pub changes: Arc<Changes>,
}

fn cache_key(company_id: &str) -> String {
    // v2: the cached Funnel's `as_of` became a Timestamp; an entry in the old encoding
    // would decode with no date, so it is never read.
    format!("pipeline-tracker:company:v2:{company_id}")
}

fn pipeline_or_default(pipeline_id: &str) -> &str {
    if pipeline_id.is_empty() { DEFAULT_PIPELINE } else { pipeline_id }
}

impl Tracker {
    pub fn new(store: Store, catalog: Catalog, cache: Arc<dyn Cache>, cache_ttl: Duration) -> Self {
        Self {
            store,
            catalog,
            cache,
            cache_ttl,
            stage_map: RwLock::new(StageMap::default()),
            changes: Arc::new(Changes::default()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces the canonical stages and mapping (from the desired-state configuration).
    pub async fn set_stage_map(&self, map: StageMap) {
        let changed = {
            let mut current = self.stage_map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = *current != map;
            *current = map;
            changed
        };
        if changed {
            // Every cached summary was mapped with the old stages.
            let companies: Vec<String> = match self.store.companies().await {
                Ok(rows) => rows.into_iter().map(|c| c.company_id).collect(),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot list companies to refresh their summaries");
                    Vec::new()
                }
            };
            self.changed(&companies).await;
        }
    }

    fn stage_map(&self) -> StageMap {
        self.stage_map.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Called after a batch touching `companies` is stored.
    pub async fn changed(&self, companies: &[String]) {
        // Concurrently: a backfill batch touches many companies, each a cache round trip.
        let deletions = companies.iter().map(|c| async move { (c, self.cache.delete(&cache_key(c)).await) });
        for (c, outcome) in futures::future::join_all(deletions).await {
            if let Err(err) = outcome {
                tracing::warn!(company_id = %c, error = %err, "cache invalidation failed; the entry expires with its ttl");
            }
        }
        self.changes.publish(companies);
    }

    /// Every pipeline of the company (configured or used by deals) with its figures at `as_of`.
    async fn compute(&self, company_id: &str, as_of: i64) -> Result<Vec<(PipelineInfo, Figures)>> {
        let mut pipelines = self.catalog.pipelines(company_id).await?;
        let history: Vec<DealHistory> = self.store.history(company_id).await?;
        let used: BTreeSet<&str> =
            history.iter().flat_map(|d| &d.versions).filter(|v| !v.deleted).map(|v| v.pipeline_id.as_str()).collect();
        for id in used {
            if !pipelines.iter().any(|p| p.id == id) {
                pipelines.push(PipelineInfo { id: id.to_owned(), label: id.to_owned(), stages: Vec::new() });
            }
        }
        Ok(pipelines
            .into_iter()
            .map(|p| {
                let figures = funnel::funnel(&p, &history, as_of);
                (p, figures)
            })
            .collect())
    }

    /// The company's funnels now, and its summary: cached until a deal event changes them.
    pub async fn company_funnels(&self, company_id: &str) -> Result<pb::CompanyFunnels> {
        let key = cache_key(company_id);
        match self.cache.get(&key).await {
            Ok(Some(bytes)) => match pb::CompanyFunnels::decode(bytes.as_slice()) {
                Ok(v) => {
                    metrics::counter!("cache_requests_total", "outcome" => "hit").increment(1);
                    return Ok(v);
                }
                Err(err) => tracing::warn!(key, error = %err, "cached funnels unreadable, recomputing"),
            },
            Ok(None) => metrics::counter!("cache_requests_total", "outcome" => "miss").increment(1),
            Err(err) => tracing::debug!(key, error = %err, "cache unavailable, computing"),
        }
        let now = gomark_storage::now_ms();
        let computed = self.compute(company_id, now).await?;
        let figures: Vec<Figures> = computed.iter().map(|(_, f)| f.clone()).collect();
        let value = pb::CompanyFunnels {
            funnels: computed.iter().map(|(p, f)| to_proto(company_id, p, f, now)).collect(),
            summary: Some(self.stage_map().summarize(company_id, "", &figures)),
        };
        if let Err(err) = self.cache.set(&key, &value.encode_to_vec(), self.cache_ttl).await {
            tracing::debug!(key, error = %err, "cache write skipped");
        }
        Ok(value)
    }

    /// One pipeline's funnel now (cached) or at `as_of_ms` (from the transition log).
    pub async fn funnel(&self, company_id: &str, pipeline_id: &str, as_of_ms: i64) -> Result<pb::Funnel> {
        let pipeline_id = pipeline_or_default(pipeline_id);
        if as_of_ms < 0 {
            return Err(PublicError::invalid("as_of", "must be a date after 1970").into());
        }
        let found = if as_of_ms == 0 {
            self.company_funnels(company_id).await?.funnels.into_iter().find(|f| f.pipeline_id == pipeline_id)
        } else {
            self.compute(company_id, as_of_ms)
                .await?
                .into_iter()
                .find(|(p, _)| p.id == pipeline_id)
                .map(|(p, f)| to_proto(company_id, &p, &f, as_of_ms))
        };
        match found {
            Some(f) => Ok(f),
            // A company with no deals yet still has HubSpot's default pipeline.
            None if pipeline_id == DEFAULT_PIPELINE => Ok(pb::Funnel {
                company_id: company_id.to_owned(),
                pipeline_id: pipeline_id.to_owned(),
                as_of: Some(timestamp(if as_of_ms == 0 { gomark_storage::now_ms() } else { as_of_ms })),
                ..Default::default()
            }),
            None => Err(PublicError::not_found(format!("pipeline {pipeline_id}")).into()),
        }
    }

    pub async fn pipelines(&self, company_id: &str) -> Result<pb::ListPipelinesResponse> {
        let funnels = self.company_funnels(company_id).await?.funnels;
        Ok(pb::ListPipelinesResponse {
            pipelines: funnels
                .into_iter()
                .map(|f| pb::PipelineSummary {
                    deal_count: f.stages.iter().map(|s| s.deal_count).sum(),
                    label: f.pipeline_label,
                    pipeline_id: f.pipeline_id,
                })
                .collect(),
        })
    }

    async fn pipeline_with_history(
        &self,
        company_id: &str,
        pipeline_id: &str,
    ) -> Result<(PipelineInfo, Vec<DealHistory>)> {
        let pipeline_id = pipeline_or_default(pipeline_id);
        let pipeline =
            self.catalog.pipelines(company_id).await?.into_iter().find(|p| p.id == pipeline_id).unwrap_or_else(|| {
                PipelineInfo { id: pipeline_id.to_owned(), label: pipeline_id.to_owned(), stages: Vec::new() }
            });
        Ok((pipeline, self.store.history(company_id).await?))
    }

    pub async fn waterfall(
        &self,
        company_id: &str,
        pipeline_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<pb::Waterfall> {
        check_range(from_ms, to_ms)?;
        let (pipeline, history) = self.pipeline_with_history(company_id, pipeline_id).await?;
        let w = funnel::waterfall(&pipeline, &history, from_ms, to_ms);
        let m = |m: funnel::Movement| Some(pb::Movement { count: m.count, amount: m.amount });
        Ok(pb::Waterfall {
            company_id: company_id.to_owned(),
            pipeline_id: pipeline.id,
            from: Some(timestamp(from_ms)),
            to: Some(timestamp(to_ms)),
            start: m(w.start),
            created: m(w.created),
            reopened: m(w.reopened),
            won: m(w.won),
            lost: m(w.lost),
            removed: m(w.removed),
            pulled_in: m(w.pulled_in),
            pushed_out: m(w.pushed_out),
            amount_changed: w.amount_changed,
            end: m(w.end),
        })
    }

    pub async fn periods(
        &self,
        company_id: &str,
        pipeline_id: &str,
        period: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<pb::PeriodSeries> {
        let period = funnel::Period::parse(period)
            .ok_or_else(|| Error::Public(PublicError::invalid("period", "must be day, week or month")))?;
        check_range(from_ms, to_ms)?;
        let (pipeline, history) = self.pipeline_with_history(company_id, pipeline_id).await?;
        let counts = funnel::periods(&pipeline, &history, period, from_ms, to_ms, MAX_PERIODS).ok_or_else(|| {
            Error::Public(PublicError::invalid("to", format!("the range holds more than {MAX_PERIODS} periods")))
        })?;
        Ok(pb::PeriodSeries {
            periods: counts
                .into_iter()
                .map(|c| pb::PeriodCount {
                    start: Some(timestamp(c.start_ms)),
                    created: c.created,
                    won: c.won,
                    lost: c.lost,
                    won_amount: c.won_amount,
                })
                .collect(),
        })
    }

    /// The roll-up over `company_ids` (every company known when empty); rows paged by id.
    pub async fn portfolio(&self, company_ids: &[String], page_size: u32, page_token: &str) -> Result<pb::Portfolio> {
        let known = self.store.companies().await?;
        let mut selected: Vec<(String, String)> = if company_ids.is_empty() {
            known.into_iter().map(|c| (c.company_id, c.name)).collect()
        } else {
            let mut ids: Vec<&String> = company_ids.iter().collect();
            ids.sort();
            ids.dedup();
            ids.into_iter()
                .map(|id| {
                    let name = known.iter().find(|c| &c.company_id == id).map(|c| c.name.clone()).unwrap_or_default();
                    (id.clone(), name)
                })
                .collect()
        };
        selected.sort();
        let mut summaries = Vec::with_capacity(selected.len());
        for (id, name) in &selected {
            let mut summary = self.company_funnels(id).await?.summary.unwrap_or_default();
            summary.company_id.clone_from(id);
            summary.company_name.clone_from(name);
            summaries.push(summary);
        }
        let map = self.stage_map();
        let totals = map.total(&summaries);
        let limit = if page_size == 0 { 50 } else { page_size.min(500) } as usize;
        let page: Vec<pb::CompanySummary> =
            summaries.into_iter().filter(|s| page_token.is_empty() || s.company_id.as_str() > page_token).collect();
        let next_page_token = if page.len() > limit { page[limit - 1].company_id.clone() } else { String::new() };
        Ok(pb::Portfolio {
            stages: totals.stages.clone(),
            totals: Some(totals),
            companies: page.into_iter().take(limit).collect(),
            next_page_token,
            company_count: selected.len() as u64,
        })
    }
}

fn check_range(from_ms: i64, to_ms: i64) -> Result<()> {
    if from_ms < 0 {
        return Err(PublicError::invalid("from", "must be a date after 1970").into());
    }
    if to_ms <= from_ms {
        return Err(PublicError::invalid("to", "must be after from").into());
    }
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn to_proto(company_id: &str, pipeline: &PipelineInfo, f: &Figures, as_of_ms: i64) -> pb::Funnel {
    pb::Funnel {
        company_id: company_id.to_owned(),
        pipeline_id: pipeline.id.clone(),
        pipeline_label: pipeline.label.clone(),
        as_of: Some(timestamp(as_of_ms)),
        stages: f
            .stages
            .iter()
            .map(|(s, x)| pb::FunnelStage {
                stage_id: s.id.clone(),
                label: s.label.clone(),
                deal_count: x.deal_count,
                amount: x.amount,
                probability: s.probability,
                kind: s.kind.as_str().into(),
                display_order: s.display_order,
                weighted_amount: x.weighted_amount,
                conversion_to_next: x.conversion_to_next,
                avg_in_stage: Some(duration_from_days(x.avg_days_in_stage)),
                median_in_stage: Some(duration_from_days(x.median_days_in_stage)),
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
        avg_cycle: Some(duration_from_days(f.avg_cycle_days)),
        sales_velocity_per_day: round2(f.sales_velocity_per_day),
    }
}

//! The read side: funnels, waterfalls, periods and the portfolio, computed from the
//! store and cached per company (cache-aside; ingest invalidates).

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::funnel::{self, DealHistory, Figures, PipelineInfo};
use crate::kpi::{self, CompanyMetrics, Definitions, Metric};
use crate::live::{Changes, Fresh};
use crate::portfolio::StageMap;
use crate::replicas::Replicas;
use crate::rollup::{self, Filed, Rollup, Rollups, Run};
use crate::store::Store;
use gomark_cache::Cache;
use gomark_platform::PublicError;
use gomark_proto::common::v1 as common;
use gomark_proto::money::{Currency, Money};
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_proto::time::{duration_from_days, timestamp};
use prost::Message;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// HubSpot's pipeline when a request names none.
pub const DEFAULT_PIPELINE: &str = "default";
/// More periods than this in one request is refused.
pub const MAX_PERIODS: usize = 400;
/// Deals listed per waterfall movement when the caller does not say, and at most: enough
/// to explain a bar, bounded so a large company's waterfall stays small.
pub const DEFAULT_WATERFALL_DEALS: usize = 20;
pub const MAX_WATERFALL_DEALS: usize = 200;

pub struct Tracker {
    store: Store,
    catalog: Catalog,
    cache: Arc<dyn Cache>,
    cache_ttl: Duration,
    stage_map: RwLock<StageMap>,
    currencies: RwLock<Currencies>,
    definitions: RwLock<Definitions>,
    /// This replica's per-company sums, so a deal change costs the same whatever the
    /// company's history (see [`crate::rollup`]).
    rollups: Rollups,
    pub changes: Arc<Changes>,
    /// The other replicas, told of each batch stored here; `None` alone (tests).
    replicas: Option<Replicas>,
}

/// The UTC date (YYYY-MM-DD) of epoch ms `t`: exchange rates are stored by date.
pub fn utc_date(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t).unwrap_or_default().format("%Y-%m-%d").to_string()
}

fn money(amount: Decimal, currency: Currency) -> Result<Option<common::Money>> {
    Ok(Some(Money::new(amount, currency).to_proto()?))
}

/// The currencies the configuration declares: the roll-up's, and each company's.
#[derive(Debug, Clone, PartialEq)]
pub struct Currencies {
    /// What portfolio totals are in.
    pub reporting: Currency,
    /// A company's currency when the configuration names none for it.
    pub default: Currency,
    pub by_company: BTreeMap<String, Currency>,
}

impl Default for Currencies {
    fn default() -> Self {
        Self { reporting: Currency::USD, default: Currency::USD, by_company: BTreeMap::new() }
    }
}

impl Currencies {
    pub fn of(&self, company_id: &str) -> Currency {
        self.by_company.get(company_id).copied().unwrap_or(self.default)
    }
}

/// Puts `value` in `slot`; whether it differed.
fn replace<T: PartialEq>(slot: &RwLock<T>, value: T) -> bool {
    let mut current = slot.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let changed = *current != value;
    *current = value;
    changed
}

fn cache_key(company_id: &str) -> String {
    // v3: entries carry their definition revision and metrics; a v2 entry would decode
    // as revision 0 with no metrics, so it is never read.
    format!("pipeline-tracker:company:v3:{company_id}")
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
            currencies: RwLock::new(Currencies::default()),
            definitions: RwLock::new(Definitions::default()),
            rollups: Rollups::default(),
            changes: Arc::new(Changes::default()),
            replicas: None,
        }
    }

    /// Tells `replicas` of every batch stored here (see [`crate::replicas`]).
    pub fn with_replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = Some(replicas);
        self
    }

    pub fn replicas(&self) -> Option<&Replicas> {
        self.replicas.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces the canonical stages and mapping (from the desired-state configuration).
    pub async fn set_stage_map(&self, map: StageMap) {
        if replace(&self.stage_map, map) {
            // Every cached summary was mapped with the old stages.
            self.rollups.invalidate_all();
            self.changed_all().await;
        }
    }

    /// Replaces the currencies (from the desired-state configuration).
    pub async fn set_currencies(&self, currencies: Currencies) {
        if replace(&self.currencies, currencies) {
            // Cached figures are in the old currencies.
            self.rollups.invalidate_all();
            self.changed_all().await;
        }
    }

    /// Replaces the metric definitions (from the desired-state configuration).
    pub async fn set_definitions(&self, definitions: Definitions) {
        if replace(&self.definitions, definitions) {
            // Cached figures carry the old definitions and their revision.
            self.rollups.invalidate_all();
            self.changed_all().await;
        }
    }

    /// The metric definitions in force.
    pub fn definitions(&self) -> Definitions {
        self.definitions.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn currencies(&self) -> Currencies {
        self.currencies.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The currency the company's figures are in.
    pub fn company_currency(&self, company_id: &str) -> Currency {
        self.currencies.read().unwrap_or_else(std::sync::PoisonError::into_inner).of(company_id)
    }

    /// Every company's cached figures are stale.
    async fn changed_all(&self) {
        let companies: Vec<String> = match self.store.companies().await {
            Ok(rows) => rows.into_iter().map(|c| c.company_id).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot list companies to refresh their summaries");
                Vec::new()
            }
        };
        self.changed(&companies).await;
    }

    fn stage_map(&self) -> StageMap {
        self.stage_map.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Called after `companies` changed other than by a batch of deals (a name, exchange
    /// rates, the configuration): their watchers here and on the other replicas recompute.
    pub async fn changed(&self, companies: &[String]) {
        self.invalidate(companies).await;
        if let Some(replicas) = &self.replicas {
            let counted: Vec<Counted> =
                companies.iter().map(|c| Counted { company_id: c.clone(), version: 0, deals: Vec::new() }).collect();
            replicas.announce(&counted).await;
        }
        self.changes.publish(companies);
    }

    /// Drops the cached figures of `companies`.
    async fn invalidate(&self, companies: &[String]) {
        // One command for all: a backfill batch touches many companies.
        let keys: Vec<String> = companies.iter().map(|c| cache_key(c)).collect();
        if let Err(err) = self.cache.delete_all(&keys).await {
            tracing::warn!(companies = companies.len(), error = %err, "cache invalidation failed; the entries expire with their ttl");
        }
    }

    /// The company's deal history with every amount in the company's `currency`: amounts
    /// in another currency convert at the rate of `as_of`'s date. An amount no rate
    /// converts is left out (counted as none) and logged, never taken 1:1.
    async fn history_in(&self, company_id: &str, currency: Currency, as_of: i64) -> Result<Vec<DealHistory>> {
        let mut history: Vec<DealHistory> = self.store.history(company_id).await?;
        self.convert(company_id, &mut history, currency, &utc_date(as_of), &mut HashMap::new()).await?;
        Ok(history)
    }

    /// Converts every amount of `history` into `currency` at the rates of `date` (`rates`
    /// holds those already read, and takes those read now).
    async fn convert(
        &self,
        company_id: &str,
        history: &mut [DealHistory],
        currency: Currency,
        date: &str,
        rates: &mut HashMap<Currency, Option<Decimal>>,
    ) -> Result<()> {
        for v in history.iter_mut().flat_map(|d| d.versions.iter_mut()) {
            let Some(from) = v.currency.filter(|c| *c != currency) else { continue };
            let rate = match rates.get(&from) {
                Some(r) => *r,
                None => {
                    let r = self.store.fx_rate(from, currency, date).await?.map(|r| r.rate);
                    rates.insert(from, r);
                    r
                }
            };
            match (rate, v.amount) {
                (Some(rate), Some(amount)) => v.amount = Some(Money::new(amount, from).convert(rate, currency)?.amount),
                (None, Some(_)) => {
                    metrics::counter!("pipeline_tracker_unconverted_amounts_total").increment(1);
                    tracing::warn!(company_id, from = %from, to = %currency, date, "no exchange rate for a deal amount; left out");
                    v.amount = None;
                }
                (_, None) => {}
            }
            v.currency = Some(currency);
        }
        Ok(())
    }

    /// Every pipeline of the company (configured or used by deals) with its figures at `as_of`.
    async fn compute(&self, company_id: &str, currency: Currency, as_of: i64) -> Result<Computed> {
        let catalog = self.catalog.pipelines(company_id).await?;
        let history = self.history_in(company_id, currency, as_of).await?;
        let pipelines = rollup::pipelines_of(catalog, &history)
            .into_iter()
            .map(|p| {
                let figures = funnel::funnel(&p, &history, as_of);
                (p, figures)
            })
            .collect();
        Ok(Computed { pipelines, history })
    }

    /// The funnel of `p` as the contract carries it, its win rate, cycle and velocity
    /// under the definitions in force.
    fn funnel_proto(
        &self,
        company_id: &str,
        (p, f): (&PipelineInfo, &Figures),
        history: &[DealHistory],
        as_of: i64,
        currency: Currency,
    ) -> Result<pb::Funnel> {
        let defs = self.definitions();
        let m = kpi::company_metrics(company_id, std::slice::from_ref(p), history, &self.stage_map(), &defs, as_of);
        let mut funnel = to_proto(company_id, p, f, as_of, currency)?;
        funnel.win_rate = m.raw_win_rate;
        funnel.avg_cycle = Some(duration_from_days(m.raw_cycle_days));
        funnel.sales_velocity_per_day_money = money(m.velocity_per_day, currency)?;
        funnel.definition_revision = defs.revision;
        Ok(funnel)
    }

    /// The company's funnels now, and its summary: cached until a deal event changes them.
    pub async fn company_funnels(&self, company_id: &str) -> Result<pb::CompanyFunnels> {
        let key = cache_key(company_id);
        match self.cache.get(&key).await {
            Ok(Some(bytes)) => match pb::CompanyFunnels::decode(bytes.as_slice()) {
                // Computed under other definitions (another replica's, before it read the
                // new revision): recomputed, so a figure never outlives its definition.
                Ok(v) if v.summary.as_ref().map(|s| s.definition_revision) != Some(self.definitions().revision) => {
                    metrics::counter!("cache_requests_total", "outcome" => "stale").increment(1);
                }
                Ok(v) => {
                    metrics::counter!("cache_requests_total", "outcome" => "hit").increment(1);
                    return Ok(v);
                }
                Err(err) => tracing::warn!(key, error = %err, "cached funnels unreadable, recomputing"),
            },
            Ok(None) => metrics::counter!("cache_requests_total", "outcome" => "miss").increment(1),
            Err(err) => tracing::debug!(key, error = %err, "cache unavailable, computing"),
        }
        let value = self.compute_funnels(company_id).await?;
        if let Err(err) = self.cache.set(&key, &value.encode_to_vec(), self.cache_ttl).await {
            tracing::debug!(key, error = %err, "cache write skipped");
        }
        Ok(value)
    }

    /// The company's funnels now from its sums: those kept when they are current (this
    /// replica applied every change the store counts, and no boundary passed), else new
    /// sums over the whole history, kept for the next changes.
    async fn compute_funnels(&self, company_id: &str) -> Result<pb::CompanyFunnels> {
        // The generation before the configuration, the counter before the history: sums
        // computed from older inputs than they claim are never kept.
        let generation = self.rollups.generation();
        let version = self.store.company_version(company_id).await?;
        let (currency, defs, map) = (self.company_currency(company_id), self.definitions(), self.stage_map());
        let cx = rollup::Context { company_id, map: &map, defs: &defs };
        let now = gomark_storage::now_ms();
        let kept = self.rollups.with(company_id, |r| {
            let current = r.version == version && r.generation == generation && r.currency == currency;
            (current && r.valid_at(now)).then(|| self.funnels_from(&cx, r, now))
        });
        if let Some(Some(value)) = kept {
            metrics::counter!("pipeline_tracker_rollups_total", "outcome" => "kept").increment(1);
            return value;
        }
        metrics::counter!("pipeline_tracker_rollups_total", "outcome" => "recomputed").increment(1);
        let catalog = self.catalog.pipelines(company_id).await?;
        let mut history: Vec<DealHistory> = self.store.history(company_id).await?;
        let (date, mut rates) = (utc_date(now), HashMap::new());
        self.convert(company_id, &mut history, currency, &date, &mut rates).await?;
        let max_age = i64::try_from(self.cache_ttl.as_millis()).unwrap_or(i64::MAX);
        let r = Rollup::build(&cx, catalog, &history, now, max_age, (version, generation), currency, (date, rates));
        let value = self.funnels_from(&cx, &r, now);
        self.rollups.install(company_id, r);
        value
    }

    /// The company's funnels and summary at `now` from its sums `r` (valid at `now`).
    fn funnels_from(&self, cx: &rollup::Context<'_>, r: &Rollup, now: i64) -> Result<pb::CompanyFunnels> {
        let (company_id, defs, currency) = (cx.company_id, cx.defs, r.currency);
        let mut funnels = Vec::with_capacity(r.pipelines().len());
        let mut figures = Vec::with_capacity(r.pipelines().len());
        for p in r.pipelines() {
            let f = p.figures();
            let m = p.metrics(company_id, defs);
            let mut funnel = to_proto(company_id, &p.info, &f, now, currency)?;
            funnel.win_rate = m.raw_win_rate;
            funnel.avg_cycle = Some(duration_from_days(m.raw_cycle_days));
            funnel.sales_velocity_per_day_money = money(m.velocity_per_day, currency)?;
            funnel.definition_revision = defs.revision;
            funnels.push(funnel);
            figures.push(f);
        }
        let m = r.company_metrics(company_id, defs);
        let mut summary = cx.map.summarize(company_id, "", currency, &figures)?;
        summary.win_rate = m.raw_win_rate;
        summary.definition_revision = defs.revision;
        summary.metrics = Some(metrics_proto(&m, currency)?);
        Ok(pb::CompanyFunnels { funnels, summary: Some(summary) })
    }

    /// After a batch was stored, here or on another replica (`counted`: each company with the
    /// counter the batch left it at and the deals it changed): the kept sums take the
    /// changed deals in counter order, holding a batch back until the ones before it arrive
    /// (see [`Rollup::file`] and [`Rollup::take`]); on any failure they are dropped, and the
    /// next read recomputes the company. Returns whom to wake, with new figures for the
    /// companies watched on this replica whose sums took the batch, for [`Tracker::wake`].
    pub async fn apply(&self, counted: &[Counted]) -> Applied {
        let mut out = Applied { generation: self.rollups.generation(), wake: Vec::new() };
        let now = gomark_storage::now_ms();
        let mut offered: Vec<&str> = Vec::new();
        for c in counted {
            if c.version == 0 {
                // Not counted (a company's name): nothing for the sums.
                out.wake.push((c.company_id.clone(), None, None));
                continue;
            }
            match self.rollups.with(&c.company_id, |r| r.file(c.version, &c.deals, now)) {
                None => out.wake.push((c.company_id.clone(), Some(c.version), None)),
                Some(Filed::Kept) => offered.push(&c.company_id),
                Some(Filed::Reflected) => self.hand_over_kept(&c.company_id, &mut out),
                Some(Filed::Overdue) => {
                    metrics::counter!("pipeline_tracker_rollup_batches_total", "outcome" => "overdue").increment(1);
                    tracing::debug!(company_id = %c.company_id, "the sums are not catching up; the company is recomputed");
                    self.rollups.remove(&c.company_id);
                    out.wake.push((c.company_id.clone(), Some(c.version), None));
                }
            }
        }
        // Taken once all are filed: a company's counters arriving together are one run.
        offered.sort_unstable();
        offered.dedup();
        let mut runs = Vec::new();
        for company_id in offered {
            match self.rollups.with(company_id, Rollup::take) {
                Some(Some(run)) => runs.push((company_id.to_owned(), run)),
                // Until the counters before it arrive (or another caller applies them).
                _ => metrics::counter!("pipeline_tracker_rollup_batches_total", "outcome" => "held_back").increment(1),
            }
        }
        // Applying a run may free the next one (held back behind it).
        while !runs.is_empty() {
            runs = self.apply_runs(runs, &mut out).await;
        }
        out
    }

    /// Reads the deals of `runs` (one read for all: a batch touches many companies) and
    /// applies each to its company's sums; returns the runs that became ready behind them.
    async fn apply_runs(&self, runs: Vec<(String, Run)>, out: &mut Applied) -> Vec<(String, Run)> {
        let mut deals: Vec<(String, String)> =
            runs.iter().flat_map(|(c, run)| run.deals.iter().map(|d| (c.clone(), d.clone()))).collect();
        deals.sort();
        deals.dedup();
        let mut histories = match self.store.histories_of(&deals).await {
            Ok(h) => h,
            Err(err) => {
                tracing::warn!(error = %err, "changed deals unreadable; their companies are recomputed");
                for (company_id, run) in runs {
                    self.rollups.remove(&company_id);
                    out.wake.push((company_id, Some(run.to), None));
                }
                return Vec::new();
            }
        };
        let mut next = Vec::new();
        for (company_id, run) in runs {
            let mut histories = histories.remove(company_id.as_str()).unwrap_or_default();
            let step = self.apply_run(&company_id, &run, &mut histories, out.generation).await;
            if let Ok(Step::Next(_) | Step::Done(_)) = step {
                let counters = u64::try_from(run.to - run.from).unwrap_or(0);
                metrics::counter!("pipeline_tracker_rollup_batches_total", "outcome" => "applied").increment(counters);
            }
            match step {
                Ok(Step::Next(after)) => next.push((company_id, after)),
                Ok(Step::Done(fresh)) => out.wake.push((company_id, Some(run.to), fresh)),
                Ok(Step::Reflected) => self.hand_over_kept(&company_id, out),
                Err(reason) => {
                    tracing::debug!(company_id, reason, "the company's sums are recomputed");
                    self.rollups.remove(&company_id);
                    out.wake.push((company_id, Some(run.to), None));
                }
            }
        }
        next
    }

    /// Applies `run` (its deals' `histories`, read after it was stored) to the company's sums.
    async fn apply_run(
        &self,
        company_id: &str,
        run: &Run,
        histories: &mut [DealHistory],
        generation: u64,
    ) -> std::result::Result<Step, &'static str> {
        let kept = self.rollups.with(company_id, |r| (r.currency, r.date.clone(), r.rates.clone(), r.generation));
        let Some((currency, date, mut rates, kept_generation)) = kept else { return Err("dropped meanwhile") };
        if let Err(err) = self.convert(company_id, histories, currency, &date, &mut rates).await {
            tracing::warn!(company_id, error = %err, "exchange rates unreadable; the company is recomputed");
            return Err("exchange rates unreadable");
        }
        let (defs, map) = (self.definitions(), self.stage_map());
        let cx = rollup::Context { company_id, map: &map, defs: &defs };
        let now = gomark_storage::now_ms();
        let watched = self.changes.watched(company_id);
        let step = self.rollups.with(company_id, |r| {
            if r.generation != kept_generation
                || kept_generation != generation
                || generation != self.rollups.generation()
            {
                return Err("configuration changed");
            }
            if r.version >= run.to {
                return Ok(Step::Reflected);
            }
            if !r.can_take(run) || r.currency != currency || r.date != date {
                return Err("replaced meanwhile");
            }
            r.rates = rates;
            for deal in histories.iter() {
                r.update(&cx, deal, now).map_err(|stale| match stale {
                    rollup::Stale::Expired => "expired",
                    rollup::Stale::Shape => "a pipeline or stage appears or goes",
                })?;
            }
            r.applied(run);
            if let Some(after) = r.take() {
                return Ok(Step::Next(after));
            }
            // Computed here, once, for every watcher of the company.
            Ok(Step::Done(if watched { self.fresh_from(&cx, r, now) } else { None }))
        });
        step.unwrap_or(Err("dropped meanwhile"))
    }

    /// The figures of kept sums `r` at `now`, to hand over: none when they are not valid then.
    fn fresh_from(&self, cx: &rollup::Context<'_>, r: &Rollup, now: i64) -> Option<Fresh> {
        let funnels = r.valid_at(now).then(|| self.funnels_from(cx, r, now))?.ok()?;
        Some(Fresh { version: r.version, funnels: Arc::new(funnels) })
    }

    /// Wakes the company's watchers with the figures of its kept sums (when watched here and
    /// valid now): they already reflect the change.
    fn hand_over_kept(&self, company_id: &str, out: &mut Applied) {
        let fresh = if self.changes.watched(company_id) {
            let (defs, map) = (self.definitions(), self.stage_map());
            let cx = rollup::Context { company_id, map: &map, defs: &defs };
            let now = gomark_storage::now_ms();
            let current =
                |r: &mut Rollup| if r.generation == out.generation { self.fresh_from(&cx, r, now) } else { None };
            self.rollups.with(company_id, current).flatten()
        } else {
            None
        };
        out.wake.push((company_id.to_owned(), fresh.as_ref().map(|f| f.version), fresh));
    }

    /// Wakes the watchers [`Tracker::apply`] names, handing over its figures.
    pub fn wake(&self, applied: Applied) {
        let Applied { generation, wake } = applied;
        self.changes.publish_with(
            wake,
            // Figures computed before a configuration change are not handed over.
            || self.rollups.generation() == generation,
        );
    }

    /// After this replica stored a batch: drops the companies' cached figures, tells the
    /// other replicas (after the drop, so none of their watchers reads an old cached
    /// value), then brings the kept sums along and wakes this replica's watchers.
    pub async fn stored(&self, counted: &[Counted]) {
        let companies: Vec<String> = counted.iter().map(|c| c.company_id.clone()).collect();
        self.invalidate(&companies).await;
        if let Some(replicas) = &self.replicas {
            replicas.announce(counted).await;
        }
        let applied = self.apply(counted).await;
        self.wake(applied);
    }

    /// One pipeline's funnel now (cached) or at `as_of_ms` (from the transition log).
    pub async fn funnel(&self, company_id: &str, pipeline_id: &str, as_of_ms: i64) -> Result<pb::Funnel> {
        let pipeline_id = pipeline_or_default(pipeline_id);
        if as_of_ms < 0 {
            return Err(PublicError::invalid("as_of", "must be a date after 1970").into());
        }
        let currency = self.company_currency(company_id);
        let found = if as_of_ms == 0 {
            self.company_funnels(company_id).await?.funnels.into_iter().find(|f| f.pipeline_id == pipeline_id)
        } else {
            let computed = self.compute(company_id, currency, as_of_ms).await?;
            match computed.pipelines.iter().find(|(p, _)| p.id == pipeline_id) {
                Some((p, f)) => Some(self.funnel_proto(company_id, (p, f), &computed.history, as_of_ms, currency)?),
                None => None,
            }
        };
        match found {
            Some(f) => Ok(f),
            // A company with no deals yet still has HubSpot's default pipeline.
            None if pipeline_id == DEFAULT_PIPELINE => {
                let as_of_ms = if as_of_ms == 0 { gomark_storage::now_ms() } else { as_of_ms };
                let empty = PipelineInfo { id: pipeline_id.to_owned(), label: String::new(), stages: Vec::new() };
                let mut funnel = to_proto(company_id, &empty, &Figures::default(), as_of_ms, currency)?;
                funnel.definition_revision = self.definitions().revision;
                Ok(funnel)
            }
            None => Err(PublicError::not_found(format!("pipeline {pipeline_id}")).into()),
        }
    }

    /// Pipeline `pipeline_id`'s funnel among a company's `funnels`, when they have it.
    pub fn funnel_in(funnels: &pb::CompanyFunnels, pipeline_id: &str) -> Option<pb::Funnel> {
        let pipeline_id = pipeline_or_default(pipeline_id);
        funnels.funnels.iter().find(|f| f.pipeline_id == pipeline_id).cloned()
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

    /// The pipeline, the deal history in the company's currency (converted at `as_of`),
    /// and that currency.
    async fn pipeline_with_history(
        &self,
        company_id: &str,
        pipeline_id: &str,
        as_of: i64,
    ) -> Result<(PipelineInfo, Vec<DealHistory>, Currency)> {
        let pipeline_id = pipeline_or_default(pipeline_id);
        let currency = self.company_currency(company_id);
        let pipeline =
            self.catalog.pipelines(company_id).await?.into_iter().find(|p| p.id == pipeline_id).unwrap_or_else(|| {
                PipelineInfo { id: pipeline_id.to_owned(), label: pipeline_id.to_owned(), stages: Vec::new() }
            });
        Ok((pipeline, self.history_in(company_id, currency, as_of).await?, currency))
    }

    /// The waterfall from `from_ms` to `to_ms`, each movement listing at most `deal_limit`
    /// of its deals (0: [`DEFAULT_WATERFALL_DEALS`]).
    pub async fn waterfall(
        &self,
        company_id: &str,
        pipeline_id: &str,
        from_ms: i64,
        to_ms: i64,
        deal_limit: u32,
    ) -> Result<pb::Waterfall> {
        check_range(from_ms, to_ms)?;
        let limit = match deal_limit {
            0 => DEFAULT_WATERFALL_DEALS,
            n if n as usize > MAX_WATERFALL_DEALS => {
                let why = format!("must be at most {MAX_WATERFALL_DEALS}");
                return Err(PublicError::invalid("deal_limit", why).into());
            }
            n => n as usize,
        };
        let (pipeline, history, currency) = self.pipeline_with_history(company_id, pipeline_id, to_ms).await?;
        let mut w = funnel::waterfall(&pipeline, &history, from_ms, to_ms);
        for m in w.movements_mut() {
            m.deals.truncate(limit);
        }
        let ids: BTreeSet<&str> =
            w.movements_mut().into_iter().flat_map(|m| m.deals.iter()).map(|d| d.deal_id.as_str()).collect();
        let names = self.store.deal_names(company_id, &ids.into_iter().collect::<Vec<_>>()).await?;
        let state = |s: &Option<funnel::DealState>| -> Result<Option<pb::WaterfallDealState>> {
            s.as_ref()
                .map(|s| {
                    Ok(pb::WaterfallDealState {
                        stage_id: s.stage_id.clone(),
                        amount: money(s.amount, currency)?,
                        close_date: (s.close_date_ms > 0).then(|| timestamp(s.close_date_ms)),
                    })
                })
                .transpose()
        };
        let m = |m: &funnel::Movement| -> Result<Option<pb::Movement>> {
            let deals = m
                .deals
                .iter()
                .map(|d| {
                    Ok(pb::WaterfallDeal {
                        name: names.get(&d.deal_id).cloned().unwrap_or_default(),
                        deal_id: d.deal_id.clone(),
                        amount: money(d.amount, currency)?,
                        before: state(&d.before)?,
                        after: state(&d.after)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(pb::Movement {
                count: m.count,
                amount_money: money(m.amount, currency)?,
                deals_truncated: (deals.len() as u64) < m.count,
                deals,
            }))
        };
        Ok(pb::Waterfall {
            company_id: company_id.to_owned(),
            pipeline_id: pipeline.id,
            from: Some(timestamp(from_ms)),
            to: Some(timestamp(to_ms)),
            start: m(&w.start)?,
            created: m(&w.created)?,
            reopened: m(&w.reopened)?,
            won: m(&w.won)?,
            lost: m(&w.lost)?,
            removed: m(&w.removed)?,
            pulled_in: m(&w.pulled_in)?,
            pushed_out: m(&w.pushed_out)?,
            amount_changed_money: money(w.amount_changes.amount, currency)?,
            amount_changes: m(&w.amount_changes)?,
            end: m(&w.end)?,
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
        let period = period_in_range(period, from_ms, to_ms)?;
        let (pipeline, history, currency) = self.pipeline_with_history(company_id, pipeline_id, to_ms).await?;
        let counts = funnel::periods(&pipeline, &history, period, from_ms, to_ms, MAX_PERIODS).ok_or_else(|| {
            Error::Public(PublicError::invalid("to", format!("the range holds more than {MAX_PERIODS} periods")))
        })?;
        Ok(pb::PeriodSeries {
            periods: counts
                .into_iter()
                .map(|c| {
                    Ok(pb::PeriodCount {
                        start: Some(timestamp(c.start_ms)),
                        created: c.created,
                        won: c.won,
                        lost: c.lost,
                        won_amount_money: money(c.won_amount, currency)?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Deals created, won and lost per period over `company_ids` (every company known when
    /// empty), each company's default pipeline, summed. Counts only: amounts are in each
    /// company's currency, so a sum of them would mean nothing.
    pub async fn portfolio_periods(
        &self,
        company_ids: &[String],
        period: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<pb::PeriodSeries> {
        let period = period_in_range(period, from_ms, to_ms)?;
        let mut ids: Vec<String> = if company_ids.is_empty() {
            self.store.companies().await?.into_iter().map(|c| c.company_id).collect()
        } else {
            company_ids.to_vec()
        };
        ids.sort();
        ids.dedup();
        // Period start → (created, won, lost).
        let mut sums: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
        for id in &ids {
            let (pipeline, history, _) = self.pipeline_with_history(id, DEFAULT_PIPELINE, to_ms).await?;
            let counts =
                funnel::periods(&pipeline, &history, period, from_ms, to_ms, MAX_PERIODS).ok_or_else(|| {
                    Error::Public(PublicError::invalid(
                        "to",
                        format!("the range holds more than {MAX_PERIODS} periods"),
                    ))
                })?;
            for c in counts {
                let sum = sums.entry(c.start_ms).or_default();
                (sum.0, sum.1, sum.2) = (sum.0 + c.created, sum.1 + c.won, sum.2 + c.lost);
            }
        }
        Ok(pb::PeriodSeries {
            periods: sums
                .into_iter()
                .map(|(start_ms, (created, won, lost))| pb::PeriodCount {
                    start: Some(timestamp(start_ms)),
                    created,
                    won,
                    lost,
                    won_amount_money: None,
                })
                .collect(),
        })
    }

    /// The roll-up over `company_ids` (every company known when empty); rows paged by id.
    /// Each company's row is in its own currency; the totals are in the reporting
    /// currency, each company converted at the latest rate on or before `fx_as_of_ms`'s
    /// date (now when 0). A company no rate converts is flagged and left out of the totals.
    pub async fn portfolio(
        &self,
        company_ids: &[String],
        page_size: u32,
        page_token: &str,
        fx_as_of_ms: i64,
    ) -> Result<pb::Portfolio> {
        if fx_as_of_ms < 0 {
            return Err(PublicError::invalid("fx_as_of", "must be a date after 1970").into());
        }
        let known = self.store.companies().await?;
        let mut selected: Vec<(String, String)> = if company_ids.is_empty() {
            known.iter().map(|c| (c.company_id.clone(), c.name.clone())).collect()
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
        let currencies = self.currencies();
        let reporting = currencies.reporting;
        let date = utc_date(if fx_as_of_ms == 0 { gomark_storage::now_ms() } else { fx_as_of_ms });
        let mut summaries = Vec::with_capacity(selected.len());
        let mut converted = Vec::with_capacity(selected.len());
        let mut unconverted_company_ids = Vec::new();
        // One read per currency, not per company: a portfolio has few currencies.
        let mut rates: BTreeMap<Currency, Option<crate::store::FxRate>> = BTreeMap::new();
        for (id, name) in &selected {
            let mut summary = self.company_funnels(id).await?.summary.unwrap_or_default();
            summary.company_id.clone_from(id);
            summary.company_name.clone_from(name);
            let currency = currencies.of(id);
            if currency == reporting {
                converted.push(summary.clone());
            } else {
                let rate = match rates.get(&currency) {
                    Some(known) => known.clone(),
                    None => {
                        let read = self.store.fx_rate(currency, reporting, &date).await?;
                        rates.insert(currency, read.clone());
                        read
                    }
                };
                match rate {
                    Some(rate) => {
                        converted.push(crate::portfolio::convert(&summary, currency, rate.rate, reporting)?);
                        summary.fx_rate = Some(pb::FxRate {
                            date: rate.date,
                            from_currency_code: currency.to_string(),
                            to_currency_code: reporting.to_string(),
                            rate: rate.rate.to_string(),
                        });
                    }
                    None => {
                        summary.fx_rate_missing = true;
                        unconverted_company_ids.push(id.clone());
                    }
                }
            }
            summaries.push(summary);
        }
        let map = self.stage_map();
        let mut totals = map.total(&converted, reporting)?;
        // The portfolio's win rate under the definitions: the companies' won and closed
        // deals (in the window) summed, not their rates averaged.
        let (won, closed) = converted.iter().fold((0u64, 0u64), |(won, closed), s| {
            let c = s.metrics.as_ref().and_then(|m| m.win_rate.as_ref()).map_or(0, |w| w.sample_size);
            (won + (s.win_rate * c as f64).round() as u64, closed + c)
        });
        totals.win_rate = if closed == 0 { 0.0 } else { won as f64 / closed as f64 };
        let definition_revision = self.definitions().revision;
        totals.definition_revision = definition_revision;
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
            reporting_currency_code: reporting.to_string(),
            unconverted_company_ids,
            definition_revision,
        })
    }

    /// The metric definitions in force, as the contract carries them.
    pub fn definitions_proto(&self) -> pb::MetricDefinitions {
        let d = self.definitions();
        let m = &d.metrics;
        let window = |days: Option<u32>| days.map(|d| duration_from_days(f64::from(d)));
        pb::MetricDefinitions {
            revision: d.revision,
            win_rate_won_stage_ids: m.win_rate_won.clone(),
            win_rate_lost_stage_ids: m.win_rate_lost.clone(),
            win_rate_window: window(m.win_rate_window_days),
            conversion_stage_ids: m.conversion_stages.clone(),
            sales_cycle_window: window(m.sales_cycle_window_days),
            velocity_window: window(m.velocity_window_days),
            slip_window: window(Some(m.slip_window_days)),
            forecast_categories: m.forecast_categories.clone().into_iter().collect(),
            min_deals: m.min_deals,
            min_companies: m.min_companies,
        }
    }

    /// `metric` (all when empty) across `company_ids` (every company when empty), grouped
    /// by the overlays' tag `group_by` (one group when empty), from the cached summaries.
    pub async fn benchmarks(&self, metric: &str, group_by: &str, company_ids: &[String]) -> Result<pb::Benchmarks> {
        let wanted: Vec<Metric> = if metric.is_empty() {
            Metric::ALL.to_vec()
        } else {
            vec![
                Metric::parse(metric)
                    .ok_or_else(|| PublicError::invalid("metric", "must be winRate, salesCycle, coverage or slip"))?,
            ]
        };
        let known = self.store.companies().await?;
        let mut selected: Vec<(String, String)> = if company_ids.is_empty() {
            known.iter().map(|c| (c.company_id.clone(), c.name.clone())).collect()
        } else {
            company_ids
                .iter()
                .map(|id| {
                    let name = known.iter().find(|c| &c.company_id == id).map(|c| c.name.clone()).unwrap_or_default();
                    (id.clone(), name)
                })
                .collect()
        };
        selected.sort();
        selected.dedup();
        let defs = self.definitions();
        let mut values = Vec::with_capacity(selected.len());
        for (id, _) in &selected {
            let summary = self.company_funnels(id).await?.summary.unwrap_or_default();
            let tag = defs.tags.get(id).and_then(|t| t.get(group_by)).cloned().unwrap_or_default();
            values.push((id.clone(), tag, summary.metrics.unwrap_or_default()));
        }
        let names: HashMap<&str, &str> = selected.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
        let mut out = Vec::with_capacity(wanted.len());
        for metric in wanted {
            let rows: Vec<(String, String, kpi::Value)> =
                values.iter().map(|(id, tag, m)| (id.clone(), tag.clone(), value_of(metric, m))).collect();
            let unit = unit(metric);
            let groups = kpi::benchmark(&rows, defs.metrics.min_companies)
                .into_iter()
                .map(|g| {
                    let (p25, p50, p75) = g.bands.unwrap_or_default();
                    pb::BenchmarkGroup {
                        tag_value: g.tag_value,
                        not_enough_data: g.bands.is_none(),
                        p25,
                        p50,
                        p75,
                        sample_size: u32::try_from(g.sample).unwrap_or(u32::MAX),
                        companies: g
                            .companies
                            .into_iter()
                            .map(|p| pb::BenchmarkPosition {
                                company_name: names
                                    .get(p.company_id.as_str())
                                    .map(|n| (*n).to_owned())
                                    .unwrap_or_default(),
                                company_id: p.company_id,
                                value: Some(value_proto(p.value, unit)),
                                percentile_rank: p.rank.unwrap_or_default(),
                            })
                            .collect(),
                    }
                })
                .collect();
            out.push(pb::MetricBenchmark { metric: metric.as_str().to_owned(), unit: unit.into(), groups });
        }
        Ok(pb::Benchmarks { definition_revision: defs.revision, group_by: group_by.to_owned(), metrics: out })
    }
}

/// One company's part of a stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub company_id: String,
    /// The company's change counter as the batch left it; 0 when not counted.
    pub version: i64,
    /// The deals whose history the batch changed.
    pub deals: Vec<String>,
}

impl Counted {
    /// Each company of `touched` (with its counter) and its deals among `changed`
    /// (`(company, deal)` pairs).
    pub fn group<'a>(changed: impl IntoIterator<Item = (&'a str, &'a str)>, touched: &[(String, i64)]) -> Vec<Self> {
        let mut by_company: HashMap<&str, Vec<String>> = HashMap::new();
        for (company, deal) in changed {
            by_company.entry(company).or_default().push(deal.to_owned());
        }
        touched
            .iter()
            .map(|(company_id, version)| {
                let mut deals = by_company.remove(company_id.as_str()).unwrap_or_default();
                deals.sort_unstable();
                deals.dedup();
                Counted { company_id: company_id.clone(), version: *version, deals }
            })
            .collect()
    }
}

/// What [`Tracker::apply`] computed for watchers.
#[derive(Debug, Default)]
pub struct Applied {
    /// The configuration generation the figures were computed under.
    generation: u64,
    /// Whom to wake: each company, with the counter its figures moved to (when known) and
    /// its new figures (when computed).
    wake: Vec<(String, Option<i64>, Option<Fresh>)>,
}

/// What applying a run to a company's sums led to.
enum Step {
    /// Done: the figures to hand over, when watched here.
    Done(Option<Fresh>),
    /// Done, and the next run became ready behind it.
    Next(Run),
    /// The sums reflected it already.
    Reflected,
}

/// A company's pipelines with their figures, and the deal history they came from.
struct Computed {
    pipelines: Vec<(PipelineInfo, Figures)>,
    history: Vec<DealHistory>,
}

fn unit(metric: Metric) -> pb::MetricUnit {
    if metric.is_days() { pb::MetricUnit::Days } else { pb::MetricUnit::Ratio }
}

fn value_proto(v: kpi::Value, unit: pb::MetricUnit) -> pb::MetricValue {
    pb::MetricValue {
        value: v.value.unwrap_or_default(),
        not_enough_data: v.value.is_none(),
        sample_size: v.sample,
        unit: unit.into(),
    }
}

/// A company's metric back from its (cached) contract form.
fn value_of(metric: Metric, m: &pb::CompanyMetrics) -> kpi::Value {
    let v = match metric {
        Metric::WinRate => m.win_rate.as_ref(),
        Metric::SalesCycle => m.sales_cycle.as_ref(),
        Metric::Coverage => m.coverage.as_ref(),
        Metric::Slip => m.slip.as_ref(),
    };
    match v {
        Some(v) => kpi::Value { value: (!v.not_enough_data).then_some(v.value), sample: v.sample_size },
        None => kpi::Value::default(),
    }
}

/// A company's metrics as the contract carries them, amounts in `currency`.
fn metrics_proto(m: &CompanyMetrics, currency: Currency) -> Result<pb::CompanyMetrics> {
    let ratio = |v: kpi::Value| Some(value_proto(v, pb::MetricUnit::Ratio));
    Ok(pb::CompanyMetrics {
        win_rate: ratio(m.win_rate),
        conversion: m
            .conversion
            .iter()
            .map(|(id, v)| pb::StageConversion { stage_id: id.clone(), conversion: ratio(*v) })
            .collect(),
        sales_cycle: Some(value_proto(m.sales_cycle_days, pb::MetricUnit::Days)),
        velocity_per_day_money: if m.velocity_enough_data { money(m.velocity_per_day, currency)? } else { None },
        coverage: ratio(m.coverage),
        slip: ratio(m.slip),
        slipped_count: m.slipped_count,
        forecast: m
            .forecast
            .iter()
            .map(|(category, (count, amount))| {
                Ok(pb::ForecastCategory {
                    category: category.clone(),
                    deal_count: *count,
                    amount_money: money(*amount, currency)?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// A period name checked, over a checked range.
fn period_in_range(period: &str, from_ms: i64, to_ms: i64) -> Result<funnel::Period> {
    let period = funnel::Period::parse(period)
        .ok_or_else(|| Error::Public(PublicError::invalid("period", "must be day, week or month")))?;
    check_range(from_ms, to_ms)?;
    Ok(period)
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

/// The funnel's figures as the contract carries them, amounts in `currency`.
pub fn to_proto(
    company_id: &str,
    pipeline: &PipelineInfo,
    f: &Figures,
    as_of_ms: i64,
    currency: Currency,
) -> Result<pb::Funnel> {
    Ok(pb::Funnel {
        company_id: company_id.to_owned(),
        pipeline_id: pipeline.id.clone(),
        pipeline_label: pipeline.label.clone(),
        as_of: Some(timestamp(as_of_ms)),
        stages: f
            .stages
            .iter()
            .map(|(s, x)| {
                Ok(pb::FunnelStage {
                    stage_id: s.id.clone(),
                    label: s.label.clone(),
                    deal_count: x.deal_count,
                    amount_money: money(x.amount, currency)?,
                    probability: s.probability,
                    kind: s.kind.as_str().into(),
                    display_order: s.display_order,
                    weighted_amount_money: money(x.weighted_amount, currency)?,
                    conversion_to_next: x.conversion_to_next,
                    avg_in_stage: Some(duration_from_days(x.avg_days_in_stage)),
                    median_in_stage: Some(duration_from_days(x.median_days_in_stage)),
                    removed: s.removed,
                })
            })
            .collect::<Result<_>>()?,
        open_count: f.open_count,
        open_amount_money: money(f.open_amount, currency)?,
        weighted_forecast_money: money(f.weighted_forecast, currency)?,
        won_count: f.won_count,
        won_amount_money: money(f.won_amount, currency)?,
        lost_count: f.lost_count,
        lost_amount_money: money(f.lost_amount, currency)?,
        win_rate: f.win_rate,
        avg_cycle: Some(duration_from_days(f.avg_cycle_days)),
        sales_velocity_per_day_money: money(f.sales_velocity_per_day, currency)?,
        // Set by the tracker, which knows the definitions in force.
        definition_revision: 0,
    })
}

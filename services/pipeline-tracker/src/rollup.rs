//! The incremental roll-up: a company's funnel and metric sums, kept up to date one deal
//! change at a time so that the cost of a change does not grow with the company's history.
//!
//! Every figure the tracker serves "now" is a sum over deals of what each deal adds
//! ([`FunnelPart`], [`MetricsPart`]), finished into rates, means and medians. The sums keep
//! each deal's part; a deal change takes its old part back and adds the part of its new
//! history. Adding and removing are exact inverses (integers, decimals, sorted integer
//! durations), so the sums equal a pass over the whole history (the proptest below).
//!
//! What still needs a pass over the whole history (rare by design):
//! - time: a figure at `as_of` depends on the date through version and creation times,
//!   windows (win rate, cycle, velocity, slip) and the day's exchange rates. The sums are
//!   valid from their `as_of` until the first instant any deal's part could differ (a
//!   version or creation time, or one plus a window, or the next UTC midnight); after that
//!   the company is recomputed. With deals changing every few minutes this is hours apart.
//! - shape: a deal using a pipeline or stage the catalog does not list adds it to the
//!   funnel (and the last such deal removes it), which moves every other deal's place.
//! - configuration: definitions, stage mapping and currencies (the tracker drops every
//!   company's sums when they change), and the catalog (re-read at least once per cache
//!   ttl, as the cached figures were).
//! - missing changes: the sums carry the company's change counter and take each batch
//!   (this replica's, or another's as [`crate::replicas`] announces it) in counter order,
//!   holding a batch back until the ones before it arrive ([`Rollup::file`]). A counter
//!   that does not come within [`GAP_MS`] (an announcement lost, exchange rates stored)
//!   drops the sums, and the company is recomputed.

use crate::funnel::{DAY_MS, DealHistory, FunnelPart, FunnelSums, PipelineInfo, Shape};
use crate::kpi::{Definitions, MetricsPart, MetricsShape, MetricsSums};
use crate::portfolio::StageMap;
use gomark_proto::money::Currency;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Deals whose parts are kept, over every company: the sums of the least recently used
/// companies are dropped beyond it (they are recomputed when next read). A deal's parts
/// take a few hundred bytes.
pub const MAX_DEALS_KEPT: usize = 200_000;

/// How long (ms) the sums wait for a missing change counter before they are dropped.
pub const GAP_MS: i64 = 2_000;
/// Change counters held back at most, per company, waiting for an earlier one.
pub const MAX_HELD_BACK: usize = 256;

/// `(pipeline, stage)` a deal uses that the catalog does not list.
type Unlisted = (String, String);

/// The company's pipelines: those configured, then those only deals use, by id.
pub fn pipelines_of(mut catalog: Vec<PipelineInfo>, history: &[DealHistory]) -> Vec<PipelineInfo> {
    let used: BTreeSet<&str> =
        history.iter().flat_map(|d| &d.versions).filter(|v| !v.deleted).map(|v| v.pipeline_id.as_str()).collect();
    for id in used {
        if !catalog.iter().any(|p| p.id == id) {
            catalog.push(PipelineInfo { id: id.to_owned(), label: id.to_owned(), stages: Vec::new() });
        }
    }
    catalog
}

/// One pipeline's shapes and sums.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSums {
    /// As configured (or as deals name it).
    pub info: PipelineInfo,
    funnel_shape: Shape,
    metrics_shape: MetricsShape,
    funnel: FunnelSums,
    metrics: MetricsSums,
}

impl PipelineSums {
    /// The pipeline's funnel.
    pub fn figures(&self) -> crate::funnel::Figures {
        self.funnel.figures(&self.funnel_shape)
    }

    /// The pipeline's metrics under `defs`.
    pub fn metrics(&self, company_id: &str, defs: &Definitions) -> crate::kpi::CompanyMetrics {
        self.metrics.metrics(company_id, defs)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct DealEntry {
    /// Per pipeline, in [`Rollup::pipelines`]' order.
    parts: Vec<(FunnelPart, MetricsPart)>,
    unlisted: BTreeSet<Unlisted>,
    /// The first instant after `as_of` its parts could differ.
    next: Option<i64>,
}

/// Why sums cannot take a change and the company must be recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("the sums expired (time moved past a figure's boundary)")]
    Expired,
    #[error("the change adds or removes a pipeline or stage")]
    Shape,
}

/// A company's sums at `as_of`, valid until `valid_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// The company's change counter these sums reflect (at least).
    pub version: i64,
    /// The configuration generation they were computed under (see [`Rollups`]).
    pub generation: u64,
    pub currency: Currency,
    /// The UTC date amounts in other currencies were converted at, and the rates used.
    pub date: String,
    pub rates: HashMap<Currency, Option<Decimal>>,
    as_of: i64,
    /// Recomputed at the latest then (the catalog's and the day's freshness).
    expires: i64,
    catalog: Vec<PipelineInfo>,
    pipelines: Vec<PipelineSums>,
    company: MetricsSums,
    deals: HashMap<String, DealEntry>,
    /// Each deal's `next`, counted.
    next_points: BTreeMap<i64, u32>,
    unlisted: HashMap<Unlisted, u32>,
    /// The definitions' windows, in ms.
    windows: Vec<i64>,
    /// Counters after `version` stored but not taken yet: the deals each changed, and when
    /// it arrived (ms).
    held_back: BTreeMap<i64, (Vec<String>, i64)>,
    /// Set while a caller reads the deals of the counters up to it ([`Rollup::take`]).
    taken_to: Option<i64>,
}

/// Change counters whose deals are to be read and applied together (their reads come after
/// every one of them was stored, so each deal is read as new as the last counter that
/// changed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The sums' counter when taken.
    pub from: i64,
    pub to: i64,
    pub deals: Vec<String>,
}

/// What became of a change counter offered to the sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    /// The sums already reflect it.
    Reflected,
    /// Kept for [`Rollup::take`] (now, or once the counters before it arrive), or already
    /// taken by another caller.
    Kept,
    /// The sums are not catching up (a counter or a caller is overdue): they must be dropped.
    Overdue,
}

/// What a [`Rollup`] is computed under.
pub struct Context<'a> {
    pub company_id: &'a str,
    pub map: &'a StageMap,
    pub defs: &'a Definitions,
}

fn next_midnight(t: i64) -> i64 {
    (t.div_euclid(DAY_MS) + 1) * DAY_MS
}

impl Rollup {
    /// The sums over the company's whole `history` (amounts already in `currency`, converted
    /// at `date` with `rates`) at `as_of`; recomputed at the latest after `max_age_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        cx: &Context<'_>,
        catalog: Vec<PipelineInfo>,
        history: &[DealHistory],
        as_of: i64,
        max_age_ms: i64,
        (version, generation): (i64, u64),
        currency: Currency,
        (date, rates): (String, HashMap<Currency, Option<Decimal>>),
    ) -> Self {
        let pipelines = pipelines_of(catalog.clone(), history)
            .into_iter()
            .map(|info| {
                let stages = info.complete(history);
                let funnel_shape = Shape::new(&info.id, stages);
                let metrics_shape = MetricsShape::new(cx.company_id, &info.id, &funnel_shape.stages, cx.map, cx.defs);
                let funnel = FunnelSums::new(&funnel_shape);
                PipelineSums { info, funnel_shape, metrics_shape, funnel, metrics: MetricsSums::new(cx.defs) }
            })
            .collect();
        let m = &cx.defs.metrics;
        let windows =
            [Some(m.slip_window_days), m.win_rate_window_days, m.sales_cycle_window_days, m.velocity_window_days]
                .into_iter()
                .flatten()
                .map(|d| i64::from(d) * DAY_MS)
                .collect();
        let mut rollup = Self {
            version,
            generation,
            currency,
            date,
            rates,
            as_of,
            expires: next_midnight(as_of).min(as_of.saturating_add(max_age_ms.max(1))),
            catalog,
            pipelines,
            company: MetricsSums::new(cx.defs),
            deals: HashMap::with_capacity(history.len()),
            next_points: BTreeMap::new(),
            unlisted: HashMap::new(),
            windows,
            held_back: BTreeMap::new(),
            taken_to: None,
        };
        for deal in history {
            let entry = rollup.entry(cx, deal);
            rollup.add(&deal.deal_id, entry);
        }
        rollup
    }

    /// Until when (exclusive) the sums are the figures at any instant from `as_of`.
    pub fn valid_until(&self) -> i64 {
        self.next_points.keys().next().map_or(self.expires, |&p| p.min(self.expires))
    }

    /// Whether the sums are the figures at `t`.
    pub fn valid_at(&self, t: i64) -> bool {
        t >= self.as_of && t < self.valid_until()
    }

    pub fn pipelines(&self) -> &[PipelineSums] {
        &self.pipelines
    }

    /// The company's metrics over every pipeline.
    pub fn company_metrics(&self, company_id: &str, defs: &Definitions) -> crate::kpi::CompanyMetrics {
        self.company.metrics(company_id, defs)
    }

    /// Deals kept.
    pub fn deal_count(&self) -> usize {
        self.deals.len()
    }

    /// Offers the batch that left the company at `version`, changing `deals`, arriving at
    /// `now` (ms), for [`Rollup::take`] to hand out in counter order, whatever order the
    /// batches arrive in.
    pub fn file(&mut self, version: i64, deals: &[String], now: i64) -> Filed {
        if version <= self.version {
            return Filed::Reflected;
        }
        if self.taken_to.is_none_or(|to| version > to) {
            self.held_back.entry(version).or_insert_with(|| (Vec::new(), now)).0.extend(deals.iter().cloned());
        }
        // The oldest waits for a counter that has not come, or for a caller that has not
        // finished: either way the sums are not catching up.
        let overdue = self.held_back.values().next().is_some_and(|(_, at)| now - at > GAP_MS);
        if overdue || self.held_back.len() > MAX_HELD_BACK { Filed::Overdue } else { Filed::Kept }
    }

    /// The counters right after `version` with nothing missing between, unless another
    /// caller holds some already.
    pub fn take(&mut self) -> Option<Run> {
        if self.taken_to.is_some() {
            return None;
        }
        let (from, mut to, mut deals) = (self.version, self.version, Vec::new());
        while let Some((changed, _)) = self.held_back.remove(&(to + 1)) {
            to += 1;
            deals.extend(changed);
        }
        if to == from {
            return None;
        }
        self.taken_to = Some(to);
        Some(Run { from, to, deals })
    }

    /// Whether the sums can take `run`: it was taken from them, or from sums they replaced
    /// that were no newer (its deals cover every counter these still miss up to its end).
    pub fn can_take(&self, run: &Run) -> bool {
        (run.from..run.to).contains(&self.version) && self.taken_to.is_none_or(|to| to == run.to)
    }

    /// After the deals of `run` (which the sums [`Rollup::can_take`]) were updated.
    pub fn applied(&mut self, run: &Run) {
        self.version = run.to;
        self.taken_to = None;
        self.held_back.retain(|v, _| *v > run.to);
    }

    /// Keeps the counters `older` sums (which these replace) held back and these still miss.
    fn adopt_held_back(&mut self, older: BTreeMap<i64, (Vec<String>, i64)>) {
        let version = self.version;
        self.held_back.extend(older.into_iter().filter(|(v, _)| *v > version));
    }

    /// Replaces the deal's part with that of its new `history` (in the company's currency),
    /// the sums moving to `now`. On an error nothing changed.
    pub fn update(&mut self, cx: &Context<'_>, history: &DealHistory, now: i64) -> Result<(), Stale> {
        if !self.valid_at(now) {
            return Err(Stale::Expired);
        }
        // Every other deal's part is the same at `now` as at `as_of` (no boundary between).
        let before = self.as_of;
        self.as_of = now;
        let new = self.entry(cx, history);
        let old = self.deals.get(&history.deal_id);
        let empty = BTreeSet::new();
        let old_unlisted = old.map_or(&empty, |e| &e.unlisted);
        let gone = old_unlisted.difference(&new.unlisted).any(|k| self.unlisted.get(k).is_none_or(|n| *n <= 1));
        let appears = new.unlisted.difference(old_unlisted).any(|k| !self.unlisted.contains_key(k));
        if gone || appears {
            self.as_of = before;
            return Err(Stale::Shape);
        }
        if let Some(old) = self.deals.remove(&history.deal_id) {
            self.apply(&old, false);
        }
        self.add(&history.deal_id, new);
        Ok(())
    }

    /// The deal's parts at `as_of`.
    fn entry(&self, cx: &Context<'_>, deal: &DealHistory) -> DealEntry {
        let parts = self
            .pipelines
            .iter()
            .map(|p| (p.funnel_shape.part(deal, self.as_of), p.metrics_shape.part(deal, cx.defs, self.as_of)))
            .collect();
        let listed = |pipeline: &str, stage: &str| {
            self.catalog.iter().any(|p| p.id == pipeline && p.stages.iter().any(|s| s.id == stage))
        };
        let unlisted = deal
            .versions
            .iter()
            .filter(|v| !v.deleted && !listed(&v.pipeline_id, &v.stage_id))
            .map(|v| (v.pipeline_id.clone(), v.stage_id.clone()))
            .collect();
        let times = deal.versions.iter().flat_map(|v| [v.modified_ms, v.created_ms]).filter(|t| *t > 0);
        let next = times
            .flat_map(|t| std::iter::once(t).chain(self.windows.iter().map(move |w| t.saturating_add(*w))))
            .filter(|p| *p > self.as_of)
            .min();
        DealEntry { parts, unlisted, next }
    }

    fn add(&mut self, deal_id: &str, entry: DealEntry) {
        self.apply(&entry, true);
        self.deals.insert(deal_id.to_owned(), entry);
    }

    fn apply(&mut self, entry: &DealEntry, add: bool) {
        for (p, (funnel, metrics)) in self.pipelines.iter_mut().zip(&entry.parts) {
            p.funnel.apply(&p.funnel_shape, funnel, add);
            p.metrics.apply(metrics, add);
            self.company.apply(metrics, add);
        }
        for key in &entry.unlisted {
            self.unlisted.step(key, add);
        }
        if let Some(p) = entry.next {
            self.next_points.step(&p, add);
        }
    }
}

/// Counts kept per key, a key dropped at zero.
trait CountMap<K> {
    fn step(&mut self, key: &K, add: bool);
}

impl<K: Clone + Eq + std::hash::Hash> CountMap<K> for HashMap<K, u32> {
    fn step(&mut self, key: &K, add: bool) {
        if add {
            *self.entry(key.clone()).or_default() += 1;
        } else if let Some(n) = self.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.remove(key);
            }
        }
    }
}

impl<K: Clone + Ord> CountMap<K> for BTreeMap<K, u32> {
    fn step(&mut self, key: &K, add: bool) {
        if add {
            *self.entry(key.clone()).or_default() += 1;
        } else if let Some(n) = self.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.remove(key);
            }
        }
    }
}

/// This replica's sums, per company, within [`MAX_DEALS_KEPT`].
#[derive(Default)]
pub struct Rollups {
    inner: Mutex<Kept>,
    /// Moves whenever the configuration the sums depend on changes: sums computed under an
    /// older generation are never used or kept.
    generation: AtomicU64,
}

#[derive(Default)]
struct Kept {
    by_company: HashMap<String, (Rollup, u64)>,
    deals: usize,
    tick: u64,
}

impl Kept {
    fn remove(&mut self, company_id: &str) {
        if let Some((r, _)) = self.by_company.remove(company_id) {
            self.deals -= r.deal_count();
        }
    }
}

impl Rollups {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Forgets every company's sums: the configuration they depend on changed.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut kept = self.lock();
        kept.by_company.clear();
        kept.deals = 0;
    }

    pub fn remove(&self, company_id: &str) {
        self.lock().remove(company_id);
    }

    /// Keeps `rollup` (unless computed under an older configuration), dropping the least
    /// recently used companies' beyond the budget.
    pub fn install(&self, company_id: &str, rollup: Rollup) {
        let mut kept = self.lock();
        if rollup.generation != self.generation() || rollup.deal_count() > MAX_DEALS_KEPT {
            return;
        }
        let mut rollup = rollup;
        if let Some((older, _)) = kept.by_company.get_mut(company_id) {
            // Batches held back for the older sums are still to come for these.
            rollup.adopt_held_back(std::mem::take(&mut older.held_back));
        }
        kept.remove(company_id);
        while kept.deals + rollup.deal_count() > MAX_DEALS_KEPT {
            let Some(oldest) = kept.by_company.iter().min_by_key(|(_, (_, used))| *used).map(|(c, _)| c.clone()) else {
                break;
            };
            kept.remove(&oldest);
        }
        kept.tick += 1;
        kept.deals += rollup.deal_count();
        let tick = kept.tick;
        kept.by_company.insert(company_id.to_owned(), (rollup, tick));
    }

    /// `f` of the company's sums, when there are some (marking them used).
    pub fn with<T>(&self, company_id: &str, f: impl FnOnce(&mut Rollup) -> T) -> Option<T> {
        let mut kept = self.lock();
        kept.tick += 1;
        let tick = kept.tick;
        let (rollup, used) = kept.by_company.get_mut(company_id)?;
        *used = tick;
        let before = rollup.deal_count();
        let out = f(rollup);
        let after = rollup.deal_count();
        kept.deals = kept.deals + after - before;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funnel::tests::pipeline;
    use crate::funnel::{Version, funnel};
    use crate::kpi::company_metrics;
    use proptest::prelude::*;

    const HOUR_MS: i64 = 3_600_000;

    fn defs() -> Definitions {
        // Every window set (short, so time crosses them), forecast categories, one deal
        // enough: every figure is a number.
        let yaml = "baseline:\n  metrics:\n    winRate: {windowDays: 10}\n    salesCycle: {windowDays: 15}\n    \
                    velocity: {windowDays: 20}\n    slip: {windowDays: 5}\n    conversion: {stages: [early, middle, late]}\n    \
                    forecastCategories: {middle: commit, early: pipeline, won: closed}\n    minimumSample: {deals: 1}\n\
                    companies:\n  acme: {companyId: c, coverageTarget: 1000}\n";
        let doc = gtm_config::Document::from_yaml(yaml).expect("parses");
        doc.validate().expect("valid");
        crate::kpi::definitions(&doc, 1)
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A deal version: deal, pipeline, stage, amount, close date (days), modified
        /// (hours before now: out of order when earlier than the deal's last), created
        /// (days before now).
        Upsert {
            deal: u8,
            pipeline: u8,
            stage: u8,
            amount: u32,
            close_day: u8,
            back_hours: u16,
            created_days: u8,
        },
        Delete {
            deal: u8,
            back_hours: u16,
        },
        /// The same version delivered again.
        Redeliver,
        /// Time passes with no change; the kept sums are read if still valid.
        Wait {
            hours: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..8, 0u8..10, 0u8..12, 0u32..5_000, 0u8..60, 0u16..400, 0u8..60).prop_map(
                |(deal, pipeline, stage, amount, close_day, back_hours, created_days)| Op::Upsert {
                    deal, pipeline, stage, amount, close_day, back_hours, created_days
                }
            ),
            1 => (0u8..8, 0u16..200).prop_map(|(deal, back_hours)| Op::Delete { deal, back_hours }),
            1 => Just(Op::Redeliver),
            2 => (0u16..300).prop_map(|hours| Op::Wait { hours }),
        ]
    }

    /// Stored as the store keeps it: one version per modification time (the last
    /// delivered replaces the one kept), oldest first.
    fn store(history: &mut Vec<DealHistory>, deal_id: String, v: Version) {
        let i = match history.iter().position(|d| d.deal_id == deal_id) {
            Some(i) => i,
            None => {
                history.push(DealHistory { deal_id, versions: Vec::new() });
                history.sort_by(|a, b| a.deal_id.cmp(&b.deal_id));
                history.iter().position(|d| d.versions.is_empty()).expect("just added")
            }
        };
        let versions = &mut history[i].versions;
        let at = versions.partition_point(|x| x.modified_ms < v.modified_ms);
        match versions.get_mut(at) {
            Some(kept) if kept.modified_ms == v.modified_ms => *kept = v,
            _ => versions.insert(at, v),
        }
    }

    fn assert_same(kept: &Rollup, full: &Rollup, cx: &Context<'_>, history: &[DealHistory], t: i64) {
        let ids = |r: &Rollup| r.pipelines().iter().map(|p| p.info.clone()).collect::<Vec<_>>();
        assert_eq!(ids(kept), ids(full));
        for (k, f) in kept.pipelines().iter().zip(full.pipelines()) {
            assert_eq!(k.figures(), f.figures(), "pipeline {}", k.info.id);
            assert_eq!(k.metrics(cx.company_id, cx.defs), f.metrics(cx.company_id, cx.defs));
            // And the pass over the history the historical reads use.
            assert_eq!(k.figures(), funnel(&k.info, history, t));
        }
        assert_eq!(kept.company_metrics(cx.company_id, cx.defs), full.company_metrics(cx.company_id, cx.defs));
        let pipelines = pipelines_of(vec![pipeline()], history);
        assert_eq!(
            kept.company_metrics(cx.company_id, cx.defs),
            company_metrics(cx.company_id, &pipelines, history, cx.map, cx.defs, t)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random deal events (creates, stage and pipeline moves, amount and close-date
        /// changes, deletes, out-of-order and repeated deliveries, time passing): the sums
        /// kept one change at a time equal the sums over the whole history, every figure.
        #[test]
        fn incremental_sums_equal_a_full_recompute(ops in proptest::collection::vec(op(), 1..60)) {
            let (defs, map) = (defs(), StageMap::default());
            let cx = Context { company_id: "c", map: &map, defs: &defs };
            let build = |history: &[DealHistory], t: i64| {
                Rollup::build(&cx, vec![pipeline()], history, t, 30 * DAY_MS, (0, 0), Currency::USD, (String::new(), HashMap::new()))
            };
            // Mostly the catalog's stages; now and then one it does not list.
            let stages = ["qualify", "propose", "won", "lost", "qualify", "propose", "won", "lost", "qualify", "propose", "won", "negotiation"];
            let mut now = 400 * DAY_MS + 7 * HOUR_MS;
            let mut history: Vec<DealHistory> = Vec::new();
            let mut kept = build(&history, now);
            let mut last: Option<(String, Version)> = None;
            for op in ops {
                now += HOUR_MS;
                let change = match op {
                    Op::Upsert { deal, pipeline, stage, amount, close_day, back_hours, created_days } => {
                        let v = Version {
                            modified_ms: now - i64::from(back_hours) * HOUR_MS,
                            // Now and then a pipeline the catalog does not have.
                            pipeline_id: if pipeline == 0 { "other".into() } else { "default".into() },
                            stage_id: stages[usize::from(stage)].into(),
                            amount: Some(Decimal::new(i64::from(amount), 2)),
                            currency: Some(Currency::USD),
                            close_date_ms: if close_day == 0 { 0 } else { now + (i64::from(close_day) - 30) * DAY_MS },
                            created_ms: now - i64::from(created_days) * DAY_MS,
                            deleted: false,
                        };
                        Some((format!("d{deal}"), v))
                    }
                    Op::Delete { deal, back_hours } => {
                        Some((format!("d{deal}"), Version::deleted(now - i64::from(back_hours) * HOUR_MS)))
                    }
                    Op::Redeliver => last.clone(),
                    Op::Wait { hours } => {
                        now += i64::from(hours) * HOUR_MS;
                        None
                    }
                };
                match change {
                    Some((deal_id, v)) => {
                        last = Some((deal_id.clone(), v.clone()));
                        store(&mut history, deal_id.clone(), v);
                        let deal = history.iter().find(|d| d.deal_id == deal_id).expect("stored").clone();
                        let before = kept.clone();
                        match kept.update(&cx, &deal, now) {
                            Ok(()) => {}
                            Err(_) => {
                                prop_assert_eq!(&kept, &before, "a refused change leaves the sums as they were");
                                kept = build(&history, now);
                            }
                        }
                    }
                    // Kept sums are only read while valid.
                    None if !kept.valid_at(now) => {
                        kept = build(&history, now);
                    }
                    None => {}
                }
                assert_same(&kept, &build(&history, now), &cx, &history, now);
            }
        }
    }

    #[test]
    fn most_changes_are_applied_incrementally_and_a_new_stage_is_a_recompute() {
        let (defs, map) = (defs(), StageMap::default());
        let cx = Context { company_id: "c", map: &map, defs: &defs };
        let now = 400 * DAY_MS;
        let v = |stage: &str, t: i64| Version {
            modified_ms: t,
            pipeline_id: "default".into(),
            stage_id: stage.into(),
            amount: Some(Decimal::from(10)),
            currency: None,
            close_date_ms: 0,
            created_ms: t,
            deleted: false,
        };
        let history: Vec<DealHistory> = (0..100)
            .map(|i| DealHistory { deal_id: format!("d{i}"), versions: vec![v("qualify", i * 1000)] })
            .collect();
        let mut r = Rollup::build(
            &cx,
            vec![pipeline()],
            &history,
            now,
            DAY_MS,
            (0, 0),
            Currency::USD,
            (String::new(), HashMap::new()),
        );
        let moved = DealHistory { deal_id: "d1".into(), versions: vec![v("qualify", 1000), v("propose", now - 10)] };
        r.update(&cx, &moved, now).expect("applied");
        assert_eq!(r.pipelines()[0].figures().open_count, 100);
        let unlisted = DealHistory { deal_id: "d2".into(), versions: vec![v("negotiation", now - 5)] };
        assert_eq!(r.update(&cx, &unlisted, now), Err(Stale::Shape));
        // A day later (the max age) the sums have expired.
        assert_eq!(r.update(&cx, &moved, now + DAY_MS), Err(Stale::Expired));
    }

    /// Empty sums at change counter `version`.
    fn at_version(version: i64) -> Rollup {
        let (defs, map) = (defs(), StageMap::default());
        let cx = Context { company_id: "c", map: &map, defs: &defs };
        let (counters, empty) = ((version, 0), (String::new(), HashMap::new()));
        Rollup::build(&cx, vec![pipeline()], &[], 0, DAY_MS, counters, Currency::USD, empty)
    }

    fn deals_of(counters: impl IntoIterator<Item = i64>) -> Vec<String> {
        counters.into_iter().map(|v| format!("d{v}")).collect()
    }

    proptest! {
        /// Change counters arriving in any order (another replica's batches overtaking this
        /// one's), with runs applied late (another caller still reading): each counter is
        /// applied exactly once, after every earlier one, with its own deals.
        #[test]
        fn counters_in_any_order_are_applied_once_each_in_order(
            order in Just((1..=12i64).collect::<Vec<_>>()).prop_shuffle(),
            apply_now in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let mut r = at_version(0);
            let (mut taken, mut applied) = (None::<Run>, Vec::new());
            let finish = |r: &mut Rollup, run: Run, applied: &mut Vec<i64>| {
                prop_assert!(r.can_take(&run));
                prop_assert_eq!(&run.deals, &deals_of(run.from + 1..=run.to));
                applied.extend(run.from + 1..=run.to);
                r.applied(&run);
                Ok(r.take())
            };
            for (v, now) in order.iter().zip(&apply_now) {
                prop_assert_eq!(r.file(*v, &deals_of([*v]), 0), Filed::Kept);
                if let Some(run) = r.take() {
                    prop_assert!(taken.is_none(), "one run at a time");
                    taken = Some(run);
                }
                if *now && let Some(run) = taken.take() {
                    taken = finish(&mut r, run, &mut applied)?;
                }
            }
            while let Some(run) = taken.take() {
                taken = finish(&mut r, run, &mut applied)?;
            }
            prop_assert_eq!(applied, (1..=12).collect::<Vec<_>>());
            prop_assert_eq!(r.version, 12);
            prop_assert_eq!(r.file(7, &[], 0), Filed::Reflected);
        }
    }

    #[test]
    fn a_missing_counter_is_waited_for_until_overdue() {
        let mut r = at_version(5);
        assert_eq!(r.file(7, &deals_of([7]), 1_000), Filed::Kept);
        assert_eq!(r.take(), None, "counter 6 first");
        assert_eq!(r.file(8, &deals_of([8]), 1_000 + GAP_MS), Filed::Kept, "not overdue yet");
        assert_eq!(r.file(9, &deals_of([9]), 1_001 + GAP_MS), Filed::Overdue, "counter 6 never came");
        let mut r = at_version(5);
        for v in 7..7 + MAX_HELD_BACK as i64 {
            assert_eq!(r.file(v, &[], 0), Filed::Kept);
        }
        assert_eq!(r.file(7 + MAX_HELD_BACK as i64, &[], 0), Filed::Overdue, "too many held back");
        // A caller that took counters and never finished is overdue too.
        let mut r = at_version(5);
        r.file(6, &deals_of([6]), 1_000);
        assert!(r.take().is_some());
        assert_eq!(r.file(7, &deals_of([7]), 1_000), Filed::Kept);
        assert_eq!(r.take(), None, "counter 6 is being applied");
        assert_eq!(r.file(8, &deals_of([8]), 1_001 + GAP_MS), Filed::Overdue);
    }

    #[test]
    fn sums_that_replace_others_keep_their_held_back_counters_and_take_their_run() {
        let rollups = Rollups::default();
        rollups.install("c", at_version(5));
        let taken = rollups.with("c", |r| {
            r.file(8, &deals_of([8]), 0);
            r.file(6, &deals_of([6]), 0);
            r.take()
        });
        let run = taken.flatten().expect("counter 6 taken");
        assert_eq!(run, Run { from: 5, to: 6, deals: deals_of([6]) });
        // A read recomputed the company at counter 6 meanwhile (its sums replaced).
        rollups.install("c", at_version(6));
        rollups.with("c", |r| {
            assert!(r.can_take(&Run { from: 5, to: 7, deals: Vec::new() }), "a run reaching past them is taken");
            assert!(!r.can_take(&run), "a run they already reflect is not");
            assert_eq!(r.file(7, &deals_of([7]), 0), Filed::Kept);
            assert_eq!(r.take(), Some(Run { from: 6, to: 8, deals: deals_of([7, 8]) }));
        });
    }
}

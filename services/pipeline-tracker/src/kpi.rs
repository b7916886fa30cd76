//! Metrics under the definitions in force (`baseline.metrics` of the latest revision,
//! see [`gtm_config::metrics`]) and benchmarks across companies. Pure functions over
//! data already loaded, like [`crate::funnel`], so every figure can be checked by hand.
//!
//! Each company's deals are placed on the canonical portfolio stages through the
//! [`StageMap`]; the definitions name canonical stages, so one definition applies to
//! every company whatever its own stages are called.

use crate::funnel::{DAY_MS, DealHistory, Durations, PipelineInfo, StageInfo, StageKind, probability};
use crate::portfolio::StageMap;
use gtm_config::ResolvedMetrics;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// The metric definitions in force and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Definitions {
    /// The configuration revision they were read from (0: none yet, the defaults).
    pub revision: i64,
    pub metrics: ResolvedMetrics,
    /// company id → coverage target, in the company's currency.
    pub coverage_targets: BTreeMap<String, Decimal>,
    /// company id → its overlay's tags.
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Definitions {
    fn default() -> Self {
        definitions(&gtm_config::Document::default(), 0)
    }
}

/// The definitions revision `revision`'s document declares.
pub fn definitions(doc: &gtm_config::Document, revision: i64) -> Definitions {
    let overlays = doc.companies.values();
    Definitions {
        revision,
        metrics: doc.baseline.effective_metrics(),
        coverage_targets: overlays
            .clone()
            .filter_map(|o| {
                let target = Decimal::from_str(o.coverage_target.as_deref()?).ok()?;
                Some((o.company_id.clone(), target))
            })
            .collect(),
        tags: overlays.filter(|o| !o.tags.is_empty()).map(|o| (o.company_id.clone(), o.tags.clone())).collect(),
    }
}

/// A company's metric: `None` is "not enough data".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Value {
    pub value: Option<f64>,
    /// How many deals it stands on.
    pub sample: u64,
}

impl Value {
    fn of(value: f64, sample: u64, min: u32) -> Self {
        Self { value: (sample >= u64::from(min)).then_some(value), sample }
    }
}

/// One company's (or one pipeline's) metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompanyMetrics {
    pub win_rate: Value,
    /// won ÷ (won + lost) whatever the sample (0 when nothing closed): the funnel's field.
    pub raw_win_rate: f64,
    /// `(canonical stage id, conversion to the next)`.
    pub conversion: Vec<(String, Value)>,
    pub sales_cycle_days: Value,
    /// The mean cycle whatever the sample (0 when none): the funnel's field.
    pub raw_cycle_days: f64,
    /// Open deals × won amount ÷ closed deals ÷ cycle days, rounded to cents; 0 when
    /// nothing was won in the window.
    pub velocity_per_day: Decimal,
    pub velocity_enough_data: bool,
    pub coverage: Value,
    pub slip: Value,
    pub slipped_count: u64,
    /// `category → (deal count, amount)`.
    pub forecast: BTreeMap<String, (u64, Decimal)>,
}

fn within(window_days: Option<u32>, t: i64, as_of: i64) -> bool {
    window_days.is_none_or(|d| t > as_of - i64::from(d) * DAY_MS && t <= as_of)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// What the definitions make of one of a pipeline's stages.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    kind: StageKind,
    /// Its position among the conversion stages (past them all when a won stage).
    progress: Option<usize>,
    category: Option<String>,
    won: bool,
    lost: bool,
}

/// One pipeline's stages as the definitions see them: what each deal's [`MetricsPart`]
/// is computed against.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricsShape {
    pipeline_id: String,
    targets: HashMap<String, Target>,
}

impl MetricsShape {
    /// `stages`: the pipeline's, completed with those its deals use.
    pub(crate) fn new(
        company_id: &str,
        pipeline_id: &str,
        stages: &[StageInfo],
        map: &StageMap,
        defs: &Definitions,
    ) -> Self {
        let m = &defs.metrics;
        let conv = &m.conversion_stages;
        let targets = stages
            .iter()
            .map(|s| {
                let canonical = map.map(company_id, s).and_then(|i| map.canonical.get(i)).map(|c| c.id.as_str());
                let won = canonical.is_some_and(|c| m.win_rate_won.iter().any(|w| w == c));
                let target = Target {
                    kind: s.kind,
                    progress: match canonical {
                        Some(_) if won => Some(conv.len()),
                        Some(c) => conv.iter().position(|x| x == c),
                        None => None,
                    },
                    category: canonical.and_then(|c| m.forecast_categories.get(c)).cloned(),
                    won,
                    lost: canonical.is_some_and(|c| m.win_rate_lost.iter().any(|l| l == c)),
                };
                (s.id.clone(), target)
            })
            .collect();
        Self { pipeline_id: pipeline_id.to_owned(), targets }
    }

    /// What `deal` adds to the metrics at `as_of` under `defs`.
    pub(crate) fn part(&self, deal: &DealHistory, defs: &Definitions, as_of: i64) -> MetricsPart {
        let m = &defs.metrics;
        let mut part = MetricsPart::default();
        let stays = deal.stays(&self.pipeline_id, as_of);
        // Conversion: the furthest listed stage the deal reached, or past them all once won.
        part.furthest = stays.iter().filter_map(|s| self.targets.get(&s.stage_id)?.progress).max();
        let Some(now) = deal.at(as_of).filter(|v| v.pipeline_id == self.pipeline_id) else { return part };
        let Some(target) = self.targets.get(&now.stage_id) else { return part };
        let amount = now.amount.unwrap_or_default();
        part.category = target.category.clone().map(|c| (c, amount));
        if target.kind == StageKind::Open {
            part.open = Some(amount);
            // Slip: its close date now against the one it had at the window's start.
            let slip_from = as_of - i64::from(m.slip_window_days) * DAY_MS;
            if now.close_date_ms > 0
                && let Some(before) = deal.at(slip_from).filter(|v| v.close_date_ms > 0)
            {
                part.slip = Some(now.close_date_ms > before.close_date_ms);
            }
            return part;
        }
        let closed_at = stays.last().map_or(now.modified_ms, |s| s.entered_ms);
        let cycle = (target.won && now.created_ms > 0).then(|| (closed_at - now.created_ms).max(0));
        if within(m.win_rate_window_days, closed_at, as_of) {
            part.won = target.won;
            part.lost = target.lost;
        }
        part.cycle_ms = cycle.filter(|_| within(m.sales_cycle_window_days, closed_at, as_of));
        if within(m.velocity_window_days, closed_at, as_of) && (target.won || target.lost) {
            part.velocity = Some(if target.won { (true, amount, cycle) } else { (false, Decimal::ZERO, None) });
        }
        part
    }
}

/// What one deal adds to one pipeline's metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MetricsPart {
    furthest: Option<usize>,
    /// Its forecast category and amount.
    category: Option<(String, Decimal)>,
    /// Its amount, when open.
    open: Option<Decimal>,
    /// Whether it slipped, when it has close dates to compare.
    slip: Option<bool>,
    /// Won or lost within the win-rate window.
    won: bool,
    lost: bool,
    /// Its sales cycle, when won within the cycle window.
    cycle_ms: Option<i64>,
    /// Closed within the velocity window: `(won, amount when won, cycle when won)`.
    velocity: Option<(bool, Decimal, Option<i64>)>,
}

/// The sums of deals' [`MetricsPart`]s. Adding and removing a part are exact inverses,
/// so sums kept up to date one deal change at a time equal sums over the whole history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricsSums {
    reached: Vec<u64>,
    won: u64,
    lost: u64,
    cycles: Durations,
    v_won: u64,
    v_closed: u64,
    v_amount: Decimal,
    v_cycles: Durations,
    open_count: u64,
    open_amount: Decimal,
    slip_base: u64,
    slipped: u64,
    forecast: BTreeMap<String, (u64, Decimal)>,
}

impl MetricsSums {
    pub(crate) fn new(defs: &Definitions) -> Self {
        Self {
            reached: vec![0; defs.metrics.conversion_stages.len() + 1],
            won: 0,
            lost: 0,
            cycles: Durations::default(),
            v_won: 0,
            v_closed: 0,
            v_amount: Decimal::ZERO,
            v_cycles: Durations::default(),
            open_count: 0,
            open_amount: Decimal::ZERO,
            slip_base: 0,
            slipped: 0,
            forecast: BTreeMap::new(),
        }
    }

    /// Adds `part` (`add`) or takes back a part added before (`!add`).
    pub(crate) fn apply(&mut self, part: &MetricsPart, add: bool) {
        let count = |n: &mut u64, yes: bool| {
            if yes {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        let sum = |x: &mut Decimal, y: Decimal| *x = if add { *x + y } else { *x - y };
        let during = |d: &mut Durations, ms: Option<i64>| match ms {
            Some(ms) if add => d.add(ms),
            Some(ms) => d.remove(ms),
            None => {}
        };
        if let Some(f) = part.furthest {
            self.reached.iter_mut().take(f + 1).for_each(|r| count(r, true));
        }
        if let Some((category, amount)) = &part.category {
            let entry = self.forecast.entry(category.clone()).or_default();
            count(&mut entry.0, true);
            sum(&mut entry.1, *amount);
            // A category no deal is in is not listed, as a pass over the history gives.
            if entry.0 == 0 {
                self.forecast.remove(category);
            }
        }
        if let Some(amount) = part.open {
            count(&mut self.open_count, true);
            sum(&mut self.open_amount, amount);
        }
        if let Some(slipped) = part.slip {
            count(&mut self.slip_base, true);
            count(&mut self.slipped, slipped);
        }
        count(&mut self.won, part.won);
        count(&mut self.lost, part.lost);
        during(&mut self.cycles, part.cycle_ms);
        if let Some((won, amount, cycle)) = part.velocity {
            count(&mut self.v_closed, true);
            count(&mut self.v_won, won);
            sum(&mut self.v_amount, amount);
            during(&mut self.v_cycles, cycle);
        }
    }

    /// The metrics of `company_id` these sums make under `defs`.
    pub(crate) fn metrics(&self, company_id: &str, defs: &Definitions) -> CompanyMetrics {
        let m = &defs.metrics;
        let min = m.min_deals;
        let raw_cycle_days = self.cycles.mean_days();
        let cycle_days = probability(self.v_cycles.mean_days());
        let velocity_per_day = if self.v_won > 0 && cycle_days > Decimal::ZERO {
            (Decimal::from(self.open_count) * self.v_amount / Decimal::from(self.v_closed) / cycle_days).round_dp(2)
        } else {
            Decimal::ZERO
        };
        let coverage = match defs.coverage_targets.get(company_id) {
            Some(t) if *t > Decimal::ZERO => {
                let r = (self.open_amount / *t).round_dp(6);
                Value { value: f64::from_str(&r.to_string()).ok(), sample: self.open_count }
            }
            _ => Value { value: None, sample: self.open_count },
        };
        let (won, lost, reached) = (self.won, self.lost, &self.reached);
        CompanyMetrics {
            win_rate: Value::of(ratio(won, won + lost), won + lost, min),
            raw_win_rate: ratio(won, won + lost),
            conversion: m
                .conversion_stages
                .iter()
                .enumerate()
                .map(|(k, id)| (id.clone(), Value::of(ratio(reached[k + 1], reached[k]), reached[k], min)))
                .collect(),
            sales_cycle_days: Value::of(raw_cycle_days, self.cycles.len() as u64, min),
            raw_cycle_days,
            velocity_per_day,
            velocity_enough_data: self.v_closed >= u64::from(min),
            coverage,
            slip: Value::of(ratio(self.slipped, self.slip_base), self.slip_base, min),
            slipped_count: self.slipped,
            forecast: self.forecast.clone(),
        }
    }
}

/// The metrics of `company_id` over `pipelines`, at `as_of`, under `defs`: every deal's
/// part in every pipeline summed.
pub fn company_metrics(
    company_id: &str,
    pipelines: &[PipelineInfo],
    history: &[DealHistory],
    map: &StageMap,
    defs: &Definitions,
    as_of: i64,
) -> CompanyMetrics {
    let mut sums = MetricsSums::new(defs);
    for pipeline in pipelines {
        let shape = MetricsShape::new(company_id, &pipeline.id, &pipeline.complete(history), map, defs);
        for deal in history {
            sums.apply(&shape.part(deal, defs, as_of), true);
        }
    }
    sums.metrics(company_id, defs)
}

/// The metrics benchmarks compare (amounts are left out: companies differ in currency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    WinRate,
    SalesCycle,
    Coverage,
    Slip,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Self::WinRate, Self::SalesCycle, Self::Coverage, Self::Slip];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WinRate => "winRate",
            Self::SalesCycle => "salesCycle",
            Self::Coverage => "coverage",
            Self::Slip => "slip",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn is_days(self) -> bool {
        self == Self::SalesCycle
    }

    pub fn of(self, m: &CompanyMetrics) -> Value {
        match self {
            Self::WinRate => m.win_rate,
            Self::SalesCycle => m.sales_cycle_days,
            Self::Coverage => m.coverage,
            Self::Slip => m.slip,
        }
    }
}

/// The `p`-th quantile (0..=1) of `sorted` (ascending, non-empty) by linear
/// interpolation between closest ranks: h = (n − 1)·p, x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])
/// (Excel PERCENTILE.INC, numpy's default "linear").
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(&last) = sorted.last() else { return 0.0 };
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    match sorted.get(lo + 1) {
        Some(&hi) => sorted[lo] + (h - h.floor()) * (hi - sorted[lo]),
        None => last,
    }
}

/// The percentile rank of `x` among `values`: (values below + half of those equal) ÷ n × 100.
pub fn percentile_rank(values: &[f64], x: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let below = values.iter().filter(|v| **v < x).count() as f64;
    let equal = values.iter().filter(|v| **v == x).count() as f64;
    (below + equal / 2.0) / values.len() as f64 * 100.0
}

/// One company's place in its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub company_id: String,
    pub value: Value,
    /// None when the value or the group is not enough data.
    pub rank: Option<f64>,
}

/// The companies sharing one tag value.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub tag_value: String,
    /// `(p25, p50, p75)`; None below the minimum of companies.
    pub bands: Option<(f64, f64, f64)>,
    /// Companies whose value counted.
    pub sample: usize,
    pub companies: Vec<Position>,
}

/// `(company id, tag value, value)` rows grouped by tag value (in order), with bands and
/// positions. Companies with not enough data are listed but do not count.
pub fn benchmark(rows: &[(String, String, Value)], min_companies: u32) -> Vec<Group> {
    let mut groups: BTreeMap<&str, Vec<&(String, String, Value)>> = BTreeMap::new();
    for row in rows {
        groups.entry(row.1.as_str()).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(tag, members)| {
            let mut values: Vec<f64> = members.iter().filter_map(|r| r.2.value).collect();
            values.sort_by(f64::total_cmp);
            let enough = !values.is_empty() && values.len() >= min_companies as usize;
            let bands =
                enough.then(|| (percentile(&values, 0.25), percentile(&values, 0.5), percentile(&values, 0.75)));
            Group {
                tag_value: tag.to_owned(),
                bands,
                sample: values.len(),
                companies: members
                    .iter()
                    .map(|r| Position {
                        company_id: r.0.clone(),
                        value: r.2,
                        rank: r.2.value.filter(|_| enough).map(|x| percentile_rank(&values, x)),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funnel::funnel;
    use crate::funnel::tests::{d, deal, fixture, pipeline, v};

    fn defaults() -> Definitions {
        Definitions::default()
    }

    fn with(yaml: &str, revision: i64) -> Definitions {
        let doc = gtm_config::Document::from_yaml(yaml).expect("parses");
        doc.validate().expect("valid");
        definitions(&doc, revision)
    }

    #[test]
    fn default_definitions_give_the_funnels_figures() {
        let history = fixture();
        for day in [6, 20] {
            let f = funnel(&pipeline(), &history, day * DAY_MS);
            let m = company_metrics("c", &[pipeline()], &history, &StageMap::default(), &defaults(), day * DAY_MS);
            assert_eq!(m.raw_win_rate, f.win_rate, "day {day}");
            assert_eq!(m.raw_cycle_days, f.avg_cycle_days, "day {day}");
            assert_eq!(m.velocity_per_day, f.sales_velocity_per_day, "day {day}");
        }
    }

    #[test]
    fn a_window_excludes_deals_closed_before_it() {
        // At day 20, A was won on day 11 and B lost on day 4: a 10-day window keeps A only.
        let history = fixture();
        let all = company_metrics("c", &[pipeline()], &history, &StageMap::default(), &defaults(), 20 * DAY_MS);
        assert_eq!((all.raw_win_rate, all.win_rate.sample), (0.5, 2));
        let defs = with("baseline:\n  metrics:\n    winRate: {windowDays: 10}\n", 2);
        let m = company_metrics("c", &[pipeline()], &history, &StageMap::default(), &defs, 20 * DAY_MS);
        assert_eq!((m.raw_win_rate, m.win_rate.sample), (1.0, 1));
        // Below five deals the rate is not a number.
        assert_eq!(m.win_rate.value, None);
        let defs = with("baseline:\n  metrics:\n    winRate: {windowDays: 10}\n    minimumSample: {deals: 1}\n", 3);
        let m = company_metrics("c", &[pipeline()], &history, &StageMap::default(), &defs, 20 * DAY_MS);
        assert_eq!(m.win_rate.value, Some(1.0));
    }

    #[test]
    fn conversion_coverage_slip_and_forecast_on_canonical_stages() {
        // qualify (0.2) → early, propose (0.6) → middle by probability.
        let mut history = fixture();
        let mut e1 = v(1, "qualify", 40, 1);
        e1.close_date_ms = 30 * DAY_MS;
        let mut e2 = v(15, "qualify", 40, 1);
        e2.close_date_ms = 40 * DAY_MS;
        history.push(deal("e", vec![e1, e2]));
        let defs = with(
            "baseline:\n  metrics:\n    slip: {windowDays: 10}\n    forecastCategories: {middle: commit, early: pipeline}\n    minimumSample: {deals: 1}\ncompanies:\n  acme: {companyId: c, coverageTarget: 480}\n",
            4,
        );
        let m = company_metrics("c", &[pipeline()], &history, &StageMap::default(), &defs, 20 * DAY_MS);
        // Reached early: A, B, C, D, E (5); middle or further: A, C (2); late or further: A
        // (won, so past every stage) (1).
        let conv: Vec<(&str, Option<f64>)> = m.conversion.iter().map(|(s, v)| (s.as_str(), v.value)).collect();
        assert_eq!(conv, [("early", Some(0.4)), ("middle", Some(0.5)), ("late", Some(1.0))]);
        // Open now: C (200, propose) and E (40, qualify) = 240 of a 480 target.
        assert_eq!(m.coverage.value, Some(0.5));
        // E's close date moved from day 30 to day 40 within the last 10 days.
        assert_eq!((m.slip.value, m.slipped_count), (Some(1.0), 1));
        assert_eq!(m.forecast.get("commit"), Some(&(1, d("200"))));
        assert_eq!(m.forecast.get("pipeline"), Some(&(1, d("40"))));
    }

    #[test]
    fn percentiles_and_positions_on_a_known_dataset() {
        let sorted = [10.0, 20.0, 30.0, 40.0];
        // h = 3p: p25 → 0.75 → 10 + 0.75·10; p50 → 1.5 → 25; p75 → 2.25 → 32.5.
        assert_eq!(
            (percentile(&sorted, 0.25), percentile(&sorted, 0.5), percentile(&sorted, 0.75)),
            (17.5, 25.0, 32.5)
        );
        assert_eq!(percentile(&[7.0], 0.75), 7.0);
        assert_eq!([10.0, 20.0, 30.0, 40.0].map(|x| percentile_rank(&sorted, x)), [12.5, 37.5, 62.5, 87.5]);
        assert_eq!(percentile_rank(&[1.0, 1.0], 1.0), 50.0);
    }

    fn row(id: &str, tag: &str, value: Option<f64>) -> (String, String, Value) {
        (id.into(), tag.into(), Value { value, sample: 9 })
    }

    #[test]
    fn benchmarks_group_by_tag_and_need_enough_companies() {
        let rows = [
            row("a", "plg", Some(0.1)),
            row("b", "plg", Some(0.2)),
            row("c", "plg", Some(0.3)),
            row("d", "plg", None),
            row("e", "sales", Some(0.5)),
            row("f", "sales", Some(0.7)),
        ];
        let groups = benchmark(&rows, 3);
        assert_eq!(groups.len(), 2);
        let plg = &groups[0];
        assert_eq!((plg.tag_value.as_str(), plg.sample), ("plg", 3));
        let (p25, p50, p75) = plg.bands.expect("three companies");
        assert!((p25 - 0.15).abs() < 1e-12 && (p50 - 0.2).abs() < 1e-12 && (p75 - 0.25).abs() < 1e-12);
        let ranks: Vec<Option<f64>> = plg.companies.iter().map(|p| p.rank).collect();
        assert_eq!(ranks[1], Some(50.0));
        // d has not enough data: listed, no rank, not counted.
        assert_eq!(ranks[3], None);
        let sales = &groups[1];
        assert_eq!((sales.tag_value.as_str(), sales.bands, sales.sample), ("sales", None, 2));
        assert!(sales.companies.iter().all(|p| p.rank.is_none()));
        // Not grouped: one group of five values.
        let all: Vec<_> = rows.iter().map(|(id, _, v)| (id.clone(), String::new(), *v)).collect();
        let one = benchmark(&all, 3);
        assert_eq!((one.len(), one[0].sample), (1, 5));
        assert_eq!(one[0].bands.map(|b| b.1), Some(0.3));
    }
}

//! Funnel arithmetic: the figures of one pipeline from its deals' histories and its stage
//! catalog, at any date. Pure functions over data already loaded, so every figure can be
//! checked by hand (see the fixture tests at the bottom).

use gomark_proto::money::Currency;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

pub const DAY_MS: i64 = 86_400_000;

/// One version of a deal, as a `deal.upserted` (or `deal.deleted`) event carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub modified_ms: i64,
    pub pipeline_id: String,
    pub stage_id: String,
    /// In the company's currency (the tracker converts other currencies before counting).
    pub amount: Option<Decimal>,
    /// The deal's currency; `None` when the event did not say (the company's currency).
    pub currency: Option<Currency>,
    pub close_date_ms: i64,
    pub created_ms: i64,
    pub deleted: bool,
}

impl Version {
    /// The version a deletion at `modified_ms` leaves: no stage, amount or dates.
    pub fn deleted(modified_ms: i64) -> Self {
        Self {
            modified_ms,
            pipeline_id: String::new(),
            stage_id: String::new(),
            amount: None,
            currency: None,
            close_date_ms: 0,
            created_ms: 0,
            deleted: true,
        }
    }

    fn amount(&self) -> Decimal {
        self.amount.unwrap_or_default()
    }
}

/// Every version of one deal seen so far, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DealHistory {
    pub deal_id: String,
    pub versions: Vec<Version>,
}

impl DealHistory {
    /// The deal as it was at `t`: its newest version modified at or before `t`. A deal
    /// created before `t` but first seen after it is taken to have been as first seen.
    pub fn at(&self, t: i64) -> Option<&Version> {
        let seen = self.versions.iter().take_while(|v| v.modified_ms <= t).last();
        let state = match seen {
            Some(v) => v,
            None => self.versions.first().filter(|v| !v.deleted && v.created_ms > 0 && v.created_ms <= t)?,
        };
        (!state.deleted && (state.created_ms == 0 || state.created_ms <= t)).then_some(state)
    }

    /// `(stage, entered at)` for each stay in `pipeline` up to `t`, in order; a stay ends
    /// when the next one starts (or the deal leaves the pipeline, which ends the list).
    pub(crate) fn stays(&self, pipeline: &str, t: i64) -> Vec<Stay> {
        let mut stays: Vec<Stay> = Vec::new();
        for v in self.versions.iter().take_while(|v| v.modified_ms <= t) {
            let open_stay = stays.last().is_some_and(|s| s.left_ms.is_none());
            if v.deleted || v.pipeline_id != pipeline {
                if let Some(last) = stays.last_mut().filter(|_| open_stay) {
                    last.left_ms = Some(v.modified_ms);
                }
                continue;
            }
            match stays.last_mut() {
                Some(last) if open_stay && last.stage_id == v.stage_id => {}
                last => {
                    if let Some(last) = last.filter(|_| open_stay) {
                        last.left_ms = Some(v.modified_ms);
                    }
                    // The first stay starts when the deal was created, if that is known.
                    let entered_ms = if stays.is_empty() && v.created_ms > 0 { v.created_ms } else { v.modified_ms };
                    stays.push(Stay { stage_id: v.stage_id.clone(), entered_ms, left_ms: None });
                }
            }
        }
        stays
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stay {
    pub(crate) stage_id: String,
    pub(crate) entered_ms: i64,
    pub(crate) left_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// HubSpot marks closed stages; a closed stage is "won" when its probability says so.
    pub fn of(is_closed: bool, probability: f64) -> Self {
        match (is_closed, probability >= 0.5) {
            (false, _) => Self::Open,
            (true, true) => Self::Won,
            (true, false) => Self::Lost,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageInfo {
    pub id: String,
    pub label: String,
    pub probability: f64,
    pub kind: StageKind,
    pub display_order: i32,
    /// No longer in the pipeline's configuration; kept so history keeps its label.
    pub removed: bool,
}

impl StageInfo {
    /// A stage seen on deals but not (yet) in the catalog: HubSpot's built-in closed
    /// stage ids are recognised, anything else is an open stage placed last.
    pub fn unknown(id: &str) -> Self {
        let (probability, kind) = match id {
            s if s.contains("closedwon") => (1.0, StageKind::Won),
            s if s.contains("closedlost") => (0.0, StageKind::Lost),
            _ => (0.0, StageKind::Open),
        };
        Self { id: id.to_owned(), label: id.to_owned(), probability, kind, display_order: i32::MAX, removed: false }
    }
}

/// A pipeline's stages in display order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PipelineInfo {
    pub id: String,
    pub label: String,
    pub stages: Vec<StageInfo>,
}

impl PipelineInfo {
    /// The catalog extended with any stage the deals use that it does not know.
    pub(crate) fn complete(&self, deals: &[DealHistory]) -> Vec<StageInfo> {
        let mut stages = self.stages.clone();
        for v in deals.iter().flat_map(|d| &d.versions) {
            if v.pipeline_id == self.id && !v.deleted && !stages.iter().any(|s| s.id == v.stage_id) {
                stages.push(StageInfo::unknown(&v.stage_id));
            }
        }
        // Open stages first in display order, then won, then lost: the funnel's shape. Ties
        // (stages the catalog does not list) go by id, not by which deal came first, so the
        // shape depends on the set of stages only and a deal change can keep it.
        stages.sort_by(|a, b| {
            let key = |s: &StageInfo| (s.kind != StageKind::Open, s.kind == StageKind::Lost, s.display_order);
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        stages
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageFigures {
    pub deal_count: u64,
    pub amount: Decimal,
    pub weighted_amount: Decimal,
    pub conversion_to_next: Option<f64>,
    pub avg_days_in_stage: f64,
    pub median_days_in_stage: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    /// The catalog's stages (plus unknown ones), each with its figures.
    pub stages: Vec<(StageInfo, StageFigures)>,
    pub open_count: u64,
    pub open_amount: Decimal,
    pub weighted_forecast: Decimal,
    pub won_count: u64,
    pub won_amount: Decimal,
    pub lost_count: u64,
    pub lost_amount: Decimal,
    pub win_rate: f64,
    pub avg_cycle_days: f64,
    /// Rounded to cents: it is an estimate, built on average durations.
    pub sales_velocity_per_day: Decimal,
}

/// A probability (a configuration float such as 0.2) as the decimal it was written as.
pub fn probability(p: f64) -> Decimal {
    Decimal::from_str(&p.to_string()).unwrap_or_default()
}

/// Durations in milliseconds, kept sorted with their exact sum, so one can be added or
/// removed without the others (a deal change) and the mean and median stay exactly what
/// a pass over every duration gives.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Durations {
    sorted: Vec<i64>,
    sum: i128,
}

impl Durations {
    pub(crate) fn add(&mut self, ms: i64) {
        let at = self.sorted.partition_point(|x| *x < ms);
        self.sorted.insert(at, ms);
        self.sum += i128::from(ms);
    }

    /// Removes one `ms` added before (an absent one is ignored: nothing to undo).
    pub(crate) fn remove(&mut self, ms: i64) {
        if let Ok(at) = self.sorted.binary_search(&ms) {
            self.sorted.remove(at);
            self.sum -= i128::from(ms);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The mean in days (0 when empty), from the exact sum: the same whatever the order
    /// the durations came in.
    pub(crate) fn mean_days(&self) -> f64 {
        if self.sorted.is_empty() { 0.0 } else { self.sum as f64 / DAY_MS as f64 / self.sorted.len() as f64 }
    }

    /// The median in days (0 when empty).
    pub(crate) fn median_days(&self) -> f64 {
        let days = |ms: i64| ms as f64 / DAY_MS as f64;
        let n = self.sorted.len();
        if n == 0 {
            return 0.0;
        }
        let mid = n / 2;
        if n.is_multiple_of(2) {
            (days(self.sorted[mid - 1]) + days(self.sorted[mid])) / 2.0
        } else {
            days(self.sorted[mid])
        }
    }
}

/// A pipeline's stages (the catalog plus any the deals use) and how a deal is placed on
/// them: what each deal's [`FunnelPart`] is computed against.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    pub(crate) pipeline_id: String,
    pub(crate) stages: Vec<StageInfo>,
    index: HashMap<String, usize>,
    /// Indexes of the open stages, in funnel order.
    open_positions: Vec<usize>,
    /// Each stage's probability as a decimal.
    weights: Vec<Decimal>,
}

impl Shape {
    pub(crate) fn new(pipeline_id: &str, stages: Vec<StageInfo>) -> Self {
        Self {
            pipeline_id: pipeline_id.to_owned(),
            index: stages.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect(),
            open_positions: (0..stages.len()).filter(|&i| stages[i].kind == StageKind::Open).collect(),
            weights: stages.iter().map(|s| probability(s.probability)).collect(),
            stages,
        }
    }

    /// A deal's progress at `stage`: the furthest open stage it reached (its position
    /// among open stages), or past all of them once won.
    fn progress_of(&self, stage: usize) -> Option<usize> {
        match self.stages[stage].kind {
            StageKind::Open => self.open_positions.iter().position(|&p| p == stage),
            StageKind::Won => Some(self.open_positions.len()),
            StageKind::Lost => None,
        }
    }

    /// What `deal` adds to the funnel at `as_of`.
    pub(crate) fn part(&self, deal: &DealHistory, as_of: i64) -> FunnelPart {
        let stays = deal.stays(&self.pipeline_id, as_of);
        let mut part = FunnelPart::default();
        for stay in &stays {
            let Some(&i) = self.index.get(stay.stage_id.as_str()) else { continue };
            if let Some(left) = stay.left_ms {
                part.durations.push((i, left - stay.entered_ms));
            }
            part.furthest = part.furthest.max(self.progress_of(i));
        }
        let Some(now) = deal.at(as_of).filter(|v| v.pipeline_id == self.pipeline_id) else { return part };
        let Some(&i) = self.index.get(now.stage_id.as_str()) else { return part };
        part.now = Some((i, now.amount()));
        if self.stages[i].kind == StageKind::Won && now.created_ms > 0 {
            let won_at = stays.last().map_or(now.modified_ms, |s| s.entered_ms);
            part.cycle_ms = Some((won_at - now.created_ms).max(0));
        }
        part
    }
}

/// What one deal adds to one pipeline's funnel.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct FunnelPart {
    /// Its progress (see [`Shape`]); None when it never reached a counted stage.
    furthest: Option<usize>,
    /// `(stage, ms)` of each stay it completed.
    durations: Vec<(usize, i64)>,
    /// The stage it is in and its amount.
    now: Option<(usize, Decimal)>,
    /// Creation to won, when it is won.
    cycle_ms: Option<i64>,
}

/// The sums of deals' [`FunnelPart`]s over one [`Shape`]. Adding and removing a part are
/// exact inverses (integers, decimals, sorted durations), so sums kept up to date one deal
/// change at a time equal sums over the whole history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunnelSums {
    counts: Vec<u64>,
    amounts: Vec<Decimal>,
    weighted: Vec<Decimal>,
    durations: Vec<Durations>,
    /// Deals that reached each progress position (open stages, then won).
    reached: Vec<u64>,
    cycles: Durations,
}

impl FunnelSums {
    pub(crate) fn new(shape: &Shape) -> Self {
        let n = shape.stages.len();
        Self {
            counts: vec![0; n],
            amounts: vec![Decimal::ZERO; n],
            weighted: vec![Decimal::ZERO; n],
            durations: vec![Durations::default(); n],
            reached: vec![0; shape.open_positions.len() + 1],
            cycles: Durations::default(),
        }
    }

    /// Adds `part` (`add`) or takes back a part added before (`!add`).
    pub(crate) fn apply(&mut self, shape: &Shape, part: &FunnelPart, add: bool) {
        let step = |n: &mut u64| *n = if add { *n + 1 } else { n.saturating_sub(1) };
        let sum = |x: &mut Decimal, y: Decimal| *x = if add { *x + y } else { *x - y };
        if let Some(f) = part.furthest {
            self.reached.iter_mut().take(f + 1).for_each(step);
        }
        for &(i, ms) in &part.durations {
            if add { self.durations[i].add(ms) } else { self.durations[i].remove(ms) }
        }
        if let Some((i, amount)) = part.now {
            step(&mut self.counts[i]);
            sum(&mut self.amounts[i], amount);
            if shape.stages[i].kind == StageKind::Open {
                sum(&mut self.weighted[i], amount * shape.weights[i]);
            }
        }
        if let Some(ms) = part.cycle_ms {
            if add { self.cycles.add(ms) } else { self.cycles.remove(ms) }
        }
    }

    /// The funnel these sums make.
    pub(crate) fn figures(&self, shape: &Shape) -> Figures {
        let mut out = Figures::default();
        let mut figures: Vec<StageFigures> = (0..shape.stages.len())
            .map(|i| StageFigures {
                deal_count: self.counts[i],
                amount: self.amounts[i],
                weighted_amount: self.weighted[i],
                conversion_to_next: None,
                avg_days_in_stage: self.durations[i].mean_days(),
                median_days_in_stage: self.durations[i].median_days(),
            })
            .collect();
        for (i, stage) in shape.stages.iter().enumerate() {
            let (count, amount) = (self.counts[i], self.amounts[i]);
            match stage.kind {
                StageKind::Open => {
                    out.open_count += count;
                    out.open_amount += amount;
                    out.weighted_forecast += self.weighted[i];
                }
                StageKind::Won => {
                    out.won_count += count;
                    out.won_amount += amount;
                }
                StageKind::Lost => {
                    out.lost_count += count;
                    out.lost_amount += amount;
                }
            }
        }
        for (k, &i) in shape.open_positions.iter().enumerate() {
            if self.reached[k] > 0 {
                figures[i].conversion_to_next = Some(self.reached[k + 1] as f64 / self.reached[k] as f64);
            }
        }
        let closed = out.won_count + out.lost_count;
        out.win_rate = if closed == 0 { 0.0 } else { out.won_count as f64 / closed as f64 };
        out.avg_cycle_days = self.cycles.mean_days();
        let cycle_days = probability(out.avg_cycle_days);
        out.sales_velocity_per_day = if out.won_count > 0 && cycle_days > Decimal::ZERO {
            // open × (won amount ÷ won) × (won ÷ closed) ÷ cycle = open × won amount ÷ closed ÷ cycle.
            (Decimal::from(out.open_count) * out.won_amount / Decimal::from(closed) / cycle_days).round_dp(2)
        } else {
            Decimal::ZERO
        };
        out.stages = shape.stages.iter().cloned().zip(figures).collect();
        out
    }
}

/// The funnel of `pipeline` as it was at `as_of`: every deal's part summed.
pub fn funnel(pipeline: &PipelineInfo, deals: &[DealHistory], as_of: i64) -> Figures {
    let shape = Shape::new(&pipeline.id, pipeline.complete(deals));
    let mut sums = FunnelSums::new(&shape);
    for deal in deals {
        sums.apply(&shape, &shape.part(deal, as_of), true);
    }
    sums.figures(&shape)
}

/// A deal as it stood at one of the waterfall's dates, in the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct DealState {
    pub stage_id: String,
    pub amount: Decimal,
    /// 0: no close date.
    pub close_date_ms: i64,
}

impl DealState {
    fn of(v: &Version) -> Self {
        Self { stage_id: v.stage_id.clone(), amount: v.amount(), close_date_ms: v.close_date_ms }
    }
}

/// One deal behind a movement: what the movement counts for it, and the deal at `from`
/// and at `to` (`None` where it was not in the pipeline).
#[derive(Debug, Clone, PartialEq)]
pub struct DealMove {
    pub deal_id: String,
    pub amount: Decimal,
    pub before: Option<DealState>,
    pub after: Option<DealState>,
}

/// The deals that made one kind of change, and their summed amount.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Movement {
    pub count: u64,
    pub amount: Decimal,
    /// Every deal counted, in the order met; see [`Movement::largest_first`].
    pub deals: Vec<DealMove>,
}

impl Movement {
    fn add(&mut self, deal: &DealHistory, amount: Decimal, before: Option<&Version>, after: Option<&Version>) {
        self.count += 1;
        self.amount += amount;
        self.deals.push(DealMove {
            deal_id: deal.deal_id.clone(),
            amount,
            before: before.map(DealState::of),
            after: after.map(DealState::of),
        });
    }

    /// The deals, largest absolute amount first, then by id: the ones that explain most of
    /// the movement come first when a caller shows only some.
    pub fn largest_first(&mut self) {
        self.deals.sort_by(|a, b| b.amount.abs().cmp(&a.amount.abs()).then_with(|| a.deal_id.cmp(&b.deal_id)));
    }
}

/// What moved the open pipeline from `from` to `to`; see the proto's `Waterfall`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Waterfall {
    pub start: Movement,
    pub created: Movement,
    pub reopened: Movement,
    pub won: Movement,
    pub lost: Movement,
    pub removed: Movement,
    pub pulled_in: Movement,
    pub pushed_out: Movement,
    /// Deals open at both dates whose amount changed; `amount` is the net change.
    pub amount_changes: Movement,
    pub end: Movement,
}

impl Waterfall {
    /// Every movement, named as the contract names it.
    pub fn movements_mut(&mut self) -> [&mut Movement; 10] {
        [
            &mut self.start,
            &mut self.created,
            &mut self.reopened,
            &mut self.won,
            &mut self.lost,
            &mut self.removed,
            &mut self.pulled_in,
            &mut self.pushed_out,
            &mut self.amount_changes,
            &mut self.end,
        ]
    }
}

pub fn waterfall(pipeline: &PipelineInfo, deals: &[DealHistory], from: i64, to: i64) -> Waterfall {
    let stages = pipeline.complete(deals);
    let kind = |v: &Version| stages.iter().find(|s| s.id == v.stage_id).map_or(StageKind::Open, |s| s.kind);
    let here = |v: Option<&Version>| v.filter(|v| v.pipeline_id == pipeline.id).cloned();
    let mut w = Waterfall::default();
    for deal in deals {
        let a = here(deal.at(from));
        let b = here(deal.at(to));
        let open_a = a.as_ref().filter(|v| kind(v) == StageKind::Open);
        let end_kind = b.as_ref().map(&kind);
        if let Some(b) = b.as_ref().filter(|v| kind(v) == StageKind::Open) {
            w.end.add(deal, b.amount(), a.as_ref(), Some(b));
        }
        match open_a {
            Some(a) => {
                w.start.add(deal, a.amount(), Some(a), b.as_ref());
                match (end_kind, b.as_ref()) {
                    (Some(StageKind::Open), Some(b)) => {
                        let change = b.amount() - a.amount();
                        if change != Decimal::ZERO {
                            w.amount_changes.add(deal, change, Some(a), Some(b));
                        }
                        if a.close_date_ms > 0 && b.close_date_ms > 0 {
                            if b.close_date_ms < a.close_date_ms {
                                w.pulled_in.add(deal, b.amount(), Some(a), Some(b));
                            } else if b.close_date_ms > a.close_date_ms {
                                w.pushed_out.add(deal, b.amount(), Some(a), Some(b));
                            }
                        }
                    }
                    (Some(StageKind::Won), b) => w.won.add(deal, a.amount(), Some(a), b),
                    (Some(StageKind::Lost), b) => w.lost.add(deal, a.amount(), Some(a), b),
                    (_, b) => w.removed.add(deal, a.amount(), Some(a), b),
                }
            }
            None => {
                let created_in_window =
                    deal.versions.first().is_some_and(|v| v.created_ms > from && v.created_ms <= to);
                // The deal's last amount in this pipeline before `to`.
                let last = deal
                    .versions
                    .iter()
                    .take_while(|v| v.modified_ms <= to)
                    .filter(|v| !v.deleted && v.pipeline_id == pipeline.id)
                    .last()
                    .or(b.as_ref());
                if created_in_window && let Some(last) = last {
                    let x = last.amount();
                    w.created.add(deal, x, a.as_ref(), b.as_ref());
                    match end_kind {
                        Some(StageKind::Open) => {}
                        Some(StageKind::Won) => w.won.add(deal, x, a.as_ref(), b.as_ref()),
                        Some(StageKind::Lost) => w.lost.add(deal, x, a.as_ref(), b.as_ref()),
                        None => w.removed.add(deal, x, a.as_ref(), b.as_ref()),
                    }
                } else if end_kind == Some(StageKind::Open)
                    && let Some(b) = &b
                {
                    w.reopened.add(deal, b.amount(), a.as_ref(), Some(b));
                }
            }
        }
    }
    for m in w.movements_mut() {
        m.largest_first();
    }
    w
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" | "" => Some(Self::Month),
            _ => None,
        }
    }

    /// The start (UTC) of the period holding `t`.
    pub fn start_of(self, t: i64) -> i64 {
        use chrono::{Datelike, TimeZone, Utc};
        match self {
            Self::Day => t.div_euclid(DAY_MS) * DAY_MS,
            // 1970-01-05 was a Monday.
            Self::Week => (t - 4 * DAY_MS).div_euclid(7 * DAY_MS) * 7 * DAY_MS + 4 * DAY_MS,
            Self::Month => {
                let date = Utc.timestamp_millis_opt(t).single().unwrap_or_default();
                Utc.with_ymd_and_hms(date.year(), date.month(), 1, 0, 0, 0).single().map_or(t, |d| d.timestamp_millis())
            }
        }
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Self::Day => start + DAY_MS,
            Self::Week => start + 7 * DAY_MS,
            Self::Month => self.start_of(start + 32 * DAY_MS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeriodCount {
    pub start_ms: i64,
    pub created: u64,
    pub won: u64,
    pub lost: u64,
    pub won_amount: Decimal,
}

/// Deals created, won and lost in each period from `from` to `to`; `None` when that
/// would be more than `max_periods` periods.
pub fn periods(
    pipeline: &PipelineInfo,
    deals: &[DealHistory],
    period: Period,
    from: i64,
    to: i64,
    max_periods: usize,
) -> Option<Vec<PeriodCount>> {
    let mut starts = Vec::new();
    let mut s = period.start_of(from);
    while s < to {
        if starts.len() == max_periods {
            return None;
        }
        starts.push(s);
        s = period.next(s);
    }
    let mut counts: Vec<PeriodCount> =
        starts.iter().map(|&start_ms| PeriodCount { start_ms, ..Default::default() }).collect();
    let slot = |t: i64| -> Option<usize> {
        if t < from || t >= to {
            return None;
        }
        starts.iter().rposition(|&s| s <= t)
    };
    let stages = pipeline.complete(deals);
    let kind = |id: &str| stages.iter().find(|s| s.id == id).map_or(StageKind::Open, |s| s.kind);
    for deal in deals {
        let Some(first) = deal.versions.iter().find(|v| !v.deleted) else { continue };
        if first.pipeline_id == pipeline.id
            && let Some(i) = slot(if first.created_ms > 0 { first.created_ms } else { first.modified_ms })
        {
            counts[i].created += 1;
        }
        for stay in deal.stays(&pipeline.id, to) {
            let Some(i) = slot(stay.entered_ms) else { continue };
            match kind(&stay.stage_id) {
                StageKind::Won => {
                    counts[i].won += 1;
                    let amount = deal.at(stay.entered_ms).map_or(Decimal::ZERO, Version::amount);
                    counts[i].won_amount += amount;
                }
                StageKind::Lost => counts[i].lost += 1,
                StageKind::Open => {}
            }
        }
    }
    Some(counts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn stage(id: &str, probability: f64, kind: StageKind, order: i32) -> StageInfo {
        StageInfo { id: id.into(), label: id.to_uppercase(), probability, kind, display_order: order, removed: false }
    }

    pub(crate) fn pipeline() -> PipelineInfo {
        PipelineInfo {
            id: "default".into(),
            label: "Sales".into(),
            stages: vec![
                stage("qualify", 0.2, StageKind::Open, 0),
                stage("propose", 0.6, StageKind::Open, 1),
                stage("won", 1.0, StageKind::Won, 2),
                stage("lost", 0.0, StageKind::Lost, 3),
            ],
        }
    }

    pub(crate) fn d(x: &str) -> Decimal {
        Decimal::from_str(x).expect("decimal")
    }

    pub(crate) fn v(day: i64, stage: &str, amount: i64, created_day: i64) -> Version {
        Version {
            modified_ms: day * DAY_MS,
            pipeline_id: "default".into(),
            stage_id: stage.into(),
            amount: Some(Decimal::from(amount)),
            currency: None,
            close_date_ms: 0,
            created_ms: created_day * DAY_MS,
            deleted: false,
        }
    }

    pub(crate) fn deal(id: &str, versions: Vec<Version>) -> DealHistory {
        DealHistory { deal_id: id.into(), versions }
    }

    /// Four deals over twenty days; every expected figure below is worked out by hand.
    pub(crate) fn fixture() -> Vec<DealHistory> {
        vec![
            // A: qualify day 1, propose day 5, won day 11 (amount 100 → 120 on day 11).
            deal("a", vec![v(1, "qualify", 100, 1), v(5, "propose", 100, 1), v(11, "won", 120, 1)]),
            // B: qualify day 2, lost day 4.
            deal("b", vec![v(2, "qualify", 50, 2), v(4, "lost", 50, 2)]),
            // C: qualify day 3, propose day 9.
            deal("c", vec![v(3, "qualify", 200, 3), v(9, "propose", 200, 3)]),
            // D: created day 12 in qualify, deleted day 15.
            deal(
                "d",
                vec![v(12, "qualify", 10, 12), Version { deleted: true, stage_id: String::new(), ..v(15, "", 0, 12) }],
            ),
        ]
    }

    fn stage_figures<'a>(f: &'a Figures, id: &str) -> &'a StageFigures {
        &f.stages.iter().find(|(s, _)| s.id == id).expect("stage").1
    }

    #[test]
    fn funnel_at_a_past_date_matches_the_hand_computed_fixture() {
        // Day 6: A in propose (100), B lost (50), C in qualify (200); D not created yet.
        let f = funnel(&pipeline(), &fixture(), 6 * DAY_MS);
        assert_eq!((f.open_count, f.open_amount), (2, d("300")));
        // Exact: 100 × 0.6 + 200 × 0.2.
        assert_eq!(f.weighted_forecast, d("100"));
        assert_eq!((f.won_count, f.lost_count, f.lost_amount), (0, 1, d("50")));
        assert_eq!(f.win_rate, 0.0);
        let q = stage_figures(&f, "qualify");
        assert_eq!((q.deal_count, q.amount), (1, d("200")));
        // Completed stays in qualify by day 6: A 4 days, B 2 days.
        assert_eq!((q.avg_days_in_stage, q.median_days_in_stage), (3.0, 3.0));
        // Reached qualify: A, B, C (3); reached propose or further: A (1).
        assert_eq!(q.conversion_to_next, Some(1.0 / 3.0));
        assert_eq!(stage_figures(&f, "propose").conversion_to_next, Some(0.0));
    }

    #[test]
    fn funnel_now_matches_the_hand_computed_fixture() {
        let f = funnel(&pipeline(), &fixture(), 20 * DAY_MS);
        // Open: C in propose (200). Won: A (120). Lost: B (50). D deleted.
        assert_eq!((f.open_count, f.open_amount), (1, d("200")));
        assert_eq!((f.won_count, f.won_amount, f.lost_count), (1, d("120"), 1));
        assert_eq!(f.win_rate, 0.5);
        // A: created day 1, won day 11.
        assert_eq!(f.avg_cycle_days, 10.0);
        assert_eq!(f.sales_velocity_per_day, d("6"));
        let q = stage_figures(&f, "qualify");
        // Stays: A 4, B 2, C 6, D 3 (left by deletion) → mean 3.75, median 3.5.
        assert_eq!((q.avg_days_in_stage, q.median_days_in_stage), (3.75, 3.5));
        // Reached qualify: A, B, C, D (4); propose+: A, C (2); won: A (1).
        assert_eq!(q.conversion_to_next, Some(0.5));
        assert_eq!(stage_figures(&f, "propose").conversion_to_next, Some(0.5));
        assert_eq!(stage_figures(&f, "won").deal_count, 1);
    }

    #[test]
    fn waterfall_balances_and_names_each_movement() {
        let w = waterfall(&pipeline(), &fixture(), 6 * DAY_MS, 20 * DAY_MS);
        let ids = |m: &Movement| m.deals.iter().map(|d| d.deal_id.as_str()).collect::<Vec<_>>().join(",");
        assert_eq!((w.start.count, w.start.amount, ids(&w.start)), (2, d("300"), "c,a".to_owned()));
        assert_eq!((w.won.count, w.won.amount, ids(&w.won)), (1, d("100"), "a".to_owned()));
        assert_eq!((w.created.count, w.created.amount, ids(&w.created)), (1, d("10"), "d".to_owned()));
        assert_eq!((w.removed.count, w.removed.amount, ids(&w.removed)), (1, d("10"), "d".to_owned()));
        assert_eq!((w.end.count, w.end.amount, ids(&w.end)), (1, d("200"), "c".to_owned()));
        // A: propose at 100 on day 6, won at 120 on day 20; D: deleted by day 20.
        let a = &w.won.deals[0];
        assert_eq!(a.before.as_ref().map(|s| (s.stage_id.as_str(), s.amount)), Some(("propose", d("100"))));
        assert_eq!(a.after.as_ref().map(|s| (s.stage_id.as_str(), s.amount)), Some(("won", d("120"))));
        assert_eq!((w.removed.deals[0].before.clone(), w.removed.deals[0].after.clone()), (None, None));
        let computed =
            w.start.amount + w.created.amount + w.reopened.amount - w.won.amount - w.lost.amount - w.removed.amount
                + w.amount_changes.amount;
        assert_eq!(computed, w.end.amount);
    }

    #[test]
    fn close_date_moves_are_pulled_in_or_pushed_out() {
        let mut a1 = v(1, "qualify", 10, 1);
        a1.close_date_ms = 30 * DAY_MS;
        let mut a2 = v(3, "qualify", 15, 1);
        a2.close_date_ms = 20 * DAY_MS;
        let w = waterfall(&pipeline(), &[deal("a", vec![a1, a2])], 2 * DAY_MS, 4 * DAY_MS);
        assert_eq!((w.pulled_in.count, w.pulled_in.amount), (1, d("15")));
        let pulled = &w.pulled_in.deals[0];
        let close = |s: &Option<DealState>| s.as_ref().map(|s| s.close_date_ms);
        assert_eq!((close(&pulled.before), close(&pulled.after)), (Some(30 * DAY_MS), Some(20 * DAY_MS)));
        assert_eq!((w.amount_changes.count, w.amount_changes.amount), (1, d("5")));
        let changed = &w.amount_changes.deals[0];
        let amount = |s: &Option<DealState>| s.as_ref().map(|s| s.amount);
        assert_eq!((amount(&changed.before), amount(&changed.after)), (Some(d("10")), Some(d("15"))));
    }

    #[test]
    fn periods_count_creations_wins_and_losses() {
        let p = periods(&pipeline(), &fixture(), Period::Day, 0, 13 * DAY_MS, 100).expect("periods");
        assert_eq!(p.len(), 13);
        assert_eq!(p.iter().map(|c| c.created).sum::<u64>(), 4);
        assert_eq!((p[11].won, p[11].won_amount), (1, d("120")));
        assert_eq!(p[4].lost, 1);
        assert!(periods(&pipeline(), &fixture(), Period::Day, 0, 1000 * DAY_MS, 100).is_none());
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        // 2026-11-21 is a Saturday; its week began Monday 2026-11-16.
        let t = 1_795_219_200_000; // 2026-11-21T00:00:00Z
        assert_eq!(Period::Week.start_of(t), t - 5 * DAY_MS);
        assert_eq!(Period::Month.start_of(t), t - 20 * DAY_MS);
        assert_eq!(Period::Month.next(t - 20 * DAY_MS), t + 10 * DAY_MS);
    }

    #[test]
    fn unknown_stages_are_kept_with_their_id_as_label() {
        let mut history = fixture();
        history.push(deal("e", vec![v(2, "negotiation", 5, 2)]));
        let f = funnel(&pipeline(), &history, 20 * DAY_MS);
        let (info, figures) = f.stages.iter().find(|(s, _)| s.id == "negotiation").expect("kept");
        assert_eq!((info.label.as_str(), figures.deal_count), ("negotiation", 1));
    }
}

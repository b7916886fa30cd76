//! The portfolio roll-up: each company's stages mapped onto the canonical portfolio
//! stages, and the companies' figures summed.

use crate::error::Result;
use crate::funnel::{Figures, StageInfo, StageKind};
use gomark_proto::money::{Currency, Money, MoneyError};
use gomark_proto::pipeline_tracker::v1 as pb;
use rust_decimal::Decimal;
use std::collections::HashMap;

/// A stage every company's stages map onto.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalStage {
    pub id: String,
    pub label: String,
    pub probability: f64,
    pub kind: StageKind,
}

/// How companies' stages map onto the canonical stages: explicit entries from the
/// desired-state configuration, else the open canonical stage nearest in probability
/// (won and lost map onto their own kind).
#[derive(Debug, Clone, PartialEq)]
pub struct StageMap {
    pub canonical: Vec<CanonicalStage>,
    /// `(company_id, stage_id)` → canonical stage id.
    pub explicit: HashMap<(String, String), String>,
}

impl Default for StageMap {
    /// The default portfolio stages, nothing mapped explicitly.
    fn default() -> Self {
        crate::stage_config::stage_map(&gtm_config::Document::default())
    }
}

impl StageMap {
    /// The index of the canonical stage `stage` of `company_id` counts toward.
    pub fn map(&self, company_id: &str, stage: &StageInfo) -> Option<usize> {
        if let Some(target) = self.explicit.get(&(company_id.to_owned(), stage.id.clone()))
            && let Some(i) = self.canonical.iter().position(|c| &c.id == target)
        {
            return Some(i);
        }
        let candidates = self.canonical.iter().enumerate().filter(|(_, c)| c.kind == stage.kind);
        candidates
            .min_by(|(_, a), (_, b)| {
                (a.probability - stage.probability).abs().total_cmp(&(b.probability - stage.probability).abs())
            })
            .map(|(i, _)| i)
    }

    fn empty_stages(&self, currency: Currency) -> Result<Vec<pb::PortfolioStage>> {
        let zero = Some(Money::zero(currency).to_proto()?);
        Ok(self
            .canonical
            .iter()
            .map(|c| pb::PortfolioStage {
                stage_id: c.id.clone(),
                label: c.label.clone(),
                kind: c.kind.as_str().into(),
                amount_money: zero.clone(),
                weighted_amount_money: zero.clone(),
                ..Default::default()
            })
            .collect())
    }

    /// One company's summary over all its pipelines' funnels, in its `currency`.
    pub fn summarize(
        &self,
        company_id: &str,
        name: &str,
        currency: Currency,
        funnels: &[Figures],
    ) -> Result<pb::CompanySummary> {
        let mut s = Sums::new(self.canonical.len());
        let mut counts = (0u64, 0u64, 0u64);
        let mut stage_counts = vec![0u64; self.canonical.len()];
        for f in funnels {
            counts.0 += f.open_count;
            counts.1 += f.won_count;
            counts.2 += f.lost_count;
            s.open += f.open_amount;
            s.weighted += f.weighted_forecast;
            s.won += f.won_amount;
            s.lost += f.lost_amount;
            for (stage, figures) in &f.stages {
                if let Some(i) = self.map(company_id, stage) {
                    stage_counts[i] += figures.deal_count;
                    s.stages[i].0 += figures.amount;
                    s.stages[i].1 += figures.weighted_amount;
                }
            }
        }
        let mut out = pb::CompanySummary {
            company_id: company_id.to_owned(),
            company_name: name.to_owned(),
            open_count: counts.0,
            won_count: counts.1,
            lost_count: counts.2,
            win_rate: win_rate(counts.1, counts.2),
            stages: self.empty_stages(currency)?,
            ..Default::default()
        };
        for (stage, count) in out.stages.iter_mut().zip(stage_counts) {
            stage.deal_count = count;
        }
        s.write(&mut out, currency)?;
        Ok(out)
    }

    /// The sum of `companies` (which must all come from this map and be in `currency`).
    pub fn total(&self, companies: &[pb::CompanySummary], currency: Currency) -> Result<pb::CompanySummary> {
        let mut t = pb::CompanySummary { stages: self.empty_stages(currency)?, ..Default::default() };
        let mut s = Sums::new(self.canonical.len());
        for c in companies {
            t.open_count += c.open_count;
            t.won_count += c.won_count;
            t.lost_count += c.lost_count;
            let read = Sums::read(c, currency)?;
            s.open += read.open;
            s.weighted += read.weighted;
            s.won += read.won;
            s.lost += read.lost;
            for ((target, stage), (sum, read)) in
                t.stages.iter_mut().zip(&c.stages).zip(s.stages.iter_mut().zip(read.stages))
            {
                target.deal_count += stage.deal_count;
                sum.0 += read.0;
                sum.1 += read.1;
            }
        }
        t.win_rate = win_rate(t.won_count, t.lost_count);
        s.write(&mut t, currency)?;
        Ok(t)
    }
}

/// The amounts of a summary, as decimals in one currency.
struct Sums {
    open: Decimal,
    weighted: Decimal,
    won: Decimal,
    lost: Decimal,
    /// `(amount, weighted amount)` per canonical stage.
    stages: Vec<(Decimal, Decimal)>,
}

impl Sums {
    fn new(stages: usize) -> Self {
        let zero = Decimal::ZERO;
        Self { open: zero, weighted: zero, won: zero, lost: zero, stages: vec![(zero, zero); stages] }
    }

    /// The amounts of `s`, which must be in `currency` (absent amounts are zero).
    fn read(s: &pb::CompanySummary, currency: Currency) -> Result<Self> {
        let get = |m: &Option<gomark_proto::common::v1::Money>| -> Result<Decimal> {
            let Some(m) = m else { return Ok(Decimal::ZERO) };
            let m = Money::try_from(m)?;
            if m.currency != currency {
                return Err(MoneyError::Mismatch(m.currency, currency).into());
            }
            Ok(m.amount)
        };
        Ok(Self {
            open: get(&s.open_amount_money)?,
            weighted: get(&s.weighted_forecast_money)?,
            won: get(&s.won_amount_money)?,
            lost: get(&s.lost_amount_money)?,
            stages: s
                .stages
                .iter()
                .map(|st| Ok((get(&st.amount_money)?, get(&st.weighted_amount_money)?)))
                .collect::<Result<_>>()?,
        })
    }

    fn write(&self, s: &mut pb::CompanySummary, currency: Currency) -> Result<()> {
        let m = |x: Decimal| -> Result<Option<gomark_proto::common::v1::Money>> {
            Ok(Some(Money::new(x, currency).to_proto()?))
        };
        s.open_amount_money = m(self.open)?;
        s.weighted_forecast_money = m(self.weighted)?;
        s.won_amount_money = m(self.won)?;
        s.lost_amount_money = m(self.lost)?;
        for (stage, (amount, weighted)) in s.stages.iter_mut().zip(&self.stages) {
            stage.amount_money = m(*amount)?;
            stage.weighted_amount_money = m(*weighted)?;
        }
        Ok(())
    }
}

/// `s` (in `from`) with every amount converted at `rate` into `to`.
pub fn convert(s: &pb::CompanySummary, from: Currency, rate: Decimal, to: Currency) -> Result<pb::CompanySummary> {
    let read = Sums::read(s, from)?;
    let conv = |x: Decimal| -> Result<Decimal> { Ok(Money::new(x, from).convert(rate, to)?.amount) };
    let converted = Sums {
        open: conv(read.open)?,
        weighted: conv(read.weighted)?,
        won: conv(read.won)?,
        lost: conv(read.lost)?,
        stages: read.stages.iter().map(|(a, w)| Ok((conv(*a)?, conv(*w)?))).collect::<Result<_>>()?,
    };
    let mut out = s.clone();
    converted.write(&mut out, to)?;
    Ok(out)
}

fn win_rate(won: u64, lost: u64) -> f64 {
    if won + lost == 0 { 0.0 } else { won as f64 / (won + lost) as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: &str, probability: f64, kind: StageKind) -> StageInfo {
        StageInfo { id: id.into(), label: id.into(), probability, kind, display_order: 0, removed: false }
    }

    #[test]
    fn open_stages_map_to_the_nearest_probability_and_closed_ones_by_kind() {
        let m = StageMap::default();
        let id = |s: &StageInfo| m.canonical[m.map("c", s).expect("mapped")].id.clone();
        assert_eq!(id(&stage("a", 0.1, StageKind::Open)), "early");
        assert_eq!(id(&stage("b", 0.4, StageKind::Open)), "middle");
        assert_eq!(id(&stage("c", 0.9, StageKind::Open)), "late");
        assert_eq!(id(&stage("d", 1.0, StageKind::Won)), "won");
        assert_eq!(id(&stage("e", 0.0, StageKind::Lost)), "lost");
    }

    #[test]
    fn explicit_mapping_wins_over_probability() {
        let mut m = StageMap::default();
        m.explicit.insert(("c".into(), "a".into()), "late".into());
        assert_eq!(m.map("c", &stage("a", 0.1, StageKind::Open)), Some(2));
        assert_eq!(m.map("other", &stage("a", 0.1, StageKind::Open)), Some(0));
    }
}

//! The portfolio roll-up: each company's stages mapped onto the canonical portfolio
//! stages, and the companies' figures summed.

use crate::funnel::{Figures, StageInfo, StageKind};
use gomark_proto::pipeline_tracker::v1 as pb;
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

    fn empty_stages(&self) -> Vec<pb::PortfolioStage> {
        self.canonical
            .iter()
            .map(|c| pb::PortfolioStage {
                stage_id: c.id.clone(),
                label: c.label.clone(),
                kind: c.kind.as_str().into(),
                ..Default::default()
            })
            .collect()
    }

    /// One company's summary over all its pipelines' funnels.
    pub fn summarize(&self, company_id: &str, name: &str, funnels: &[Figures]) -> pb::CompanySummary {
        let mut s = pb::CompanySummary {
            company_id: company_id.to_owned(),
            company_name: name.to_owned(),
            stages: self.empty_stages(),
            ..Default::default()
        };
        for f in funnels {
            s.open_count += f.open_count;
            s.open_amount += f.open_amount;
            s.weighted_forecast += f.weighted_forecast;
            s.won_count += f.won_count;
            s.won_amount += f.won_amount;
            s.lost_count += f.lost_count;
            s.lost_amount += f.lost_amount;
            for (stage, figures) in &f.stages {
                if let Some(i) = self.map(company_id, stage) {
                    let target = &mut s.stages[i];
                    target.deal_count += figures.deal_count;
                    target.amount += figures.amount;
                    target.weighted_amount += figures.weighted_amount;
                }
            }
        }
        s.win_rate = win_rate(s.won_count, s.lost_count);
        s
    }

    /// The sum of `companies` (which must all come from this map).
    pub fn total(&self, companies: &[pb::CompanySummary]) -> pb::CompanySummary {
        let mut t = pb::CompanySummary { stages: self.empty_stages(), ..Default::default() };
        for c in companies {
            t.open_count += c.open_count;
            t.open_amount += c.open_amount;
            t.weighted_forecast += c.weighted_forecast;
            t.won_count += c.won_count;
            t.won_amount += c.won_amount;
            t.lost_count += c.lost_count;
            t.lost_amount += c.lost_amount;
            for (target, stage) in t.stages.iter_mut().zip(&c.stages) {
                target.deal_count += stage.deal_count;
                target.amount += stage.amount;
                target.weighted_amount += stage.weighted_amount;
            }
        }
        t.win_rate = win_rate(t.won_count, t.lost_count);
        t
    }
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

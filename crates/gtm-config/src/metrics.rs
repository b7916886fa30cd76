//! Metric definitions as code: `baseline.metrics` declares once how each portfolio
//! metric is computed (which canonical stages count as won or lost, over which window…),
//! and [`MetricDefinitions::resolve`] fills in the defaults, which equal the formulas
//! pipeline-tracker used before definitions existed. Stage ids here are canonical
//! portfolio stages: each company's stages reach them through its `stageMapping` (or by
//! probability), so one definition applies to every company.

use crate::model::{PortfolioStage, StageKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest window a metric may look back over (ten years).
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// Default minimum of deals behind a company's rate or duration.
pub const DEFAULT_MIN_DEALS: u32 = 5;
/// Default minimum of companies behind percentiles.
pub const DEFAULT_MIN_COMPANIES: u32 = 3;
/// Default look-back of the slip metric (close dates pushed in the last N days).
pub const DEFAULT_SLIP_WINDOW_DAYS: u32 = 30;

/// `baseline.metrics` as declared: everything optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricDefinitions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate: Option<WinRateDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_cycle: Option<WindowDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<WindowDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slip: Option<WindowDefinition>,
    /// Canonical stage id → forecast category (e.g. `pipeline`, `bestCase`, `commit`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forecast_categories: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_sample: Option<MinimumSample>,
}

/// Win rate = won ÷ (won + lost), over deals closed in the window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WinRateDefinition {
    /// Canonical stages that count as won; the `won` kind stages when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub won: Vec<String>,
    /// Canonical stages that count as lost; the `lost` kind stages when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
    /// Deals closed in the last N days; all of history when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

/// Conversion from each listed canonical stage to the next (the last one to won).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversionDefinition {
    /// Open canonical stages in funnel order; every open stage when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
}

/// A metric over the deals closed (or, for slip, moved) in the last `windowDays`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

/// Below these, a figure is "not enough data" rather than a number.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MinimumSample {
    /// Deals behind one company's rate or duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deals: Option<u32>,
    /// Companies behind a benchmark's percentiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companies: Option<u32>,
}

/// The definitions in force, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedMetrics {
    pub win_rate_won: Vec<String>,
    pub win_rate_lost: Vec<String>,
    /// None: all of history.
    pub win_rate_window_days: Option<u32>,
    pub conversion_stages: Vec<String>,
    pub sales_cycle_window_days: Option<u32>,
    pub velocity_window_days: Option<u32>,
    pub slip_window_days: u32,
    /// Canonical stage id → category; stages not listed have no category.
    pub forecast_categories: BTreeMap<String, String>,
    pub min_deals: u32,
    pub min_companies: u32,
}

impl MetricDefinitions {
    /// The definitions with defaults, against the portfolio stages in force.
    pub fn resolve(&self, stages: &[PortfolioStage]) -> ResolvedMetrics {
        let of_kind = |kind: StageKind| -> Vec<String> {
            stages.iter().filter(|s| s.kind == kind).map(|s| s.id.clone()).collect()
        };
        let win = self.win_rate.clone().unwrap_or_default();
        let or_kind = |ids: Vec<String>, kind| if ids.is_empty() { of_kind(kind) } else { ids };
        let conversion = self.conversion.clone().unwrap_or_default().stages;
        let window = |d: &Option<WindowDefinition>| d.as_ref().and_then(|d| d.window_days);
        // Default categories: open stages are pipeline, won stages closed (lost: none).
        let forecast_categories = if self.forecast_categories.is_empty() {
            stages
                .iter()
                .filter_map(|s| match s.kind {
                    StageKind::Open => Some((s.id.clone(), "pipeline".to_owned())),
                    StageKind::Won => Some((s.id.clone(), "closed".to_owned())),
                    StageKind::Lost => None,
                })
                .collect()
        } else {
            self.forecast_categories.clone()
        };
        let sample = self.minimum_sample.clone().unwrap_or_default();
        ResolvedMetrics {
            win_rate_won: or_kind(win.won, StageKind::Won),
            win_rate_lost: or_kind(win.lost, StageKind::Lost),
            win_rate_window_days: win.window_days,
            conversion_stages: or_kind(conversion, StageKind::Open),
            sales_cycle_window_days: window(&self.sales_cycle),
            velocity_window_days: window(&self.velocity),
            slip_window_days: window(&self.slip).unwrap_or(DEFAULT_SLIP_WINDOW_DAYS),
            forecast_categories,
            min_deals: sample.deals.unwrap_or(DEFAULT_MIN_DEALS),
            min_companies: sample.companies.unwrap_or(DEFAULT_MIN_COMPANIES),
        }
    }

    /// Every problem, as `(path, message)`; `stages` are the portfolio stages in force.
    pub(crate) fn check(&self, stages: &[PortfolioStage]) -> Vec<(String, String)> {
        let path = "baseline.metrics";
        let mut errors = Vec::new();
        let kind_of = |id: &str| stages.iter().find(|s| s.id == id).map(|s| s.kind);
        let mut stage_list = |field: &str, ids: &[String], want: Option<StageKind>| {
            for (i, id) in ids.iter().enumerate() {
                match (kind_of(id), want) {
                    (None, _) => {
                        errors.push((format!("{path}.{field}[{i}]"), format!("{id:?} is not a portfolio stage")))
                    }
                    (Some(k), Some(w)) if k != w => errors.push((
                        format!("{path}.{field}[{i}]"),
                        format!("{id:?} is a {} stage, not {}", kind_name(k), kind_name(w)),
                    )),
                    _ => {}
                }
            }
        };
        if let Some(w) = &self.win_rate {
            stage_list("winRate.won", &w.won, Some(StageKind::Won));
            stage_list("winRate.lost", &w.lost, Some(StageKind::Lost));
        }
        if let Some(c) = &self.conversion {
            stage_list("conversion.stages", &c.stages, Some(StageKind::Open));
            let mut seen = std::collections::BTreeSet::new();
            for (i, id) in c.stages.iter().enumerate() {
                if !seen.insert(id) {
                    errors.push((format!("{path}.conversion.stages[{i}]"), format!("{id:?} is listed twice")));
                }
            }
        }
        let windows = [
            ("winRate", self.win_rate.as_ref().and_then(|w| w.window_days)),
            ("salesCycle", self.sales_cycle.as_ref().and_then(|w| w.window_days)),
            ("velocity", self.velocity.as_ref().and_then(|w| w.window_days)),
            ("slip", self.slip.as_ref().and_then(|w| w.window_days)),
        ];
        for (field, days) in windows {
            if let Some(days) = days
                && !(1..=MAX_WINDOW_DAYS).contains(&days)
            {
                errors.push((format!("{path}.{field}.windowDays"), format!("must be between 1 and {MAX_WINDOW_DAYS}")));
            }
        }
        for (stage, category) in &self.forecast_categories {
            if kind_of(stage).is_none() {
                errors.push((
                    format!("{path}.forecastCategories.{stage}"),
                    format!("{stage:?} is not a portfolio stage"),
                ));
            }
            if !is_category(category) {
                errors.push((
                    format!("{path}.forecastCategories.{stage}"),
                    "must be a category name of 1 to 40 letters, digits, '_' or '-'".to_owned(),
                ));
            }
        }
        if let Some(sample) = &self.minimum_sample {
            if sample.deals == Some(0) {
                errors.push((format!("{path}.minimumSample.deals"), "must be at least 1".to_owned()));
            }
            if sample.companies == Some(0) {
                errors.push((format!("{path}.minimumSample.companies"), "must be at least 1".to_owned()));
            }
        }
        errors
    }
}

fn kind_name(k: StageKind) -> &'static str {
    match k {
        StageKind::Open => "open",
        StageKind::Won => "won",
        StageKind::Lost => "lost",
    }
}

fn is_category(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A tag key or value in a company overlay's `tags`: short printable text.
pub(crate) fn is_tag_text(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= 64 && !s.chars().any(char::is_control)
}

/// Whether `s` is a positive decimal amount as text ("250000", "1200.50").
pub(crate) fn is_positive_amount(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.len() <= 20
        && frac.len() <= 8
        && int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_digit() && c != '0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Document;

    #[test]
    fn defaults_match_the_formulas_before_definitions() {
        let r = MetricDefinitions::default().resolve(&PortfolioStage::defaults());
        assert_eq!((r.win_rate_won, r.win_rate_lost), (vec!["won".to_owned()], vec!["lost".to_owned()]));
        assert_eq!((r.win_rate_window_days, r.sales_cycle_window_days, r.velocity_window_days), (None, None, None));
        assert_eq!(r.conversion_stages, ["early", "middle", "late"]);
        assert_eq!(r.forecast_categories.get("late").map(String::as_str), Some("pipeline"));
        assert_eq!(r.forecast_categories.get("lost"), None);
        assert_eq!((r.min_deals, r.min_companies), (DEFAULT_MIN_DEALS, DEFAULT_MIN_COMPANIES));
    }

    #[test]
    fn declared_definitions_replace_the_defaults() {
        let doc = Document::from_yaml(
            r#"
baseline:
  metrics:
    winRate: {windowDays: 90}
    conversion: {stages: [middle, late]}
    forecastCategories: {late: commit, won: closed}
    minimumSample: {deals: 2, companies: 4}
companies:
  acme: {companyId: c-1, coverageTarget: 250000, tags: {salesMotion: plg}}
  beta: {companyId: c-2, coverageTarget: "1200.50"}
"#,
        )
        .expect("parses");
        doc.validate().expect("valid");
        let r = doc.baseline.effective_metrics();
        assert_eq!(r.win_rate_window_days, Some(90));
        assert_eq!(r.conversion_stages, ["middle", "late"]);
        assert_eq!(r.forecast_categories.len(), 2);
        assert_eq!((r.min_deals, r.min_companies), (2, 4));
        assert_eq!(doc.companies["acme"].coverage_target.as_deref(), Some("250000"));
        assert_eq!(doc.companies["beta"].coverage_target.as_deref(), Some("1200.50"));
        assert_eq!(doc.companies["acme"].tags.get("salesMotion").map(String::as_str), Some("plg"));
    }

    #[test]
    fn bad_definitions_are_named_by_path() {
        let doc = Document::from_yaml(
            r#"
baseline:
  metrics:
    winRate: {won: [late], lost: [gone], windowDays: 0}
    conversion: {stages: [early, early]}
    slip: {windowDays: 5000}
    forecastCategories: {nowhere: commit, late: "best case"}
    minimumSample: {deals: 0}
companies:
  acme: {companyId: c-1, coverageTarget: "-5", tags: {salesMotion: ""}}
"#,
        )
        .expect("parses");
        let errors = doc.validate().expect_err("invalid");
        let has = |path: &str, text: &str| errors.iter().any(|e| e.path == path && e.message.contains(text));
        assert!(has("baseline.metrics.winRate.won[0]", "open stage, not won"), "{errors}");
        assert!(has("baseline.metrics.winRate.lost[0]", "not a portfolio stage"), "{errors}");
        assert!(has("baseline.metrics.winRate.windowDays", "between 1"), "{errors}");
        assert!(has("baseline.metrics.conversion.stages[1]", "twice"), "{errors}");
        assert!(has("baseline.metrics.slip.windowDays", "between 1"), "{errors}");
        assert!(has("baseline.metrics.forecastCategories.nowhere", "not a portfolio stage"), "{errors}");
        assert!(has("baseline.metrics.forecastCategories.late", "category name"), "{errors}");
        assert!(has("baseline.metrics.minimumSample.deals", "at least 1"), "{errors}");
        assert!(has("companies.acme.coverageTarget", "positive"), "{errors}");
        assert!(has("companies.acme.tags.salesMotion", "must be"), "{errors}");
    }

    #[test]
    fn amounts_and_tags() {
        assert!(is_positive_amount("250000") && is_positive_amount("0.5") && is_positive_amount("1200.50"));
        assert!(!is_positive_amount("0") && !is_positive_amount("-5") && !is_positive_amount("1e5"));
        assert!(!is_positive_amount("") && !is_positive_amount("1.") && !is_positive_amount(".5"));
        assert!(is_tag_text("plg") && !is_tag_text(" ") && !is_tag_text("a\nb"));
    }
}

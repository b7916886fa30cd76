//! The effective configuration of one company: baseline merged with its overlay.

use crate::ConfigError;
use crate::model::{Baseline, CompanyOverlay, CompanySettings, DealProperty, Document, Pipeline, PropertyGroup};
use crate::outreach::{Cadence, CompanyCalendar, PortfolioContact, UpsellRule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one company's HubSpot portal should hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConfig {
    pub company_id: String,
    pub settings: CompanySettings,
    pub property_groups: Vec<PropertyGroup>,
    pub deal_properties: Vec<DealProperty>,
    pub pipelines: Vec<Pipeline>,
    /// Upso cadences: the baseline's, overridden (by key) or removed by the overlay.
    #[serde(default)]
    pub cadences: Vec<Cadence>,
    #[serde(default)]
    pub upsell_rules: Vec<UpsellRule>,
    /// The portfolio-wide suppression list (baseline only).
    #[serde(default)]
    pub suppression_list: Vec<String>,
    /// The company's time zone and holidays (overlay `outreach`).
    #[serde(default)]
    pub calendar: CompanyCalendar,
    /// The portfolio-wide contact rules (baseline only).
    #[serde(default)]
    pub portfolio_contact: PortfolioContact,
    /// Validation rules on deal properties: the baseline's, overridden or removed.
    #[serde(default)]
    pub validation_rules: Vec<crate::rules::ValidationRule>,
    /// Who else writes deal records (baseline only).
    #[serde(default)]
    pub record_writers: Vec<crate::rules::RecordWriter>,
    /// The HubSpot API version the portal should be pinned to (overlay, else baseline);
    /// `None`: whatever it is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

impl EffectiveConfig {
    pub fn cadence(&self, key: &str) -> Option<&Cadence> {
        self.cadences.iter().find(|c| c.key == key)
    }

    pub fn property(&self, name: &str) -> Option<&DealProperty> {
        self.deal_properties.iter().find(|p| p.name == name)
    }

    pub fn pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    pub fn group(&self, name: &str) -> Option<&PropertyGroup> {
        self.property_groups.iter().find(|g| g.name == name)
    }
}

/// An item of the effective config with the document path it was declared at, so
/// validation can blame the baseline or the overlay that caused a problem.
#[derive(Debug, Clone)]
pub(crate) struct Sourced<'a, T> {
    pub path: String,
    pub item: &'a T,
    pub from_overlay: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SourcedConfig<'a> {
    pub property_groups: Vec<Sourced<'a, PropertyGroup>>,
    pub deal_properties: Vec<Sourced<'a, DealProperty>>,
    pub pipelines: Vec<Sourced<'a, Pipeline>>,
    pub cadences: Vec<Sourced<'a, Cadence>>,
    pub upsell_rules: Vec<Sourced<'a, UpsellRule>>,
    pub validation_rules: Vec<Sourced<'a, crate::rules::ValidationRule>>,
}

/// Baseline order first; an overlay item with a known key replaces the baseline item in
/// place (whole-object replace), otherwise it is appended in overlay order.
fn merge<'a, T>(
    base: &'a [T],
    base_path: &str,
    overlay: &'a [T],
    overlay_path: &str,
    removed: &[String],
    key: impl Fn(&T) -> &str,
) -> Vec<Sourced<'a, T>> {
    let mut out: Vec<Sourced<'a, T>> = base
        .iter()
        .enumerate()
        .filter(|(_, item)| !removed.iter().any(|r| r == key(item)))
        .map(|(i, item)| Sourced { path: format!("{base_path}[{i}]"), item, from_overlay: false })
        .collect();
    for (i, item) in overlay.iter().enumerate() {
        let sourced = Sourced { path: format!("{overlay_path}[{i}]"), item, from_overlay: true };
        match out.iter_mut().find(|s| key(s.item) == key(item)) {
            Some(slot) => *slot = sourced,
            None => out.push(sourced),
        }
    }
    out
}

pub(crate) fn sourced<'a>(baseline: &'a Baseline, overlay: Option<(&str, &'a CompanyOverlay)>) -> SourcedConfig<'a> {
    let empty: &'a [String] = &[];
    let (cadences, removed_cadences, rules) = match overlay {
        Some((_, o)) => (o.cadences.as_slice(), o.remove_cadences.as_slice(), o.upsell_rules.as_slice()),
        None => (&[][..], empty, &[][..]),
    };
    let (prefix, groups, props, removed_props, pipes, removed_pipes) = match overlay {
        Some((key, o)) => (
            format!("companies.{key}"),
            o.property_groups.as_slice(),
            o.deal_properties.as_slice(),
            o.remove_deal_properties.as_slice(),
            o.pipelines.as_slice(),
            o.remove_pipelines.as_slice(),
        ),
        None => (String::new(), &[][..], &[][..], empty, &[][..], empty),
    };
    SourcedConfig {
        property_groups: merge(
            &baseline.property_groups,
            "baseline.propertyGroups",
            groups,
            &format!("{prefix}.propertyGroups"),
            &[],
            |g| &g.name,
        ),
        deal_properties: merge(
            &baseline.deal_properties,
            "baseline.dealProperties",
            props,
            &format!("{prefix}.dealProperties"),
            removed_props,
            |p| &p.name,
        ),
        pipelines: merge(
            &baseline.pipelines,
            "baseline.pipelines",
            pipes,
            &format!("{prefix}.pipelines"),
            removed_pipes,
            |p| &p.id,
        ),
        cadences: merge(
            &baseline.cadences,
            "baseline.cadences",
            cadences,
            &format!("{prefix}.cadences"),
            removed_cadences,
            |c| &c.key,
        ),
        upsell_rules: merge(
            &baseline.upsell_rules,
            "baseline.upsellRules",
            rules,
            &format!("{prefix}.upsellRules"),
            &[],
            |r| &r.key,
        ),
        validation_rules: merge_rules(baseline, overlay, &prefix),
    }
}

/// Like [`merge`], keyed by property and rule type (HubSpot keeps one rule of each type
/// per property).
fn merge_rules<'a>(
    baseline: &'a Baseline,
    overlay: Option<(&str, &'a CompanyOverlay)>,
    prefix: &str,
) -> Vec<Sourced<'a, crate::rules::ValidationRule>> {
    let (rules, removed) = match overlay {
        Some((_, o)) => (o.validation_rules.as_slice(), o.remove_validation_rules.as_slice()),
        None => (&[][..], &[][..]),
    };
    let mut out: Vec<Sourced<'a, crate::rules::ValidationRule>> = baseline
        .validation_rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !removed.contains(&r.key()))
        .map(|(i, item)| Sourced { path: format!("baseline.validationRules[{i}]"), item, from_overlay: false })
        .collect();
    for (i, item) in rules.iter().enumerate() {
        let sourced = Sourced { path: format!("{prefix}.validationRules[{i}]"), item, from_overlay: true };
        match out.iter_mut().find(|s| s.item.key() == item.key()) {
            Some(slot) => *slot = sourced,
            None => out.push(sourced),
        }
    }
    out
}

fn build(baseline: &Baseline, key: &str, overlay: &CompanyOverlay) -> EffectiveConfig {
    let s = sourced(baseline, Some((key, overlay)));
    EffectiveConfig {
        company_id: overlay.company_id.clone(),
        settings: overlay.settings,
        property_groups: s.property_groups.iter().map(|x| x.item.clone()).collect(),
        deal_properties: s.deal_properties.iter().map(|x| x.item.clone()).collect(),
        pipelines: s.pipelines.iter().map(|x| x.item.clone()).collect(),
        cadences: s.cadences.iter().map(|x| x.item.clone()).collect(),
        // A rule whose cadence was removed by the overlay goes with it.
        upsell_rules: s
            .upsell_rules
            .iter()
            .filter(|r| s.cadences.iter().any(|c| c.item.key == r.item.cadence))
            .map(|x| x.item.clone())
            .collect(),
        suppression_list: baseline.suppression_list.clone(),
        calendar: overlay.outreach.clone(),
        portfolio_contact: baseline.portfolio_contact.clone(),
        validation_rules: s.validation_rules.iter().map(|x| x.item.clone()).collect(),
        record_writers: baseline.record_writers.clone(),
        api_version: overlay.hubspot.api_version.clone().or_else(|| baseline.hubspot.api_version.clone()),
    }
}

impl Document {
    /// The merged configuration of one company. Does not validate; call
    /// [`Document::validate`] first.
    pub fn effective(&self, company_key: &str) -> Result<EffectiveConfig, ConfigError> {
        self.companies
            .get(company_key)
            .map(|o| build(&self.baseline, company_key, o))
            .ok_or_else(|| ConfigError::UnknownCompany(company_key.to_string()))
    }

    /// The key of the overlay of company `company_id`, if the document names it.
    pub fn key_of(&self, company_id: &str) -> Option<&str> {
        self.companies.iter().find(|(_, o)| o.company_id == company_id).map(|(k, _)| k.as_str())
    }

    /// The merged configuration of every company, keyed by company key.
    pub fn effective_all(&self) -> BTreeMap<String, EffectiveConfig> {
        self.companies.iter().map(|(k, o)| (k.clone(), build(&self.baseline, k, o))).collect()
    }
}

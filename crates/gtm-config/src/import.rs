//! Import: adopt what a portal already holds as desired state (revision 1).

use crate::model::{
    Baseline, CompanyOverlay, CompanySettings, DealProperty, Document, FieldType, Pipeline, PropertyGroup,
    PropertyType, Stage,
};
use crate::plan::{Observed, PipelineIdMap};
use crate::validate::{HUBSPOT_DEAL_PROPERTIES, HUBSPOT_DEFAULT_GROUPS, is_property_name};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A portal's configuration as a GoMark overlay, with what the apply side must remember.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    pub company_key: String,
    pub overlay: CompanyOverlay,
    /// GoMark ids given to the portal's pipelines and stages ↔ their HubSpot ids.
    pub ids: PipelineIdMap,
    /// The imported property names: from now on GoMark manages (and may archive) them.
    pub managed: BTreeSet<String>,
    /// Custom properties that could not be adopted, with the reason (human-readable).
    pub skipped: Vec<String>,
}

impl Imported {
    /// The same content as a baseline (for a portfolio's first, reference portal).
    pub fn to_baseline(&self) -> Baseline {
        Baseline {
            property_groups: self.overlay.property_groups.clone(),
            deal_properties: self.overlay.deal_properties.clone(),
            pipelines: self.overlay.pipelines.clone(),
            ..Baseline::default()
        }
    }

    /// A document with an empty baseline and this company's overlay.
    pub fn to_document(&self) -> Document {
        Document {
            baseline: Baseline::default(),
            companies: BTreeMap::from([(self.company_key.clone(), self.overlay.clone())]),
        }
    }
}

/// Lower-case slug of a label: runs of other characters become `-`, starting with a letter,
/// at most 64 characters, so it passes the pipeline/stage id rule.
pub(crate) fn slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-');
    let mut s = match s.chars().next() {
        Some(c) if c.is_ascii_lowercase() => s.to_string(),
        Some(_) => format!("p-{s}"),
        None => "unnamed".to_string(),
    };
    s.truncate(56); // leaves room for a "-NNN" uniqueness suffix under 64
    s.trim_end_matches('-').to_string()
}

fn unique_slug(label: &str, taken: &mut BTreeSet<String>) -> String {
    let base = slug(label);
    let mut candidate = base.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

/// Adopts the portal's custom deal properties, its groups (except HubSpot's default
/// `dealinformation`) and all its pipelines with their stages. Pipeline and stage ids are
/// slugs of their labels, unique. Explicit displayOrders are kept so that planning the
/// result against the same portal gives an empty plan.
pub fn import(observed: &Observed, company_key: &str, company_id: &str) -> Imported {
    let mut skipped = Vec::new();
    let mut managed = BTreeSet::new();

    let property_groups: Vec<PropertyGroup> = observed
        .groups
        .iter()
        .filter(|g| !HUBSPOT_DEFAULT_GROUPS.contains(&g.name.as_str()))
        .map(|g| PropertyGroup { name: g.name.clone(), label: g.label.clone(), display_order: Some(g.display_order) })
        .collect();

    let mut deal_properties = Vec::new();
    for o in observed.properties.iter().filter(|o| !o.hubspot_defined) {
        let types = (PropertyType::parse(&o.property_type), FieldType::parse(&o.field_type));
        let reason = if !is_property_name(&o.name)
            || o.name.starts_with("hs_")
            || HUBSPOT_DEAL_PROPERTIES.contains(&o.name.as_str())
        {
            Some("its internal name is not one GoMark may manage")
        } else if o.field_type == FieldType::CalculationEquation.as_str() {
            Some("calculated properties are not managed")
        } else if types.0.is_none() || types.1.is_none() {
            Some("its type/fieldType cannot be created through the API")
        } else {
            None
        };
        let (Some(property_type), Some(field_type), None) = (types.0, types.1, reason) else {
            skipped.push(format!("deal property {}: {}", o.name, reason.unwrap_or("unsupported")));
            continue;
        };
        managed.insert(o.name.clone());
        deal_properties.push(DealProperty {
            name: o.name.clone(),
            label: o.label.clone(),
            property_type,
            field_type,
            group_name: o.group_name.clone(),
            description: Some(o.description.clone()).filter(|d| !d.is_empty()),
            options: o.options.clone(),
            has_unique_value: o.has_unique_value,
        });
    }

    let mut ids = PipelineIdMap::default();
    let mut pipeline_ids = BTreeSet::new();
    let pipelines = observed
        .pipelines
        .iter()
        .map(|p| {
            let id = unique_slug(&p.label, &mut pipeline_ids);
            ids.insert_pipeline(&id, &p.hubspot_id);
            let mut stage_ids = BTreeSet::new();
            let stages = p
                .stages
                .iter()
                .map(|s| {
                    let stage_id = unique_slug(&s.label, &mut stage_ids);
                    ids.insert_stage(&id, &stage_id, &s.hubspot_id);
                    Stage {
                        id: stage_id,
                        label: s.label.clone(),
                        display_order: Some(s.display_order),
                        // An unreadable probability becomes 0.0; the next plan shows it.
                        probability: s.probability.trim().parse().unwrap_or(0.0),
                        closed: s.is_closed,
                    }
                })
                .collect();
            Pipeline {
                id,
                label: p.label.clone(),
                display_order: Some(p.display_order),
                stages,
                removed_stages: Vec::new(),
                rules: None,
            }
        })
        .collect();

    Imported {
        company_key: company_key.to_string(),
        overlay: CompanyOverlay {
            company_id: company_id.to_string(),
            settings: CompanySettings::default(),
            property_groups,
            deal_properties,
            remove_deal_properties: Vec::new(),
            pipelines,
            ..CompanyOverlay::default()
        },
        ids,
        managed,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::is_pipeline_id;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slug("Sales Pipeline"), "sales-pipeline");
        assert_eq!(slug("  Closed – Won!! "), "closed-won");
        assert_eq!(slug("2024 Renewals"), "p-2024-renewals");
        assert_eq!(slug("Ünïcode"), "n-code");
        assert_eq!(slug("!!!"), "unnamed");
        let long = slug(&"word ".repeat(40));
        assert!(long.len() <= 56 && !long.ends_with('-'));
        for label in ["Sales Pipeline", "2024", "", "--", &"x".repeat(200)] {
            assert!(is_pipeline_id(&slug(label)), "{label:?}");
        }
    }

    #[test]
    fn unique_slugs_get_suffixes() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique_slug("New", &mut taken), "new");
        assert_eq!(unique_slug("new!", &mut taken), "new-2");
        assert_eq!(unique_slug("NEW", &mut taken), "new-3");
    }
}

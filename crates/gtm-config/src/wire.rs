//! The model on the wire: the one place desired state and plans are converted to and from
//! their protobuf form (`gomark.config.v1`), and where plan actions get their ids.

use crate::effective::EffectiveConfig;
use crate::model::{DealProperty, FieldType, Pipeline, PropertyGroup, PropertyOption, PropertyType, Stage};
use crate::plan::{Action, Blocked, FieldChange, Op, Target};
use gomark_proto::config::v1 as pb;
use gomark_proto::json;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A message that does not hold a valid configuration (a peer on another version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WireError {
    pub field: String,
    pub message: String,
}

fn wire_error(field: impl Into<String>, message: impl Into<String>) -> WireError {
    WireError { field: field.into(), message: message.into() }
}

/// A stable digest of any serialisable value: equal values, equal digests, whatever the
/// order of their object keys. Plan actions are named by it.
pub fn digest<T: Serialize>(value: &T) -> String {
    let mut canonical = String::new();
    crate::model::write_canonical(&serde_json::to_value(value).unwrap_or_default(), &mut canonical);
    hex::encode(&Sha256::digest(canonical.as_bytes())[..16])
}

pub fn group_to_proto(g: &PropertyGroup) -> pb::PropertyGroup {
    pb::PropertyGroup { name: g.name.clone(), label: g.label.clone(), display_order: g.display_order }
}

pub fn group_from_proto(g: pb::PropertyGroup) -> PropertyGroup {
    PropertyGroup { name: g.name, label: g.label, display_order: g.display_order }
}

pub fn property_to_proto(p: &DealProperty) -> pb::DealProperty {
    pb::DealProperty {
        name: p.name.clone(),
        label: p.label.clone(),
        r#type: p.property_type.as_str().to_owned(),
        field_type: p.field_type.as_str().to_owned(),
        group_name: p.group_name.clone(),
        description: p.description.clone(),
        options: p
            .options
            .iter()
            .map(|o| pb::PropertyOption {
                label: o.label.clone(),
                value: o.value.clone(),
                display_order: o.display_order,
                hidden: o.hidden,
            })
            .collect(),
        has_unique_value: p.has_unique_value,
    }
}

/// A property from the wire; `type` and `fieldType` must be ones HubSpot can create.
pub fn property_from_proto(p: pb::DealProperty) -> Result<DealProperty, WireError> {
    let property_type = PropertyType::parse(&p.r#type).ok_or_else(|| {
        let all: Vec<&str> = PropertyType::ALL.iter().map(|t| t.as_str()).collect();
        wire_error("type", format!("must be one of {}", all.join(", ")))
    })?;
    let field_type = FieldType::parse(&p.field_type).ok_or_else(|| {
        let all: Vec<&str> = FieldType::ALL.iter().map(|t| t.as_str()).collect();
        wire_error("fieldType", format!("must be one of {}", all.join(", ")))
    })?;
    Ok(DealProperty {
        name: p.name,
        label: p.label,
        property_type,
        field_type,
        group_name: p.group_name,
        description: p.description,
        options: p
            .options
            .into_iter()
            .map(|o| PropertyOption {
                label: o.label,
                value: o.value,
                display_order: o.display_order,
                hidden: o.hidden,
            })
            .collect(),
        has_unique_value: p.has_unique_value,
    })
}

pub fn pipeline_to_proto(p: &Pipeline) -> pb::Pipeline {
    pb::Pipeline {
        id: p.id.clone(),
        label: p.label.clone(),
        display_order: p.display_order,
        stages: p
            .stages
            .iter()
            .map(|s| pb::Stage {
                id: s.id.clone(),
                label: s.label.clone(),
                display_order: s.display_order,
                probability: s.probability,
                closed: s.closed,
            })
            .collect(),
    }
}

pub fn pipeline_from_proto(p: pb::Pipeline) -> Pipeline {
    Pipeline {
        id: p.id,
        label: p.label,
        display_order: p.display_order,
        stages: p
            .stages
            .into_iter()
            .map(|s| Stage {
                id: s.id,
                label: s.label,
                display_order: s.display_order,
                probability: s.probability,
                closed: s.closed,
            })
            .collect(),
    }
}

/// HubSpot's part of a company's effective configuration.
pub fn hubspot_config(config: &EffectiveConfig) -> pb::HubSpotConfig {
    pb::HubSpotConfig {
        company_id: config.company_id.clone(),
        property_groups: config.property_groups.iter().map(group_to_proto).collect(),
        deal_properties: config.deal_properties.iter().map(property_to_proto).collect(),
        pipelines: config.pipelines.iter().map(pipeline_to_proto).collect(),
    }
}

/// An effective configuration holding just HubSpot's part (what hubspot-sync plans with).
pub fn effective_from_hubspot(config: pb::HubSpotConfig) -> Result<EffectiveConfig, WireError> {
    let deal_properties = config
        .deal_properties
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            property_from_proto(p).map_err(|e| wire_error(format!("dealProperties[{i}].{}", e.field), e.message))
        })
        .collect::<Result<_, _>>()?;
    Ok(EffectiveConfig {
        company_id: config.company_id,
        property_groups: config.property_groups.into_iter().map(group_from_proto).collect(),
        deal_properties,
        pipelines: config.pipelines.into_iter().map(pipeline_from_proto).collect(),
        ..EffectiveConfig::default()
    })
}

pub fn op_to_proto(op: Op) -> pb::Op {
    match op {
        Op::Create => pb::Op::Create,
        Op::Update => pb::Op::Update,
        Op::Archive => pb::Op::Archive,
    }
}

/// `create`, `update` or `archive`.
pub fn op_name(op: pb::Op) -> &'static str {
    match op {
        pb::Op::Create => "create",
        pb::Op::Update => "update",
        pb::Op::Archive => "archive",
        pb::Op::Unspecified => "unspecified",
    }
}

fn target_parts(target: &Target) -> (&'static str, String) {
    match target {
        Target::PropertyGroup(name) => ("property_group", name.clone()),
        Target::DealProperty(name) => ("deal_property", name.clone()),
        Target::Pipeline(id) => ("pipeline", id.clone()),
        Target::Stage(pipeline, stage) => ("stage", format!("{pipeline}/{stage}")),
    }
}

fn change_to_proto(c: &FieldChange) -> pb::FieldChange {
    pb::FieldChange {
        field: c.field.clone(),
        before: Some(json::to_value(&c.before)),
        after: Some(json::to_value(&c.after)),
    }
}

fn blocked_to_proto(b: &Blocked) -> pb::Blocked {
    pb::Blocked { reason: b.reason.clone(), safe_alternative: b.safe_alternative.clone() }
}

/// The id of a HubSpot action: the digest of everything it would do.
pub fn action_id(action: &Action) -> String {
    digest(action)
}

pub fn action_to_proto(action: &Action) -> pb::PlannedAction {
    let (kind, target) = target_parts(&action.target);
    pb::PlannedAction {
        id: action_id(action),
        target_kind: kind.to_owned(),
        target,
        op: op_to_proto(action.op) as i32,
        changes: action.changes.iter().map(change_to_proto).collect(),
        blocked: action.blocked.as_ref().map(blocked_to_proto),
    }
}

/// One line per action, as people read plans: `+ deal property gomark_tier`.
pub fn action_line(action: &pb::PlannedAction) -> String {
    let symbol = match action.op() {
        pb::Op::Create => '+',
        pb::Op::Archive => '-',
        _ => '~',
    };
    let mut line = String::new();
    if action.blocked.is_some() {
        line.push_str("! ");
    }
    line.push(symbol);
    line.push(' ');
    line.push_str(&action.target_kind.replace('_', " "));
    line.push(' ');
    line.push_str(&action.target);
    if action.op() == pb::Op::Update && !action.changes.is_empty() {
        let parts: Vec<String> = action
            .changes
            .iter()
            .map(|c| {
                let show = |v: &Option<prost_types::Value>| {
                    v.as_ref().map_or(serde_json::Value::Null, json::from_value).to_string()
                };
                format!("{} {} → {}", c.field, show(&c.before), show(&c.after))
            })
            .collect();
        line.push_str(": ");
        line.push_str(&parts.join(", "));
    }
    if let Some(b) = &action.blocked {
        line.push_str(&format!(" (blocked: {}; instead: {})", b.reason, b.safe_alternative));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DealsInStages, Document, Observed, PipelineIdMap, plan};
    use std::collections::BTreeSet;

    fn effective() -> EffectiveConfig {
        let doc = Document::from_yaml(
            r#"
baseline:
  propertyGroups: [{name: gomark, label: GoMark}]
  dealProperties:
    - {name: gomark_tier, label: Tier, type: enumeration, fieldType: select, groupName: gomark,
       options: [{label: Gold, value: gold}, {label: Silver, value: silver, hidden: true}]}
  pipelines:
    - id: sales
      label: Sales
      stages: [{id: new, label: New, probability: 0.1}, {id: won, label: Won, probability: 1.0, closed: true}]
companies:
  acme: {companyId: c-1}
"#,
        )
        .expect("parses");
        doc.effective("acme").expect("acme")
    }

    #[test]
    fn hubspot_config_survives_the_wire() {
        let config = effective();
        let back = effective_from_hubspot(hubspot_config(&config)).expect("valid");
        assert_eq!(back.deal_properties, config.deal_properties);
        assert_eq!(back.property_groups, config.property_groups);
        assert_eq!(back.pipelines, config.pipelines);
    }

    #[test]
    fn a_bad_type_names_its_field() {
        let mut wire = hubspot_config(&effective());
        wire.deal_properties[0].r#type = "colour".into();
        let err = effective_from_hubspot(wire).expect_err("refused");
        assert_eq!(err.field, "dealProperties[0].type");
    }

    #[test]
    fn action_ids_are_stable_and_distinct() {
        let config = effective();
        let p = plan(&config, &Observed::default(), &PipelineIdMap::default(), &DealsInStages::new(), &BTreeSet::new());
        let ids: Vec<String> = p.actions.iter().map(action_id).collect();
        let again: Vec<String> = p.actions.iter().map(|a| action_to_proto(a).id).collect();
        assert_eq!(ids, again);
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(action_line(&action_to_proto(&p.actions[0])), "+ property group gomark");
    }
}

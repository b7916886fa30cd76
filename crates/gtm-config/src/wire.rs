//! The model on the wire: the one place desired state and plans are converted to and from
//! their protobuf form (`gomark.config.v1`), and where plan actions get their ids.

use crate::effective::EffectiveConfig;
use crate::model::{
    DealProperty, FieldType, Pipeline, PropertyGroup, PropertyOption, PropertyType, RemovedStage, Stage,
};
use crate::outreach::{
    Cadence, CadenceStep, CompanyCalendar, Criterion, CriterionOp, DayRange, Guardrails, PortfolioContact, QuietHours,
    RollingCap, SendWindow, StepType, UpsellRule,
};
use crate::plan::{Action, Blocked, FieldChange, Op, Plan, Target};
use crate::rules::{PipelineRules, RecordWriter, RuleType, StageRule, ValidationRule};
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
        removed_stages: p
            .removed_stages
            .iter()
            .map(|r| pb::RemovedStage { id: r.id.clone(), move_deals_to: r.move_deals_to.clone() })
            .collect(),
        rules: p.rules.as_ref().map(|r| {
            let stage_rule = |s: &StageRule| pb::StageRule { all_stages: s.all_stages, stages: s.stages.clone() };
            pb::PipelineRules {
                no_backwards_movement: r.no_backwards_movement.as_ref().map(stage_rule),
                no_skipping_stages: r.no_skipping_stages.as_ref().map(stage_rule),
                creation_stages: r.creation_stages.clone(),
            }
        }),
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
        removed_stages: p
            .removed_stages
            .into_iter()
            .map(|r| RemovedStage { id: r.id, move_deals_to: r.move_deals_to })
            .collect(),
        rules: p.rules.map(|r| {
            let stage_rule = |s: pb::StageRule| StageRule { all_stages: s.all_stages, stages: s.stages };
            PipelineRules {
                no_backwards_movement: r.no_backwards_movement.map(stage_rule),
                no_skipping_stages: r.no_skipping_stages.map(stage_rule),
                creation_stages: r.creation_stages,
            }
        }),
    }
}

/// HubSpot's part of a company's effective configuration.
pub fn hubspot_config(config: &EffectiveConfig) -> pb::HubSpotConfig {
    pb::HubSpotConfig {
        company_id: config.company_id.clone(),
        property_groups: config.property_groups.iter().map(group_to_proto).collect(),
        deal_properties: config.deal_properties.iter().map(property_to_proto).collect(),
        pipelines: config.pipelines.iter().map(pipeline_to_proto).collect(),
        validation_rules: config.validation_rules.iter().map(rule_to_proto).collect(),
        record_writers: config
            .record_writers
            .iter()
            .map(|w| pb::RecordWriter { name: w.name.clone(), sets: w.sets.clone() })
            .collect(),
        api_version: config.api_version.clone().unwrap_or_default(),
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
    let validation_rules = config
        .validation_rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            rule_from_proto(r).map_err(|e| wire_error(format!("validationRules[{i}].{}", e.field), e.message))
        })
        .collect::<Result<_, _>>()?;
    Ok(EffectiveConfig {
        company_id: config.company_id,
        property_groups: config.property_groups.into_iter().map(group_from_proto).collect(),
        deal_properties,
        pipelines: config.pipelines.into_iter().map(pipeline_from_proto).collect(),
        validation_rules,
        record_writers: config
            .record_writers
            .into_iter()
            .map(|w| RecordWriter { name: w.name, sets: w.sets })
            .collect(),
        api_version: match config.api_version.as_str() {
            "" => None,
            v if crate::model::API_VERSIONS.contains(&v) => Some(v.to_owned()),
            _ => return Err(wire_error("apiVersion".to_owned(), "must be v3, 2026-03 or 2026-09".to_owned())),
        },
        ..EffectiveConfig::default()
    })
}

fn step_type_to_proto(t: StepType) -> pb::StepType {
    match t {
        StepType::AutoEmail => pb::StepType::AutoEmail,
        StepType::ManualEmail => pb::StepType::ManualEmail,
        StepType::Call => pb::StepType::Call,
        StepType::Task => pb::StepType::Task,
    }
}

fn step_type_from_proto(t: i32) -> Option<StepType> {
    Some(match pb::StepType::try_from(t).ok()? {
        pb::StepType::AutoEmail => StepType::AutoEmail,
        pb::StepType::ManualEmail => StepType::ManualEmail,
        pb::StepType::Call => StepType::Call,
        pb::StepType::Task => StepType::Task,
        pb::StepType::Unspecified => return None,
    })
}

const CRITERION_OPS: [(CriterionOp, pb::CriterionOp); 11] = [
    (CriterionOp::Eq, pb::CriterionOp::Eq),
    (CriterionOp::Neq, pb::CriterionOp::Neq),
    (CriterionOp::In, pb::CriterionOp::In),
    (CriterionOp::Gt, pb::CriterionOp::Gt),
    (CriterionOp::Gte, pb::CriterionOp::Gte),
    (CriterionOp::Lt, pb::CriterionOp::Lt),
    (CriterionOp::Lte, pb::CriterionOp::Lte),
    (CriterionOp::Exists, pb::CriterionOp::Exists),
    (CriterionOp::WithinDaysPast, pb::CriterionOp::WithinDaysPast),
    (CriterionOp::WithinDaysAhead, pb::CriterionOp::WithinDaysAhead),
    (CriterionOp::Linear, pb::CriterionOp::Linear),
];

pub fn cadence_to_proto(c: &Cadence) -> pb::Cadence {
    pb::Cadence {
        key: c.key.clone(),
        name: c.name.clone(),
        tags: c.tags.clone(),
        send_window: c.send_window.as_ref().map(|w| pb::SendWindow {
            time_zone: w.time_zone.clone(),
            start: w.start.clone(),
            end: w.end.clone(),
            weekdays: w.weekdays.clone(),
        }),
        exit_on_reply: c.exit_on_reply,
        exit_on_bounce: c.exit_on_bounce,
        steps: c
            .steps
            .iter()
            .map(|s| pb::CadenceStep {
                r#type: step_type_to_proto(s.step_type) as i32,
                delay_hours: s.delay_hours,
                subject: s.subject.clone(),
                body: s.body.clone(),
                instructions: s.instructions.clone(),
            })
            .collect(),
        sender: c.sender.clone(),
        variables: c.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        governed: c.localizable.is_some(),
        localizable: c.localizable.clone().unwrap_or_default(),
    }
}

pub fn cadence_from_proto(c: pb::Cadence) -> Result<Cadence, WireError> {
    let steps = c
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(CadenceStep {
                step_type: step_type_from_proto(s.r#type)
                    .ok_or_else(|| wire_error(format!("steps[{i}].type"), "is not a step type"))?,
                delay_hours: s.delay_hours,
                subject: s.subject,
                body: s.body,
                instructions: s.instructions,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(Cadence {
        key: c.key,
        name: c.name,
        tags: c.tags,
        send_window: c.send_window.map(|w| SendWindow {
            time_zone: w.time_zone,
            start: w.start,
            end: w.end,
            weekdays: w.weekdays,
        }),
        exit_on_reply: c.exit_on_reply,
        exit_on_bounce: c.exit_on_bounce,
        steps,
        sender: c.sender,
        variables: c.variables.into_iter().collect(),
        localizable: c.governed.then_some(c.localizable),
    })
}

pub fn upsell_rule_to_proto(r: &UpsellRule) -> pb::UpsellRule {
    let g = &r.guardrails;
    pb::UpsellRule {
        key: r.key.clone(),
        cadence: r.cadence.clone(),
        min_score: r.min_score,
        max_per_run: r.max_per_run,
        closed_won_days_ago: Some(pb::DayRange { min: r.closed_won_days_ago.min, max: r.closed_won_days_ago.max }),
        won_stages: r.won_stages.clone(),
        lost_stages: r.lost_stages.clone(),
        scoring: r
            .scoring
            .iter()
            .map(|c| pb::Criterion {
                property: c.property.clone(),
                op: CRITERION_OPS.iter().find(|(o, _)| *o == c.op).map_or(0, |(_, p)| *p as i32),
                value: c.value.as_ref().map(json::to_value),
                points: c.points,
                max_points: c.max_points,
                why: c.why.clone(),
            })
            .collect(),
        guardrails: Some(pb::Guardrails {
            min_days_since_last_touch: g.min_days_since_last_touch,
            mailbox_daily_cap: g.mailbox_daily_cap,
            company_daily_cap: g.company_daily_cap,
            quiet_hours: g.quiet_hours.as_ref().map(|q| pb::QuietHours {
                start: q.start.clone(),
                end: q.end.clone(),
                default_time_zone: q.default_time_zone.clone(),
            }),
            skip_open_deals: g.skip_open_deals,
            escalation_property: g.escalation_property.clone(),
            rolling_caps: g.rolling_caps.iter().map(|c| pb::RollingCap { hours: c.hours, max: c.max }).collect(),
        }),
    }
}

pub fn upsell_rule_from_proto(r: pb::UpsellRule) -> Result<UpsellRule, WireError> {
    let scoring = r
        .scoring
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let op = CRITERION_OPS
                .iter()
                .find(|(_, p)| *p as i32 == c.op)
                .map(|(o, _)| *o)
                .ok_or_else(|| wire_error(format!("scoring[{i}].op"), "is not a criterion operator"))?;
            Ok(Criterion {
                property: c.property,
                op,
                value: c.value.as_ref().map(json::from_value),
                points: c.points,
                max_points: c.max_points,
                why: c.why,
            })
        })
        .collect::<Result<_, WireError>>()?;
    let days = r.closed_won_days_ago.unwrap_or_default();
    let guardrails = match r.guardrails {
        Some(g) => Guardrails {
            min_days_since_last_touch: g.min_days_since_last_touch,
            mailbox_daily_cap: g.mailbox_daily_cap,
            company_daily_cap: g.company_daily_cap,
            quiet_hours: g.quiet_hours.map(|q| QuietHours {
                start: q.start,
                end: q.end,
                default_time_zone: q.default_time_zone,
            }),
            skip_open_deals: g.skip_open_deals,
            escalation_property: g.escalation_property,
            rolling_caps: g.rolling_caps.into_iter().map(|c| RollingCap { hours: c.hours, max: c.max }).collect(),
        },
        None => Guardrails::default(),
    };
    Ok(UpsellRule {
        key: r.key,
        cadence: r.cadence,
        min_score: r.min_score,
        max_per_run: r.max_per_run,
        closed_won_days_ago: DayRange { min: days.min, max: days.max },
        won_stages: r.won_stages,
        lost_stages: r.lost_stages,
        scoring,
        guardrails,
    })
}

/// Upso's part of a company's effective configuration.
pub fn outreach_config(config: &EffectiveConfig) -> pb::OutreachConfig {
    pb::OutreachConfig {
        company_id: config.company_id.clone(),
        cadences: config.cadences.iter().map(cadence_to_proto).collect(),
        upsell_rules: config.upsell_rules.iter().map(upsell_rule_to_proto).collect(),
        suppression_list: config.suppression_list.clone(),
        calendar: Some(pb::CompanyCalendar {
            time_zone: config.calendar.time_zone.clone().unwrap_or_default(),
            holidays: config.calendar.holidays.clone(),
        }),
        portfolio_contact: Some(pb::PortfolioContact {
            max_touches: config.portfolio_contact.max_touches,
            window_days: config.portfolio_contact.window_days,
            min_hours_between_touches: config.portfolio_contact.min_hours_between_touches,
            exclusive_cadences: config.portfolio_contact.exclusive_cadences,
        }),
    }
}

/// An effective configuration holding just Upso's part (what upso-cadence works with).
pub fn effective_from_outreach(config: pb::OutreachConfig) -> Result<EffectiveConfig, WireError> {
    let cadences = config
        .cadences
        .into_iter()
        .enumerate()
        .map(|(i, c)| cadence_from_proto(c).map_err(|e| wire_error(format!("cadences[{i}].{}", e.field), e.message)))
        .collect::<Result<_, _>>()?;
    let upsell_rules = config
        .upsell_rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            upsell_rule_from_proto(r).map_err(|e| wire_error(format!("upsellRules[{i}].{}", e.field), e.message))
        })
        .collect::<Result<_, _>>()?;
    Ok(EffectiveConfig {
        company_id: config.company_id,
        cadences,
        upsell_rules,
        suppression_list: config.suppression_list,
        calendar: config
            .calendar
            .map(|c| CompanyCalendar { time_zone: Some(c.time_zone).filter(|z| !z.is_empty()), holidays: c.holidays })
            .unwrap_or_default(),
        portfolio_contact: config
            .portfolio_contact
            .map(|p| PortfolioContact {
                max_touches: p.max_touches,
                window_days: p.window_days,
                min_hours_between_touches: p.min_hours_between_touches,
                exclusive_cadences: p.exclusive_cadences,
            })
            .unwrap_or_default(),
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
        Target::ValidationRule(property, rule) => ("validation_rule", format!("{property}/{rule}")),
        Target::StageDeals(pipeline, stage) => ("stage_deals", format!("{pipeline}/{stage}")),
        Target::PipelineRules(pipeline) => ("pipeline_rules", pipeline.clone()),
        Target::ApiVersion => ("api_version", "hubspot".to_owned()),
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
        warnings: Vec::new(),
    }
}

/// A plan's actions with their warnings (which are not part of an action's id: they follow
/// from it).
pub fn plan_to_proto(plan: &Plan) -> Vec<pb::PlannedAction> {
    plan.actions
        .iter()
        .map(|action| pb::PlannedAction {
            warnings: plan
                .warnings_for(action)
                .map(|w| pb::PlanWarning { code: w.code.clone(), message: w.message.clone() })
                .collect(),
            ..action_to_proto(action)
        })
        .collect()
}

pub fn rule_to_proto(r: &ValidationRule) -> pb::ValidationRule {
    pb::ValidationRule {
        property: r.property.clone(),
        rule_type: r.rule_type.as_str().to_owned(),
        rule_arguments: r.rule_arguments.clone(),
        should_apply_normalization: r.should_apply_normalization,
    }
}

pub fn rule_from_proto(r: pb::ValidationRule) -> Result<ValidationRule, WireError> {
    let rule_type = RuleType::parse(&r.rule_type).ok_or_else(|| wire_error("ruleType", "not a known rule type"))?;
    Ok(ValidationRule {
        property: r.property,
        rule_type,
        rule_arguments: r.rule_arguments,
        should_apply_normalization: r.should_apply_normalization,
    })
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
    let value = |field: &str| {
        action.changes.iter().find(|c| c.field == field).map(|c| {
            let side = if field == "deals" { &c.before } else { &c.after };
            side.as_ref().map_or(serde_json::Value::Null, json::from_value)
        })
    };
    if action.target_kind == "stage_deals"
        && let (Some(to), Some(count)) = (value("dealstage"), value("deals"))
    {
        // "~ deals in stage sales/negotiation: move 3 deals to stage sales/closedwon"
        let pipeline = action.target.split('/').next().unwrap_or_default();
        let to = to.as_str().unwrap_or_default();
        line.push_str(&format!("deals in stage {}: move {count} deals to stage {pipeline}/{to}", action.target));
        return line;
    }
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
    fn outreach_config_survives_the_wire() {
        let doc = Document::from_yaml(
            r#"
baseline:
  suppressionList: ["@competitor.example"]
  portfolioContact: {maxTouches: 2, windowDays: 7, minHoursBetweenTouches: 48, exclusiveCadences: true}
  cadences:
    - key: upsell
      name: Upsell
      tags: [gomark]
      sendWindow: {timeZone: "Europe/Berlin", start: "09:00", end: "17:00"}
      sender: success@acme.example
      variables: {signature: "The Acme team"}
      localizable: [sender, variables]
      steps:
        - {type: auto_email, delayHours: 0, subject: "Hi {{firstName}}", body: "More seats?"}
        - {type: call, delayHours: 48, instructions: "Call them"}
  upsellRules:
    - key: seats
      cadence: upsell
      minScore: 10
      scoring:
        - {property: gomark_seats, op: gt, value: 50, points: 20, why: "many seats"}
        - {property: gomark_customer_tier, op: in, value: [gold, silver], points: 5}
        - {property: amount, op: linear, points: 0.001, maxPoints: 30}
      guardrails: {quietHours: {start: "20:00", end: "08:00"}, rollingCaps: [{hours: 1, max: 5}]}
companies:
  acme: {companyId: c-1, outreach: {timeZone: America/New_York, holidays: ["2026-12-25"]}}
"#,
        )
        .expect("parses");
        let config = doc.effective("acme").expect("acme");
        let back = effective_from_outreach(outreach_config(&config)).expect("valid");
        assert_eq!(back.cadences, config.cadences);
        assert_eq!(back.upsell_rules, config.upsell_rules);
        assert_eq!(back.suppression_list, config.suppression_list);
        assert_eq!(back.calendar, config.calendar);
        assert_eq!(back.portfolio_contact, config.portfolio_contact);
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

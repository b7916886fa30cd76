//! Planning desired (effective) state against what a HubSpot portal holds.

use gtm_config::{
    ALTERNATIVE_HUBSPOT_DEFINED, ALTERNATIVE_RENAME, ALTERNATIVE_STAGE_IN_USE, ALTERNATIVE_UNIQUE_VALUE, DealsInStages,
    Document, EffectiveConfig, Observed, ObservedGroup, ObservedPipeline, ObservedProperty, ObservedStage, Op,
    PipelineIdMap, Plan, PropertyOption, REASON_STAGE_IN_USE, REASON_UNIQUE_VALUE, Target, plan,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PORTFOLIO: &str = include_str!("../examples/portfolio.yaml");

fn acme() -> EffectiveConfig {
    Document::from_yaml(PORTFOLIO).expect("document parses").effective("acme").expect("company exists")
}

/// What HubSpot would hold after applying `desired`, in HubSpot's own normal form:
/// numeric ids, probabilities as strings, descriptions "" rather than absent, options
/// sorted by displayOrder with `hidden` spelled out, plus HubSpot's own properties, its
/// default group and its default pipeline (none of them GoMark's business).
fn hubspot_after_apply(desired: &EffectiveConfig) -> (Observed, PipelineIdMap, BTreeSet<String>) {
    let mut observed = Observed::default();
    let mut ids = PipelineIdMap::default();
    observed.groups.push(ObservedGroup {
        name: "dealinformation".into(),
        label: "Deal information".into(),
        display_order: 0,
    });
    for g in &desired.property_groups {
        observed.groups.push(ObservedGroup {
            name: g.name.clone(),
            label: g.label.clone(),
            display_order: g.display_order.unwrap_or(-1),
        });
    }
    for name in ["dealname", "amount"] {
        observed.properties.push(ObservedProperty {
            name: name.into(),
            label: name.into(),
            property_type: "string".into(),
            field_type: "text".into(),
            group_name: "dealinformation".into(),
            hubspot_defined: true,
            ..Default::default()
        });
    }
    for p in &desired.deal_properties {
        let mut options: Vec<PropertyOption> = p
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| PropertyOption { display_order: Some(o.display_order.unwrap_or(i as i32)), ..o.clone() })
            .collect();
        options.sort_by_key(|o| o.display_order);
        observed.properties.push(ObservedProperty {
            name: p.name.clone(),
            label: p.label.clone(),
            property_type: p.property_type.as_str().into(),
            field_type: p.field_type.as_str().into(),
            group_name: p.group_name.clone(),
            description: p.description.clone().unwrap_or_default(),
            options,
            hubspot_defined: false,
            has_unique_value: p.has_unique_value,
        });
    }
    observed.pipelines.push(ObservedPipeline {
        hubspot_id: "default".into(),
        label: "Sales Pipeline".into(),
        display_order: 0,
        stages: vec![ObservedStage {
            hubspot_id: "appointmentscheduled".into(),
            label: "Appointment scheduled".into(),
            display_order: 0,
            probability: "0.2".into(),
            is_closed: false,
        }],
        rules: None,
    });
    for (i, p) in desired.pipelines.iter().enumerate() {
        let hubspot_id = format!("{}", 1000 + i);
        ids.insert_pipeline(&p.id, &hubspot_id);
        let stages = p
            .stages
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let stage_id = format!("{}", 5000 + 100 * i + j);
                ids.insert_stage(&p.id, &s.id, &stage_id);
                ObservedStage {
                    hubspot_id: stage_id,
                    label: s.label.clone(),
                    display_order: s.display_order.unwrap_or(j as i32),
                    probability: s.probability_string(),
                    is_closed: s.closed,
                }
            })
            .collect();
        observed.pipelines.push(ObservedPipeline {
            hubspot_id,
            label: p.label.clone(),
            display_order: p.display_order.unwrap_or(i as i32),
            stages,
            rules: None,
        });
    }
    let managed = desired.deal_properties.iter().map(|p| p.name.clone()).collect();
    (observed, ids, managed)
}

fn no_deals() -> DealsInStages {
    DealsInStages::new()
}

fn lines(p: &Plan) -> Vec<String> {
    p.actions.iter().map(ToString::to_string).collect()
}

fn property<'a>(o: &'a mut Observed, name: &str) -> &'a mut ObservedProperty {
    o.properties.iter_mut().find(|p| p.name == name).expect("present in fixture")
}

fn stage<'a>(o: &'a mut Observed, hubspot_id: &str) -> &'a mut ObservedStage {
    o.pipelines
        .iter_mut()
        .flat_map(|p| p.stages.iter_mut())
        .find(|s| s.hubspot_id == hubspot_id)
        .expect("present in fixture")
}

#[test]
fn an_empty_portal_gets_everything_created_in_order() {
    let desired = acme();
    let p = plan(&desired, &Observed::default(), &PipelineIdMap::default(), &no_deals(), &BTreeSet::new());
    assert_eq!(
        lines(&p),
        [
            "+ property group gomark",
            "+ property group acme",
            "+ deal property gomark_tier",
            "+ deal property gomark_renewal_date",
            "+ deal property acme_region",
            "+ pipeline sales",
            "+ pipeline renewals",
            "+ pipeline partners",
        ]
    );
    let summary = p.summary();
    assert_eq!((summary.create, summary.update, summary.archive, summary.blocked), (8, 0, 0, 0));
    assert!(p.to_string().ends_with("8 to create, 0 to update, 0 to archive, 0 blocked\n"));

    let tier = p.find(&Target::DealProperty("gomark_tier".into()), Op::Create).expect("action planned");
    let fields: Vec<&str> = tier.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["label", "type", "fieldType", "groupName", "description", "options", "hasUniqueValue"]);
    assert!(tier.changes.iter().all(|c| c.before == Value::Null));
    // Properties that are not enumerations and have no options do not send any.
    let region = p.find(&Target::DealProperty("acme_region".into()), Op::Create).expect("action planned");
    assert!(region.changes.iter().all(|c| c.field != "options"));

    // A pipeline is created with all its stages; an omitted displayOrder is the position.
    let renewals = p.find(&Target::Pipeline("renewals".into()), Op::Create).expect("action planned");
    let stages = &renewals.changes.iter().find(|c| c.field == "stages").expect("present in fixture").after;
    assert_eq!(
        stages[1],
        json!({"id": "renewed", "label": "Renewed", "displayOrder": 1, "probability": 1.0, "closed": true})
    );
    assert_eq!(stages.as_array().expect("array").len(), 3);
}

#[test]
fn a_portal_in_sync_gives_an_empty_plan_despite_hubspot_normalisations() {
    let desired = acme();
    let (observed, ids, managed) = hubspot_after_apply(&desired);
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert!(p.is_empty(), "{p}");
    assert_eq!(p.to_string(), "no changes\n");
}

#[test]
fn normalisations_are_not_differences() {
    let desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    // Probability written with more digits; HubSpot's canonical string is "0.2".
    stage(&mut observed, "5000").probability = "0.20".into();
    stage(&mut observed, "5002").probability = "1".into();
    // Options listed in another order, but with the same displayOrders.
    property(&mut observed, "gomark_tier").options.reverse();
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert!(p.is_empty(), "{p}");

    // description None vs "", hidden default false: explicit in the desired config.
    let mut desired2 = desired.clone();
    desired2.deal_properties[1].description = Some(String::new());
    desired2.deal_properties[0].options[0].hidden = false;
    assert!(plan(&desired2, &observed, &ids, &no_deals(), &managed).is_empty());

    // Options without displayOrder are ordered by position; HubSpot's numbers differ but
    // the order is the same.
    let mut desired3 = desired.clone();
    for o in &mut desired3.deal_properties[0].options {
        o.display_order = None;
    }
    for (i, o) in property(&mut observed, "gomark_tier").options.iter_mut().rev().enumerate() {
        o.display_order = Some(10 * i as i32 + 3);
    }
    let p = plan(&desired3, &observed, &ids, &no_deals(), &managed);
    assert!(p.is_empty(), "{p}");

    // HubSpot's default options on a bool property are not a difference.
    let mut desired4 = desired.clone();
    desired4.deal_properties[2] = serde_json::from_value(json!({
        "name": "acme_region", "label": "Region", "type": "bool",
        "fieldType": "booleancheckbox", "groupName": "acme"
    }))
    .expect("valid stage");
    let region = property(&mut observed, "acme_region");
    region.property_type = "bool".into();
    region.field_type = "booleancheckbox".into();
    region.options = vec![
        PropertyOption { label: "Yes".into(), value: "true".into(), display_order: Some(0), hidden: false },
        PropertyOption { label: "No".into(), value: "false".into(), display_order: Some(1), hidden: false },
    ];
    let p = plan(&desired4, &observed, &ids, &no_deals(), &managed);
    assert!(p.is_empty(), "{p}");
}

#[test]
fn property_updates_carry_only_changed_fields() {
    let desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    property(&mut observed, "gomark_tier").label = "Old tier".into();
    property(&mut observed, "gomark_renewal_date").description = "typed by hand".into();
    property(&mut observed, "acme_region").group_name = "dealinformation".into();
    property(&mut observed, "acme_region").field_type = "textarea".into();
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(
        lines(&p),
        [
            "~ deal property gomark_tier: label \"Old tier\" → \"Tier\"",
            "~ deal property gomark_renewal_date: description \"typed by hand\" → \"\"",
            "~ deal property acme_region: fieldType \"textarea\" → \"text\", groupName \"dealinformation\" → \"acme\"",
        ]
    );
    assert_eq!(p.summary().update, 3);
}

#[test]
fn option_changes_are_one_field() {
    let desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    let tier = property(&mut observed, "gomark_tier");
    tier.options[1].label = "Gold (old)".into();
    tier.options.push(PropertyOption {
        label: "Retired".into(),
        value: "retired".into(),
        display_order: Some(9),
        hidden: true,
    });
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(p.actions.len(), 1, "{p}");
    let a = &p.actions[0];
    assert_eq!((a.op, a.changes.len()), (Op::Update, 1));
    assert_eq!(a.changes[0].field, "options");
    assert_eq!(
        a.changes[0].after,
        json!([
            {"label": "Platinum", "value": "platinum", "displayOrder": 0, "hidden": false},
            {"label": "Gold", "value": "gold", "displayOrder": 1, "hidden": false},
        ])
    );
}

#[test]
fn type_changes_are_updates() {
    let desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    property(&mut observed, "acme_region").property_type = "enumeration".into();
    property(&mut observed, "acme_region").field_type = "select".into();
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(
        lines(&p),
        ["~ deal property acme_region: type \"enumeration\" → \"string\", fieldType \"select\" → \"text\""]
    );
}

#[test]
fn has_unique_value_cannot_change() {
    let desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    property(&mut observed, "acme_region").has_unique_value = true;
    property(&mut observed, "acme_region").label = "Old".into();
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    // The label can still be applied; the uniqueness change is blocked on its own.
    assert_eq!(p.actions.len(), 2, "{p}");
    assert!(p.actions[0].blocked.is_none());
    assert_eq!(p.actions[0].changes[0].field, "label");
    let b = p.actions[1].blocked.as_ref().expect("blocked");
    assert_eq!(b.reason, REASON_UNIQUE_VALUE);
    assert_eq!(b.reason, "HubSpot cannot change hasUniqueValue once set");
    assert_eq!(b.safe_alternative, ALTERNATIVE_UNIQUE_VALUE);
    assert_eq!(b.safe_alternative, "create a new property with the new setting, copy values, archive the old one");
    assert_eq!(
        p.actions[1].to_string(),
        "! ~ deal property acme_region: hasUniqueValue true → false (blocked: HubSpot cannot change hasUniqueValue once set; instead: create a new property with the new setting, copy values, archive the old one)"
    );
    let s = p.summary();
    assert_eq!((s.update, s.blocked), (1, 1));
}

#[test]
fn a_name_taken_by_hubspot_is_blocked() {
    let mut desired = acme();
    desired.deal_properties[2].name = "days_to_close".into();
    let (mut observed, ids, managed) = hubspot_after_apply(&acme());
    observed.properties.push(ObservedProperty {
        name: "days_to_close".into(),
        label: "Days to close".into(),
        property_type: "number".into(),
        field_type: "number".into(),
        group_name: "dealinformation".into(),
        hubspot_defined: true,
        ..Default::default()
    });
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    let a = p.find(&Target::DealProperty("days_to_close".into()), Op::Create).expect("action planned");
    let b = a.blocked.as_ref().expect("blocked");
    assert!(b.reason.starts_with("a HubSpot-defined property has this name"), "{}", b.reason);
    assert_eq!(b.safe_alternative, ALTERNATIVE_HUBSPOT_DEFINED);
}

#[test]
fn archive_only_what_gomark_managed() {
    let desired = acme();
    let (mut observed, ids, mut managed) = hubspot_after_apply(&desired);
    for name in ["gomark_old", "made_by_hand"] {
        observed.properties.push(ObservedProperty {
            name: name.into(),
            label: name.into(),
            property_type: "string".into(),
            field_type: "text".into(),
            group_name: "gomark".into(),
            ..Default::default()
        });
    }
    managed.insert("gomark_old".into());
    // Even if listed as managed, HubSpot's own properties are never archived.
    managed.insert("amount".into());
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(lines(&p), ["- deal property gomark_old"]);
    assert_eq!(p.summary().archive, 1);
}

#[test]
fn an_internal_name_change_blocks_the_archive_of_the_old_name() {
    let mut desired = acme();
    desired.deal_properties[2].name = "acme_sales_region".into();
    let (observed, ids, managed) = hubspot_after_apply(&acme());
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(p.actions.len(), 2, "{p}");
    let create = p.find(&Target::DealProperty("acme_sales_region".into()), Op::Create).expect("action planned");
    assert!(create.blocked.is_none(), "creating the new name is safe");
    let archive = p.find(&Target::DealProperty("acme_region".into()), Op::Archive).expect("action planned");
    let b = archive.blocked.as_ref().expect("blocked");
    assert!(b.reason.starts_with("internal names are immutable"), "{}", b.reason);
    assert!(b.reason.contains("acme_region looks renamed to acme_sales_region"));
    assert_eq!(b.safe_alternative, ALTERNATIVE_RENAME);
    assert_eq!(
        b.safe_alternative,
        "keep the old name and change the label, or create the new property, copy values, then archive the old one"
    );
    assert!(p.to_string().contains("! - deal property acme_region (blocked: internal names are immutable"));

    // A different label or type is not a rename: a plain archive.
    let mut desired2 = desired.clone();
    desired2.deal_properties[2].label = "Sales region".into();
    let p = plan(&desired2, &observed, &ids, &no_deals(), &managed);
    let archive = p.find(&Target::DealProperty("acme_region".into()), Op::Archive).expect("action planned");
    assert!(archive.blocked.is_none());
}

#[test]
fn groups_are_created_and_updated_never_archived() {
    let mut desired = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&desired);
    observed.groups.retain(|g| g.name != "acme");
    observed.groups.iter_mut().find(|g| g.name == "gomark").expect("present in fixture").label = "Go".into();
    observed.groups.push(ObservedGroup { name: "legacy".into(), label: "Legacy".into(), display_order: 5 });
    desired.property_groups[0].display_order = Some(4);
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(
        lines(&p),
        ["~ property group gomark: label \"Go\" → \"GoMark\", displayOrder 1 → 4", "+ property group acme",]
    );
    // No displayOrder in the config: HubSpot's is not compared.
    desired.property_groups[0].display_order = None;
    observed.groups.iter_mut().find(|g| g.name == "gomark").expect("present in fixture").label = "GoMark".into();
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(lines(&p), ["+ property group acme"]);
}

#[test]
fn pipelines_and_stages() {
    let mut desired = acme();
    let (mut observed, mut ids, managed) = hubspot_after_apply(&desired);
    // sales (1000): label and order drift; stage "won" (5002) probability 0.9 and open.
    let sales = observed.pipelines.iter_mut().find(|p| p.hubspot_id == "1000").expect("present in fixture");
    sales.label = "Sales (old)".into();
    sales.display_order = 7;
    stage(&mut observed, "5002").probability = "0.9".into();
    stage(&mut observed, "5001").label = "Offer".into();
    stage(&mut observed, "5001").display_order = 4;
    stage(&mut observed, "5003").is_closed = false;
    // renewals: a new stage in the config.
    desired.pipelines[1].stages.insert(
        1,
        serde_json::from_value(json!({"id": "at_risk", "label": "At risk", "probability": 0.3})).expect("valid stage"),
    );
    // partners: its mapping points to a pipeline deleted by hand → recreate.
    ids.insert_pipeline("partners", "9999");
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(
        lines(&p),
        [
            "~ pipeline sales: label \"Sales (old)\" → \"Sales\", displayOrder 7 → 0",
            "~ stage sales/proposal: label \"Offer\" → \"Proposal\", displayOrder 4 → 1",
            "~ stage sales/won: probability 0.9 → 1.0",
            "~ stage sales/lost: closed false → true",
            "+ stage renewals/at_risk",
            "~ stage renewals/renewed: displayOrder 1 → 2",
            "~ stage renewals/churned: displayOrder 2 → 3",
            "+ pipeline partners",
        ]
    );
    let created = p.find(&Target::Stage("renewals".into(), "at_risk".into()), Op::Create).expect("action planned");
    let fields: Vec<(&str, &Value)> = created.changes.iter().map(|c| (c.field.as_str(), &c.after)).collect();
    assert!(fields.contains(&("probability", &json!(0.3))));
    assert!(fields.contains(&("displayOrder", &json!(1))));
    assert!(fields.contains(&("closed", &json!(false))));
}

#[test]
fn dropped_stages_are_archived_unless_deals_use_them() {
    let full = acme();
    let (observed, ids, managed) = hubspot_after_apply(&full);
    let mut desired = full.clone();
    // Drop sales/proposal (5001) and sales/lost (5003).
    desired.pipelines[0].stages.retain(|s| s.id != "proposal" && s.id != "lost");
    let mut used = no_deals();
    used.insert(("1000".into(), "5003".into()));
    let p = plan(&desired, &observed, &ids, &used, &managed);
    assert_eq!(
        lines(&p),
        [
            "! - stage sales/lost (blocked: stage still used by deals; instead: move its deals to another stage first, then archive)",
            "- stage sales/proposal",
        ]
    );
    let blocked = p.find(&Target::Stage("sales".into(), "lost".into()), Op::Archive).expect("action planned");
    let b = blocked.blocked.as_ref().expect("blocked");
    assert_eq!(b.reason, REASON_STAGE_IN_USE);
    assert_eq!(b.safe_alternative, ALTERNATIVE_STAGE_IN_USE);
    let s = p.summary();
    assert_eq!((s.archive, s.blocked), (1, 1));

    // Stages made by hand in HubSpot (not in the id map) are left alone.
    let mut observed2 = observed.clone();
    observed2.pipelines[1].stages.push(ObservedStage {
        hubspot_id: "777".into(),
        label: "Manual".into(),
        display_order: 9,
        probability: "0.5".into(),
        is_closed: false,
    });
    assert!(plan(&full, &observed2, &ids, &no_deals(), &managed).is_empty());
}

#[test]
fn removed_pipelines_are_archived_unless_deals_use_them() {
    let full = acme();
    let (observed, ids, managed) = hubspot_after_apply(&full);
    let mut desired = full.clone();
    desired.pipelines.retain(|p| p.id != "renewals");
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    assert_eq!(lines(&p), ["- pipeline renewals"]);
    let mut used = no_deals();
    used.insert(("1001".into(), "5100".into()));
    let p = plan(&desired, &observed, &ids, &used, &managed);
    assert!(p.actions[0].blocked.is_some());
}

#[test]
fn deleted_stages_name_what_a_plan_removes_in_hubspot_ids() {
    let full = acme();
    let (observed, ids, managed) = hubspot_after_apply(&full);
    let mut desired = full.clone();
    desired.pipelines[0].stages.retain(|s| s.id != "proposal");
    desired.pipelines.retain(|p| p.id != "renewals");
    let p = plan(&desired, &observed, &ids, &no_deals(), &managed);
    let renewals = observed.pipelines.iter().find(|p| p.hubspot_id == "1001").expect("renewals observed");
    let mut expected: DealsInStages =
        renewals.stages.iter().map(|s| ("1001".to_owned(), s.hubspot_id.clone())).collect();
    assert_eq!(expected.len(), 3);
    expected.insert(("1000".into(), "5001".into()));
    assert_eq!(p.deleted_stages(&ids, &observed), expected);
    assert!(plan(&full, &observed, &ids, &no_deals(), &managed).deleted_stages(&ids, &observed).is_empty());
}

#[test]
fn recorded_ids_win_over_labels_so_a_dropped_stage_is_still_planned_for_deletion() {
    let full = acme();
    let (observed, recorded, managed) = hubspot_after_apply(&full);
    let mut desired = full.clone();
    desired.pipelines[0].stages.retain(|s| s.id != "proposal");
    // Matching by label alone forgets the dropped stage: nothing to delete.
    let mut by_label = PipelineIdMap::default();
    by_label.match_by_label(&desired, &observed);
    assert!(plan(&desired, &observed, &by_label, &no_deals(), &managed).is_empty());
    // With the ids GoMark recorded, the deletion is planned.
    let mut ids = recorded.clone();
    ids.match_by_label(&desired, &observed);
    assert_eq!(lines(&plan(&desired, &observed, &ids, &no_deals(), &managed)), ["- stage sales/proposal"]);
    // A stage renamed by hand keeps its recorded id: an update, not a create.
    let mut renamed = observed.clone();
    stage(&mut renamed, "5001").label = "Renamed by hand".into();
    let mut ids = recorded.clone();
    ids.match_by_label(&full, &renamed);
    assert_eq!(ids, recorded);
}

#[test]
fn plans_serialise() {
    let p = plan(&acme(), &Observed::default(), &PipelineIdMap::default(), &no_deals(), &BTreeSet::new());
    let json = serde_json::to_value(&p).expect("serialisable");
    assert_eq!(json["actions"][5]["target"], json!({"pipeline": "sales"}));
    assert_eq!(json["actions"][5]["op"], json!("create"));
    let back: Plan = serde_json::from_value(json).expect("deserialisable");
    assert_eq!(back, p);
}

#[test]
fn a_removed_stage_with_deals_moves_them_first_and_warns_when_a_rule_would_refuse() {
    use gtm_config::{RemovedStage, RuleType, StageDeals, ValidationRule};
    let full = acme();
    let (mut observed, ids, managed) = hubspot_after_apply(&full);
    let mut desired = full.clone();
    desired.pipelines[0].stages.retain(|s| s.id != "proposal");
    desired.pipelines[0].removed_stages = vec![RemovedStage { id: "proposal".into(), move_deals_to: "won".into() }];
    desired.validation_rules.push(ValidationRule {
        property: "closedate".into(),
        rule_type: RuleType::ConditionallyRequired,
        rule_arguments: vec!["dealstage".into(), "5002".into()],
        should_apply_normalization: false,
    });
    observed.validation_rules.push(gtm_config::ObservedRule {
        property: "closedate".into(),
        rule_type: "CONDITIONALLY_REQUIRED".into(),
        rule_arguments: vec!["dealstage".into(), "5002".into()],
        should_apply_normalization: false,
    });
    let mut used = no_deals();
    used.insert(("1000".into(), "5001".into()));

    // Before the deals are counted, the deletion is blocked and the count asked for, with
    // the property the destination's rule requires.
    let p = plan(&desired, &observed, &ids, &used, &managed);
    assert!(p.find(&Target::Stage("sales".into(), "proposal".into()), Op::Archive).expect("planned").blocked.is_some());
    let needed = p.deal_counts_needed(&desired, &observed, &ids);
    assert_eq!(needed.len(), 1);
    assert_eq!((needed[0].pipeline.as_str(), needed[0].stage.as_str()), ("1000", "5001"));
    assert_eq!(needed[0].lacking, ["closedate"]);

    // Counted: the move comes first (as a record write), the deletion is no longer blocked,
    // and the deals without closedate are warned about.
    observed.stage_deals = vec![StageDeals {
        pipeline: "1000".into(),
        stage: "5001".into(),
        deals: 3,
        lacking: [("closedate".to_owned(), 2)].into(),
    }];
    let p = plan(&desired, &observed, &ids, &used, &managed);
    let moved = Target::StageDeals("sales".into(), "proposal".into());
    let action = p.find(&moved, Op::Update).expect("deal move planned");
    assert_eq!(action.to_string(), "~ deals in stage sales/proposal: move 3 deals to stage sales/won");
    assert!(p.find(&Target::Stage("sales".into(), "proposal".into()), Op::Archive).expect("planned").blocked.is_none());
    let warnings: Vec<&str> = p.warnings_for(action).map(|w| w.message.as_str()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("2 of 3 deals have no closedate") && warnings[0].contains("CONDITIONALLY_REQUIRED"),
        "{}",
        warnings[0]
    );
    let wire = gtm_config::wire::plan_to_proto(&p);
    let line = wire.iter().find(|a| a.target_kind == "stage_deals").map(gtm_config::wire::action_line);
    assert_eq!(line.as_deref(), Some("~ deals in stage sales/proposal: move 3 deals to stage sales/won"));

    // Without a rule at the destination nothing is warned; without a declared move the
    // deletion stays blocked.
    observed.validation_rules.clear();
    desired.validation_rules.clear();
    let p = plan(&desired, &observed, &ids, &used, &managed);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    desired.pipelines[0].removed_stages.clear();
    let p = plan(&desired, &observed, &ids, &used, &managed);
    assert!(p.find(&moved, Op::Update).is_none());
    assert!(p.find(&Target::Stage("sales".into(), "proposal".into()), Op::Archive).expect("planned").blocked.is_some());
}

//! Pipeline rules as desired state: validated with paths, planned as their own action
//! (blocked where the API version does not serve them), drift when changed by hand, and
//! warned about when they would refuse GoMark's own deal moves.

use gtm_config::{
    DealsInStages, Document, Observed, ObservedPipeline, ObservedStage, Op, PipelineIdMap, PipelineRules, StageDeals,
    StageRule, Target, WARNING_RULE_REJECTS_WRITES, plan,
};
use serde_json::json;
use std::collections::BTreeSet;

const DOC: &str = r#"
baseline:
  pipelines:
    - id: sales
      label: Sales
      stages:
        - {id: new, label: New, probability: 0.1}
        - {id: demo, label: Demo, probability: 0.5}
        - {id: won, label: Won, probability: 1.0, closed: true}
      rules:
        noBackwardsMovement: {allStages: true}
        creationStages: [new]
companies:
  acme: {companyId: c-1}
"#;

/// The portal holding pipeline `sales` as `p1` with stages `s-new`, `s-demo`, `s-won` and
/// the given rules (HubSpot ids).
fn portal(rules: Option<PipelineRules>) -> (Observed, PipelineIdMap) {
    let stage = |id: &str, order: i32, closed: bool| ObservedStage {
        hubspot_id: format!("s-{id}"),
        label: id.into(),
        display_order: order,
        probability: if closed { "1.0".into() } else { "0.1".into() },
        is_closed: closed,
    };
    let mut ids = PipelineIdMap::default();
    ids.insert_pipeline("sales", "p1");
    for s in ["new", "demo", "won"] {
        ids.insert_stage("sales", s, &format!("s-{s}"));
    }
    let observed = Observed {
        pipelines: vec![ObservedPipeline {
            hubspot_id: "p1".into(),
            label: "Sales".into(),
            display_order: 0,
            stages: vec![stage("new", 0, false), stage("demo", 1, false), stage("won", 2, true)],
            rules,
        }],
        api_version: Some("2026-09".into()),
        ..Observed::default()
    };
    (observed, ids)
}

fn planned(doc: &Document, observed: &Observed, ids: &PipelineIdMap) -> gtm_config::Plan {
    let desired = doc.effective("acme").expect("company");
    plan(&desired, observed, ids, &DealsInStages::new(), &BTreeSet::new())
}

fn rules_target() -> Target {
    Target::PipelineRules("sales".into())
}

#[test]
fn declared_rules_are_planned_then_converged_and_hand_changes_are_drift() {
    let doc = Document::from_yaml(DOC).expect("parse");
    doc.validate().expect("valid");
    let (observed, ids) = portal(Some(PipelineRules::default()));
    let p = planned(&doc, &observed, &ids);
    let action = p.find(&rules_target(), Op::Update).expect("rules planned");
    assert!(action.blocked.is_none());
    assert_eq!(action.change("noBackwardsMovement").expect("rule").after, json!({"allStages": true, "stages": []}));
    assert_eq!(action.change("creationStages").expect("creation").after, json!(["new"]));
    assert!(action.change("noSkippingStages").is_none(), "unchanged fields are not written");

    // The portal holding them (HubSpot ids): nothing to do.
    let held = PipelineRules {
        no_backwards_movement: Some(StageRule { all_stages: true, stages: vec![] }),
        no_skipping_stages: None,
        creation_stages: vec!["s-new".into()],
    };
    let (observed, ids) = portal(Some(held.clone()));
    assert!(planned(&doc, &observed, &ids).find(&rules_target(), Op::Update).is_none());

    // Someone adds "no skipping" by hand: drift, planned back to none.
    let mut changed = held;
    changed.no_skipping_stages = Some(StageRule { all_stages: false, stages: vec!["s-demo".into()] });
    let (observed, ids) = portal(Some(changed));
    let p = planned(&doc, &observed, &ids);
    let action = p.find(&rules_target(), Op::Update).expect("drift");
    let c = action.change("noSkippingStages").expect("skipping");
    assert_eq!((c.before.clone(), c.after.clone()), (json!({"allStages": false, "stages": ["demo"]}), json!(null)));
    assert_eq!(action.changes.len(), 1);

    // A pipeline without `rules` leaves the portal's alone.
    let bare =
        Document::from_yaml(&DOC.replace(
            "      rules:\n        noBackwardsMovement: {allStages: true}\n        creationStages: [new]\n",
            "",
        ))
        .expect("parse");
    assert!(bare.effective("acme").expect("acme").pipelines[0].rules.is_none());
    assert!(planned(&bare, &observed, &ids).find(&rules_target(), Op::Update).is_none());
}

#[test]
fn a_version_without_the_api_blocks_only_the_rules() {
    let doc = Document::from_yaml(DOC).expect("parse");
    let (mut observed, ids) = portal(None);
    observed.api_version = Some("2026-03".into());
    let p = planned(&doc, &observed, &ids);
    let action = p.find(&rules_target(), Op::Update).expect("reported");
    let blocked = action.blocked.as_ref().expect("blocked");
    assert!(blocked.reason.contains("does not serve the Pipeline Rules API"), "{blocked:?}");
    assert!(blocked.safe_alternative.contains("2026-09"), "{blocked:?}");
    assert_eq!(p.summary().blocked, 1);
    // The same portal being pinned to 2026-09: the rules are written through it, all of
    // them (the old pin could not read what the portal holds).
    let moving = Document::from_yaml(&DOC.replace("companies:", "  hubspot: {apiVersion: \"2026-09\"}\ncompanies:"))
        .expect("parse");
    let p = planned(&moving, &observed, &ids);
    let action = p.find(&rules_target(), Op::Update).expect("rules");
    assert!(action.blocked.is_none(), "{action:?}");
    let fields: Vec<&str> = action.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["noBackwardsMovement", "noSkippingStages", "creationStages"]);
    // A new pipeline on such a portal: its rules are blocked too, the pipeline is not.
    let p =
        planned(&doc, &Observed { api_version: Some("v3".into()), ..Observed::default() }, &PipelineIdMap::default());
    assert!(p.find(&Target::Pipeline("sales".into()), Op::Create).expect("created").blocked.is_none());
    assert!(p.find(&rules_target(), Op::Create).expect("rules").blocked.is_some());
    let p = planned(
        &doc,
        &Observed { api_version: Some("2026-09".into()), ..Observed::default() },
        &PipelineIdMap::default(),
    );
    assert!(p.find(&rules_target(), Op::Create).expect("rules").blocked.is_none());
}

#[test]
fn bad_rules_are_refused_with_their_path() {
    let doc = Document::from_yaml(&DOC.replace(
        "        noBackwardsMovement: {allStages: true}\n        creationStages: [new]\n",
        "        noBackwardsMovement: {}\n        noSkippingStages: {stages: [demo, gone]}\n        creationStages: [new, new]\n",
    ))
    .expect("parse");
    let errors = doc.validate().expect_err("invalid");
    for path in [
        "baseline.pipelines[0].rules.noBackwardsMovement",
        "baseline.pipelines[0].rules.noSkippingStages.stages[1]",
        "baseline.pipelines[0].rules.creationStages[1]",
    ] {
        assert!(errors.has_path(path), "{path} missing from {errors}");
    }
    assert!(!errors.has_path("baseline.pipelines[0].rules.noSkippingStages.stages[0]"), "{errors}");
    assert!(
        Document::from_yaml(&DOC.replace("creationStages: [new]", "creationStage: [new]")).is_err(),
        "unknown field"
    );
}

#[test]
fn a_rule_refusing_gomarks_own_deal_move_is_warned_about() {
    // `demo` is removed; its deals move back to `new`, which "no backwards" refuses.
    let doc = Document::from_yaml(
        &DOC.replace("        - {id: demo, label: Demo, probability: 0.5}\n", "")
            .replace("      rules:", "      removedStages: [{id: demo, moveDealsTo: new}]\n      rules:"),
    )
    .expect("parse");
    doc.validate().expect("valid");
    let (mut observed, ids) = portal(Some(PipelineRules::default()));
    observed.stage_deals =
        vec![StageDeals { pipeline: "p1".into(), stage: "s-demo".into(), deals: 3, ..StageDeals::default() }];
    let used: DealsInStages = [("p1".to_owned(), "s-demo".to_owned())].into();
    let desired = doc.effective("acme").expect("acme");
    let p = plan(&desired, &observed, &ids, &used, &BTreeSet::new());
    let moves = p.find(&Target::StageDeals("sales".into(), "demo".into()), Op::Update).expect("move planned");
    let warnings: Vec<_> = p.warnings_for(moves).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, WARNING_RULE_REJECTS_WRITES);
    assert!(warnings[0].message.contains("pipeline rule NO_BACKWARDS_MOVEMENT"), "{}", warnings[0].message);
    // Moving forward (to won, closed) is not warned about.
    let forward = Document::from_yaml(&doc.to_yaml().expect("yaml").replace("moveDealsTo: new", "moveDealsTo: won"))
        .expect("parse");
    let p = plan(&forward.effective("acme").expect("acme"), &observed, &ids, &used, &BTreeSet::new());
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn rules_survive_the_wire() {
    let doc = Document::from_yaml(DOC).expect("parse");
    let desired = doc.effective("acme").expect("acme");
    let back = gtm_config::wire::effective_from_hubspot(gtm_config::wire::hubspot_config(&desired)).expect("wire");
    assert_eq!(back.pipelines[0].rules, desired.pipelines[0].rules);
    let (observed, ids) = portal(Some(PipelineRules::default()));
    let wire = gtm_config::wire::plan_to_proto(&planned(&doc, &observed, &ids));
    assert!(wire.iter().any(|a| a.target_kind == "pipeline_rules" && a.target == "sales"));
}

//! Validation rules as desired state: validated, merged, planned, warned about.

use gtm_config::{
    DealsInStages, Document, Observed, ObservedRule, Op, PipelineIdMap, Target, WARNING_RULE_REJECTS_WRITES, plan,
};
use std::collections::BTreeSet;

const DOC: &str = r#"
baseline:
  dealProperties:
    - {name: gomark_po, label: PO, type: string, fieldType: text, groupName: dealinformation}
  validationRules:
    - {property: gomark_po, ruleType: MAX_LENGTH, ruleArguments: ["12"]}
    - {property: closedate, ruleType: CONDITIONALLY_REQUIRED, ruleArguments: [dealstage, closedwon]}
  recordWriters:
    - {name: stripe-sync, sets: [dealstage, amount, gomark_po]}
companies:
  acme:
    companyId: c-1
    settings: {driftPolicy: alert, driftPolicyBySource: {user: adopt, integration: enforce}}
  beta:
    companyId: c-2
    removeValidationRules: [closedate/CONDITIONALLY_REQUIRED]
"#;

fn planned(doc: &Document, key: &str, observed: &Observed) -> gtm_config::Plan {
    let desired = doc.effective(key).expect("company");
    plan(&desired, observed, &PipelineIdMap::default(), &DealsInStages::new(), &BTreeSet::new())
}

#[test]
fn rules_are_planned_and_warned_about() {
    let doc = Document::from_yaml(DOC).expect("parse");
    doc.validate().expect("valid");
    let p = planned(&doc, "acme", &Observed::default());
    let conditional = Target::ValidationRule("closedate".into(), "CONDITIONALLY_REQUIRED".into());
    let action = p.find(&conditional, Op::Create).expect("rule created");
    let warnings: Vec<&str> = p.warnings_for(action).map(|w| w.message.as_str()).collect();
    // stripe-sync sets dealstage but not closedate (GoMark's deal moves are checked where planned).
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("stripe-sync writes deals setting dealstage without closedate")
            && warnings[0].contains("closedwon"),
        "{warnings:?}"
    );
    assert!(p.warnings.iter().all(|w| w.code == WARNING_RULE_REJECTS_WRITES));
    let max = p.find(&Target::ValidationRule("gomark_po".into(), "MAX_LENGTH".into()), Op::Create).expect("max");
    assert_eq!(p.warnings_for(max).count(), 1);
    assert!(p.to_string().contains("    warning: stripe-sync writes gomark_po"), "{p}");

    // beta removed the conditional rule.
    let beta = planned(&doc, "beta", &Observed::default());
    assert!(beta.find(&conditional, Op::Create).is_none());
}

#[test]
fn rules_converge_and_hand_made_ones_are_drift() {
    let doc = Document::from_yaml(DOC).expect("parse");
    let rule = |property: &str, rule_type: &str, args: &[&str]| ObservedRule {
        property: property.into(),
        rule_type: rule_type.into(),
        rule_arguments: args.iter().map(|s| s.to_string()).collect(),
        should_apply_normalization: false,
    };
    let mut observed = Observed {
        validation_rules: vec![
            rule("gomark_po", "MAX_LENGTH", &["12"]),
            rule("closedate", "CONDITIONALLY_REQUIRED", &["dealstage", "closedwon"]),
            // Not GoMark's: a property it does not declare.
            rule("hs_other", "REGEX", &["x"]),
        ],
        ..Observed::default()
    };
    let p = planned(&doc, "acme", &observed);
    assert!(p.actions.iter().all(|a| !matches!(a.target, Target::ValidationRule(..))), "{p}");

    // A hand edit of the arguments, and a rule added by hand on a declared property.
    observed.validation_rules[0].rule_arguments = vec!["20".into()];
    observed.validation_rules.push(rule("gomark_po", "ALPHANUMERIC", &["NUMERIC_ONLY"]));
    let p = planned(&doc, "acme", &observed);
    let update = p.find(&Target::ValidationRule("gomark_po".into(), "MAX_LENGTH".into()), Op::Update).expect("update");
    assert_eq!(update.changes[0].field, "ruleArguments");
    assert!(p.find(&Target::ValidationRule("gomark_po".into(), "ALPHANUMERIC".into()), Op::Archive).is_some());
    assert!(p.find(&Target::ValidationRule("hs_other".into(), "REGEX".into()), Op::Archive).is_none());
}

#[test]
fn bad_rules_are_refused_with_their_path() {
    let doc = Document::from_yaml(
        r#"
baseline:
  validationRules:
    - {property: Bad-Name, ruleType: MAX_LENGTH, ruleArguments: [ten]}
    - {property: closedate, ruleType: CONDITIONALLY_REQUIRED, ruleArguments: [dealstage]}
    - {property: closedate, ruleType: CONDITIONALLY_REQUIRED, ruleArguments: [dealstage, x]}
  recordWriters:
    - {name: "", sets: [NOPE]}
companies:
  acme: {companyId: c-1, removeValidationRules: [nope/REGEX]}
"#,
    )
    .expect("parse");
    let errors = doc.validate().expect_err("invalid");
    for path in [
        "baseline.validationRules[0].property",
        "baseline.validationRules[0].ruleArguments[0]",
        "baseline.validationRules[1].ruleArguments",
        "baseline.validationRules[2].ruleType",
        "baseline.recordWriters[0].name",
        "baseline.recordWriters[0].sets[0]",
        "companies.acme.removeValidationRules[0]",
    ] {
        assert!(errors.has_path(path), "{path} missing from {errors}");
    }
    assert!(Document::from_yaml("baseline: {validationRules: [{property: a, ruleType: NOPE}]}").is_err());
}

#[test]
fn drift_policy_per_source() {
    let doc = Document::from_yaml(DOC).expect("parse");
    let settings = doc.effective("acme").expect("acme").settings;
    use gtm_config::{ChangeSourceKind as S, DriftPolicy as P};
    assert_eq!(settings.drift_policy_for(S::User), P::Adopt);
    assert_eq!(settings.drift_policy_for(S::Integration), P::Enforce);
    assert_eq!(settings.drift_policy_for(S::AiAgent), P::Alert);
    assert_eq!(settings.drift_policy_for(S::Unknown), P::Alert);
}

#[test]
fn rules_survive_the_wire() {
    let doc = Document::from_yaml(DOC).expect("parse");
    let desired = doc.effective("acme").expect("acme");
    let back = gtm_config::wire::effective_from_hubspot(gtm_config::wire::hubspot_config(&desired)).expect("wire");
    assert_eq!(back.validation_rules, desired.validation_rules);
    assert_eq!(back.record_writers, desired.record_writers);
    let p = planned(&doc, "acme", &Observed::default());
    let wire = gtm_config::wire::plan_to_proto(&p);
    assert_eq!(wire.iter().map(|a| a.warnings.len()).sum::<usize>(), p.warnings.len());
    assert!(wire.iter().any(|a| a.target_kind == "validation_rule" && a.target == "closedate/CONDITIONALLY_REQUIRED"));
}

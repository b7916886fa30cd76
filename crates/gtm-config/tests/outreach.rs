//! Cadences, upsell rules and the suppression list as desired state.

use gtm_config::{CriterionOp, Document, StepType};

const DOC: &str = r#"
baseline:
  suppressionList: ["ceo@bigcorp.com", "@competitor.com"]
  cadences:
    - key: upsell
      name: Upsell, gift-wrapped
      tags: [upsell]
      sendWindow: {timeZone: UTC, start: "09:00", end: "17:00"}
      steps:
        - {type: auto_email, delayHours: 0, subject: "A gift for {{company}}", body: "Hi {{firstName}}"}
        - {type: call, delayHours: 48, instructions: "Call about seats"}
    - key: renewal
      name: Renewal
      steps: [{type: task, delayHours: 0, instructions: "Check renewal"}]
  upsellRules:
    - key: default
      cadence: upsell
      minScore: 10
      closedWonDaysAgo: {min: 7, max: 90}
      scoring:
        - {property: amount, op: gte, value: 10000, points: 30, why: large contract}
        - {property: gomark_product_usage, op: linear, points: 50, maxPoints: 40}
      guardrails: {minDaysSinceLastTouch: 14, mailboxDailyCap: 2, companyDailyCap: 3, quietHours: {start: "20:00", end: "08:00"}}
companies:
  acme:
    companyId: c-acme
    cadences:
      - key: upsell
        name: Acme upsell
        steps: [{type: auto_email, delayHours: 24, subject: "Hi", body: "Hello"}]
    removeCadences: [renewal]
  brightlane:
    companyId: c-bright
"#;

#[test]
fn overlays_override_and_remove_cadences_by_key_and_rules_follow_their_cadence() {
    let doc = Document::from_yaml(DOC).expect("document parses");
    doc.validate().expect("document is valid");
    let acme = doc.effective("acme").expect("acme");
    assert_eq!(acme.cadences.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["upsell"]);
    assert_eq!(acme.cadence("upsell").expect("upsell").name, "Acme upsell");
    assert_eq!(acme.upsell_rules.len(), 1);
    assert_eq!(acme.upsell_rules[0].scoring[1].op, CriterionOp::Linear);
    assert_eq!(acme.suppression_list.len(), 2);
    let bright = doc.effective("brightlane").expect("brightlane");
    assert_eq!(bright.cadences.len(), 2);
    assert_eq!(bright.cadence("upsell").expect("upsell").steps[1].step_type, StepType::Call);
    assert!(gtm_config::outreach::is_suppressed(&bright.suppression_list, "Sales@Competitor.com"));
    assert!(!gtm_config::outreach::is_suppressed(&bright.suppression_list, "ceo@other.com"));
}

#[test]
fn the_suppression_list_knows_a_person_whatever_the_spelling() {
    use gtm_config::outreach::{is_suppressed, person};
    let list = ["CEO@BigCorp.com".to_owned(), "@competitor.com".to_owned()];
    // Case, spaces and a plus tag name the same person; the list is read the same way.
    for email in ["ceo@bigcorp.com", " Ceo+acme@BIGCORP.com ", "ceo+x+y@bigcorp.com", "a+b@Competitor.com"] {
        assert!(is_suppressed(&list, email), "{email}");
    }
    for email in ["ceo2@bigcorp.com", "ceo@bigcorp.co", "a@notcompetitor.com.evil", "ceo"] {
        assert!(!is_suppressed(&list, email), "{email}");
    }
    assert_eq!(person(" Ann+acme@X.Example "), "ann@x.example");
    assert_eq!(person("not-an-email"), "not-an-email");
}

#[test]
fn invalid_outreach_configuration_names_each_path() {
    let bad = DOC
        .replace(r#"subject: "A gift for {{company}}", "#, "")
        .replace("cadence: upsell", "cadence: nowhere")
        .replace(r#"end: "17:00""#, r#"end: "08:00""#)
        .replace("op: gte, value: 10000", "op: gte, value: lots")
        .replace("removeCadences: [renewal]", "removeCadences: [renewal, ghost]")
        .replace(r#""@competitor.com""#, r#""competitor""#);
    let errors = Document::from_yaml(&bad).expect("parses").validate().expect_err("invalid");
    for path in [
        "baseline.cadences[0].steps[0]",
        "baseline.cadences[0].sendWindow",
        "baseline.upsellRules[0].cadence",
        "baseline.upsellRules[0].scoring[0].value",
        "companies.acme.removeCadences[1]",
        "baseline.suppressionList[1]",
    ] {
        assert!(errors.has_path(path), "{path} missing in:\n{errors}");
    }
}

//! Effective configuration: baseline merged with a company overlay.

use gtm_config::{ConfigError, Document, DriftPolicy, FieldType};

const PORTFOLIO: &str = include_str!("../examples/portfolio.yaml");

fn names<T>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().map(key).collect()
}

#[test]
fn overlay_overrides_in_place_removes_and_appends() {
    let doc = Document::from_yaml(PORTFOLIO).expect("document parses");
    let acme = doc.effective("acme").expect("company exists");

    assert_eq!(acme.company_id, "0190a1b2-0000-7000-8000-000000000001");
    assert_eq!(acme.settings.drift_policy, DriftPolicy::Enforce);
    assert_eq!(names(&acme.property_groups, |g| &g.name), ["gomark", "acme"]);
    // gomark_tier overridden in its baseline position, gomark_seats removed, acme_region appended.
    assert_eq!(names(&acme.deal_properties, |p| &p.name), ["gomark_tier", "gomark_renewal_date", "acme_region"]);
    let tier = acme.property("gomark_tier").expect("present in fixture");
    assert_eq!(tier.field_type, FieldType::Radio, "whole-object replace");
    assert_eq!(tier.description, None, "nothing inherited from the baseline object");
    assert_eq!(tier.options.len(), 2);
    assert_eq!(names(&acme.pipelines, |p| &p.id), ["sales", "renewals", "partners"]);
}

#[test]
fn company_without_additions_gets_baseline_minus_removals() {
    let doc = Document::from_yaml(PORTFOLIO).expect("document parses");
    let globex = doc.effective("globex").expect("company exists");
    assert_eq!(globex.settings.drift_policy, DriftPolicy::Alert);
    assert_eq!(globex.settings.rollout_wave, 1);
    assert_eq!(names(&globex.pipelines, |p| &p.id), ["sales"]);
    assert_eq!(globex.deal_properties, doc.baseline.deal_properties);
    assert_eq!(globex.property_groups, doc.baseline.property_groups);
}

#[test]
fn override_of_a_pipeline_keeps_its_position() {
    let yaml = r#"
baseline:
  pipelines:
    - {id: a, label: A, stages: [{id: s, label: S, probability: 0.1}]}
    - {id: b, label: B, stages: [{id: s, label: S, probability: 0.1}]}
companies:
  x:
    companyId: "1"
    pipelines:
      - {id: c, label: C, stages: [{id: s, label: S, probability: 0.1}]}
      - {id: a, label: A prime, stages: [{id: s, label: S, probability: 0.5}]}
"#;
    let doc = Document::from_yaml(yaml).expect("document parses");
    doc.validate().expect("document is valid");
    let x = doc.effective("x").expect("company exists");
    assert_eq!(names(&x.pipelines, |p| &p.id), ["a", "b", "c"]);
    assert_eq!(x.pipelines[0].label, "A prime");
}

#[test]
fn effective_all_covers_every_company_and_unknown_keys_fail() {
    let doc = Document::from_yaml(PORTFOLIO).expect("document parses");
    let all = doc.effective_all();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(all["acme"], doc.effective("acme").expect("company exists"));
    assert_eq!(doc.effective("initech"), Err(ConfigError::UnknownCompany("initech".into())));
}

//! Parsing, serialisation, canonical JSON and content hash.

use gtm_config::{ConfigError, Document, DriftPolicy, FieldType, PropertyType};

const PORTFOLIO: &str = include_str!("../examples/portfolio.yaml");
const REORDERED: &str = include_str!("fixtures/portfolio_reordered.yaml");

fn parse_message(result: Result<Document, ConfigError>) -> String {
    match result {
        Err(ConfigError::Parse { message, .. }) => message,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn parses_the_full_example() {
    let doc = Document::from_yaml(PORTFOLIO).expect("document parses");
    doc.validate().expect("document is valid");

    let b = &doc.baseline;
    assert_eq!(b.property_groups[0].name, "gomark");
    assert_eq!(b.property_groups[0].display_order, Some(1));
    assert_eq!(b.deal_properties.len(), 3);
    let tier = &b.deal_properties[0];
    assert_eq!(tier.property_type, PropertyType::Enumeration);
    assert_eq!(tier.field_type, FieldType::Select);
    assert_eq!(tier.options.len(), 3);
    assert!(!tier.options[2].hidden, "hidden defaults to false");
    assert_eq!(tier.options[2].display_order, Some(2));
    assert_eq!(b.deal_properties[1].description, None);
    assert_eq!(b.deal_properties[2].description.as_deref(), Some(""));
    assert_eq!(b.pipelines.len(), 2);
    assert_eq!(b.pipelines[0].stages[0].probability, 0.2);
    assert!(b.pipelines[0].stages[2].closed);
    assert!(!b.pipelines[0].stages[1].closed, "closed defaults to false");
    assert_eq!(b.pipelines[1].stages[0].display_order, None);
    assert!(b.cadences.is_empty() && b.upsell_rules.is_empty());

    let acme = &doc.companies["acme"];
    assert_eq!(acme.company_id, "0190a1b2-0000-7000-8000-000000000001");
    assert_eq!(acme.settings.drift_policy, DriftPolicy::Enforce);
    assert_eq!(acme.settings.rollout_wave, 0);
    assert_eq!(acme.remove_deal_properties, vec!["gomark_seats"]);

    let globex = &doc.companies["globex"];
    assert_eq!(globex.settings.drift_policy, DriftPolicy::Alert, "default policy");
    assert_eq!(globex.settings.rollout_wave, 1, "default wave");
    assert_eq!(globex.remove_pipelines, vec!["renewals"]);
}

#[test]
fn unknown_key_is_an_error_naming_its_path() {
    let yaml = "baseline:\n  pipelines:\n    - id: sales\n      label: Sales\n      stages:\n        - {id: a, label: A, probability: 0.1, colour: red}\n";
    let message = parse_message(Document::from_yaml(yaml));
    assert!(message.starts_with("baseline.pipelines[0].stages[0]: unknown field `colour`"), "{message}");

    let yaml = "companies:\n  acme:\n    companyId: x\n    settings: {driftPolicy: alert, speed: 3}\n";
    let message = parse_message(Document::from_yaml(yaml));
    assert!(message.starts_with("companies.acme.settings: unknown field `speed`"), "{message}");

    let message = parse_message(Document::from_yaml("baselines: {}\n"));
    assert!(message.contains("unknown field `baselines`"), "{message}");
}

#[test]
fn unknown_key_in_json_names_its_path_without_misleading_line_numbers() {
    let json = r#"{"baseline":{"dealProperties":[{"name":"gomark_x","label":"X","type":"string","fieldType":"text","groupName":"gomark","colour":"red"}]}}"#;
    let message = parse_message(Document::from_json(json));
    assert!(message.starts_with("baseline.dealProperties[0]: unknown field `colour`"), "{message}");
    assert!(!message.contains(" at line "), "{message}");
}

#[test]
fn json_syntax_errors_keep_their_position() {
    let message = parse_message(Document::from_json("{\"baseline\": "));
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn bad_values_are_parse_errors_with_paths() {
    let yaml = "baseline:\n  dealProperties:\n    - {name: a, label: A, type: text, fieldType: text, groupName: g}\n";
    let message = parse_message(Document::from_yaml(yaml));
    assert!(message.starts_with("baseline.dealProperties[0].type: unknown variant `text`"), "{message}");

    let yaml = "companies:\n  acme:\n    companyId: x\n    settings: {driftPolicy: ignore}\n";
    let message = parse_message(Document::from_yaml(yaml));
    assert!(message.starts_with("companies.acme.settings.driftPolicy: unknown variant `ignore`"), "{message}");

    // Cadences are typed: a wrong shape or step type names its path.
    let message = parse_message(Document::from_yaml("baseline:\n  cadences: {a: 1}\n"));
    assert!(message.starts_with("baseline.cadences: invalid type"), "{message}");
    let yaml = "baseline:\n  cadences: [{key: c1, name: C, steps: [{type: fax}]}]\n";
    let message = parse_message(Document::from_yaml(yaml));
    assert!(message.starts_with("baseline.cadences[0].steps[0].type: unknown variant `fax`"), "{message}");
}

#[test]
fn missing_company_id_is_a_parse_error() {
    let message = parse_message(Document::from_yaml("companies:\n  acme: {}\n"));
    assert!(message.starts_with("companies.acme: missing field `companyId`"), "{message}");
}

#[test]
fn yaml_and_json_round_trip() {
    let doc = Document::from_yaml(PORTFOLIO).expect("document parses");
    let yaml = doc.to_yaml().expect("serialisable");
    assert_eq!(Document::from_yaml(&yaml).expect("document parses"), doc);
    let json = doc.to_canonical_json().expect("serialisable");
    assert_eq!(Document::from_json(&json).expect("document parses"), doc);
    // JSON is YAML too.
    assert_eq!(Document::from_yaml(&json).expect("document parses"), doc);
}

#[test]
fn canonical_json_sorts_keys_and_is_compact() {
    let doc = Document::from_yaml("baseline:\n  cadences: [{steps: [{type: call, delayHours: 2}], name: N, key: k}]\n")
        .expect("document parses");
    let json = doc.to_canonical_json().expect("serialisable");
    assert_eq!(
        json,
        r#"{"baseline":{"cadences":[{"exitOnBounce":true,"exitOnReply":true,"key":"k","name":"N","steps":[{"delayHours":2,"type":"call"}]}],"dealProperties":[],"pipelines":[],"propertyGroups":[],"upsellRules":[]},"companies":{}}"#
    );
}

#[test]
fn reordered_keys_hash_the_same() {
    let a = Document::from_yaml(PORTFOLIO).expect("document parses");
    let b = Document::from_yaml(REORDERED).expect("document parses");
    assert_eq!(a, b);
    assert_eq!(a.to_canonical_json().expect("serialisable"), b.to_canonical_json().expect("serialisable"));
    assert_eq!(a.content_hash().expect("hashable"), b.content_hash().expect("hashable"));
    let json_doc = Document::from_json(&a.to_canonical_json().expect("serialisable")).expect("document parses");
    assert_eq!(json_doc.content_hash().expect("hashable"), a.content_hash().expect("hashable"));

    let hash = a.content_hash().expect("hashable");
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));

    let mut changed = a.clone();
    changed.baseline.pipelines[0].stages[0].probability = 0.3;
    assert_ne!(changed.content_hash().expect("hashable"), hash);
}

//! Every validation rule, with its exact path and message.

use gtm_config::{Document, FieldType, PropertyType};

/// Validation error lines (`path: message`) of a YAML document.
fn errors(yaml: &str) -> Vec<String> {
    match Document::from_yaml(yaml).expect("document parses").validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(yaml: &str, expected: &str) {
    let errs = errors(yaml);
    assert!(errs.iter().any(|e| e == expected), "expected {expected:?} in {errs:#?}");
}

fn assert_valid(yaml: &str) {
    let errs = errors(yaml);
    assert!(errs.is_empty(), "{errs:#?}");
}

/// A baseline with one property built from the given flow-mapping fields.
fn with_property(fields: &str) -> String {
    format!("baseline:\n  propertyGroups: [{{name: gomark, label: GoMark}}]\n  dealProperties:\n    - {{{fields}}}\n")
}

const OK_PIPELINE: &str = "{id: sales, label: Sales, stages: [{id: open, label: Open, probability: 0.1}, {id: won, label: Won, probability: 1.0, closed: true}]}";

#[test]
fn fixture_reports_exactly_its_errors() {
    let errs = errors(include_str!("fixtures/invalid.yaml"));
    assert_eq!(
        errs,
        [
            "baseline.dealProperties[2].name: must match ^[a-z][a-z0-9_]{0,99}$",
            "companies.acme.pipelines[1].stages[3].probability: must be 0.0..1.0 in steps of 0.1",
        ]
    );
}

#[test]
fn errors_display_one_per_line_and_are_all_collected() {
    let yaml = r#"
baseline:
  dealProperties:
    - {name: 1bad, label: "", type: bool, fieldType: text, groupName: nowhere}
  pipelines:
    - {id: Sales, label: Sales, stages: []}
"#;
    let err = Document::from_yaml(yaml).expect("document parses").validate().expect_err("document is invalid");
    assert_eq!(
        err.to_string(),
        [
            "baseline.dealProperties[0].name: must match ^[a-z][a-z0-9_]{0,99}$",
            "baseline.dealProperties[0].label: must not be empty",
            "baseline.dealProperties[0].fieldType: \"text\" is not valid for type \"bool\" (allowed: booleancheckbox)",
            "baseline.pipelines[0].id: must match ^[a-z][a-z0-9_-]{0,63}$",
            "baseline.pipelines[0].stages: must have at least one stage",
            "baseline.dealProperties[0].groupName: group \"nowhere\" is not defined (declare it in propertyGroups or use dealinformation)",
        ]
        .join("\n")
    );
    assert_eq!(err.len(), 6);
    assert!(err.has_path("baseline.pipelines[0].id"));
}

#[test]
fn property_names() {
    let too_long = format!("g{}", "a".repeat(100));
    for bad in ["Gomark", "_x", "9x", "gomark-tier", "gomark tier", too_long.as_str()] {
        assert_error(
            &with_property(&format!("name: '{bad}', label: L, type: string, fieldType: text, groupName: gomark")),
            "baseline.dealProperties[0].name: must match ^[a-z][a-z0-9_]{0,99}$",
        );
    }
    let longest = format!("g{}", "a".repeat(99));
    assert_valid(&with_property(&format!(
        "name: {longest}, label: L, type: string, fieldType: text, groupName: gomark"
    )));
    assert_error(
        &with_property("name: hs_score, label: L, type: string, fieldType: text, groupName: gomark"),
        "baseline.dealProperties[0].name: must not start with hs_ (reserved by HubSpot)",
    );
    for reserved in gtm_config::HUBSPOT_DEAL_PROPERTIES {
        assert_error(
            &with_property(&format!("name: {reserved}, label: L, type: string, fieldType: text, groupName: gomark")),
            &format!("baseline.dealProperties[0].name: \"{reserved}\" is a HubSpot-defined deal property"),
        );
    }
}

#[test]
fn property_names_unique_per_scope() {
    let yaml = r#"
baseline:
  dealProperties:
    - {name: gomark_a, label: A, type: string, fieldType: text, groupName: dealinformation}
    - {name: gomark_a, label: A2, type: string, fieldType: text, groupName: dealinformation}
companies:
  acme:
    companyId: "1"
    dealProperties:
      - {name: gomark_b, label: B, type: string, fieldType: text, groupName: dealinformation}
      - {name: gomark_b, label: B2, type: string, fieldType: text, groupName: dealinformation}
      - {name: gomark_a, label: Override is fine, type: string, fieldType: text, groupName: dealinformation}
"#;
    let errs = errors(yaml);
    assert_eq!(
        errs,
        [
            "baseline.dealProperties[1].name: duplicate property name \"gomark_a\"",
            "companies.acme.dealProperties[1].name: duplicate property name \"gomark_b\"",
        ]
    );
}

#[test]
fn type_and_field_type_pairs() {
    let valid: &[(&str, &[&str])] = &[
        ("enumeration", &["select", "radio", "checkbox", "booleancheckbox"]),
        ("bool", &["booleancheckbox"]),
        ("string", &["text", "textarea", "html", "phonenumber", "file"]),
        ("number", &["number"]),
        ("date", &["date"]),
        ("datetime", &["date"]),
        ("phone_number", &["phonenumber"]),
    ];
    for t in PropertyType::ALL {
        let allowed = valid.iter().find(|(n, _)| *n == t.as_str()).expect("every type listed").1;
        for f in FieldType::ALL {
            let yaml = with_property(&format!(
                "name: gomark_x, label: X, type: {t}, fieldType: {f}, groupName: gomark, options: [{{label: A, value: a}}]"
            ));
            let errs = errors(&yaml);
            if allowed.contains(&f.as_str()) {
                assert!(errs.is_empty(), "{t}/{f}: {errs:?}");
            } else if f == FieldType::CalculationEquation {
                assert_eq!(
                    errs,
                    [
                        "baseline.dealProperties[0].fieldType: calculation_equation is not supported (GoMark does not manage calculated properties)"
                    ],
                    "{t}/{f}"
                );
            } else {
                assert_eq!(
                    errs,
                    [format!(
                        "baseline.dealProperties[0].fieldType: \"{f}\" is not valid for type \"{t}\" (allowed: {})",
                        allowed.join(", ")
                    )],
                    "{t}/{f}"
                );
            }
        }
    }
}

#[test]
fn enumeration_options() {
    assert_error(
        &with_property("name: gomark_x, label: X, type: enumeration, fieldType: select, groupName: gomark"),
        "baseline.dealProperties[0].options: required for type enumeration",
    );
    let yaml = with_property(
        "name: gomark_x, label: X, type: enumeration, fieldType: select, groupName: gomark, options: [{label: A, value: a}, {label: ' ', value: b}, {label: C, value: a}, {label: D, value: ''}]",
    );
    assert_eq!(
        errors(&yaml),
        [
            "baseline.dealProperties[0].options[1].label: must not be empty",
            "baseline.dealProperties[0].options[2].value: duplicate option value \"a\"",
            "baseline.dealProperties[0].options[3].value: must not be empty",
        ]
    );
}

#[test]
fn group_names_must_exist_in_the_effective_groups() {
    // dealinformation is HubSpot's default group: usable without declaring it.
    assert_valid(&with_property("name: gomark_x, label: X, type: string, fieldType: text, groupName: dealinformation"));
    let yaml = r#"
baseline:
  dealProperties:
    - {name: gomark_x, label: X, type: string, fieldType: text, groupName: acme}
companies:
  acme:
    companyId: "1"
    propertyGroups: [{name: acme, label: Acme}]
    dealProperties:
      - {name: acme_y, label: Y, type: string, fieldType: text, groupName: acme}
      - {name: acme_z, label: Z, type: string, fieldType: text, groupName: missing}
"#;
    assert_eq!(
        errors(yaml),
        [
            // The baseline must stand alone: a company without overlay has no group "acme".
            "baseline.dealProperties[0].groupName: group \"acme\" is not defined (declare it in propertyGroups or use dealinformation)",
            "companies.acme.dealProperties[1].groupName: group \"missing\" is not defined (declare it in propertyGroups or use dealinformation)",
        ]
    );
}

#[test]
fn group_rules() {
    let yaml = r#"
baseline:
  propertyGroups:
    - {name: gomark, label: GoMark}
    - {name: gomark, label: Again}
    - {name: dealinformation, label: Deal information}
    - {name: Bad-Name, label: ""}
"#;
    assert_eq!(
        errors(yaml),
        [
            "baseline.propertyGroups[1].name: duplicate group name \"gomark\"",
            "baseline.propertyGroups[2].name: \"dealinformation\" is a HubSpot default group; use it without declaring it",
            "baseline.propertyGroups[3].name: must match ^[a-z][a-z0-9_]{0,99}$",
            "baseline.propertyGroups[3].label: must not be empty",
        ]
    );
}

#[test]
fn pipeline_ids_and_labels() {
    let yaml = format!(
        r#"
baseline:
  pipelines:
    - {OK_PIPELINE}
    - {{id: sales, label: Other, stages: [{{id: o, label: O, probability: 0.1}}]}}
    - {{id: 2nd, label: " sales ", stages: [{{id: o, label: O, probability: 0.1}}]}}
"#
    );
    assert_eq!(
        errors(&yaml),
        [
            "baseline.pipelines[1].id: duplicate pipeline id \"sales\"",
            "baseline.pipelines[2].id: must match ^[a-z][a-z0-9_-]{0,63}$",
            "baseline.pipelines[2].label: duplicate pipeline label \" sales \" (also baseline.pipelines[0])",
        ]
    );
}

#[test]
fn overlay_pipeline_label_clash_blames_the_overlay() {
    let yaml = format!(
        r#"
baseline:
  pipelines:
    - {OK_PIPELINE}
companies:
  acme:
    companyId: "1"
    pipelines:
      - {{id: acme_sales, label: Sales, stages: [{{id: o, label: O, probability: 0.1}}]}}
"#
    );
    assert_eq!(
        errors(&yaml),
        ["companies.acme.pipelines[0].label: duplicate pipeline label \"Sales\" (also baseline.pipelines[0])"]
    );
}

#[test]
fn stage_rules() {
    let yaml = r#"
baseline:
  pipelines:
    - id: sales
      label: Sales
      stages:
        - {id: open, label: Open, probability: 0.1}
        - {id: open, label: Open again, probability: 0.2}
        - {id: two, label: OPEN, probability: 0.3}
        - {id: Bad, label: Bad, probability: 0.4}
        - {id: neg, label: Negative, probability: -0.1}
        - {id: big, label: Big, probability: 1.1}
        - {id: frac, label: Fraction, probability: 0.25}
        - {id: half, label: Half closed, probability: 0.5, closed: true}
        - {id: won, label: Won, probability: 1.0, closed: true}
        - {id: lost, label: Lost, probability: 0, closed: true}
"#;
    assert_eq!(
        errors(yaml),
        [
            "baseline.pipelines[0].stages[1].id: duplicate stage id \"open\" in this pipeline",
            "baseline.pipelines[0].stages[2].label: duplicate stage label \"OPEN\" in this pipeline",
            "baseline.pipelines[0].stages[3].id: must match ^[a-z][a-z0-9_-]{0,63}$",
            "baseline.pipelines[0].stages[4].probability: must be 0.0..1.0 in steps of 0.1",
            "baseline.pipelines[0].stages[5].probability: must be 0.0..1.0 in steps of 0.1",
            "baseline.pipelines[0].stages[6].probability: must be 0.0..1.0 in steps of 0.1",
            "baseline.pipelines[0].stages[7].probability: a closed stage must have probability 0.0 (closed-lost) or 1.0 (closed-won)",
        ]
    );
    // Every step 0.0..=1.0 is accepted, including float sums such as 0.1 + 0.2.
    for step in 0..=10 {
        let p = f64::from(step) / 10.0;
        assert_valid(&format!(
            "baseline:\n  pipelines:\n    - {{id: s, label: S, stages: [{{id: a, label: A, probability: {p}}}]}}\n"
        ));
    }
    assert_valid(&format!(
        "baseline:\n  pipelines:\n    - {{id: s, label: S, stages: [{{id: a, label: A, probability: {}}}]}}\n",
        0.1 + 0.2
    ));
}

#[test]
fn pipelines_need_stages_and_an_open_one() {
    let yaml = r#"
baseline:
  pipelines:
    - {id: empty, label: Empty, stages: []}
    - {id: closed, label: Closed, stages: [{id: won, label: Won, probability: 1.0, closed: true}]}
"#;
    assert_eq!(
        errors(yaml),
        [
            "baseline.pipelines[0].stages: must have at least one stage",
            "baseline.pipelines[1].stages: needs at least one open (not closed) stage",
        ]
    );
}

#[test]
fn the_documented_probability_example() {
    let yaml = format!(
        r#"
companies:
  acme:
    companyId: "1"
    pipelines:
      - {OK_PIPELINE}
      - id: renewals
        label: Renewals
        stages:
          - {{id: a, label: A, probability: 0.1}}
          - {{id: b, label: B, probability: 0.2}}
          - {{id: c, label: C, probability: 0.3}}
          - {{id: d, label: D, probability: 0.35}}
"#
    );
    assert_eq!(errors(&yaml), ["companies.acme.pipelines[1].stages[3].probability: must be 0.0..1.0 in steps of 0.1"]);
}

#[test]
fn removals_must_name_baseline_items() {
    let yaml = format!(
        r#"
baseline:
  dealProperties:
    - {{name: gomark_a, label: A, type: string, fieldType: text, groupName: dealinformation}}
  pipelines:
    - {OK_PIPELINE}
companies:
  acme:
    companyId: "1"
    removeDealProperties: [gomark_a, gomark_nope, gomark_a]
    removePipelines: [nope, sales]
    pipelines:
      - {OK_PIPELINE}
"#
    );
    assert_eq!(
        errors(&yaml),
        [
            "companies.acme.removeDealProperties[1]: \"gomark_nope\" is not a baseline deal property",
            "companies.acme.removeDealProperties[2]: \"gomark_a\" is listed twice",
            "companies.acme.removePipelines[0]: \"nope\" is not a baseline pipeline",
            "companies.acme.pipelines[0].id: \"sales\" is also in removePipelines",
        ]
    );
}

#[test]
fn company_ids_keys_and_settings() {
    let yaml = r#"
companies:
  acme: {companyId: "  "}
  beta: {companyId: "42"}
  gamma: {companyId: "42", settings: {rolloutWave: 10}}
  Bad.Key: {companyId: "43"}
  canary: {companyId: "44", settings: {rolloutWave: 0}}
"#;
    assert_eq!(
        errors(yaml),
        [
            "companies.Bad.Key: company key must match ^[a-z0-9][a-z0-9_-]{0,63}$",
            "companies.acme.companyId: must not be empty",
            "companies.gamma.companyId: duplicate companyId (also used by companies.beta)",
            "companies.gamma.settings.rolloutWave: must be 0..=9 (0 = canary)",
        ]
    );
}

#[test]
fn a_baseline_error_is_reported_once_whatever_the_number_of_companies() {
    let yaml = r#"
baseline:
  dealProperties:
    - {name: gomark_a, label: A, type: string, fieldType: text, groupName: nowhere}
companies:
  a: {companyId: "1"}
  b: {companyId: "2"}
  c: {companyId: "3"}
"#;
    assert_eq!(
        errors(yaml),
        [
            "baseline.dealProperties[0].groupName: group \"nowhere\" is not defined (declare it in propertyGroups or use dealinformation)"
        ]
    );
}

#[test]
fn the_example_portfolio_is_valid() {
    assert_valid(include_str!("../examples/portfolio.yaml"));
}

#[test]
fn control_characters_are_refused_by_path() {
    let doc = gtm_config::Document::from_yaml(
        "baseline:\n  dealProperties:\n    - {name: gomark_x, label: \"Ti\\0er\", type: enumeration, fieldType: select, groupName: \"deal\\u001binfo\", description: \"two\\nlines are fine, a\\0 is not\", options: [{label: \"Go\\0ld\", value: gold}]}\n",
    )
    .expect("parses");
    let errors = doc.validate().expect_err("refused");
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "baseline.dealProperties[0].label",
        "baseline.dealProperties[0].groupName",
        "baseline.dealProperties[0].description",
        "baseline.dealProperties[0].options[0].label",
    ] {
        assert!(paths.contains(&path), "{path} in {paths:?}");
    }
}

#[test]
fn removed_stages_must_be_gone_and_move_to_a_stage_of_their_pipeline() {
    let doc = r#"
baseline:
  pipelines:
    - id: sales
      label: Sales
      stages:
        - {id: open, label: Open, probability: 0.2}
        - {id: won, label: Won, probability: 1.0, closed: true}
      removedStages:
        - {id: open, moveDealsTo: won}
        - {id: proposal, moveDealsTo: nowhere}
companies: {}
"#;
    let errors = gtm_config::Document::from_yaml(doc).expect("parses").validate().expect_err("invalid");
    let text = format!("{errors:?}");
    assert!(text.contains("removedStages[0].id") && text.contains("still in stages"), "{text}");
    assert!(text.contains("removedStages[1].moveDealsTo"), "{text}");
    assert!(!text.contains("removedStages[0].moveDealsTo"), "{text}");
}

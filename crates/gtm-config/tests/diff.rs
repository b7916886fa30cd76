//! Document and effective diffs, keyed by names and ids.

use gtm_config::{ChangeKind, Document, diff, effective_diff};
use serde_json::json;

const PORTFOLIO: &str = include_str!("../examples/portfolio.yaml");

fn portfolio() -> Document {
    Document::from_yaml(PORTFOLIO).expect("document parses")
}

fn lines(old: &Document, new: &Document) -> Vec<String> {
    diff(old, new).changes.iter().map(ToString::to_string).collect()
}

#[test]
fn identical_and_reordered_documents_have_no_changes() {
    let a = portfolio();
    assert!(diff(&a, &a).is_empty());
    assert_eq!(diff(&a, &a).to_string(), "no changes\n");

    // Reorder every keyed list; all items of the example that are reordered carry an
    // explicit displayOrder or are keyed, so nothing changes.
    let mut b = a.clone();
    b.baseline.deal_properties.reverse();
    b.baseline.deal_properties[2].options.reverse();
    b.baseline.pipelines[0].stages.reverse();
    b.companies.get_mut("acme").expect("acme in fixture").deal_properties.reverse();
    assert!(diff(&a, &b).is_empty(), "{}", diff(&a, &b));
}

#[test]
fn field_changes_are_keyed_by_name_not_index() {
    let a = portfolio();
    let mut b = a.clone();
    b.baseline.deal_properties.reverse(); // gomark_tier moves from index 0 to 2
    b.baseline.deal_properties[2].label = "Level".into();
    b.baseline.deal_properties[2].options[0].label = "Golden".into();
    b.baseline.pipelines[0].stages[2].probability = 0.9;
    let d = diff(&a, &b);
    assert_eq!(d.changes.len(), 3, "{d}");
    let c = &d.changes[0];
    assert_eq!(c.path, "baseline.dealProperties[gomark_tier].label");
    assert_eq!(c.kind, ChangeKind::Changed);
    assert_eq!(c.before, Some(json!("Tier")));
    assert_eq!(c.after, Some(json!("Level")));
    assert_eq!(
        lines(&a, &b)[1..],
        [
            "~ baseline.dealProperties[gomark_tier].options[gold].label: \"Gold\" → \"Golden\"",
            "~ baseline.pipelines[sales].stages[won].probability: 1.0 → 0.9",
        ]
    );
}

#[test]
fn additions_removals_and_overlays() {
    let a = portfolio();
    let mut b = a.clone();
    let seats = b.baseline.deal_properties.remove(2);
    let acme = b.companies.get_mut("acme").expect("acme in fixture");
    acme.settings.rollout_wave = 3;
    acme.remove_deal_properties.clear();
    acme.remove_pipelines.push("renewals".into());
    let mut globex = b.companies.remove("globex").expect("globex in fixture");
    globex.company_id = "new".into();
    b.companies.insert("initech".into(), globex);

    let d = diff(&a, &b);
    let paths: Vec<(&str, ChangeKind)> = d.changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
    assert_eq!(
        paths,
        [
            ("baseline.dealProperties[gomark_seats]", ChangeKind::Removed),
            ("companies.acme.removeDealProperties[gomark_seats]", ChangeKind::Removed),
            ("companies.acme.removePipelines[renewals]", ChangeKind::Added),
            ("companies.acme.settings.rolloutWave", ChangeKind::Changed),
            ("companies.globex", ChangeKind::Removed),
            ("companies.initech", ChangeKind::Added),
        ]
    );
    assert_eq!(d.changes[0].before, Some(serde_json::to_value(&seats).expect("serialisable")));
    assert_eq!(d.changes[0].after, None);
    let text = d.to_string();
    assert!(text.contains("- baseline.dealProperties[gomark_seats]: {"), "{text}");
    assert!(text.contains("~ companies.acme.settings.rolloutWave: 0 → 3"), "{text}");
    assert!(text.contains("+ companies.initech: {"), "{text}");
}

#[test]
fn string_lists_are_sets() {
    let a = portfolio();
    let mut b = a.clone();
    b.companies.get_mut("globex").expect("globex in fixture").remove_pipelines = vec!["renewals".into()];
    assert!(diff(&a, &b).is_empty());
    let acme = b.companies.get_mut("acme").expect("acme in fixture");
    acme.remove_pipelines = vec!["sales".into()];
    let mut c = b.clone();
    c.companies.get_mut("acme").expect("acme in fixture").remove_pipelines = vec!["renewals".into()];
    assert_eq!(
        lines(&b, &c),
        [
            "- companies.acme.removePipelines[sales]: \"sales\"",
            "+ companies.acme.removePipelines[renewals]: \"renewals\"",
        ]
    );
}

#[test]
fn reordering_items_without_display_order_changes_their_order() {
    // Renewals' stages have no displayOrder: their list position is what HubSpot gets.
    let a = portfolio();
    let mut b = a.clone();
    b.baseline.pipelines[1].stages.swap(1, 2);
    assert_eq!(
        lines(&a, &b),
        [
            "~ baseline.pipelines[renewals].stages[renewed].displayOrder: 1 → 2",
            "~ baseline.pipelines[renewals].stages[churned].displayOrder: 2 → 1",
        ]
    );
}

#[test]
fn effective_diff_per_company() {
    let a = portfolio();
    let mut b = a.clone();
    // acme overrides gomark_tier, so only globex sees the baseline label change.
    b.baseline.deal_properties[0].label = "Level".into();
    // Both see a new baseline stage label in sales.
    b.baseline.pipelines[0].stages[0].label = "Qualify".into();
    let per_company = effective_diff(&a, &b);
    let acme: Vec<&str> = per_company["acme"].iter().map(|c| c.path.as_str()).collect();
    let globex: Vec<&str> = per_company["globex"].iter().map(|c| c.path.as_str()).collect();
    assert_eq!(acme, ["pipelines[sales].stages[discovery].label"]);
    assert_eq!(globex, ["dealProperties[gomark_tier].label", "pipelines[sales].stages[discovery].label",]);

    assert!(effective_diff(&a, &a).is_empty());

    // A new company is compared with an empty config: everything is added.
    let mut c = a.clone();
    let mut overlay = c.companies["globex"].clone();
    overlay.company_id = "3".into();
    c.companies.insert("initech".into(), overlay);
    let changes = &effective_diff(&a, &c)["initech"];
    assert!(changes.iter().any(|ch| ch.path == "pipelines[sales]" && ch.kind == ChangeKind::Added));
    assert!(changes.iter().any(|ch| ch.path == "companyId"));
}

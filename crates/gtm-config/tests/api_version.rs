//! `hubspot.apiVersion` as desired state: validated, merged (overlay over baseline), planned
//! as one action against the portal's pin, and carried over the wire.

use gtm_config::wire::{action_to_proto, effective_from_hubspot, hubspot_config};
use gtm_config::{CompanyOverlay, Document, HubSpotSettings, Observed, Op, PipelineIdMap, Target};
use std::collections::BTreeSet;

fn doc(baseline: Option<&str>, overlay: Option<&str>) -> Document {
    let mut d = Document::default();
    d.baseline.hubspot = HubSpotSettings { api_version: baseline.map(str::to_owned) };
    d.companies.insert(
        "acme".into(),
        CompanyOverlay {
            company_id: "c1".into(),
            hubspot: HubSpotSettings { api_version: overlay.map(str::to_owned) },
            ..CompanyOverlay::default()
        },
    );
    d
}

#[test]
fn versions_are_validated_where_they_are_declared() {
    assert!(doc(Some("2026-09"), Some("v3")).validate().is_ok());
    let errors = doc(Some("v4"), Some("2026-9")).validate().expect_err("two bad versions");
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["baseline.hubspot.apiVersion", "companies.acme.hubspot.apiVersion"]);
}

#[test]
fn the_overlay_wins_over_the_baseline_and_yaml_reads_it() {
    assert_eq!(
        doc(Some("2026-09"), Some("2026-03")).effective("acme").expect("acme").api_version.as_deref(),
        Some("2026-03")
    );
    assert_eq!(doc(Some("2026-09"), None).effective("acme").expect("acme").api_version.as_deref(), Some("2026-09"));
    assert_eq!(doc(None, None).effective("acme").expect("acme").api_version, None);
    let parsed: Document = serde_json::from_value(serde_json::json!({
        "baseline": {"hubspot": {"apiVersion": "2026-09"}},
        "companies": {"acme": {"companyId": "c1"}}
    }))
    .expect("parse");
    assert_eq!(parsed.baseline.hubspot.api_version.as_deref(), Some("2026-09"));
    let unchanged = serde_json::to_value(Document::default()).expect("json");
    assert!(unchanged["baseline"].get("hubspot").is_none(), "not written when unset: {unchanged}");
}

#[test]
fn a_pin_move_is_one_planned_action_and_crosses_the_wire() {
    let desired = doc(Some("2026-09"), None).effective("acme").expect("acme");
    let pinned = |v: &str| Observed { api_version: Some(v.to_owned()), ..Observed::default() };
    let plan =
        |o: &Observed| gtm_config::plan(&desired, o, &PipelineIdMap::default(), &Default::default(), &BTreeSet::new());
    assert!(plan(&pinned("2026-09")).actions.is_empty());
    let moving = plan(&pinned("2026-03"));
    assert_eq!(moving.actions.len(), 1);
    let action = &moving.actions[0];
    assert_eq!((&action.target, action.op), (&Target::ApiVersion, Op::Update));
    assert_eq!(action.to_string().lines().next().map(|l| l.contains("api version")), Some(true), "{action}");
    let wire = action_to_proto(action);
    assert_eq!((wire.target_kind.as_str(), wire.target.as_str()), ("api_version", "hubspot"));

    let over = hubspot_config(&desired);
    assert_eq!(over.api_version, "2026-09");
    assert_eq!(effective_from_hubspot(over).expect("back").api_version.as_deref(), Some("2026-09"));
    let bad = gomark_proto::config::v1::HubSpotConfig { api_version: "v9".into(), ..Default::default() };
    assert_eq!(effective_from_hubspot(bad).expect_err("v9").field, "apiVersion");
}

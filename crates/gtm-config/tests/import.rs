//! Import: a portal adopted as revision 1 plans to nothing.

use gtm_config::{DealsInStages, Document, FieldType, Observed, Op, Target, import, plan};

fn portal() -> Observed {
    serde_json::from_str(include_str!("fixtures/portal.json")).expect("portal fixture parses")
}

#[test]
fn import_adopts_custom_properties_groups_and_all_pipelines() {
    let observed = portal();
    let imported = import(&observed, "acme", "company-1");
    let overlay = &imported.overlay;
    assert_eq!(overlay.company_id, "company-1");

    let groups: Vec<&str> = overlay.property_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["sales_ops"], "dealinformation is HubSpot's");

    let props: Vec<&str> = overlay.deal_properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(props, ["region", "contract_id", "is_strategic"]);
    assert!(overlay.deal_properties[1].has_unique_value);
    assert_eq!(overlay.deal_properties[0].description.as_deref(), Some("Sales region"));
    assert_eq!(overlay.deal_properties[1].description, None);
    assert_eq!(overlay.deal_properties[2].field_type, FieldType::Booleancheckbox);
    assert_eq!(imported.managed.iter().collect::<Vec<_>>(), ["contract_id", "is_strategic", "region"]);
    assert_eq!(
        imported.skipped,
        [
            "deal property weighted_total: calculated properties are not managed",
            "deal property geo: its type/fieldType cannot be created through the API",
        ]
    );

    // Ids are unique slugs of labels.
    let pipes: Vec<(&str, Vec<&str>)> =
        overlay.pipelines.iter().map(|p| (p.id.as_str(), p.stages.iter().map(|s| s.id.as_str()).collect())).collect();
    assert_eq!(
        pipes,
        [
            ("sales-pipeline", vec!["appointment-scheduled", "qualified-to-buy", "closed-won", "closed-lost"]),
            ("sales-pipeline-2", vec!["new", "new-2", "won"]),
            ("p-2024-renewals", vec!["due"]),
        ]
    );
    assert_eq!(imported.ids.hubspot_pipeline("sales-pipeline"), Some("default"));
    assert_eq!(imported.ids.hubspot_stage("sales-pipeline-2", "new-2"), Some("82"));
    assert_eq!(imported.ids.gomark_pipeline("31234568"), Some("p-2024-renewals"));
    assert_eq!(imported.ids.gomark_stage("sales-pipeline", "closedwon"), Some("closed-won"));
    let won = &overlay.pipelines[0].stages[2];
    assert!(won.closed);
    assert_eq!(won.probability, 1.0);
}

#[test]
fn imported_document_is_valid_and_round_trips_through_yaml() {
    let imported = import(&portal(), "acme", "company-1");
    let doc = imported.to_document();
    doc.validate().expect("document is valid");
    let yaml = doc.to_yaml().expect("serialisable");
    assert_eq!(Document::from_yaml(&yaml).expect("document parses"), doc);

    // The same content also works as a baseline.
    let as_baseline = Document { baseline: imported.to_baseline(), ..Default::default() };
    as_baseline.validate().expect("document is valid");
}

#[test]
fn plan_of_an_imported_portal_is_empty() {
    let observed = portal();
    let imported = import(&observed, "acme", "company-1");
    let doc = Document::from_yaml(&imported.to_document().to_yaml().expect("serialisable")).expect("document parses");
    let desired = doc.effective("acme").expect("company exists");
    let p = plan(&desired, &observed, &imported.ids, &DealsInStages::new(), &imported.managed);
    assert!(p.is_empty(), "{p}");
}

#[test]
fn after_import_gomark_manages_what_it_adopted() {
    let observed = portal();
    let imported = import(&observed, "acme", "company-1");
    let mut desired = imported.to_document().effective("acme").expect("company exists");
    desired.deal_properties.retain(|p| p.name != "region");
    desired.pipelines[0].stages.retain(|s| s.id != "closed-lost");
    let mut used = DealsInStages::new();
    used.insert(("default".into(), "closedlost".into()));
    let p = plan(&desired, &observed, &imported.ids, &used, &imported.managed);
    assert!(p.find(&Target::DealProperty("region".into()), Op::Archive).expect("action planned").blocked.is_none());
    let stage =
        p.find(&Target::Stage("sales-pipeline".into(), "closed-lost".into()), Op::Archive).expect("action planned");
    assert!(stage.blocked.is_some());
    // Skipped properties were never adopted, so they are never archived.
    assert!(p.find(&Target::DealProperty("weighted_total".into()), Op::Archive).is_none());
}

#[test]
fn import_of_an_empty_portal_is_an_empty_overlay() {
    let imported = import(&Observed::default(), "new-co", "company-9");
    assert!(imported.overlay.deal_properties.is_empty());
    assert!(imported.overlay.pipelines.is_empty());
    imported.to_document().validate().expect("document is valid");
}

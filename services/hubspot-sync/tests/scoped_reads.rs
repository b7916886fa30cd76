//! A step reads only what its desired state can touch: a first rollout of a baseline of
//! properties costs one read, not four, and kinds GoMark created before are still read so they can be removed.

use gomark_hubspot_sync::converge::Converger;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{MIGRATIONS, Portals};
use gomark_storage::Database;
use gtm_config::{DealProperty, EffectiveConfig, FieldType, Op, Pipeline, PropertyType, Stage, Target};
use hubspot_client::{AccessToken, ApiVersion, ClientConfig, HubSpotClient, PropertyCreate, PropertyValidationRule};
use hubspot_sim::{HubSpotSim, SimConfig};

const TOKEN: &str = "scoped-token";

fn property(name: &str) -> DealProperty {
    DealProperty {
        name: name.into(),
        label: name.into(),
        property_type: PropertyType::String,
        field_type: FieldType::Text,
        group_name: "dealinformation".into(),
        description: None,
        options: Vec::new(),
        has_unique_value: false,
    }
}

fn pipeline() -> Pipeline {
    Pipeline {
        id: "renewals".into(),
        label: "Renewals".into(),
        display_order: None,
        stages: vec![Stage {
            id: "won".into(),
            label: "Won".into(),
            display_order: None,
            probability: 1.0,
            closed: true,
        }],
        removed_stages: Vec::new(),
        rules: None,
    }
}

/// The kinds read since the last call: (properties, groups, pipelines, validation rules).
fn reads(sim: &HubSpotSim) -> (usize, usize, usize, usize) {
    let gets: Vec<String> = sim.requests().into_iter().filter(|r| r.method == "GET").map(|r| r.path).collect();
    sim.clear_requests();
    let validations = gets.iter().filter(|p| p.contains("property-validations")).count();
    let groups = gets.iter().filter(|p| p.contains("/groups")).count();
    let pipelines = gets.iter().filter(|p| p.contains("pipelines")).count();
    let properties = gets.iter().filter(|p| p.contains("/properties/") && !p.contains("/groups")).count();
    (properties, groups, pipelines, validations)
}

#[tokio::test]
async fn a_step_reads_only_the_kinds_it_can_touch() {
    let (sim, addr) = hubspot_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into()).await.expect("sim");
    sim.register_portal(TOKEN, 5151);
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = std::sync::Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", "5151", &Credential::PrivateApp { token: TOKEN.into() }).await.expect("register");
    let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
        .expect("client");
    let converger = Converger::new(db, portals, client);

    // Nothing declared, nothing created before: nothing to read.
    sim.clear_requests();
    let plan = converger.plan("c1", &EffectiveConfig::default()).await.expect("plan");
    assert!(plan.actions.is_empty());
    assert_eq!(reads(&sim), (0, 0, 0, 0));

    // Properties alone, none of them in the portal yet (a first rollout): their
    // definitions only. A property that does not exist holds no validation rule.
    let properties = EffectiveConfig {
        deal_properties: vec![property("gomark_a"), property("gomark_b")],
        ..EffectiveConfig::default()
    };
    let applied = converger.apply("c1", &properties, None, None).await.expect("apply");
    assert_eq!(applied.performed.len(), 2, "{:?}", applied.failed);
    assert_eq!(reads(&sim), (1, 0, 0, 0));

    // Once GoMark created them, their rules are read with them (a rule added by hand is drift).
    converger.plan("c1", &properties).await.expect("plan again");
    assert_eq!(reads(&sim), (1, 0, 0, 1));

    // A declared property made by hand, with a rule made by hand, that GoMark never created:
    // the rules are read once the properties show it exists, and the rule is planned away.
    let token = AccessToken::new(TOKEN);
    let made = PropertyCreate {
        name: "hand_made".into(),
        label: "Hand made".into(),
        r#type: "string".into(),
        field_type: "text".into(),
        group_name: "dealinformation".into(),
        ..PropertyCreate::default()
    };
    let hand = HubSpotClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        api_version: ApiVersion::Date2026_09,
        ..ClientConfig::default()
    })
    .expect("client");
    hand.create_deal_property(&token, &made).await.expect("create by hand");
    let rule = PropertyValidationRule {
        rule_type: "MAX_LENGTH".into(),
        rule_arguments: vec!["7".into()],
        should_apply_normalization: false,
    };
    hand.put_deal_property_validation(&token, "hand_made", &rule).await.expect("rule by hand");
    sim.clear_requests();
    let adopted = EffectiveConfig { deal_properties: vec![property("hand_made")], ..EffectiveConfig::default() };
    let plan = converger.plan("c1", &adopted).await.expect("plan hand made");
    assert_eq!(reads(&sim), (1, 0, 0, 1));
    let rule_archived = plan
        .actions
        .iter()
        .any(|a| a.op == Op::Archive && a.target == Target::ValidationRule("hand_made".into(), "MAX_LENGTH".into()));
    assert!(rule_archived, "{plan}");

    // A pipeline added: pipelines are read too.
    let both = EffectiveConfig { pipelines: vec![pipeline()], ..properties.clone() };
    converger.apply("c1", &both, None, None).await.expect("apply pipeline");
    sim.clear_requests();
    converger.plan("c1", &both).await.expect("plan both");
    assert_eq!(reads(&sim), (1, 0, 1, 1));

    // Everything removed from the desired state: what GoMark created is still read, and
    // planned for removal.
    let plan = converger.plan("c1", &EffectiveConfig::default()).await.expect("plan removal");
    let (read_properties, read_groups, read_pipelines, _) = reads(&sim);
    assert_eq!((read_properties, read_groups), (1, 0));
    assert!(read_pipelines >= 1, "the pipeline GoMark created is read");
    let archived = plan.actions.iter().filter(|a| a.op == Op::Archive).count();
    assert_eq!(archived, 3, "two properties and the pipeline:\n{plan}");
}

//! Write validation against the simulator on API 2026-09: the client's property validation
//! calls, and GoMark's one kind of deal-record write (moving a removed stage's deals) planned,
//! applied exactly as planned, and refused once, unretried, when a portal rule forbids it.

use gomark_hubspot_sync::converge::Converger;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{MIGRATIONS, Portals};
use gomark_storage::Database;
use gtm_config::wire::action_id;
use gtm_config::{EffectiveConfig, Op, Pipeline, RemovedStage, RuleType, Stage, Target, ValidationRule};
use hubspot_client::{AccessToken, ApiVersion, ClientConfig, HubSpotClient, PropertyValidationRule};
use hubspot_sim::{HubSpotSim, SimConfig};
use std::collections::{BTreeMap, BTreeSet};

const TOKEN: &str = "moves-token";

async fn sim() -> (HubSpotSim, String) {
    let (sim, addr) = hubspot_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into()).await.expect("sim");
    sim.register_portal(TOKEN, 5151);
    (sim, format!("http://{addr}"))
}

fn client(base: &str, api_version: ApiVersion) -> HubSpotClient {
    HubSpotClient::new(ClientConfig { base_url: base.to_owned(), api_version, ..ClientConfig::default() })
        .expect("client")
}

fn closedate_required_in(stage: &str) -> ValidationRule {
    ValidationRule {
        property: "closedate".into(),
        rule_type: RuleType::ConditionallyRequired,
        rule_arguments: vec!["dealstage".into(), stage.into()],
        should_apply_normalization: false,
    }
}

#[tokio::test]
async fn validation_calls_match_the_simulator_and_2026_09_refuses_once() {
    let (sim, base) = sim().await;
    let token = AccessToken::new(TOKEN);
    let dated = client(&base, ApiVersion::Date2026_09);
    let rule = PropertyValidationRule {
        rule_type: "CONDITIONALLY_REQUIRED".into(),
        rule_arguments: vec!["dealstage".into(), "closedwon".into()],
        should_apply_normalization: false,
    };
    dated.put_deal_property_validation(&token, "closedate", &rule).await.expect("put");
    let length = PropertyValidationRule {
        rule_type: "MAX_LENGTH".into(),
        rule_arguments: vec!["40".into()],
        should_apply_normalization: true,
    };
    dated.put_deal_property_validation(&token, "dealname", &length).await.expect("put");
    let listed = dated.list_deal_property_validations(&token).await.expect("list");
    let by_property: BTreeMap<&str, &[PropertyValidationRule]> =
        listed.iter().map(|p| (p.property_name.as_str(), p.property_validation_rules.as_slice())).collect();
    assert_eq!(by_property.get("closedate").copied(), Some(&[rule.clone()][..]));
    assert_eq!(by_property.get("dealname").copied(), Some(&[length][..]));
    dated.delete_deal_property_validation(&token, "dealname", "MAX_LENGTH").await.expect("delete");
    dated.delete_deal_property_validation(&token, "dealname", "MAX_LENGTH").await.expect("already gone is fine");
    assert_eq!(dated.list_deal_property_validations(&token).await.expect("list").len(), 1);
    // v3 paths reach the same rules.
    assert_eq!(client(&base, ApiVersion::V3).list_deal_property_validations(&token).await.expect("list").len(), 1);

    // A 2026-09 write the rule refuses: one request, the rule named, nothing retried.
    let ids = sim.create_deals(TOKEN, 1, "appointmentscheduled", "default");
    sim.clear_requests();
    let won: BTreeMap<String, String> = [("dealstage".to_owned(), "closedwon".to_owned())].into();
    let err = dated.update_deal(&token, &ids[0], &won).await.expect_err("refused");
    let refusal = err.refusal().expect("a validation refusal");
    assert_eq!(
        (refusal.rule.as_deref(), refusal.property.as_deref()),
        (Some("CONDITIONALLY_REQUIRED"), Some("closedate"))
    );
    assert!(!err.is_retryable());
    assert_eq!(sim.requests().iter().filter(|r| r.method == "PATCH").count(), 1, "not retried");
    // v3 writes are not checked (HubSpot enforces from 2026-09 on).
    client(&base, ApiVersion::V3).update_deal(&token, &ids[0], &won).await.expect("v3 is not enforced");
}

fn pipeline(stages: &[&str], removed: Option<(&str, &str)>) -> Pipeline {
    Pipeline {
        id: "sales".into(),
        label: "Sales".into(),
        display_order: None,
        stages: stages
            .iter()
            .map(|id| Stage {
                id: (*id).into(),
                label: id.to_uppercase(),
                // Fixed, so removing a stage moves no other.
                display_order: ["open", "negotiation", "won"]
                    .iter()
                    .position(|s| s == id)
                    .and_then(|i| i32::try_from(i).ok()),
                probability: if *id == "won" { 1.0 } else { 0.5 },
                closed: *id == "won",
            })
            .collect(),
        removed_stages: removed
            .map(|(id, to)| RemovedStage { id: id.into(), move_deals_to: to.into() })
            .into_iter()
            .collect(),
        rules: None,
    }
}

fn config(pipeline: Pipeline, rules: Vec<ValidationRule>) -> EffectiveConfig {
    EffectiveConfig {
        company_id: "c1".into(),
        pipelines: vec![pipeline],
        validation_rules: rules,
        ..EffectiveConfig::default()
    }
}

/// A converger on 2026-09, with its database (kept alive as long as it is used).
async fn converger(base: &str) -> (Converger, gomark_testkit::TestDatabase) {
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = std::sync::Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", "5151", &Credential::PrivateApp { token: TOKEN.into() }).await.expect("register");
    (Converger::new(db, portals, client(base, ApiVersion::Date2026_09)), tdb)
}

fn applicable(plan: &gtm_config::Plan) -> Vec<String> {
    plan.actions.iter().filter(|a| a.blocked.is_none()).map(action_id).collect()
}

/// Applies `desired` as planned and returns the HubSpot ids of the `sales` stages.
async fn apply(converger: &Converger, desired: &EffectiveConfig) -> BTreeMap<String, String> {
    let plan = converger.plan("c1", desired).await.expect("plan");
    let approved: BTreeSet<String> = applicable(&plan).into_iter().collect();
    let applied = converger.apply("c1", desired, Some(&approved), None).await.expect("apply");
    assert!(applied.failed.is_empty(), "{:?}", applied.failed);
    let ids = converger.recorded_ids("c1").await.expect("ids");
    ids.pipelines.get("sales").map(|p| p.stages.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_removed_stage_moves_its_deals_first_exactly_as_planned() {
    let (sim, base) = sim().await;
    let (converger, _db) = converger(&base).await;
    let stages = apply(&converger, &config(pipeline(&["open", "negotiation", "won"], None), Vec::new())).await;
    let hubspot_pipeline = converger.recorded_ids("c1").await.expect("ids").pipelines["sales"].hubspot_id.clone();
    let deals = sim.create_deals(TOKEN, 3, &stages["negotiation"], &hubspot_pipeline);
    assert_eq!(deals.len(), 3);

    let desired = config(pipeline(&["open", "won"], Some(("negotiation", "won"))), Vec::new());
    let plan = converger.plan("c1", &desired).await.expect("plan");
    let lines: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["~ deals in stage sales/negotiation: move 3 deals to stage sales/won", "- stage sales/negotiation"]
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

    let approved: BTreeSet<String> = applicable(&plan).into_iter().collect();
    let applied = converger.apply("c1", &desired, Some(&approved), None).await.expect("apply");
    assert!(applied.failed.is_empty(), "{:?}", applied.failed);
    let performed: Vec<String> = applied.performed.iter().map(action_id).collect();
    assert_eq!(performed, applicable(&plan), "performed exactly the plan");
    for id in &deals {
        let deal = sim.deal(TOKEN, id).expect("deal");
        assert_eq!(deal["properties"]["dealstage"], stages["won"].as_str(), "{deal}");
    }
    assert!(applicable(&converger.plan("c1", &desired).await.expect("plan")).is_empty());
}

#[tokio::test]
async fn a_conditional_required_rule_refuses_the_move_once_as_the_plan_warned() {
    let (sim, base) = sim().await;
    let (converger, _db) = converger(&base).await;
    let stages = apply(&converger, &config(pipeline(&["open", "negotiation", "won"], None), Vec::new())).await;
    let rules = vec![closedate_required_in(&stages["won"])];
    apply(&converger, &config(pipeline(&["open", "negotiation", "won"], None), rules.clone())).await;
    let hubspot_pipeline = converger.recorded_ids("c1").await.expect("ids").pipelines["sales"].hubspot_id.clone();
    let deals = sim.create_deals(TOKEN, 3, &stages["negotiation"], &hubspot_pipeline);
    sim.update_deal(TOKEN, &deals[0], [("closedate", "2026-11-30T00:00:00Z")]).expect("one has a close date");

    let desired = config(pipeline(&["open", "won"], Some(("negotiation", "won"))), rules);
    let plan = converger.plan("c1", &desired).await.expect("plan");
    let moved = Target::StageDeals("sales".into(), "negotiation".into());
    let action = plan.find(&moved, Op::Update).expect("move planned");
    let warnings: Vec<&str> = plan.warnings_for(action).map(|w| w.message.as_str()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("2 of 3 deals have no closedate"), "{}", warnings[0]);

    let approved: BTreeSet<String> = applicable(&plan).into_iter().collect();
    sim.clear_requests();
    let applied = converger.apply("c1", &desired, Some(&approved), None).await.expect("apply");
    assert!(applied.performed.is_empty(), "{:?}", applied.performed);
    let reasons: Vec<(String, &str)> = applied.failed.iter().map(|(a, r)| (a.to_string(), r.as_str())).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].1.contains("rule CONDITIONALLY_REQUIRED on property closedate"),
        "the move fails naming the rule: {reasons:?}"
    );
    assert_eq!(reasons[1], ("- stage sales/negotiation".to_owned(), "not attempted: its deals could not be moved"));
    let requests = sim.requests();
    let moves = requests.iter().filter(|r| r.path.ends_with("/batch/update")).count();
    let deletes = requests.iter().filter(|r| r.method == "DELETE").count();
    assert_eq!((moves, deletes), (1, 0), "one refused write, not retried; the stage left alone");
    for id in &deals {
        assert_eq!(sim.deal(TOKEN, id).expect("deal")["properties"]["dealstage"], stages["negotiation"].as_str());
    }
}

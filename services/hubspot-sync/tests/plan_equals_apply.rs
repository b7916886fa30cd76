//! The promise, tested on random inputs: for any desired configuration (properties,
//! pipelines and their rules, validation rules) and any hand edits of a (simulated) portal (its rules
//! included), applying a plan performs exactly the actions it planned, and the next plan has
//! nothing left to apply.

use gomark_hubspot_sync::converge::Converger;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{MIGRATIONS, Portals};
use gomark_storage::Database;
use gtm_config::wire::action_id;
use gtm_config::{
    CompanyOverlay, DealProperty, Document, EffectiveConfig, FieldType, Pipeline, PipelineRules, PropertyOption,
    PropertyType, RuleType, Stage, StageRule, ValidationRule,
};
use hubspot_client::{ClientConfig, HubSpotClient};
use hubspot_sim::SimConfig;
use proptest::prelude::*;
use std::collections::BTreeSet;

const TOKEN: &str = "prop-token";

/// Each name keeps one type (HubSpot cannot change a property's type in place).
fn property(index: usize, label: usize, options: usize, described: bool) -> DealProperty {
    let (property_type, field_type) = match index % 3 {
        0 => (PropertyType::String, FieldType::Text),
        1 => (PropertyType::Number, FieldType::Number),
        _ => (PropertyType::Enumeration, FieldType::Select),
    };
    let options = if property_type == PropertyType::Enumeration {
        (0..=options)
            .map(|o| PropertyOption {
                label: format!("Option {o}"),
                value: format!("o{o}"),
                display_order: None,
                hidden: false,
            })
            .collect()
    } else {
        Vec::new()
    };
    DealProperty {
        name: format!("gomark_p{index}"),
        label: ["Alpha", "Beta", "Gamma"][label].into(),
        property_type,
        field_type,
        group_name: "dealinformation".into(),
        description: described.then(|| "declared".into()),
        options,
        has_unique_value: false,
    }
}

/// Pipeline rules from `kind`: none declared (0), none (1), or some over the stages.
fn pipeline_rules(kind: u8, stages: &[Stage]) -> Option<PipelineRules> {
    let first = stages.first().map(|s| s.id.clone()).into_iter().collect::<Vec<_>>();
    match kind {
        0 => None,
        1 => Some(PipelineRules::default()),
        2 => Some(PipelineRules {
            no_backwards_movement: Some(StageRule { all_stages: true, stages: Vec::new() }),
            ..PipelineRules::default()
        }),
        _ => Some(PipelineRules {
            no_backwards_movement: None,
            no_skipping_stages: Some(StageRule { all_stages: false, stages: first.clone() }),
            creation_stages: first,
        }),
    }
}

fn pipeline(index: usize, label: usize, stages: &[(usize, u8)], ordered: bool, rules: u8) -> Pipeline {
    let mut seen = BTreeSet::new();
    let mut out: Vec<Stage> = stages
        .iter()
        .filter(|(id, _)| seen.insert(*id))
        .map(|(id, tenths)| Stage {
            id: format!("s{id}"),
            label: format!("Stage {id}"),
            display_order: None,
            probability: f64::from(*tenths) / 10.0,
            closed: false,
        })
        .collect();
    out.push(Stage { id: "won".into(), label: "Won".into(), display_order: None, probability: 1.0, closed: true });
    let rules = pipeline_rules(rules, &out);
    Pipeline {
        id: format!("pipe{index}"),
        label: format!("Pipeline {index} {}", ["north", "south"][label]),
        display_order: ordered.then_some(i32::try_from(index).unwrap_or(0) + 5),
        stages: out,
        removed_stages: Vec::new(),
        rules,
    }
}

/// A rule the simulator enforces, fitting the property's type (`kind` picks among them);
/// None for enumerations, which take none of them.
fn rule(property: &DealProperty, kind: usize, bound: u8) -> Option<ValidationRule> {
    let (rule_type, argument) = match (property.property_type, kind % 2) {
        (PropertyType::String, 0) => (RuleType::MaxLength, bound.to_string()),
        (PropertyType::String, _) => (RuleType::MinLength, (bound % 3).to_string()),
        (PropertyType::Number, 0) => (RuleType::MaxNumber, (u32::from(bound) * 100).to_string()),
        (PropertyType::Number, _) => (RuleType::MinNumber, bound.to_string()),
        _ => return None,
    };
    Some(ValidationRule {
        property: property.name.clone(),
        rule_type,
        rule_arguments: vec![argument],
        should_apply_normalization: kind > 1,
    })
}

/// HubSpot's classic conditional rule, on HubSpot's own properties.
fn closedate_required() -> ValidationRule {
    ValidationRule {
        property: "closedate".into(),
        rule_type: RuleType::ConditionallyRequired,
        rule_arguments: vec!["dealstage".into(), "closedwon".into()],
        should_apply_normalization: false,
    }
}

fn desired() -> impl Strategy<Value = EffectiveConfig> {
    let properties = proptest::collection::vec((0usize..5, 0usize..3, 0usize..3, any::<bool>()), 0..5);
    let pipelines = proptest::collection::vec(
        (0usize..2, 0usize..2, proptest::collection::vec((0usize..4, 1u8..10), 1..4), any::<bool>(), 0u8..4),
        0..3,
    );
    let rules = (proptest::collection::vec((0usize..5, 0usize..4, 1u8..20), 0..4), any::<bool>());
    // A pin move rides along (None: keep the pin).
    let version = proptest::option::of(proptest::sample::select(gtm_config::API_VERSIONS.to_vec()));
    (properties, pipelines, rules, version).prop_map(|(properties, pipelines, (rules, conditional), version)| {
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let deal_properties: Vec<DealProperty> = properties
            .into_iter()
            .filter(|(i, ..)| names.insert(*i))
            .map(|(i, l, o, d)| property(i, l, o, d))
            .collect();
        let mut keys = BTreeSet::new();
        let mut validation_rules: Vec<ValidationRule> = rules
            .into_iter()
            .filter_map(|(i, kind, bound)| {
                deal_properties.iter().find(|p| p.name == format!("gomark_p{i}")).and_then(|p| rule(p, kind, bound))
            })
            .filter(|r| keys.insert(r.key()))
            .collect();
        if conditional {
            validation_rules.push(closedate_required());
        }
        EffectiveConfig {
            company_id: "c1".into(),
            deal_properties,
            pipelines: pipelines
                .into_iter()
                .filter(|(i, ..)| ids.insert(*i))
                .map(|(i, l, s, o, r)| pipeline(i, l, &s, o, r))
                .collect(),
            validation_rules,
            api_version: version.map(str::to_owned),
            ..EffectiveConfig::default()
        }
    })
}

/// A change made by hand in HubSpot's UI.
#[derive(Debug, Clone)]
enum HandEdit {
    Relabel(usize),
    Archive(usize),
    HandMade(usize),
    RenamePipeline(usize),
    Reprobability(usize, u8),
    /// A rule added (or replaced) by hand on a property.
    RuleByHand(usize),
    /// A pipeline's rules replaced by hand (Pipeline Rules API).
    PipelineRulesByHand(usize),
    /// A rule type removed by hand from a property.
    DropRule(usize, usize),
}

fn hand_edits() -> impl Strategy<Value = Vec<HandEdit>> {
    proptest::collection::vec(
        prop_oneof![
            (0usize..5).prop_map(HandEdit::Relabel),
            (0usize..5).prop_map(HandEdit::Archive),
            (0usize..3).prop_map(HandEdit::HandMade),
            (0usize..2).prop_map(HandEdit::RenamePipeline),
            (0usize..4, 1u8..10).prop_map(|(s, p)| HandEdit::Reprobability(s, p)),
            (0usize..5).prop_map(HandEdit::RuleByHand),
            (0usize..2).prop_map(HandEdit::PipelineRulesByHand),
            (0usize..6, 0usize..4).prop_map(|(i, k)| HandEdit::DropRule(i, k)),
        ],
        0..4,
    )
}

/// Applies `edits` to the portal over its HTTP API, as a person in HubSpot's UI would.
async fn edit_by_hand(http: &reqwest::Client, base: &str, edits: &[HandEdit]) {
    let pipelines: serde_json::Value = http
        .get(format!("{base}/crm/v3/pipelines/deals"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pipelines")
        .json()
        .await
        .expect("json");
    let custom: Vec<&serde_json::Value> = pipelines["results"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["label"].as_str().is_some_and(|l| l.starts_with("Pipeline"))).collect())
        .unwrap_or_default();
    for edit in edits {
        // Edits of things that do not exist are refused by the portal, as in HubSpot.
        let _ = match edit {
            HandEdit::Relabel(i) => {
                http.patch(format!("{base}/crm/v3/properties/deals/gomark_p{i}"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"label": "Edited by hand"}))
                    .send()
                    .await
            }
            HandEdit::Archive(i) => {
                http.delete(format!("{base}/crm/v3/properties/deals/gomark_p{i}")).bearer_auth(TOKEN).send().await
            }
            HandEdit::HandMade(i) => {
                http.post(format!("{base}/crm/v3/properties/deals"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"name": format!("hand_made_{i}"), "label": "Hand made", "type": "string", "fieldType": "text", "groupName": "dealinformation"}))
                    .send()
                    .await
            }
            HandEdit::RenamePipeline(i) => {
                let Some(p) = custom.get(*i) else { continue };
                http.patch(format!("{base}/crm/v3/pipelines/deals/{}", p["id"].as_str().unwrap_or_default()))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"label": format!("Renamed {i}")}))
                    .send()
                    .await
            }
            HandEdit::RuleByHand(i) => {
                let rule_type = if i % 3 == 1 { "MIN_NUMBER" } else { "MAX_LENGTH" };
                http.put(format!("{base}/crm/v3/property-validations/0-3/gomark_p{i}/rule-type/{rule_type}"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"ruleArguments": ["7"]}))
                    .send()
                    .await
            }
            HandEdit::PipelineRulesByHand(i) => {
                let Some(p) = custom.get(*i) else { continue };
                let id = p["id"].as_str().unwrap_or_default();
                http.put(format!("{base}/crm/pipelines-rules/2026-09-beta/0-3/{id}"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"governanceValidationRules": {"noSkippingStagesRule": {"enabledForAllStages": true}}}))
                    .send()
                    .await
            }
            HandEdit::DropRule(i, kind) => {
                // Index 5 is HubSpot's closedate, the rest GoMark's properties.
                let property = if *i == 5 { "closedate".to_owned() } else { format!("gomark_p{i}") };
                let rule_type = ["MAX_LENGTH", "MIN_LENGTH", "MAX_NUMBER", "CONDITIONALLY_REQUIRED"][*kind];
                http.delete(format!("{base}/crm/v3/property-validations/0-3/{property}/rule-type/{rule_type}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
            }
            HandEdit::Reprobability(s, tenths) => {
                let Some(p) = custom.first() else { continue };
                let Some(stage) = p["stages"].as_array().and_then(|st| st.get(*s)) else { continue };
                if stage["metadata"]["isClosed"] == "true" {
                    continue;
                }
                http.patch(format!(
                    "{base}/crm/v3/pipelines/deals/{}/stages/{}",
                    p["id"].as_str().unwrap_or_default(),
                    stage["id"].as_str().unwrap_or_default()
                ))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"metadata": {"probability": format!("{:.1}", f64::from(*tenths) / 10.0)}}))
                .send()
                .await
            }
        };
    }
}

fn valid(config: &EffectiveConfig) -> bool {
    let overlay = CompanyOverlay {
        company_id: "c1".into(),
        deal_properties: config.deal_properties.clone(),
        pipelines: config.pipelines.clone(),
        validation_rules: config.validation_rules.clone(),
        ..CompanyOverlay::default()
    };
    Document { companies: [("c".to_owned(), overlay)].into(), ..Document::default() }.validate().is_ok()
}

fn applicable_ids(plan: &gtm_config::Plan) -> Vec<String> {
    plan.actions.iter().filter(|a| a.blocked.is_none()).map(action_id).collect()
}

async fn check(first: EffectiveConfig, edits: Vec<HandEdit>, second: EffectiveConfig) -> Result<(), TestCaseError> {
    let (sim, addr) = hubspot_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into()).await.expect("sim");
    sim.register_portal(TOKEN, 4242);
    let base = format!("http://{addr}");
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = std::sync::Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", "4242", &Credential::PrivateApp { token: TOKEN.into() }).await.expect("register");
    let client =
        HubSpotClient::new(ClientConfig { base_url: base.clone(), ..ClientConfig::default() }).expect("client");
    let converger = Converger::new(db, portals, client);

    // The first configuration is applied, edited by hand, then the second is applied.
    for (desired, hand) in [(&first, &[][..]), (&second, edits.as_slice())] {
        edit_by_hand(&reqwest::Client::new(), &base, hand).await;
        let plan = converger.plan("c1", desired).await.expect("plan");
        let approved: BTreeSet<String> = applicable_ids(&plan).into_iter().collect();
        let applied = converger.apply("c1", desired, Some(&approved), None).await.expect("apply");
        prop_assert!(applied.failed.is_empty(), "HubSpot refused: {:?}", applied.failed);
        prop_assert!(applied.interrupted.is_none());
        let performed: Vec<String> = applied.performed.iter().map(action_id).collect();
        prop_assert_eq!(&performed, &applicable_ids(&plan), "performed exactly the planned actions, in order");
        let next = converger.plan("c1", desired).await.expect("plan again");
        prop_assert!(applicable_ids(&next).is_empty(), "nothing left after applying:\n{}", next);
        let again = converger.apply("c1", desired, None, None).await.expect("apply again");
        prop_assert!(again.performed.is_empty(), "a second apply writes nothing: {:?}", again.performed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_does_exactly_the_plan(first in desired(), edits in hand_edits(), second in desired()) {
        prop_assume!(valid(&first) && valid(&second));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(check(first, edits, second))?;
    }
}

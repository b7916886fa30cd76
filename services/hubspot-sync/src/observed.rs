//! What a portal holds, read from HubSpot and put in canonical form: the one place where
//! HubSpot's normalisations are handled, for plans, convergence and the observed-state API.

use gtm_config::Observed;
use hubspot_client::{AccessToken, HubSpotClient, Property};

/// What a plan needs to read from a portal: only the kinds the desired state declares, or
/// that GoMark put there before and may have to remove. A baseline of properties alone
/// costs one call per step instead of three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub properties: bool,
    pub groups: bool,
    pub pipelines: bool,
    /// Property validation rules.
    pub validations: bool,
    /// Each pipeline's rules (Pipeline Rules API; one call per pipeline, with `pipelines`).
    pub pipeline_rules: bool,
}

impl Scope {
    pub const ALL: Scope =
        Scope { properties: true, groups: true, pipelines: true, validations: true, pipeline_rules: true };
}

/// Reads a portal's properties, groups and pipelines (in parallel). The raw properties are
/// returned too, for callers that need fields the planner does not use.
pub async fn read(
    client: &HubSpotClient,
    token: &AccessToken,
) -> Result<(Vec<Property>, Observed), hubspot_client::Error> {
    read_scoped(client, token, Scope::ALL).await
}

/// Reads what `scope` names (in parallel); the kinds left out come back empty.
pub async fn read_scoped(
    client: &HubSpotClient,
    token: &AccessToken,
    scope: Scope,
) -> Result<(Vec<Property>, Observed), hubspot_client::Error> {
    let (properties, groups, pipelines, validations) = tokio::try_join!(
        async { if scope.properties { client.list_deal_properties(token).await } else { Ok(Vec::new()) } },
        async { if scope.groups { client.list_deal_property_groups(token).await } else { Ok(Vec::new()) } },
        async { if scope.pipelines { client.list_deal_pipelines(token).await } else { Ok(Vec::new()) } },
        async { if scope.validations { client.list_deal_property_validations(token).await } else { Ok(Vec::new()) } },
    )?;
    let mut observed = normalize(&properties, groups, pipelines);
    observed.validation_rules = validation_rules(validations);
    if scope.pipeline_rules {
        let reads = observed.pipelines.iter().map(|p| client.get_deal_pipeline_rules(token, &p.hubspot_id));
        let rules = futures::future::try_join_all(reads).await?;
        for (pipeline, rules) in observed.pipelines.iter_mut().zip(rules) {
            pipeline.rules = rules.map(pipeline_rules);
        }
    }
    Ok((properties, observed))
}

/// HubSpot's governance rules in the planner's terms (still HubSpot stage ids); a movement
/// rule that covers no stage is no rule.
pub fn pipeline_rules(rules: hubspot_client::GovernanceRules) -> gtm_config::PipelineRules {
    let stage_rule = |r: hubspot_client::StageRuleSpec| {
        (r.enabled_for_all_stages || !r.pipeline_stage_ids.is_empty())
            .then_some(gtm_config::StageRule { all_stages: r.enabled_for_all_stages, stages: r.pipeline_stage_ids })
    };
    gtm_config::PipelineRules {
        no_backwards_movement: rules.no_backwards_movement_rule.and_then(stage_rule),
        no_skipping_stages: rules.no_skipping_stages_rule.and_then(stage_rule),
        creation_stages: rules.object_creation_rule.map(|r| r.pipeline_stage_ids).unwrap_or_default(),
    }
}

/// The portal's validation rules, one per property and rule type, in a stable order.
pub fn validation_rules(validations: Vec<hubspot_client::PropertyValidations>) -> Vec<gtm_config::ObservedRule> {
    let mut rules: Vec<gtm_config::ObservedRule> = validations
        .into_iter()
        .flat_map(|p| {
            let property = p.property_name;
            p.property_validation_rules.into_iter().map(move |r| gtm_config::ObservedRule {
                property: property.clone(),
                rule_type: r.rule_type,
                rule_arguments: r.rule_arguments,
                should_apply_normalization: r.should_apply_normalization,
            })
        })
        .collect();
    rules.sort_by(|a, b| (&a.property, &a.rule_type).cmp(&(&b.property, &b.rule_type)));
    rules.dedup_by(|a, b| a.property == b.property && a.rule_type == b.rule_type);
    rules
}

/// HubSpot's objects in the planner's terms, in HubSpot's canonical forms: archived
/// things dropped, probabilities as "0.1", `isClosed` filled in when HubSpot left it out
/// (closed-won is closed at 1.0, closed-lost at 0.0).
pub fn normalize(
    properties: &[hubspot_client::Property],
    groups: Vec<hubspot_client::PropertyGroup>,
    pipelines: Vec<hubspot_client::Pipeline>,
) -> Observed {
    Observed {
        properties: properties
            .iter()
            .filter(|p| !p.archived)
            .map(|p| gtm_config::ObservedProperty {
                name: p.name.clone(),
                label: p.label.clone(),
                property_type: p.r#type.clone(),
                field_type: p.field_type.clone(),
                group_name: p.group_name.clone(),
                description: p.description.clone(),
                options: p
                    .options
                    .iter()
                    .map(|o| gtm_config::PropertyOption {
                        label: o.label.clone(),
                        value: o.value.clone(),
                        display_order: o.display_order.map(|d| d as i32),
                        hidden: o.hidden,
                    })
                    .collect(),
                hubspot_defined: p.hubspot_defined.unwrap_or(false),
                has_unique_value: p.has_unique_value,
            })
            .collect(),
        groups: groups
            .into_iter()
            .filter(|g| !g.archived)
            .map(|g| gtm_config::ObservedGroup { name: g.name, label: g.label, display_order: g.display_order as i32 })
            .collect(),
        pipelines: pipelines
            .into_iter()
            .filter(|p| !p.archived)
            .map(|p| gtm_config::ObservedPipeline {
                rules: None,
                hubspot_id: p.id,
                label: p.label,
                display_order: p.display_order as i32,
                stages: p
                    .stages
                    .into_iter()
                    .filter(|s| !s.archived)
                    .map(|s| {
                        let probability = s.probability().unwrap_or(0.0);
                        gtm_config::ObservedStage {
                            is_closed: s.is_closed().unwrap_or(probability == 0.0 || probability == 1.0),
                            probability: hubspot_client::normalize_probability(probability),
                            hubspot_id: s.id,
                            label: s.label,
                            display_order: s.display_order as i32,
                        }
                    })
                    .collect(),
            })
            .collect(),
        validation_rules: Vec::new(),
        stage_deals: Vec::new(),
        // The pin is hubspot-sync's record, not something HubSpot reports: the caller sets it.
        api_version: None,
    }
}

//! What a portal holds, read from HubSpot and put in canonical form: the one place where
//! HubSpot's normalisations are handled, for plans, convergence and the observed-state API.

use gtm_config::Observed;
use hubspot_client::{AccessToken, HubSpotClient, Property};

/// Reads a portal's properties, groups and pipelines (in parallel). The raw properties are
/// returned too, for callers that need fields the planner does not use.
pub async fn read(
    client: &HubSpotClient,
    token: &AccessToken,
) -> Result<(Vec<Property>, Observed), hubspot_client::Error> {
    let (properties, groups, pipelines) = tokio::try_join!(
        client.list_deal_properties(token),
        client.list_deal_property_groups(token),
        client.list_deal_pipelines(token),
    )?;
    let observed = normalize(&properties, groups, pipelines);
    Ok((properties, observed))
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
        // The pin is hubspot-sync's record, not something HubSpot reports: the caller sets it.
        api_version: None,
    }
}

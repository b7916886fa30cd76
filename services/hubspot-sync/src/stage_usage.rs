//! Which HubSpot stages still hold deals: asked before a plan deletes stages, since
//! HubSpot refuses those deletions.

use gtm_config::DealsInStages;
use hubspot_client::{AccessToken, Filter, FilterGroup, HubSpotClient, SearchRequest};
use std::collections::BTreeMap;

/// The stages of `stages` that hold at least one deal. Search (not the synced deals) is
/// the judge, because HubSpot's own check is what refuses; it costs one search per stage
/// found in use plus one per pipeline, never one per deal.
pub async fn stages_in_use(
    client: &HubSpotClient,
    token: &AccessToken,
    stages: &DealsInStages,
) -> Result<DealsInStages, hubspot_client::Error> {
    let mut by_pipeline: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (pipeline, stage) in stages {
        by_pipeline.entry(pipeline).or_default().push(stage);
    }
    let mut used = DealsInStages::new();
    for (pipeline, mut remaining) in by_pipeline {
        // Each round finds one deal in a stage not yet known to be used, so the loop ends
        // after at most one round per stage.
        while !remaining.is_empty() {
            let request = SearchRequest {
                filter_groups: vec![FilterGroup::new(vec![
                    Filter::eq("pipeline", pipeline),
                    Filter::in_list("dealstage", remaining.iter().copied(), false),
                ])],
                properties: vec!["dealstage".into()],
                limit: 1,
                ..SearchRequest::default()
            };
            let page = client.search_deals(token, &request).await?;
            let Some(stage) = page.results.first().and_then(|d| d.properties.get("dealstage").cloned().flatten())
            else {
                break;
            };
            let before = remaining.len();
            remaining.retain(|s| *s != stage);
            if remaining.len() == before {
                // A deal outside the asked stages: the search did not filter; stop asking.
                break;
            }
            used.insert((pipeline.to_owned(), stage));
        }
    }
    Ok(used)
}

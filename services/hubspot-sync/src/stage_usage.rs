//! Which HubSpot stages still hold deals: asked before a plan deletes stages, since
//! HubSpot refuses those deletions; how many, for the stages whose deals a plan moves; and
//! which deals those are, for the move.

use gtm_config::{DealCount, DealsInStages, StageDeals};
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

/// Counts the deals of each stage in `needed`, and of them those without a value for each
/// listed property, so a plan can say how many deals it moves and how many a rule would
/// refuse. One search per stage and per property (`limit: 1`, HubSpot's `total`).
pub async fn count_deals(
    client: &HubSpotClient,
    token: &AccessToken,
    needed: &[DealCount],
) -> Result<Vec<StageDeals>, hubspot_client::Error> {
    let mut out = Vec::with_capacity(needed.len());
    for n in needed {
        let count = |extra: Option<Filter>| {
            let mut filters = vec![Filter::eq("pipeline", &n.pipeline), Filter::eq("dealstage", &n.stage)];
            filters.extend(extra);
            SearchRequest {
                filter_groups: vec![FilterGroup::new(filters)],
                properties: vec!["dealstage".into()],
                limit: 1,
                ..SearchRequest::default()
            }
        };
        let deals = client.search_deals(token, &count(None)).await?.total;
        let mut lacking = BTreeMap::new();
        for property in n.lacking.iter().filter(|_| deals > 0) {
            let request = count(Some(Filter::has_property(property, true)));
            lacking.insert(property.clone(), client.search_deals(token, &request).await?.total);
        }
        out.push(StageDeals { pipeline: n.pipeline.clone(), stage: n.stage.clone(), deals, lacking });
    }
    Ok(out)
}

/// The ids of the deals in a HubSpot stage, up to search's 10,000 cap (a move of more
/// takes several runs: each plans again with what is left).
pub async fn deals_in_stage(
    client: &HubSpotClient,
    token: &AccessToken,
    pipeline: &str,
    stage: &str,
) -> Result<Vec<String>, hubspot_client::Error> {
    let mut ids = Vec::new();
    let mut after = None;
    // Bounded: search pages through at most 10,000 results, 200 per page.
    for _ in 0..50 {
        let request = SearchRequest {
            filter_groups: vec![FilterGroup::new(vec![
                Filter::eq("pipeline", pipeline),
                Filter::eq("dealstage", stage),
            ])],
            properties: vec!["dealstage".into()],
            limit: 200,
            after: after.take(),
            ..SearchRequest::default()
        };
        let page = client.search_deals(token, &request).await?;
        ids.extend(page.results.into_iter().map(|d| d.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(ids)
}

//! Scale: 1,000 portals, each with its own defaults and budget.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::{PIPELINES, start};
use hubspot_sim::{FIRST_PORTAL_ID, SimConfig};

const PORTALS: usize = 1_000;
const CONCURRENCY: usize = 32;

#[tokio::test]
async fn a_thousand_portals_each_answer() {
    let sim = Arc::new(start(SimConfig::default()).await);
    let tokens: Vec<String> = (0..PORTALS).map(|i| format!("portal-token-{i}")).collect();
    for chunk in tokens.chunks(CONCURRENCY) {
        let mut set = JoinSet::new();
        for token in chunk {
            let sim = Arc::clone(&sim);
            let token = token.clone();
            set.spawn(async move {
                let (status, body) = sim.json(Method::GET, &token, PIPELINES, None).await;
                (status, body["results"][0]["stages"].as_array().map(Vec::len))
            });
        }
        while let Some(joined) = set.join_next().await {
            let (status, stages) = joined.expect("task");
            assert_eq!(status, StatusCode::OK);
            assert_eq!(stages, Some(7));
        }
    }
    let ids: HashSet<u64> = tokens.iter().map(|t| sim.sim.portal_id(t).expect("portal")).collect();
    assert_eq!(ids.len(), PORTALS);
    assert!(ids.iter().all(|id| (FIRST_PORTAL_ID..FIRST_PORTAL_ID + PORTALS as u64).contains(id)));
    for id in [FIRST_PORTAL_ID, FIRST_PORTAL_ID + 499, FIRST_PORTAL_ID + 999] {
        assert_eq!(sim.sim.max_requests_in_any_window(id), 1);
        assert_eq!(sim.sim.rate_limited_count(id), 0);
    }
    assert_eq!(sim.sim.requests().len(), PORTALS);
}

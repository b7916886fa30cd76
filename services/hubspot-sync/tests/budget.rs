//! Twenty portals at 100 requests per 10 s each, driven at full speed through the shared
//! per-portal budget: no request fails, and the simulator confirms no portal ever received
//! more than its limit in any rolling window. Runs on the in-memory cache, and on Redis
//! when configured (two clients then share one budget, as two replicas would).

use gomark_cache::{Cache, MemoryCache, RedisCache};
use gomark_hubspot_sync::budget::PortalBudget;
use hubspot_client::{AccessToken, ClientConfig, HubSpotClient};
use hubspot_sim::SimConfig;
use std::sync::Arc;
use std::time::Duration;

const PORTALS: u64 = 20;
const REQUESTS_PER_PORTAL: usize = 120;
const LIMIT: u32 = 100;

async fn drive(label: &str, caches: Vec<Arc<dyn Cache>>) {
    let config = SimConfig { burst_limit: LIMIT, burst_window: Duration::from_secs(10), ..SimConfig::default() };
    let (sim, addr) = hubspot_sim::spawn(config, ([127, 0, 0, 1], 0).into()).await.expect("sim");
    // One client per cache: with Redis they stand for two replicas sharing the budget.
    let clients: Vec<HubSpotClient> = caches
        .into_iter()
        .map(|cache| {
            HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
                .expect("client")
                .with_budget(Arc::new(PortalBudget::new(cache)))
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PORTALS {
        let token = format!("budget-{label}-{p}");
        sim.register_portal(&token, 50_000 + p);
        for i in 0..REQUESTS_PER_PORTAL {
            let client = clients[i % clients.len()].clone();
            let token = AccessToken::new(token.clone()).for_portal((50_000 + p).to_string());
            tasks.spawn(async move { client.list_deal_properties(&token).await.map(|_| ()) });
        }
    }
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(Ok(()))) {
            failures += 1;
        }
    }
    assert_eq!(failures, 0, "{label}: every request succeeded");
    for p in 0..PORTALS {
        let portal = 50_000 + p;
        assert!(
            sim.max_requests_in_any_window(portal) <= LIMIT,
            "{label}: portal {portal} exceeded its limit: {} in a window",
            sim.max_requests_in_any_window(portal)
        );
        assert_eq!(sim.rate_limited_count(portal), 0, "{label}: portal {portal} was answered 429");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_portals_at_full_speed_never_exceed_their_limit() {
    drive("memory", vec![Arc::new(MemoryCache::new("budget"))]).await;
    match gomark_testkit::redis_url() {
        Some(url) => {
            let prefix = gomark_testkit::unique("budget");
            let replica = || -> Arc<dyn Cache> {
                Arc::new(RedisCache::new(&url, &prefix, Duration::from_secs(2)).expect("redis"))
            };
            drive("redis", vec![replica(), replica()]).await;
        }
        None => gomark_testkit::note_skipped("shared HubSpot budget", gomark_testkit::REDIS_VAR),
    }
}

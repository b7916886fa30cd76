//! The per-portal `RequestBudget` hook: once per attempt, observed after every response, and a
//! spent daily budget fails without any HTTP call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hubspot_client::{
    AccessToken, BudgetError, Error, HubSpotClient, Permit, RateLimitInfo, RateLimitPolicy, RequestBudget, RequestKind,
    SearchRequest,
};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, TOKEN, token};

/// `(key, kind, rate-limit headers, status)` of one `observe` call.
type Observation = (String, RequestKind, Option<RateLimitInfo>, u16);

#[derive(Default)]
struct Recorder {
    acquired: Mutex<Vec<(String, RequestKind)>>,
    observed: Mutex<Vec<Observation>>,
    finished: Mutex<Vec<Permit>>,
    exhausted: bool,
}

#[async_trait]
impl RequestBudget for Recorder {
    async fn acquire(&self, key: &str, kind: RequestKind) -> Result<Permit, BudgetError> {
        self.acquired.lock().expect("lock").push((key.to_owned(), kind));
        if self.exhausted {
            return Err(BudgetError::DailyExhausted { retry_after: Duration::from_secs(3600) });
        }
        let n = self.acquired.lock().expect("lock").len();
        Ok(Permit(format!("p{n}")))
    }

    async fn finish(&self, _key: &str, _kind: RequestKind, permit: Permit) {
        self.finished.lock().expect("lock").push(permit);
    }

    fn observe(&self, key: &str, kind: RequestKind, info: Option<&RateLimitInfo>, status: u16) {
        self.observed.lock().expect("lock").push((key.to_owned(), kind, info.copied(), status));
    }
}

#[tokio::test]
async fn acquire_runs_before_every_attempt_and_observe_after_every_response() {
    let server = FakeServer::start().await;
    server
        .push(Reply::empty(502).header("X-HubSpot-RateLimit-Remaining", "9"))
        .push(Reply::json(429, json!({"policyName": "TEN_SECONDLY_ROLLING", "message": "You have reached your ten_secondly_rolling limit."})))
        .push(Reply::json(200, json!({"results": []})).header("X-HubSpot-RateLimit-Remaining", "7"));
    let budget = Arc::new(Recorder::default());
    let client = server.client().with_budget(budget.clone());
    let portal = token().for_portal("62515");
    client.list_deal_properties(&portal).await.expect("third attempt succeeds");

    let acquired = budget.acquired.lock().expect("lock").clone();
    assert_eq!(acquired, vec![("62515".to_owned(), RequestKind::Standard); 3]);
    let finished = budget.finished.lock().expect("lock").clone();
    assert_eq!(
        finished,
        vec![Permit("p1".into()), Permit("p2".into()), Permit("p3".into())],
        "each attempt hands its permit back"
    );
    let observed = budget.observed.lock().expect("lock").clone();
    let statuses: Vec<u16> = observed.iter().map(|o| o.3).collect();
    assert_eq!(statuses, vec![502, 429, 200]);
    assert_eq!(observed[0].2.and_then(|i| i.remaining), Some(9));
    assert_eq!(observed[1].2, None);
    assert_eq!(observed[2].2.and_then(|i| i.remaining), Some(7));
    assert!(observed.iter().all(|o| o.0 == "62515" && o.1 == RequestKind::Standard));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn search_draws_from_the_search_budget_and_unlabelled_tokens_are_hashed() {
    let server = FakeServer::start().await;
    server.always(Reply::json(200, json!({"total": 0, "results": []})));
    let budget = Arc::new(Recorder::default());
    let client = server.client().with_budget(budget.clone());
    client.search_deals(&token(), &SearchRequest::default()).await.expect("search");
    let acquired = budget.acquired.lock().expect("lock").clone();
    assert_eq!(acquired.len(), 1);
    let (key, kind) = &acquired[0];
    assert_eq!(*kind, RequestKind::Search);
    assert!(key.starts_with("token-sha256:"), "{key}");
    assert!(!key.contains(TOKEN) && !key.contains("11111111"), "{key}");
    assert_eq!(*key, token().budget_key());
    assert_ne!(*key, AccessToken::new("pat-na1-another-portal").budget_key());
}

#[tokio::test]
async fn daily_exhausted_short_circuits_without_http() {
    let server = FakeServer::start().await;
    server.always(Reply::json(200, json!({"results": []})));
    let budget = Arc::new(Recorder { exhausted: true, ..Recorder::default() });
    let client = server.client().with_budget(budget.clone());
    let err = client.list_deal_properties(&token()).await.expect_err("spent");
    assert_eq!(
        err,
        Error::RateLimited { policy: RateLimitPolicy::Daily, retry_after: Some(Duration::from_secs(3600)) }
    );
    assert!(!err.is_retryable());
    let err = client.search_deals(&token(), &SearchRequest::default()).await.expect_err("spent");
    assert!(matches!(err, Error::RateLimited { policy: RateLimitPolicy::Daily, .. }));
    assert!(server.requests().is_empty(), "no HTTP call at all");
    assert_eq!(budget.acquired.lock().expect("lock").len(), 2, "asked once per call, never retried");
    assert!(budget.observed.lock().expect("lock").is_empty());

    // Without a budget (the default) the same client type just calls HubSpot.
    let plain: HubSpotClient = server.client();
    plain.list_deal_properties(&token()).await.expect("no budget");
    assert_eq!(server.requests().len(), 1);
    assert!(format!("{:?}", client).contains("budget: true"));
}

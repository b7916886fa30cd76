//! Webhooks: signed delivery to a tiny axum receiver, batching, duplicates, lost batches,
//! retries and shuffling.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hubspot_client::webhook::{
    SignatureVersion, SignedRequest, VerifyOptions, WebhookEvent, WebhookSecret, parse_batch, verify,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{DEALS, start, wait_until};
use hubspot_sim::{HubSpotSim, SimConfig, WebhookConfig, WebhookStats};

const SECRET: &str = "s3cret-client-secret";

#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
    ok: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Answer this many requests with 500 before accepting.
    fail_first: Arc<AtomicU32>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    fn delivered(&self) -> Vec<WebhookEvent> {
        self.hits().iter().filter(|h| h.ok).flat_map(|h| parse_batch(&h.body).expect("event array")).collect()
    }
}

async fn handle(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fail = receiver.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    receiver.hits.lock().expect("hits").push(Hit { headers, body, ok: !fail });
    if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
}

/// Starts a receiver; the URL carries a query string so the signature must cover it.
async fn start_receiver(fail_first: u32) -> (String, Receiver) {
    let state = Receiver { fail_first: Arc::new(AtomicU32::new(fail_first)), ..Receiver::default() };
    let app = Router::new().route("/hooks/hubspot", post(handle)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/hubspot?source=sim"), state)
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        target_url: url.to_owned(),
        client_secret: SECRET.to_owned(),
        app_id: 777,
        batch_size: 10,
        batch_delay: Duration::from_millis(50),
        duplicate_rate: 0.0,
        shuffle: false,
        max_attempts: 3,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const WAIT: Duration = Duration::from_secs(5);

async fn wait_events(receiver: &Receiver, n: usize) {
    let done = wait_until(WAIT, || receiver.delivered().len() >= n).await;
    assert!(done, "expected {n} events, got {}", receiver.delivered().len());
}

#[tokio::test]
async fn delivered_signed_and_batched() {
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(0).await;
    sim.sim.configure_webhooks(config(&url));

    let inputs: Vec<Value> =
        (0..25).map(|i| json!({"properties": {"dealname": format!("D{i}"), "dealstage": "closedwon"}})).collect();
    let (status, created) =
        sim.json(Method::POST, "tok", &format!("{DEALS}/batch/create"), Some(json!({"inputs": inputs}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let ids: HashSet<u64> = created["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|d| d["id"].as_str().expect("id").parse().expect("numeric"))
        .collect();
    wait_events(&receiver, 25).await;

    let hits = receiver.hits();
    let mut sizes: Vec<usize> = hits.iter().map(|h| parse_batch(&h.body).expect("batch").len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 10, 10], "two full batches at once, the rest after batch_delay");
    let secret = WebhookSecret::new(SECRET);
    for hit in &hits {
        assert_eq!(hit.headers["content-type"], "application/json");
        let req = SignedRequest { method: "POST", uri: &url, body: &hit.body, headers: &hit.headers };
        assert_eq!(verify(&secret, &req, now_ms(), &VerifyOptions::default()), Ok(SignatureVersion::V3));
        assert!(verify(&WebhookSecret::new("wrong"), &req, now_ms(), &VerifyOptions::default()).is_err());
    }
    let portal = sim.sim.portal_id("tok").expect("portal");
    let events = receiver.delivered();
    let event_ids: HashSet<u64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(event_ids.len(), 25);
    for event in &events {
        assert_eq!(event.subscription_type, "deal.creation");
        assert_eq!((event.portal_id, event.app_id, event.attempt_number), (portal, 777, 0));
        // Written with the portal's token: the integration is the source.
        assert_eq!(event.change_source.as_deref(), Some("INTEGRATION"));
        assert_eq!(event.change_flag.as_deref(), Some("NEW"));
        assert!(ids.contains(&event.object_id.expect("objectId")));
        assert!(event.occurred_at > 0);
    }

    // A PATCH fires one propertyChange per changed value; DELETE fires deal.deletion.
    let id = ids.iter().next().expect("id").to_string();
    let patch = json!({"properties": {"dealstage": "closedlost", "amount": "10"}});
    let (status, _) = sim.json(Method::PATCH, "tok", &format!("{DEALS}/{id}"), Some(patch)).await;
    assert_eq!(status, StatusCode::OK);
    let resp = sim.call(Method::DELETE, "tok", &format!("{DEALS}/{id}"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let expected_total = 28;
    wait_events(&receiver, expected_total).await;
    let later: Vec<WebhookEvent> = receiver.delivered().into_iter().skip(25).collect();
    let changes: HashMap<String, String> = later
        .iter()
        .filter(|e| e.subscription_type == "deal.propertyChange")
        .map(|e| (e.property_name.clone().expect("name"), e.property_value.clone().expect("value")))
        .collect();
    assert_eq!(changes.get("dealstage").map(String::as_str), Some("closedlost"));
    assert_eq!(changes.get("amount").map(String::as_str), Some("10"));
    let deletion = later.iter().find(|e| e.subscription_type == "deal.deletion").expect("deletion");
    assert_eq!(deletion.object_id.map(|o| o.to_string()), Some(id));
    assert_eq!(deletion.change_flag.as_deref(), Some("DELETED"));

    // Counted once each response is back, just after the receiver saw the batch.
    assert!(wait_until(WAIT, || sim.sim.webhook_stats().batches_sent == receiver.hits().len() as u64).await);
    let stats = sim.sim.webhook_stats();
    assert_eq!(stats.events_sent, expected_total as u64);
    assert_eq!((stats.failures, stats.batches_dropped), (0, 0));
    assert_eq!(stats.batches_sent, receiver.hits().len() as u64);
}

#[tokio::test]
async fn duplicates_are_sent_in_later_batches() {
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(0).await;
    sim.sim.configure_webhooks(WebhookConfig { duplicate_rate: 1.0, batch_size: 100, ..config(&url) });
    sim.sim.create_deals("tok", 5, "closedwon", "default");
    wait_events(&receiver, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = receiver.delivered();
    assert_eq!(events.len(), 10, "each event exactly twice, duplicates are not duplicated again");
    let mut counts: HashMap<(u64, u64, u64, i64), usize> = HashMap::new();
    for event in &events {
        *counts.entry(event.dedupe_key()).or_default() += 1;
    }
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|n| *n == 2));
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "originals in one batch, duplicates in a later one");
    assert_eq!(sim.sim.webhook_stats().events_sent, 10);
}

#[tokio::test]
async fn dropped_batches_are_lost() {
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(0).await;
    sim.sim.configure_webhooks(WebhookConfig { batch_size: 5, ..config(&url) });
    sim.sim.drop_next_batches(1);
    let first = sim.sim.create_deals("tok", 10, "closedwon", "default");
    let done = wait_until(WAIT, || sim.sim.webhook_stats().batches_sent == 1).await;
    assert!(done);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = receiver.delivered();
    assert_eq!(events.len(), 5, "exactly one batch of 5 was lost");
    // Oldest first: the first five deals' events were the dropped batch.
    let delivered: HashSet<String> = events.iter().filter_map(|e| e.object_id).map(|o| o.to_string()).collect();
    assert_eq!(delivered, first[5..].iter().cloned().collect());
    assert_eq!(
        sim.sim.webhook_stats(),
        WebhookStats { batches_sent: 1, batches_dropped: 1, events_sent: 5, failures: 0 }
    );

    sim.sim.create_deals("tok", 3, "closedwon", "default");
    wait_events(&receiver, 8).await;
    assert_eq!(sim.sim.webhook_stats().batches_dropped, 1);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_attempt_numbers() {
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(2).await;
    sim.sim.configure_webhooks(WebhookConfig { max_attempts: 5, ..config(&url) });
    sim.sim.create_deals("tok", 1, "closedwon", "default");
    wait_events(&receiver, 1).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    let attempts: Vec<(u32, u64)> = hits
        .iter()
        .map(|h| {
            let event = parse_batch(&h.body).expect("batch").remove(0);
            (event.attempt_number, event.event_id)
        })
        .collect();
    assert_eq!(attempts.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(attempts.iter().all(|a| a.1 == attempts[0].1), "retries keep the eventId");
    // The batch counts as sent once its response is back, just after the receiver saw it.
    assert!(wait_until(WAIT, || sim.sim.webhook_stats().batches_sent == 1).await);
    let stats = sim.sim.webhook_stats();
    assert_eq!((stats.batches_sent, stats.failures), (1, 2));

    // Giving up after max_attempts.
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(10).await;
    sim.sim.configure_webhooks(WebhookConfig { max_attempts: 2, ..config(&url) });
    sim.sim.create_deals("tok", 1, "closedwon", "default");
    assert!(wait_until(WAIT, || sim.sim.webhook_stats().failures == 2).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.hits().len(), 2);
    assert_eq!(sim.sim.webhook_stats().batches_sent, 0);
}

#[tokio::test]
async fn shuffled_events_from_all_portals_arrive_once() {
    let sim = start(SimConfig::default()).await;
    let (url, receiver) = start_receiver(0).await;
    sim.sim.configure_webhooks(WebhookConfig { shuffle: true, batch_size: 3, ..config(&url) });
    let mut ids: Vec<String> = sim.sim.create_deals("a", 6, "closedwon", "default");
    ids.extend(sim.sim.create_deals("b", 6, "closedwon", "default"));
    wait_events(&receiver, 12).await;
    let events = receiver.delivered();
    let mut got: Vec<String> = events.iter().filter_map(|e| e.object_id).map(|o| o.to_string()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    let portals: HashSet<u64> = events.iter().map(|e| e.portal_id).collect();
    assert_eq!(portals.len(), 2);
    assert!(receiver.hits().iter().all(|h| parse_batch(&h.body).expect("batch").len() <= 3));
}

/// A receiver that takes `delay` over each request and counts how many it holds at once.
#[derive(Clone, Default)]
struct SlowReceiver {
    batches: Arc<Mutex<Vec<usize>>>,
    now: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
}

async fn slow(State((receiver, delay)): State<(SlowReceiver, Duration)>, body: Bytes) -> StatusCode {
    let now = receiver.now.fetch_add(1, Ordering::SeqCst) + 1;
    receiver.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    receiver.batches.lock().expect("batches").push(parse_batch(&body).expect("event array").len());
    receiver.now.fetch_sub(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn while_every_delivery_slot_is_busy_events_wait_and_leave_in_fuller_batches() {
    let sim = start(SimConfig::default()).await;
    let receiver = SlowReceiver::default();
    let app = Router::new().route("/hooks", post(slow)).with_state((receiver.clone(), Duration::from_millis(200)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    sim.sim.configure_webhooks(WebhookConfig {
        batch_size: 100,
        batch_delay: Duration::from_millis(1),
        ..config(&url)
    });
    // One deal at a time, a little apart: each would be a batch of its own if batches were cut
    // whether or not a slot is free.
    for _ in 0..200 {
        sim.sim.create_deals("a", 1, "closedwon", "default");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered = || receiver.batches.lock().expect("batches").iter().sum::<usize>();
    assert!(wait_until(Duration::from_secs(10), || delivered() == 200).await, "got {}", delivered());
    let batches = receiver.batches.lock().expect("batches").clone();
    assert!(receiver.most.load(Ordering::SeqCst) <= 10, "at most 10 deliveries at once");
    assert!(batches.len() < 60, "{} batches for 200 events: {batches:?}", batches.len());
    assert!(batches.iter().any(|n| *n > 10), "a batch gathered what waited: {batches:?}");
}

#[tokio::test]
async fn stop_webhooks_and_unconfigured_simulators_send_nothing() {
    let (url, receiver) = start_receiver(0).await;
    let sim = HubSpotSim::new(SimConfig::default());
    sim.create_deals("tok", 2, "closedwon", "default");
    sim.configure_webhooks(config(&url));
    sim.create_deals("tok", 1, "closedwon", "default");
    wait_events(&receiver, 1).await;
    sim.stop_webhooks();
    sim.create_deals("tok", 3, "closedwon", "default");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.delivered().len(), 1, "only the event fired while configured");
    assert_eq!(sim.pending_webhook_events(), 0);
}

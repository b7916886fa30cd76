//! Webhook delivery (CONTRACT.md §7): deal events from every portal, POSTed in signed batches.
//!
//! Every deal write queues events (`deal.creation`, one `deal.propertyChange` per changed
//! property, `deal.deletion`) while webhooks are configured; events are discarded otherwise,
//! like HubSpot without subscriptions. A dispatcher task collects events for `batch_delay`
//! (counted from the oldest queued event; a full batch goes out at once) and hands each batch of
//! at most `batch_size` events to a delivery task, which POSTs the JSON array with
//! `X-HubSpot-Signature-v3` / `X-HubSpot-Request-Timestamp` and retries connection errors,
//! timeouts (5 s), 5xx and 429 up to `max_attempts` times (`attemptNumber` 0, 1, …; waits of
//! 100 ms × 2^attempt with jitter, capped at 5 s — HubSpot's ~24 h schedule compressed for
//! tests; a 429's `Retry-After` is honoured up to the same cap). Other 4xx answers are not
//! retried. After a successful delivery, each event is re-sent once in a later batch with
//! probability `duplicate_rate` (same `eventId` and `occurredAt`); `shuffle` picks batch members
//! at random, reordering events across batches. At most 10 deliveries run concurrently, and a
//! batch is cut only when one of them is free: while all are busy, events wait and leave in
//! fuller batches.
//!
//! `eventId` counts per portal, so it is not unique across portals (HubSpot promises no
//! uniqueness either); `subscriptionId` is stable per subscription type (per property for
//! property changes).
//!
//! **Lifetime:** the dispatcher holds only a weak reference to the simulator's webhook state.
//! It exits when the last `HubSpotSim` handle is dropped, on `stop_webhooks`, when
//! `configure_webhooks` replaces it, or when its tokio runtime shuts down. In-flight deliveries
//! finish their (bounded) retries, but make no further attempts once webhooks are stopped or
//! reconfigured.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hubspot_client::webhook::{WebhookSecret, sign_v3};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::events::{Change, WireEvent};
use crate::lock;
use crate::model::now_ms;

/// Largest batch HubSpot sends (and the cap on [`WebhookConfig::batch_size`]).
pub const MAX_WEBHOOK_BATCH: usize = 100;
/// Per-request timeout, as HubSpot's.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENT_DELIVERIES: usize = 10;
/// Queue bound; beyond it the oldest events are discarded (keeps memory bounded when the target
/// is down for long).
const MAX_QUEUED_EVENTS: usize = 100_000;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// Where and how the simulator delivers webhooks. `Debug` hides the client secret.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    /// URL the batches are POSTed to; also the URI the v3 signature covers, verbatim.
    pub target_url: String,
    /// The app's client secret (HMAC key of the v3 signature).
    pub client_secret: String,
    /// `appId` carried by every event.
    pub app_id: u64,
    /// Events per request, clamped to 1..=100.
    pub batch_size: usize,
    /// How long events are collected before a (not yet full) batch is sent.
    pub batch_delay: Duration,
    /// Probability (0.0–1.0) that a delivered event is delivered again in a later batch.
    pub duplicate_rate: f64,
    /// Pick batch members at random instead of oldest first.
    pub shuffle: bool,
    /// Delivery attempts per batch (at least 1).
    pub max_attempts: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            target_url: String::new(),
            client_secret: String::new(),
            app_id: 1,
            batch_size: MAX_WEBHOOK_BATCH,
            batch_delay: Duration::from_millis(100),
            duplicate_rate: 0.0,
            shuffle: false,
            max_attempts: 10,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("target_url", &self.target_url)
            .field("client_secret", &"***")
            .field("app_id", &self.app_id)
            .field("batch_size", &self.batch_size)
            .field("batch_delay", &self.batch_delay)
            .field("duplicate_rate", &self.duplicate_rate)
            .field("shuffle", &self.shuffle)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Delivery counters since the simulator was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Batches delivered (answered 2xx).
    pub batches_sent: u64,
    /// Batches discarded by `drop_next_batches` (never sent).
    pub batches_dropped: u64,
    /// Events in delivered batches (duplicates included).
    pub events_sent: u64,
    /// Failed delivery attempts (error, timeout or non-2xx), retried or not.
    pub failures: u64,
}

#[derive(Debug)]
struct Queued {
    event: WireEvent,
    enqueued: Instant,
    /// Already a duplicate: never duplicated again (else a rate of 1.0 would never end).
    duplicate: bool,
}

/// One configuration generation and its delivery resources.
struct Active {
    generation: u64,
    config: WebhookConfig,
    secret: WebhookSecret,
    client: Option<reqwest::Client>,
    notify: Notify,
    /// Delivery slots. A batch is cut only when one is free: while every slot is busy events
    /// wait in the queue and leave in fuller batches, as HubSpot throttles to
    /// `maxConcurrentRequests`, instead of as many small batches waiting in line.
    permits: Arc<Semaphore>,
    /// Whether this generation's dispatcher has been spawned.
    started: AtomicBool,
}

#[derive(Default)]
struct State {
    active: Option<Arc<Active>>,
    generation: u64,
    queue: VecDeque<Queued>,
    drop_next: u32,
    stats: WebhookStats,
}

impl State {
    fn is_current(&self, generation: u64) -> bool {
        self.active.as_ref().is_some_and(|a| a.generation == generation)
    }
}

/// The simulator's webhook state, shared with the dispatcher (weakly) and deliveries.
#[derive(Default)]
pub(crate) struct Webhooks {
    state: Mutex<State>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Webhooks")
            .field("config", &state.active.as_ref().map(|a| &a.config))
            .field("queued", &state.queue.len())
            .field("stats", &state.stats)
            .finish()
    }
}

enum Next {
    Stop,
    Wait(Option<Duration>),
}

enum Attempt {
    Delivered,
    Retry(Option<Duration>),
    GiveUp,
}

impl Webhooks {
    /// Starts (or replaces) delivery. The dispatcher is spawned on the current tokio runtime;
    /// outside one, it is spawned by the first write made inside a runtime (HTTP handlers
    /// always are). Returns the dispatcher's handle when it was spawned here.
    pub fn configure(self: &Arc<Self>, mut config: WebhookConfig) -> Option<JoinHandle<()>> {
        config.batch_size = config.batch_size.clamp(1, MAX_WEBHOOK_BATCH);
        config.duplicate_rate =
            if config.duplicate_rate.is_nan() { 0.0 } else { config.duplicate_rate.clamp(0.0, 1.0) };
        config.max_attempts = config.max_attempts.max(1);
        // Without a client every attempt fails, which the stats then show.
        let client = gomark_vendor_http::tls::client_builder().timeout(DELIVERY_TIMEOUT).build().ok();
        let active = {
            let mut state = lock(&self.state);
            state.generation += 1;
            let active = Arc::new(Active {
                generation: state.generation,
                secret: WebhookSecret::new(config.client_secret.clone()),
                config,
                client,
                notify: Notify::new(),
                permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)),
                started: AtomicBool::new(false),
            });
            if let Some(old) = state.active.replace(Arc::clone(&active)) {
                old.notify.notify_one();
            }
            active
        };
        self.ensure_dispatcher(&active)
    }

    /// Spawns `active`'s dispatcher unless it runs already or there is no runtime.
    fn ensure_dispatcher(self: &Arc<Self>, active: &Arc<Active>) -> Option<JoinHandle<()>> {
        if active.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(dispatch(Arc::downgrade(self), Arc::clone(active)))),
            Err(_) => {
                active.started.store(false, Ordering::Release);
                None
            }
        }
    }

    /// Stops delivery and discards queued events.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        state.queue.clear();
        if let Some(old) = state.active.take() {
            old.notify.notify_one();
        }
    }

    pub fn drop_next_batches(&self, n: u32) {
        lock(&self.state).drop_next = n;
    }

    pub fn stats(&self) -> WebhookStats {
        lock(&self.state).stats
    }

    pub fn pending(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Queues the push events of `changes` (discarded when webhooks are not configured).
    /// Definition changes are not pushed (HubSpot pushes record events only).
    pub fn enqueue(self: &Arc<Self>, changes: &[Change]) {
        let mut state = lock(&self.state);
        let Some(active) = state.active.clone() else {
            return;
        };
        let now = Instant::now();
        for change in changes.iter().filter(|c| c.kind.is_pushed()) {
            if state.queue.len() >= MAX_QUEUED_EVENTS {
                state.queue.pop_front();
            }
            let event = change.to_wire(active.config.app_id, false);
            state.queue.push_back(Queued { event, enqueued: now, duplicate: false });
        }
        drop(state);
        self.ensure_dispatcher(&active);
        active.notify.notify_one();
    }

    /// Cuts every batch that is due, spawns its delivery, and says how long to wait.
    fn flush(self: &Arc<Self>, active: &Arc<Active>) -> Next {
        let mut batches = Vec::new();
        let next = {
            let mut state = lock(&self.state);
            if !state.is_current(active.generation) {
                return Next::Stop;
            }
            let config = &active.config;
            let now = Instant::now();
            loop {
                let Some(oldest) = state.queue.iter().map(|q| q.enqueued).min() else {
                    break Next::Wait(None);
                };
                let due = oldest + config.batch_delay;
                if state.queue.len() < config.batch_size && now < due {
                    break Next::Wait(Some(due - now));
                }
                // No free slot: a delivery that ends wakes the dispatcher.
                let Ok(permit) = Arc::clone(&active.permits).try_acquire_owned() else {
                    break Next::Wait(None);
                };
                let batch = take_batch(&mut state.queue, config.batch_size, config.shuffle);
                if state.drop_next > 0 {
                    state.drop_next -= 1;
                    state.stats.batches_dropped += 1;
                    continue;
                }
                batches.push((batch, permit));
            }
        };
        for (batch, permit) in batches {
            let (hub, active) = (Arc::clone(self), Arc::clone(active));
            tokio::spawn(async move {
                deliver(&hub, &active, batch).await;
                drop(permit);
                active.notify.notify_one();
            });
        }
        next
    }

    fn is_current(&self, generation: u64) -> bool {
        lock(&self.state).is_current(generation)
    }

    fn record_failure(&self) {
        lock(&self.state).stats.failures += 1;
    }

    fn record_delivery(&self, active: &Active, batch: Vec<Queued>) {
        let mut state = lock(&self.state);
        state.stats.batches_sent += 1;
        state.stats.events_sent += batch.len() as u64;
        let rate = active.config.duplicate_rate;
        if rate <= 0.0 || !state.is_current(active.generation) {
            return;
        }
        let mut rng = rand::rng();
        let now = Instant::now();
        let mut added = false;
        for queued in batch {
            if !queued.duplicate && rng.random::<f64>() < rate {
                let mut event = queued.event;
                event.attempt_number = 0;
                state.queue.push_back(Queued { event, enqueued: now, duplicate: true });
                added = true;
            }
        }
        drop(state);
        if added {
            active.notify.notify_one();
        }
    }
}

fn take_batch(queue: &mut VecDeque<Queued>, size: usize, shuffle: bool) -> Vec<Queued> {
    let n = size.min(queue.len());
    if !shuffle {
        return queue.drain(..n).collect();
    }
    let mut rng = rand::rng();
    let mut batch = Vec::with_capacity(n);
    while batch.len() < n && !queue.is_empty() {
        let index = rng.random_range(0..queue.len());
        if let Some(queued) = queue.swap_remove_back(index) {
            batch.push(queued);
        }
    }
    batch
}

async fn dispatch(hub: Weak<Webhooks>, active: Arc<Active>) {
    loop {
        // The strong reference lives only for the flush, so dropping the simulator ends the loop.
        let next = match hub.upgrade() {
            Some(hub) => hub.flush(&active),
            None => return,
        };
        match next {
            Next::Stop => return,
            Next::Wait(Some(wait)) => {
                let _ = tokio::time::timeout(wait, active.notify.notified()).await;
            }
            Next::Wait(None) => active.notify.notified().await,
        }
    }
}

/// Delivers one batch, holding one of the delivery slots.
async fn deliver(hub: &Webhooks, active: &Active, mut batch: Vec<Queued>) {
    let attempts = active.config.max_attempts;
    for attempt in 0..attempts {
        if !hub.is_current(active.generation) {
            return;
        }
        for queued in &mut batch {
            queued.event.attempt_number = attempt;
        }
        match post(active, &batch).await {
            Attempt::Delivered => {
                hub.record_delivery(active, batch);
                return;
            }
            Attempt::GiveUp => {
                hub.record_failure();
                return;
            }
            Attempt::Retry(wait) => {
                hub.record_failure();
                if attempt + 1 < attempts {
                    tokio::time::sleep(wait.unwrap_or_else(|| backoff(attempt))).await;
                }
            }
        }
    }
}

async fn post(active: &Active, batch: &[Queued]) -> Attempt {
    let Some(client) = &active.client else {
        return Attempt::Retry(None);
    };
    let events: Vec<&WireEvent> = batch.iter().map(|q| &q.event).collect();
    let Ok(body) = serde_json::to_vec(&events) else {
        return Attempt::GiveUp;
    };
    let timestamp = now_ms();
    let signature = sign_v3(&active.secret, "POST", &active.config.target_url, &body, timestamp);
    let result = client
        .post(&active.config.target_url)
        .header(CONTENT_TYPE, "application/json")
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", timestamp.to_string())
        .body(body)
        .send()
        .await;
    match result {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) if response.status().as_u16() == 429 => Attempt::Retry(retry_after(response.headers())),
        Ok(response) if response.status().is_server_error() => Attempt::Retry(None),
        Ok(_) => Attempt::GiveUp,
        Err(_) => Attempt::Retry(None),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_CAP))
}

fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE.saturating_mul(1_u32 << attempt.min(16)).min(RETRY_CAP);
    base.mul_f64(rand::rng().random_range(0.75..1.25)).min(RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::ChangeKind;
    use crate::source::ChangeSource;

    fn change(event_id: u64) -> Change {
        Change {
            portal_id: 1,
            event_id,
            occurred_at: 5,
            object_id: 9,
            kind: ChangeKind::Creation,
            source: ChangeSource::integration(7),
        }
    }

    #[test]
    fn events_are_dropped_without_config_and_queued_with_it() {
        let hub = Arc::new(Webhooks::default());
        hub.enqueue(&[change(1)]);
        assert_eq!(hub.pending(), 0);
        // No runtime here: configuration still records, nothing is delivered.
        hub.configure(WebhookConfig { batch_size: 1000, duplicate_rate: f64::NAN, ..WebhookConfig::default() });
        hub.enqueue(&[
            change(1),
            change(2),
            Change { kind: ChangeKind::PropertyChange { name: "amount".into(), value: "5".into() }, ..change(3) },
            Change {
                kind: ChangeKind::PropertyDefinition { action: crate::events::Action::Created, name: "x".into() },
                ..change(4)
            },
        ]);
        assert_eq!(hub.pending(), 3);
        let state = lock(&hub.state);
        let active = state.active.as_ref().expect("active");
        assert_eq!(active.config.batch_size, MAX_WEBHOOK_BATCH);
        assert!(active.config.duplicate_rate.abs() < f64::EPSILON);
        assert_eq!(state.queue[0].event.subscription_id, state.queue[1].event.subscription_id);
        assert_ne!(state.queue[0].event.subscription_id, state.queue[2].event.subscription_id);
        let json = serde_json::to_value(&state.queue[2].event).expect("json");
        assert_eq!(json["subscriptionType"], "deal.propertyChange");
        assert_eq!(json["propertyName"], "amount");
        assert_eq!(json["changeSource"], "INTEGRATION");
        assert_eq!(json["sourceId"], "7");
        assert!(json.get("objectTypeId").is_none());
        drop(state);
        hub.stop();
        assert_eq!(hub.pending(), 0);
    }

    #[test]
    fn shuffled_batches_take_everything_once() {
        let mut queue: VecDeque<Queued> = (0..10)
            .map(|i| Queued {
                event: Change { event_id: i, object_id: i, ..change(i) }.to_wire(1, false),
                enqueued: Instant::now(),
                duplicate: false,
            })
            .collect();
        let mut seen: Vec<u64> = take_batch(&mut queue, 4, true).iter().map(|q| q.event.event_id).collect();
        assert_eq!(seen.len(), 4);
        seen.extend(take_batch(&mut queue, 100, true).iter().map(|q| q.event.event_id));
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn backoff_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(125));
        assert!(backoff(30) <= RETRY_CAP);
    }
}

//! `hubspot-sim`: a HubSpot CRM simulator for GoMark tests and demos: deal properties and
//! property groups, deal pipelines and stages, deals (CRUD, batch, search), signed webhook
//! delivery, per-portal rate limits (burst, daily and the separate search budget) and fault
//! injection. See CONTRACT.md (§3–§7) for the HubSpot behaviour it follows.
//!
//! Start it in-process with [`spawn`] (or embed [`HubSpotSim::router`]), point a HubSpot
//! client at the returned address, and inspect state with [`HubSpotSim::property`],
//! [`HubSpotSim::deal`], [`HubSpotSim::pipeline`] and [`HubSpotSim::requests`]. Each distinct
//! bearer token is its own portal, created lazily on first use with HubSpot's default
//! properties and the `default` "Sales Pipeline".
//!
//! Conventions worth knowing:
//! - `createdate` / `hs_lastmodifieddate` are epoch-millisecond strings; `createdAt` /
//!   `updatedAt` are ISO-8601.
//! - Search (`POST …/search`) does not use the burst window and sends no
//!   `X-HubSpot-RateLimit-*` headers; it has its own per-second budget
//!   ([`SimConfig::search_per_second`]) and counts against the daily limit.
//! - Webhooks: see [`HubSpotSim::configure_webhooks`] and the `webhooks` module docs.

mod deals;
mod error;
mod gate;
mod model;
mod pipelines;
mod portal;
mod ratelimit;
mod routes;
mod search;
mod state;
mod version;
mod webhooks;
mod writelog;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::deals::Selection;
use crate::model::now_ms;
use crate::portal::{FailNext, Portal};
use crate::ratelimit::Limits;
use crate::webhooks::Webhooks;

pub use crate::state::StateError;
pub use crate::version::ApiVersion;
pub use crate::webhooks::{MAX_WEBHOOK_BATCH, WebhookConfig, WebhookStats};
pub use crate::writelog::{RecordedWrite, WRITE_LOG_CAPACITY};

/// First auto-assigned portal id.
pub const FIRST_PORTAL_ID: u64 = 10_000_001;

/// Maximum number of entries kept in the request log (oldest dropped first).
pub const REQUEST_LOG_CAPACITY: usize = 10_000;

/// Simulator configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Fixed latency added to every request.
    pub latency: Duration,
    /// Probability (0.0–1.0) that a request is answered with a 502.
    pub failure_rate: f64,
    /// Requests allowed per portal in each rolling `burst_window`.
    pub burst_limit: u32,
    /// Length of the rolling burst window.
    pub burst_window: Duration,
    /// Requests allowed per portal per (UTC) day (search included).
    pub daily_limit: u64,
    /// CRM search requests allowed per portal per rolling second (HubSpot: 5). Search does
    /// not consume the burst window.
    pub search_per_second: u32,
    /// How long a deal write takes to become visible to search (HubSpot's index lag).
    pub search_index_lag: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            failure_rate: 0.0,
            burst_limit: 100,
            burst_window: Duration::from_millis(10_000),
            daily_limit: 250_000,
            search_per_second: 5,
            search_index_lag: Duration::ZERO,
        }
    }
}

/// One handled request, as recorded in the simulator's request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Response status code.
    pub status: u16,
    /// Portal that made the request (`None` when authentication failed).
    pub portal_id: Option<u64>,
    /// When the request was received.
    pub timestamp: SystemTime,
}

#[derive(Debug, Clone, Copy)]
struct Runtime {
    latency: Duration,
    failure_rate: f64,
}

#[derive(Debug)]
struct Registry {
    portals: HashMap<String, Arc<Mutex<Portal>>>,
    /// Every portal id ever handed out or registered, so auto-assignment skips them in O(1).
    used_ids: HashSet<u64>,
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    limits: Mutex<Limits>,
    index_lag: Duration,
    runtime: Mutex<Runtime>,
    registry: Mutex<Registry>,
    log: Mutex<VecDeque<RecordedRequest>>,
    writes: Mutex<VecDeque<RecordedWrite>>,
    webhooks: Arc<Webhooks>,
}

impl Drop for Inner {
    /// The last handle is gone: let the webhook dispatcher exit instead of idling forever.
    fn drop(&mut self) {
        self.webhooks.stop();
    }
}

/// Shared simulator state. Cloning is cheap (an `Arc`).
#[derive(Debug, Clone)]
pub struct HubSpotSim {
    inner: Arc<Inner>,
}

pub(crate) type PortalRef = Arc<Mutex<Portal>>;

/// Locks a mutex, recovering from poisoning (state stays usable after a panicking test).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) }
}

impl HubSpotSim {
    /// Creates a simulator with no portals yet.
    pub fn new(config: SimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits: Mutex::new(Limits {
                    burst_limit: config.burst_limit,
                    burst_window: config.burst_window,
                    daily_limit: config.daily_limit,
                    search_per_second: config.search_per_second,
                }),
                index_lag: config.search_index_lag,
                runtime: Mutex::new(Runtime { latency: config.latency, failure_rate: clamp_rate(config.failure_rate) }),
                registry: Mutex::new(Registry {
                    portals: HashMap::new(),
                    used_ids: HashSet::new(),
                    next_id: FIRST_PORTAL_ID,
                }),
                log: Mutex::new(VecDeque::new()),
                writes: Mutex::new(VecDeque::new()),
                webhooks: Arc::new(Webhooks::default()),
            }),
        }
    }

    /// The HTTP API as an axum router (to embed in another server).
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await
    }

    /// Pre-registers `token` as portal `portal_id` (or renumbers its existing portal).
    pub fn register_portal(&self, token: &str, portal_id: u64) {
        let mut registry = lock(&self.inner.registry);
        registry.used_ids.insert(portal_id);
        match registry.portals.get(token) {
            Some(portal) => lock(portal).id = portal_id,
            None => {
                let portal = Portal::with_index_lag(portal_id, self.inner.index_lag);
                registry.portals.insert(token.to_owned(), Arc::new(Mutex::new(portal)));
            }
        }
    }

    /// Every portal's definitions and deals, as JSON (see [`HubSpotSim::restore`]).
    pub fn snapshot(&self) -> Vec<u8> {
        let (next_id, portals): (u64, Vec<(String, PortalRef)>) = {
            let registry = lock(&self.inner.registry);
            (registry.next_id, registry.portals.iter().map(|(t, p)| (t.clone(), p.clone())).collect())
        };
        let mut portals: Vec<state::PortalState> =
            portals.iter().map(|(token, portal)| lock(portal).to_state(token)).collect();
        portals.sort_by_key(|p| p.id);
        // Serialising plain data cannot fail; an empty snapshot would only mean a fresh demo.
        serde_json::to_vec(&state::Snapshot::new(next_id, portals)).unwrap_or_default()
    }

    /// Replaces every portal with those of a [`HubSpotSim::snapshot`]; returns how many.
    pub fn restore(&self, snapshot: &[u8]) -> Result<usize, StateError> {
        let snapshot = state::Snapshot::decode(snapshot)?;
        let mut registry = lock(&self.inner.registry);
        registry.portals.clear();
        registry.used_ids.clear();
        registry.next_id = snapshot.next_id;
        for portal in snapshot.portals {
            registry.used_ids.insert(portal.id);
            let token = portal.token.clone();
            registry.portals.insert(token, Arc::new(Mutex::new(Portal::from_state(portal, self.inner.index_lag))));
        }
        Ok(registry.portals.len())
    }

    /// The portal id of `token`, if that token has been used or registered.
    pub fn portal_id(&self, token: &str) -> Option<u64> {
        let registry = lock(&self.inner.registry);
        registry.portals.get(token).map(|p| lock(p).id)
    }

    /// Current JSON of a deal property (archived ones included).
    pub fn property(&self, token: &str, name: &str) -> Option<serde_json::Value> {
        let portal = self.existing_portal(token)?;
        let portal = lock(&portal);
        portal.raw_property(name).and_then(|p| serde_json::to_value(p).ok())
    }

    /// Current JSON of a deal pipeline (archived ones included).
    pub fn pipeline(&self, token: &str, id: &str) -> Option<serde_json::Value> {
        let portal = self.existing_portal(token)?;
        let portal = lock(&portal);
        portal.raw_pipeline(id).and_then(|p| serde_json::to_value(p).ok())
    }

    /// Current JSON of a deal with **all** its properties (archived deals included, with
    /// `"archived": true`).
    pub fn deal(&self, token: &str, id: &str) -> Option<serde_json::Value> {
        let portal = self.existing_portal(token)?;
        let portal = lock(&portal);
        let deal = portal.find_deal(id, true)?;
        Some(portal.render_deal(deal, Selection::All, &[]))
    }

    /// `(deal id, dealstage)` of every non-archived deal of `token`'s portal.
    pub fn deal_stages(&self, token: &str) -> Vec<(String, String)> {
        let Some(portal) = self.existing_portal(token) else { return Vec::new() };
        let portal = lock(&portal);
        portal
            .deals
            .values()
            .filter(|d| !d.archived)
            .map(|d| (d.id.to_string(), d.prop("dealstage").unwrap_or_default().to_owned()))
            .collect()
    }

    /// Number of non-archived deals of `token`'s portal (0 for an unknown token).
    pub fn deal_count(&self, token: &str) -> usize {
        self.existing_portal(token).map_or(0, |portal| lock(&portal).deal_count())
    }

    /// Creates `n` deals named `Deal 1`… in `stage` of `pipeline` directly (no HTTP, no rate
    /// limit), firing `deal.creation` webhooks like the API. Returns the new ids; stops early
    /// (possibly returning none) if the stage/pipeline pair is invalid.
    pub fn create_deals(&self, token: &str, n: usize, stage: &str, pipeline: &str) -> Vec<String> {
        let portal = self.portal_for(token);
        self.write(&portal, |portal| {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let values = vec![
                    ("dealname".to_owned(), Some(format!("Deal {}", i + 1))),
                    ("dealstage".to_owned(), Some(stage.to_owned())),
                    ("pipeline".to_owned(), Some(pipeline.to_owned())),
                ];
                match portal.create_deal(values, now_ms()) {
                    Ok(id) => ids.push(id.to_string()),
                    Err(_) => break,
                }
            }
            ids
        })
    }

    /// Sets deal properties directly, exactly like a PATCH (same validation, an empty value
    /// clears, `deal.propertyChange` webhooks per changed value). The error is HubSpot's
    /// message.
    pub fn update_deal<I, K, V>(&self, token: &str, id: &str, props: I) -> Result<(), String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let portal = self.existing_portal(token).ok_or_else(|| format!("unknown portal token {token:?}"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("deal {id} not found"))?;
        let values: Vec<(String, Option<String>)> = props
            .into_iter()
            .map(|(k, v)| {
                let v: String = v.into();
                (k.into(), (!v.is_empty()).then_some(v))
            })
            .collect();
        self.write(&portal, |portal| portal.update_deal(id, values, now_ms())).map_err(|e| e.message)
    }

    /// Archives a deal directly (fires `deal.deletion`); `false` if it was unknown or already
    /// archived.
    pub fn delete_deal(&self, token: &str, id: &str) -> bool {
        let (Some(portal), Ok(id)) = (self.existing_portal(token), id.trim().parse::<u64>()) else {
            return false;
        };
        self.write(&portal, |portal| portal.archive_deal(id, now_ms()))
    }

    /// The highest number of requests portal `portal_id` sent within any rolling burst window
    /// (requests that count against the burst budget, i.e. everything but search; rejected
    /// ones included). 0 for an unknown portal.
    pub fn max_requests_in_any_window(&self, portal_id: u64) -> u32 {
        self.portal_by_id(portal_id).map_or(0, |portal| lock(&portal).traffic.max_in_window)
    }

    /// How many 429s portal `portal_id` was answered (any policy, injected ones included).
    pub fn rate_limited_count(&self, portal_id: u64) -> u32 {
        self.portal_by_id(portal_id).map_or(0, |portal| lock(&portal).traffic.rate_limited)
    }

    /// Starts delivering deal webhooks of **all** portals to `config.target_url` (replacing
    /// any previous configuration; queued events are kept). The dispatcher task runs on the
    /// current tokio runtime (or, if called outside one, on the runtime of the first write
    /// after) and exits when the last `HubSpotSim` handle is dropped, on
    /// [`HubSpotSim::stop_webhooks`], or when the runtime shuts down. Note that the server
    /// started by [`spawn`] holds a handle until its runtime stops.
    pub fn configure_webhooks(&self, config: WebhookConfig) {
        // The dispatcher's handle is not needed: it ends on its own (see above).
        let _ = self.inner.webhooks.configure(config);
    }

    /// Stops webhook delivery and discards queued events; later writes fire no events.
    pub fn stop_webhooks(&self) {
        self.inner.webhooks.stop();
    }

    /// Makes the next `n` batches vanish: they are never delivered (replaces any pending
    /// count; `n = 0` clears it).
    pub fn drop_next_batches(&self, n: u32) {
        self.inner.webhooks.drop_next_batches(n);
    }

    /// Webhook delivery counters.
    pub fn webhook_stats(&self) -> WebhookStats {
        self.inner.webhooks.stats()
    }

    /// Events queued but not yet cut into a batch.
    pub fn pending_webhook_events(&self) -> usize {
        self.inner.webhooks.pending()
    }

    /// Snapshot of the request log (oldest first, at most [`REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    /// The write log (oldest first, at most [`WRITE_LOG_CAPACITY`]), of one portal or all.
    pub fn writes(&self, portal_id: Option<u64>) -> Vec<RecordedWrite> {
        lock(&self.inner.writes).iter().filter(|w| portal_id.is_none_or(|id| w.portal_id == id)).cloned().collect()
    }

    /// The portal id of `token`, assigning one as its first request would.
    pub fn portal_id_for(&self, token: &str) -> u64 {
        lock(&self.portal_for(token)).id
    }

    pub(crate) fn record_write(&self, entry: RecordedWrite) {
        let mut writes = lock(&self.inner.writes);
        while writes.len() >= WRITE_LOG_CAPACITY {
            writes.pop_front();
        }
        writes.push_back(entry);
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }

    /// Changes the latency added to each request.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.inner.runtime).latency = d;
    }

    /// Changes every portal's burst limit: `limit` requests per rolling `window` (as if other
    /// integrations used up most of the portal's budget).
    pub fn set_burst_limit(&self, limit: u32, window: Duration) {
        let mut limits = lock(&self.inner.limits);
        limits.burst_limit = limit;
        limits.burst_window = window;
    }

    /// Changes the random 502 failure rate (clamped to 0.0–1.0).
    pub fn set_failure_rate(&self, r: f64) {
        lock(&self.inner.runtime).failure_rate = clamp_rate(r);
    }

    /// Makes the next `n` requests of `token`'s portal fail with `status`
    /// (replacing any pending injection; `n = 0` clears it).
    pub fn fail_next(&self, token: &str, n: u32, status: u16) {
        let portal = self.portal_for(token);
        let mut portal = lock(&portal);
        portal.fail_next = (n > 0).then_some(FailNext { remaining: n, status });
    }

    // ----- crate-internal ----------------------------------------------------

    pub(crate) fn limits(&self) -> Limits {
        *lock(&self.inner.limits)
    }

    pub(crate) fn latency(&self) -> Duration {
        lock(&self.inner.runtime).latency
    }

    pub(crate) fn failure_rate(&self) -> f64 {
        lock(&self.inner.runtime).failure_rate
    }

    /// The portal of `token`, created on first use.
    pub(crate) fn portal_for(&self, token: &str) -> PortalRef {
        let mut registry = lock(&self.inner.registry);
        if let Some(portal) = registry.portals.get(token) {
            return Arc::clone(portal);
        }
        let id = loop {
            let candidate = registry.next_id;
            registry.next_id = registry.next_id.saturating_add(1);
            if registry.used_ids.insert(candidate) {
                break candidate;
            }
        };
        let portal = Arc::new(Mutex::new(Portal::with_index_lag(id, self.inner.index_lag)));
        registry.portals.insert(token.to_owned(), Arc::clone(&portal));
        portal
    }

    /// The portal of `token` without creating it. The registry lock is released before the
    /// caller locks the portal (lock order is always registry → portal).
    fn existing_portal(&self, token: &str) -> Option<PortalRef> {
        lock(&self.inner.registry).portals.get(token).cloned()
    }

    fn portal_by_id(&self, portal_id: u64) -> Option<PortalRef> {
        let portals: Vec<PortalRef> = lock(&self.inner.registry).portals.values().cloned().collect();
        portals.into_iter().find(|p| lock(p).id == portal_id)
    }

    /// Runs a write on `portal` and hands the changes it made to the webhook dispatcher once
    /// the portal lock is released. Every deal write goes through here.
    pub(crate) fn write<T>(&self, portal: &PortalRef, f: impl FnOnce(&mut Portal) -> T) -> T {
        let (out, changes) = {
            let mut portal = lock(portal);
            let out = f(&mut portal);
            (out, std::mem::take(&mut portal.outbox))
        };
        if !changes.is_empty() {
            self.inner.webhooks.enqueue(changes);
        }
        out
    }

    pub(crate) fn record(&self, entry: RecordedRequest) {
        let mut log = lock(&self.inner.log);
        while log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// Binds `addr`, spawns the server on the current tokio runtime, returns the handle + the
/// real bound address (port 0 picks a free one). The server runs until the runtime stops.
pub async fn spawn(config: SimConfig, addr: SocketAddr) -> std::io::Result<(HubSpotSim, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let sim = HubSpotSim::new(config);
    let server = sim.clone();
    tokio::spawn(async move {
        // The only error axum::serve reports is fatal to the listener; nothing to recover.
        let _ = server.serve(listener, std::future::pending()).await;
    });
    Ok((sim, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_ids_are_sequential_and_skip_registered() {
        let sim = HubSpotSim::new(SimConfig::default());
        sim.register_portal("reg", FIRST_PORTAL_ID + 1);
        assert_eq!(lock(&sim.portal_for("a")).id, FIRST_PORTAL_ID);
        assert_eq!(lock(&sim.portal_for("b")).id, FIRST_PORTAL_ID + 2);
        assert_eq!(sim.portal_id("reg"), Some(FIRST_PORTAL_ID + 1));
        assert_eq!(sim.portal_id("unknown"), None);
        assert!(sim.property("a", "dealname").is_some());
        assert!(sim.property("a", "nope").is_none());
        assert!(sim.property("unknown", "dealname").is_none());
    }

    #[test]
    fn request_log_is_bounded() {
        let sim = HubSpotSim::new(SimConfig::default());
        for i in 0..(REQUEST_LOG_CAPACITY + 5) {
            sim.record(RecordedRequest {
                method: "GET".into(),
                path: format!("/{i}"),
                status: 200,
                portal_id: None,
                timestamp: SystemTime::now(),
            });
        }
        let log = sim.requests();
        assert_eq!(log.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(log[0].path, "/5");
    }

    fn unreachable_webhooks() -> WebhookConfig {
        WebhookConfig { target_url: "http://127.0.0.1:9/never".into(), ..WebhookConfig::default() }
    }

    #[tokio::test]
    async fn webhook_dispatcher_exits_when_the_last_handle_is_dropped() {
        let sim = HubSpotSim::new(SimConfig::default());
        let handle = sim.inner.webhooks.configure(unreachable_webhooks()).expect("spawned");
        drop(sim);
        let joined = tokio::time::timeout(Duration::from_secs(2), handle).await.expect("dispatcher exited");
        assert!(joined.is_ok());
    }

    #[tokio::test]
    async fn webhook_dispatcher_exits_on_stop_and_on_reconfigure() {
        let sim = HubSpotSim::new(SimConfig::default());
        let first = sim.inner.webhooks.configure(unreachable_webhooks()).expect("spawned");
        let second = sim.inner.webhooks.configure(unreachable_webhooks()).expect("spawned");
        tokio::time::timeout(Duration::from_secs(2), first).await.expect("replaced dispatcher exited").ok();
        sim.stop_webhooks();
        tokio::time::timeout(Duration::from_secs(2), second).await.expect("stopped dispatcher exited").ok();
    }

    #[test]
    fn webhooks_configured_outside_a_runtime_start_on_first_write() {
        let sim = HubSpotSim::new(SimConfig::default());
        sim.configure_webhooks(unreachable_webhooks());
        sim.create_deals("tok", 2, "closedwon", "default");
        assert_eq!(sim.pending_webhook_events(), 2, "queued until a runtime is available");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            sim.create_deals("tok", 1, "closedwon", "default");
            let drained = async {
                while sim.pending_webhook_events() > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(2), drained).await.expect("dispatcher started");
        });
    }

    #[test]
    fn failure_rate_is_clamped() {
        let sim = HubSpotSim::new(SimConfig::default());
        sim.set_failure_rate(3.0);
        assert!((sim.failure_rate() - 1.0).abs() < f64::EPSILON);
        sim.set_failure_rate(f64::NAN);
        assert!(sim.failure_rate().abs() < f64::EPSILON);
    }
}

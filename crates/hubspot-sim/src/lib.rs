//! `hubspot-sim`: a HubSpot CRM properties API simulator (deal properties and property groups, per-portal rate limits, fault injection) for GoMark tests and demos.
//!
//! Start it in-process with [`spawn`] (or embed [`HubSpotSim::router`]), point a HubSpot
//! client at the returned address, and inspect state with [`HubSpotSim::property`] and
//! [`HubSpotSim::requests`]. Each distinct bearer token is its own portal.

mod error;
mod gate;
mod model;
mod portal;
mod ratelimit;
mod routes;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::portal::{FailNext, Portal};
use crate::ratelimit::Limits;

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
    /// Requests allowed per portal per (UTC) day.
    pub daily_limit: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            failure_rate: 0.0,
            burst_limit: 100,
            burst_window: Duration::from_millis(10_000),
            daily_limit: 250_000,
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
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    runtime: Mutex<Runtime>,
    registry: Mutex<Registry>,
    log: Mutex<VecDeque<RecordedRequest>>,
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
                limits: Limits {
                    burst_limit: config.burst_limit,
                    burst_window: config.burst_window,
                    daily_limit: config.daily_limit,
                },
                runtime: Mutex::new(Runtime { latency: config.latency, failure_rate: clamp_rate(config.failure_rate) }),
                registry: Mutex::new(Registry { portals: HashMap::new(), next_id: FIRST_PORTAL_ID }),
                log: Mutex::new(VecDeque::new()),
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
        match registry.portals.get(token) {
            Some(portal) => lock(portal).id = portal_id,
            None => {
                registry.portals.insert(token.to_owned(), Arc::new(Mutex::new(Portal::new(portal_id))));
            }
        }
    }

    /// The portal id of `token`, if that token has been used or registered.
    pub fn portal_id(&self, token: &str) -> Option<u64> {
        let registry = lock(&self.inner.registry);
        registry.portals.get(token).map(|p| lock(p).id)
    }

    /// Current JSON of a deal property (archived ones included).
    pub fn property(&self, token: &str, name: &str) -> Option<serde_json::Value> {
        let portal = lock(&self.inner.registry).portals.get(token).cloned()?;
        let portal = lock(&portal);
        portal.raw_property(name).and_then(|p| serde_json::to_value(p).ok())
    }

    /// Snapshot of the request log (oldest first, at most [`REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }

    /// Changes the latency added to each request.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.inner.runtime).latency = d;
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
        self.inner.limits
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
            if !registry.portals.values().any(|p| lock(p).id == candidate) {
                break candidate;
            }
        };
        let portal = Arc::new(Mutex::new(Portal::new(id)));
        registry.portals.insert(token.to_owned(), Arc::clone(&portal));
        portal
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

    #[test]
    fn failure_rate_is_clamped() {
        let sim = HubSpotSim::new(SimConfig::default());
        sim.set_failure_rate(3.0);
        assert!((sim.failure_rate() - 1.0).abs() < f64::EPSILON);
        sim.set_failure_rate(f64::NAN);
        assert!(sim.failure_rate().abs() < f64::EPSILON);
    }
}

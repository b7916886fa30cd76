//! `hubspot-sim`: a HubSpot CRM simulator for GoMark tests and demos, following HubSpot as it is
//! in December 2026: deal properties and property groups, deal pipelines and stages, deals
//! (CRUD, batch, search), the date-versioned API (`v3`, `2026-03`, `2026-09`), OAuth, service
//! keys and client credentials, the webhooks journal, signed push webhooks, per-portal rate
//! limits (burst, daily and the separate search budget) and fault injection. See CONTRACT.md
//! for the HubSpot behaviour it follows.
//!
//! Start it in-process with [`spawn`] (or embed [`HubSpotSim::router`]), point a HubSpot
//! client at the returned address, and inspect state with [`HubSpotSim::property`],
//! [`HubSpotSim::deal`], [`HubSpotSim::pipeline`] and [`HubSpotSim::requests`]. Each distinct
//! bearer token the simulator did not issue is its own portal (a private-app token or service
//! key), created lazily on first use with HubSpot's default properties and the `default`
//! "Sales Pipeline".
//!
//! # Routes
//! `{v}` is `v3` or a date version; CRM paths are `/crm/v3/{api}/…` for v3 and
//! `/crm/{api}/{date}/…` for `2026-03` and `2026-09` (see `version.rs` for what differs).
//! - Properties and groups: `/crm/{v3|properties/{date}}/properties/deals…` (list, read,
//!   create, update, archive, `batch/read|create|archive`, `groups…`).
//! - Pipelines and stages: `/crm/v3/pipelines/deals…`, `/crm/pipelines/{date}/deals…`.
//! - Deals: `/crm/v3/objects/deals…`, `/crm/objects/{date}/deals…` (CRUD, list, `batch/*`,
//!   `search`).
//! - OAuth token: `POST /oauth/v1/token`, `/oauth/v3/token`, `/oauth/2026-03/token`.
//! - Webhooks journal (client-credentials tokens):
//!   `GET /webhooks-journal/journal[-local]/2026-03/earliest|latest|offset/{offset}/next[?installPortalId=]`,
//!   the pre-signed entry files `GET /webhooks-journal/files/{offset}?expires&signature`,
//!   `GET|POST /webhooks-journal/subscriptions/2026-03`, `GET|DELETE …/subscriptions/2026-03/{id}`,
//!   `POST /webhooks-journal/snapshots/2026-03/crm`, `GET …/snapshots/2026-03/crm/status/{id}`.
//!   Shapes and status codes: `routes/journal.rs`; event shape: `events.rs`.
//! - Test hooks (no auth, no rate limit): `GET /_sim/writes[?portalId=]`, `GET /_sim/portal-id`
//!   (bearer → `{portalId, appId}`), `POST /_sim/service-keys {key, portalId}`,
//!   `POST /_sim/oauth/refresh-tokens {refreshToken, portalToken}`,
//!   `POST /_sim/oauth/expire-access-tokens`, `POST /_sim/journal/age {seconds}`; request
//!   headers `X-HubSpot-Sim-UI-User: <id>` (the write is a hand edit in the UI by that user) and
//!   `X-HubSpot-Sim-Change-Source` / `X-HubSpot-Sim-Source-Id` (any other source).
//!
//! # Conventions worth knowing
//! - Datetime values (`createdate`, `hs_lastmodifieddate`, `closedate`, any `datetime`
//!   property) come back as ISO-8601 (`2026-11-21T10:00:00.000Z`); writes accept ISO or epoch
//!   milliseconds, as HubSpot does.
//! - Every change (deal, property, group, pipeline, stage) is appended to the journal with its
//!   `changeSource`/`sourceId`: `INTEGRATION` + the app id for token writes (a portal's private
//!   app id is [`private_app_id`]), `CRM_UI` + `userId:<id>` for hand edits (library helpers
//!   such as [`HubSpotSim::update_deal`] count as user [`DEFAULT_UI_USER`]).
//! - Search (`POST …/search`) does not use the burst window and sends no
//!   `X-HubSpot-RateLimit-*` headers; it has its own per-second budget
//!   ([`SimConfig::search_per_second`]) and counts against the daily limit.
//! - Push webhooks: see [`HubSpotSim::configure_webhooks`] and the `webhooks` module docs;
//!   portals reached with a service key get none.

mod associations;
mod auth;
mod deals;
mod error;
mod events;
mod gate;
mod journal;
mod model;
mod pipeline_rules;
mod pipelines;
mod portal;
mod ratelimit;
mod routes;
mod rules;
mod search;
mod source;
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

pub use crate::auth::{ACCESS_TOKEN_TTL, JOURNAL_SCOPES, private_app_id};
pub use crate::journal::RETENTION as JOURNAL_RETENTION;
pub use crate::source::{CHANGE_SOURCES, ChangeSource, DEFAULT_UI_USER};
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
    /// The simulated public app: its id (`appId` of events, `sourceId` of OAuth writes).
    pub app_id: u64,
    /// The app's OAuth `client_id` (client credentials and refresh grants check it).
    pub client_id: String,
    /// The app's client secret: checked by the OAuth grants and the key of webhook signatures
    /// configured through the API (`PUT /webhooks/v3/{appId}/settings`).
    pub client_secret: String,
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
            app_id: 1,
            client_id: "hubspot-sim-client-id".to_owned(),
            client_secret: "hubspot-sim-secret".to_owned(),
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
    app: App,
    auth: Mutex<auth::Auth>,
    journal: Mutex<journal::Journal>,
    /// Journal subscriptions and snapshot statuses (`routes/journal.rs`).
    journal_admin: Mutex<routes::AppAdmin>,
}

/// The simulated public app.
#[derive(Debug, Clone)]
struct App {
    id: u64,
    client_id: String,
    client_secret: String,
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
                app: App { id: config.app_id, client_id: config.client_id, client_secret: config.client_secret },
                auth: Mutex::new(auth::Auth::default()),
                journal: Mutex::new(journal::Journal::default()),
                journal_admin: Mutex::new(routes::AppAdmin::default()),
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
        // Handlers become routes once, and a connection clones a handle: `axum::serve` given
        // a plain `Router` rebuilds the whole route table for each connection (72 KiB each,
        // 2.6 MiB for the embedded demo's idle keep-alive connections).
        let router: axum::Router = self.router().with_state(());
        axum::serve(without_nagle(listener), router.into_make_service()).with_graceful_shutdown(shutdown).await
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
        let mut portals: Vec<(u64, String, PortalRef)> = portals
            .into_iter()
            .map(|(token, portal)| {
                let id = lock(&portal).id;
                (id, token, portal)
            })
            .collect();
        portals.sort_by_key(|(id, ..)| *id);
        // A `state::Snapshot`, written a portal at a time, each while only its own lock is held.
        let mut out = format!(r#"{{"version":{},"next_id":{next_id},"portals":["#, state::VERSION).into_bytes();
        for (i, (_, token, portal)) in portals.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Serialising plain data cannot fail; an empty snapshot would only mean a fresh demo.
            if serde_json::to_writer(&mut out, &lock(portal).view(token)).is_err() {
                return Vec::new();
            }
        }
        out.extend_from_slice(b"]}");
        out
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

    /// Registers `key` as a service key for portal `portal_id` (creating or renumbering its
    /// portal): requests with it work like a private-app token's, and the portal's events go
    /// to the journal only, never to push webhooks.
    pub fn register_service_key(&self, key: &str, portal_id: u64) {
        self.register_portal(key, portal_id);
        lock(&self.portal_for(key)).service_key = true;
    }

    /// Registers an OAuth refresh token for `portal_token`'s portal: `POST /oauth/…/token`
    /// with `grant_type=refresh_token` then issues access tokens acting for that portal.
    pub fn register_refresh_token(&self, refresh_token: &str, portal_token: &str) {
        self.portal_for(portal_token);
        lock(&self.inner.auth).register_refresh_token(refresh_token, portal_token);
    }

    /// Expires every issued OAuth and client-credentials access token now (they answer 401).
    pub fn expire_access_tokens(&self) {
        lock(&self.inner.auth).expire_all(std::time::Instant::now());
    }

    /// Moves every journal entry `by` into the past, dropping those older than
    /// [`JOURNAL_RETENTION`] (so a test can make an offset expire without waiting 3 days).
    pub fn age_journal(&self, by: Duration) {
        lock(&self.inner.journal).age(by, now_ms());
    }

    /// Sets deal properties as a hand edit in HubSpot's UI by `user_id` (events carry
    /// `changeSource: CRM_UI`, `sourceId: userId:<id>`). Otherwise like [`HubSpotSim::update_deal`].
    pub fn update_deal_as_user<I, K, V>(&self, token: &str, id: &str, user_id: u64, props: I) -> Result<(), String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        source::in_thread(ChangeSource::ui_user(user_id), || self.update_deal(token, id, props))
    }

    /// Every retained journal event of portal `portal_id`, oldest first (as the entry files
    /// serve them).
    pub fn journal_events(&self, portal_id: u64) -> Vec<serde_json::Value> {
        lock(&self.inner.journal).events_of(portal_id, now_ms())
    }

    /// The simulated app's id.
    pub fn app_id(&self) -> u64 {
        self.inner.app.id
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

    /// Runs a write on `portal` (made by the current request's source, see `source.rs`), then
    /// publishes the changes it made once the portal lock is released. Every library-level
    /// write goes through here; HTTP handlers may also lock the portal directly, as the gate
    /// calls [`HubSpotSim::flush`] after each request.
    pub(crate) fn write<T>(&self, portal: &PortalRef, f: impl FnOnce(&mut Portal) -> T) -> T {
        let out = f(&mut lock(portal));
        self.flush(portal);
        out
    }

    /// Appends the changes queued on `portal` to the journal and hands them to the webhook
    /// dispatcher (not for a service-key portal).
    pub(crate) fn flush(&self, portal: &PortalRef) {
        let (changes, portal_id, service_key) = {
            let mut portal = lock(portal);
            (std::mem::take(&mut portal.outbox), portal.id, portal.service_key)
        };
        if changes.is_empty() {
            return;
        }
        let events = changes.iter().map(|c| c.to_wire(self.inner.app.id, true)).collect();
        lock(&self.inner.journal).append(portal_id, now_ms(), events);
        if !service_key {
            self.inner.webhooks.enqueue(&changes);
        }
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

/// The listener with Nagle's algorithm off on every connection, as a real API's servers
/// run: otherwise a response written in more than one segment waits for the client's
/// delayed ACK (about 40 ms on Linux), and every simulated call looks 40 ms slow.
fn without_nagle(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        // Best effort: a connection with Nagle on is slower, not wrong.
        let _ = tcp.set_nodelay(true);
    })
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

    /// Written in place a portal at a time, the snapshot still reads back as the same state.
    #[test]
    fn a_snapshot_restores_the_same_portals_and_deals() {
        let sim = HubSpotSim::new(SimConfig::default());
        sim.register_portal("b", 90_002);
        sim.register_portal("a", 90_001);
        let deals = sim.create_deals("a", 3, "appointmentscheduled", "default");
        sim.create_deals("b", 2, "appointmentscheduled", "default");
        sim.update_deal("a", &deals[0], [("dealstage", "qualifiedtobuy")]).expect("moved");
        let saved = sim.snapshot();
        let decoded = state::Snapshot::decode(&saved).expect("a valid snapshot");
        let ids: Vec<u64> = decoded.portals.iter().map(|p| p.id).collect();
        assert_eq!(ids, [90_001, 90_002], "portals in id order");
        assert_eq!(decoded.portals.iter().map(|p| p.deals.len()).collect::<Vec<_>>(), [3, 2]);

        let again = HubSpotSim::new(SimConfig::default());
        assert_eq!(again.restore(&saved).expect("restored"), 2);
        assert_eq!(again.snapshot(), saved, "restoring and saving again changes nothing");
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

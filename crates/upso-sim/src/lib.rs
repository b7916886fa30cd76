//! `upso-sim`: a simulator of the Upso outreach API (`docs/upso/openapi.yaml`) for GoMark
//! tests, demos and benchmarks.
//!
//! Accounts are registered per token ([`UpsoSim::register_account`], or over HTTP with
//! `POST /_sim/accounts` `{"token","name"}`); an unknown token gets 401. Every request counts against the account's rolling rate limit (429 with
//! `Retry-After`). Time is the simulator's clock ([`UpsoSim::set_now`], [`UpsoSim::advance`]):
//! steps run when [`UpsoSim::run_due`] is called (and once a second when served), so a test
//! decides when "later" is. Every email is recorded as an `email_sent` activity with its
//! instant and rendered text ([`UpsoSim::sent_emails`]). Tests play the human and the
//! contact: [`UpsoSim::edit_cadence_by_hand`], [`UpsoSim::record_reply`],
//! [`UpsoSim::record_bounce`], [`UpsoSim::opt_out`].

mod account;
mod error;
mod routes;
mod webhooks;
pub mod window;

use crate::account::AccountState;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use upso_client::{Activity, ActivityType, Cadence, CadenceInput, Enrollment, Mailbox, MailboxInput, OptOutInput};

/// An epoch-ms instant as Upso writes it (RFC 3339, milliseconds, UTC).
pub use account::rfc3339;

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Requests allowed per account in each rolling `rate_window`.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Daily cap of the mailbox every account starts with.
    pub default_mailbox_cap: u32,
    /// Emails per UTC day across an account's mailboxes (`None`: no account cap).
    pub account_daily_cap: Option<u32>,
    /// Latency added to every request.
    pub latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rate_limit: 100,
            rate_window: Duration::from_secs(10),
            default_mailbox_cap: 200,
            account_daily_cap: None,
            latency: Duration::ZERO,
        }
    }
}

/// One email the simulator "sent".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub to: String,
    pub cadence_id: String,
    pub enrollment_id: String,
    pub step: u32,
    pub mailbox_id: String,
    pub subject: String,
    pub body: String,
    /// Epoch ms on the simulator's clock.
    pub at_ms: i64,
}

pub(crate) type AccountRef = Arc<Mutex<AccountState>>;

/// Writes kept in the write log (oldest dropped first).
pub const WRITE_LOG_CAPACITY: usize = 200_000;

/// One write request (anything but GET) an account made, as `GET /_sim/writes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedWrite {
    pub account_id: String,
    pub method: String,
    pub path: String,
    /// The request body (cut at 8 KiB), as text.
    pub body: String,
    pub status: u16,
    /// Epoch milliseconds (wall clock, not the simulator's).
    pub at_ms: i64,
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    writes: Mutex<std::collections::VecDeque<RecordedWrite>>,
    accounts: Mutex<HashMap<String, AccountRef>>,
    /// `Some` once a test set the clock; otherwise the system clock.
    clock: Mutex<Option<i64>>,
    http: reqwest::Client,
}

/// Shared simulator state; cloning is cheap.
#[derive(Debug, Clone)]
pub struct UpsoSim {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UpsoSim {
    pub fn new(config: SimConfig) -> Self {
        let http =
            gomark_vendor_http::tls::client_builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                config,
                writes: Mutex::new(Default::default()),
                accounts: Mutex::new(HashMap::new()),
                clock: Mutex::new(None),
                http,
            }),
        }
    }

    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Serves the API on `listener` until `shutdown`, running due steps once a second.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = self.clone();
        let tick = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            loop {
                interval.tick().await;
                ticker.run_due();
            }
        });
        // Handlers become routes once, and a connection clones a handle, not the route table.
        let router: axum::Router = self.router().with_state(());
        let served =
            axum::serve(without_nagle(listener), router.into_make_service()).with_graceful_shutdown(shutdown).await;
        tick.abort();
        served
    }

    /// Registers `token` as a new account named `name`; returns its id (same token: same account).
    pub fn register_account(&self, token: &str, name: &str) -> String {
        let mut accounts = lock(&self.inner.accounts);
        if let Some(existing) = accounts.get(token) {
            return lock(existing).account.id.clone();
        }
        let id = format!("acc_{}", accounts.len() + 1);
        let state = AccountState::new(
            id.clone(),
            name.to_owned(),
            self.inner.config.default_mailbox_cap,
            self.inner.config.account_daily_cap,
        );
        accounts.insert(token.to_owned(), Arc::new(Mutex::new(state)));
        id
    }

    /// Every account, as JSON, so an embedded demo restarted on its data folder finds the
    /// same accounts, cadences and activity (see [`UpsoSim::restore`]).
    pub fn snapshot(&self) -> Vec<u8> {
        let accounts: Vec<(String, AccountRef)> =
            lock(&self.inner.accounts).iter().map(|(t, a)| (t.clone(), a.clone())).collect();
        let mut saved: Vec<account::SavedAccount> = accounts.iter().map(|(t, a)| lock(a).to_saved(t)).collect();
        saved.sort_by(|a, b| a.account_id().cmp(b.account_id()));
        // Serialising plain data cannot fail; an empty snapshot would only mean a fresh demo.
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// Replaces every account with those of an [`UpsoSim::snapshot`]; returns how many.
    pub fn restore(&self, snapshot: &[u8]) -> Result<usize, serde_json::Error> {
        let saved: Vec<account::SavedAccount> = serde_json::from_slice(snapshot)?;
        let mut accounts = lock(&self.inner.accounts);
        accounts.clear();
        for account in saved {
            let (token, state) = AccountState::from_saved(account);
            accounts.insert(token, Arc::new(Mutex::new(state)));
        }
        Ok(accounts.len())
    }

    /// The write log (oldest first), of one account or all.
    pub fn writes(&self, account_id: Option<&str>) -> Vec<RecordedWrite> {
        lock(&self.inner.writes).iter().filter(|w| account_id.is_none_or(|id| w.account_id == id)).cloned().collect()
    }

    pub(crate) fn record_write(&self, entry: RecordedWrite) {
        let mut writes = lock(&self.inner.writes);
        while writes.len() >= WRITE_LOG_CAPACITY {
            writes.pop_front();
        }
        writes.push_back(entry);
    }

    pub(crate) fn account(&self, token: &str) -> Option<AccountRef> {
        lock(&self.inner.accounts).get(token).cloned()
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The simulator's clock, epoch ms.
    pub fn now_ms(&self) -> i64 {
        lock(&self.inner.clock).unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
    }

    /// Freezes the clock at `ms`.
    pub fn set_now(&self, ms: i64) {
        *lock(&self.inner.clock) = Some(ms);
    }

    /// Moves the clock forward (freezing it first if needed) and runs what became due.
    pub fn advance(&self, by: Duration) -> usize {
        let now = self.now_ms() + i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        self.set_now(now);
        self.run_due()
    }

    /// Runs every due step of every account; returns how many ran.
    pub fn run_due(&self) -> usize {
        let now = self.now_ms();
        let accounts: Vec<AccountRef> = lock(&self.inner.accounts).values().cloned().collect();
        let mut ran = 0;
        for account in accounts {
            ran += self.with(&account, |a| a.run_due(now));
        }
        ran
    }

    /// Runs `f` on an account, then hands new activities to webhook delivery.
    pub(crate) fn with<T>(&self, account: &AccountRef, f: impl FnOnce(&mut AccountState) -> T) -> T {
        let (out, deliveries) = {
            let mut state = lock(account);
            let out = f(&mut state);
            (out, webhooks::take_deliveries(&mut state))
        };
        webhooks::deliver(&self.inner.http, deliveries);
        out
    }

    fn existing(&self, token: &str) -> Result<AccountRef, String> {
        self.account(token).ok_or_else(|| "unknown account token".to_owned())
    }

    pub fn add_mailbox(&self, token: &str, email: &str, daily_cap: u32) -> Result<Mailbox, String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        Ok(self
            .with(&account, |a| a.add_mailbox(MailboxInput { email: email.into(), daily_cap: Some(daily_cap) }, now)))
    }

    pub fn mailboxes(&self, token: &str) -> Vec<Mailbox> {
        let now = self.now_ms();
        self.account(token).map_or_else(Vec::new, |a| {
            let a = lock(&a);
            a.mailboxes.iter().filter_map(|m| a.mailbox_view(&m.id, now)).collect()
        })
    }

    pub fn cadences(&self, token: &str) -> Vec<Cadence> {
        self.account(token).map_or_else(Vec::new, |a| lock(&a).cadences.clone())
    }

    /// Edits a cadence as a person in Upso's UI would: `version` moves, `updatedVia: ui`.
    pub fn edit_cadence_by_hand(
        &self,
        token: &str,
        cadence_id: &str,
        edit: impl FnOnce(&mut CadenceInput),
    ) -> Result<Cadence, String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        self.with(&account, |a| {
            let mut definition = a.cadence(cadence_id).map_err(|e| e.message)?.definition.clone();
            edit(&mut definition);
            a.replace_cadence(cadence_id, definition, None, "ui", now).map_err(|e| e.message)
        })
    }

    /// Creates a cadence as a person in Upso's UI would (`updatedVia: ui`).
    pub fn create_cadence_by_hand(&self, token: &str, input: CadenceInput) -> Result<Cadence, String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        self.with(&account, |a| {
            let created = a.create_cadence(input, now).map_err(|e| e.message)?;
            if let Some(c) = a.cadences.iter_mut().find(|c| c.id == created.id) {
                c.updated_via = Some("ui".into());
            }
            Ok(Cadence { updated_via: Some("ui".into()), ..created })
        })
    }

    /// Enrolls a contact as a rep in Upso's UI would.
    pub fn enroll_by_hand(&self, token: &str, cadence_id: &str, email: &str) -> Result<Enrollment, String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        let input = upso_client::EnrollmentInput {
            cadence_id: cadence_id.to_owned(),
            contact: upso_client::Contact::email(email),
            mailbox_id: None,
            variables: Default::default(),
            external_id: None,
        };
        self.with(&account, |a| a.enroll(input, now)).map_err(|e| e.message)
    }

    pub fn enrollments(&self, token: &str) -> Vec<Enrollment> {
        self.account(token)
            .map_or_else(Vec::new, |a| lock(&a).enrollments.iter().map(|e| e.enrollment.clone()).collect())
    }

    pub fn activities(&self, token: &str) -> Vec<Activity> {
        self.account(token).map_or_else(Vec::new, |a| lock(&a).activities.clone())
    }

    /// Every email sent by `token`'s account, in sending order.
    pub fn sent_emails(&self, token: &str) -> Vec<SentEmail> {
        self.activities(token)
            .into_iter()
            .filter(|a| a.activity_type == ActivityType::EmailSent)
            .map(|a| SentEmail {
                at_ms: chrono::DateTime::parse_from_rfc3339(&a.occurred_at).map_or(0, |t| t.timestamp_millis()),
                to: a.email,
                cadence_id: a.cadence_id.unwrap_or_default(),
                enrollment_id: a.enrollment_id.unwrap_or_default(),
                step: a.step.unwrap_or_default(),
                mailbox_id: a.mailbox_id.unwrap_or_default(),
                subject: a.subject.unwrap_or_default(),
                body: a.body.unwrap_or_default(),
            })
            .collect()
    }

    /// The contact replied: their enrollments in cadences that exit on reply end as `replied`.
    pub fn record_reply(&self, token: &str, email: &str) -> Result<(), String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        self.with(&account, |a| a.contact_event(email, ActivityType::Replied, now));
        Ok(())
    }

    /// An email to the contact bounced: enrollments exiting on bounce end as `bounced`.
    pub fn record_bounce(&self, token: &str, email: &str) -> Result<(), String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        self.with(&account, |a| a.contact_event(email, ActivityType::Bounced, now));
        Ok(())
    }

    /// The contact clicked "unsubscribe".
    pub fn opt_out(&self, token: &str, email: &str) -> Result<(), String> {
        let account = self.existing(token)?;
        let now = self.now_ms();
        self.with(&account, |a| {
            a.opt_out(OptOutInput { email: email.into(), reason: Some("unsubscribe link".into()) }, now)
        })
        .map(|_| ())
        .map_err(|e| e.message)
    }

    /// How many requests of `token`'s account were answered 429.
    pub fn rate_limited_count(&self, token: &str) -> u32 {
        self.account(token).map_or(0, |a| lock(&a).rate_limited)
    }

    /// Requests `token`'s account made (rejected ones included).
    pub fn request_count(&self, token: &str) -> u64 {
        self.account(token).map_or(0, |a| lock(&a).requests)
    }

    /// The next `n` requests of `token`'s account fail with `status`.
    pub fn fail_next(&self, token: &str, n: u32, status: u16) {
        if let Some(a) = self.account(token) {
            lock(&a).fail_next = (n > 0).then_some((n, status));
        }
    }
}

/// Binds `addr`, serves the simulator on the current runtime, returns it and its address.
pub async fn spawn(config: SimConfig, addr: SocketAddr) -> std::io::Result<(UpsoSim, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let sim = UpsoSim::new(config);
    let server = sim.clone();
    tokio::spawn(async move {
        // axum::serve only fails if the listener does; nothing to recover in a test server.
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

    #[tokio::test]
    async fn the_write_log_lists_each_write_per_account_and_a_token_finds_its_account() {
        let sim = UpsoSim::new(SimConfig::default());
        let account = sim.register_account("tok-a", "A");
        sim.register_account("tok-b", "B");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(sim.clone().serve(listener, std::future::pending()));
        let http = reqwest::Client::new();
        let mailbox = serde_json::json!({"email": "x@a.example", "dailyCap": 5});
        let created = http.post(format!("{base}/v1/mailboxes")).bearer_auth("tok-a").json(&mailbox).send().await;
        assert!(created.expect("post").status().is_success());
        let read = http.get(format!("{base}/v1/mailboxes")).bearer_auth("tok-a").send().await.expect("get");
        assert!(read.status().is_success(), "a read is not a write");
        http.post(format!("{base}/v1/mailboxes")).bearer_auth("tok-b").json(&mailbox).send().await.expect("post");

        let who: serde_json::Value = http
            .get(format!("{base}/_sim/account-id"))
            .bearer_auth("tok-a")
            .send()
            .await
            .expect("account-id")
            .json()
            .await
            .expect("json");
        assert_eq!(who["accountId"], account.as_str());
        let log: serde_json::Value = http
            .get(format!("{base}/_sim/writes?accountId={account}"))
            .send()
            .await
            .expect("writes")
            .json()
            .await
            .expect("json");
        let writes = log["results"].as_array().expect("results");
        assert_eq!(writes.len(), 1, "{log}");
        assert_eq!(writes[0]["path"], "/v1/mailboxes");
        assert!(writes[0]["body"].as_str().expect("body").contains("x@a.example"));
        assert_eq!(sim.writes(None).len(), 2);
    }

    #[tokio::test]
    async fn an_account_opened_over_http_answers_its_token() {
        let sim = UpsoSim::new(SimConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(sim.clone().serve(listener, std::future::pending()));
        let http = reqwest::Client::new();
        let unknown = http.get(format!("{base}/v1/account")).bearer_auth("upso-new").send().await.expect("get");
        assert_eq!(unknown.status(), 401);
        let body = serde_json::json!({"token": "upso-new", "name": "New Co"});
        let opened = http.post(format!("{base}/_sim/accounts")).json(&body).send().await.expect("open");
        assert_eq!(opened.status(), 201);
        let id = opened.json::<serde_json::Value>().await.expect("json")["accountId"].clone();
        let again = http.post(format!("{base}/_sim/accounts")).json(&body).send().await.expect("open again");
        assert_eq!(again.json::<serde_json::Value>().await.expect("json")["accountId"], id, "same token, same account");
        let known = http.get(format!("{base}/v1/account")).bearer_auth("upso-new").send().await.expect("get");
        assert_eq!(known.status(), 200);
        let bad = serde_json::json!({"token": "two words", "name": "X"});
        let refused = http.post(format!("{base}/_sim/accounts")).json(&bad).send().await.expect("post");
        assert_eq!(refused.status(), 422);
    }
}

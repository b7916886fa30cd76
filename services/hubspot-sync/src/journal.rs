//! The webhooks journal as the primary change feed: each journal-enabled portal's local
//! journal is read in order from a stored offset, and its deal events are queued for a
//! re-read (the same queue push webhooks feed, so pipeline-tracker sees one
//! `deal.upserted` per deal version whichever way a change came).
//!
//! - **At most once**: queueing an entry's events and moving the offset past it happen in one
//!   transaction, conditional on the offset still being where this reader found it and on
//!   this replica holding the portal's lease. Events are also deduplicated with push webhooks
//!   (see [`crate::deals::take_changes`]).
//! - **One reader per portal**: a lease per company in `journal_state`, taken and renewed
//!   with conditional updates, so N replicas never read a journal twice.
//! - **The 3-day window**: the offset's age is bounded by when the reader last caught up;
//!   past `warn_after_secs` (default 2 days) it warns, counts
//!   `hubspot_journal_offset_at_risk_total` and says `offset_at_risk` in the sync status.
//!   The check runs on every pass before HubSpot is called, so a reader that keeps failing
//!   (the one whose offset ages) still warns, and `hubspot_journal_offset_age_seconds` keeps
//!   rising for the `GoMarkJournalOffsetAtRisk` alert. An expired offset (404) is recovered with a
//!   snapshot (every deal re-read, newer versions published) and reading goes on from the
//!   journal's latest entry, which the snapshot covers.

use crate::deals::{Change, DealSync, take_changes};
use crate::portals::{Portal, Portals};
use gomark_platform::Shutdown;
use gomark_storage::{Database, StorageError};
use hubspot_client::{AccessToken, HubSpotClient, JOURNAL_READ_SCOPE, JournalEntry};
use serde::Deserialize;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The journal keeps this much history.
pub const WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// A client-credentials token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JournalSettings {
    /// How often each journal is polled when it had nothing new (validated 100..=60000).
    pub poll_ms: u64,
    /// How long a replica's claim on a portal's journal lasts without renewal.
    pub lease_ms: u64,
    /// Entries taken per portal per pass (then the next portal gets its turn).
    pub max_entries_per_pass: u32,
    /// Warn when the offset may be this old (the journal keeps 3 days).
    pub warn_after_secs: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self { poll_ms: 1_000, lease_ms: 30_000, max_entries_per_pass: 100, warn_after_secs: 2 * 24 * 3600 }
    }
}

impl JournalSettings {
    pub fn validate(&self) -> Result<(), gomark_platform::settings::SettingsError> {
        use gomark_platform::settings::SettingsError;
        if !(100..=60_000).contains(&self.poll_ms) {
            return Err(SettingsError::invalid("journal.poll_ms", "must be between 100 and 60000"));
        }
        if !(1_000..=600_000).contains(&self.lease_ms) {
            return Err(SettingsError::invalid("journal.lease_ms", "must be between 1000 and 600000"));
        }
        if !(1..=10_000).contains(&self.max_entries_per_pass) {
            return Err(SettingsError::invalid("journal.max_entries_per_pass", "must be between 1 and 10000"));
        }
        if self.warn_after_secs == 0 || self.warn_after_secs >= WINDOW.as_secs() {
            return Err(SettingsError::invalid("journal.warn_after_secs", "must be below the 3-day window"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Sync(#[from] crate::deals::SyncError),
    #[error(transparent)]
    Portal(#[from] crate::portals::PortalError),
    #[error("HubSpot: {0}")]
    HubSpot(#[from] hubspot_client::Error),
    #[error("the journal read took longer than its lease")]
    Timeout,
}

impl From<sqlx::Error> for JournalError {
    fn from(err: sqlx::Error) -> Self {
        JournalError::Storage(err.into())
    }
}

/// What one pass over one portal did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Another replica holds the portal's lease: nothing read.
    pub leased_elsewhere: bool,
    pub entries: u32,
    pub events: u32,
    /// Deals queued for a re-read.
    pub queued: usize,
    /// The offset had expired and a snapshot was taken.
    pub recovered: bool,
    /// Nothing newer in the journal.
    pub caught_up: bool,
}

/// Where a portal's reader stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStatus {
    pub offset: String,
    pub caught_up_at_ms: i64,
    pub recoveries: i64,
    pub last_error: String,
    /// The offset may be older than `warn_after_secs`: it leaves HubSpot's 3-day window soon
    /// unless the reader catches up.
    pub offset_at_risk: bool,
}

#[derive(Clone)]
pub struct JournalReader {
    db: Database,
    portals: Portals,
    client: HubSpotClient,
    deals: DealSync,
    settings: JournalSettings,
    /// This replica, as lease owner.
    owner: String,
    tokens: Arc<Mutex<HashMap<String, (AccessToken, tokio::time::Instant)>>>,
    /// Who made each change, for drift records (definition changes reach GoMark only here).
    sources: Option<crate::sources::Sources>,
}

impl JournalReader {
    pub fn new(
        db: Database,
        portals: Portals,
        client: HubSpotClient,
        deals: DealSync,
        settings: JournalSettings,
    ) -> Self {
        Self {
            db,
            portals,
            client,
            deals,
            settings,
            owner: uuid::Uuid::now_v7().to_string(),
            tokens: Arc::default(),
            sources: None,
        }
    }

    /// Records who made each change read, as push webhooks do.
    pub fn with_sources(mut self, sources: crate::sources::Sources) -> Self {
        self.sources = Some(sources);
        self
    }

    /// Remembers the sources of `events` (best effort: a failure costs attribution only).
    async fn record_sources(&self, portal_id: &str, events: &[hubspot_client::JournalEvent]) {
        let Some(sources) = &self.sources else { return };
        let portal = portal_id.parse::<u64>().unwrap_or_default();
        let events: Vec<gomark_proto::hubspot_sync::v1::WebhookEvent> = events
            .iter()
            .filter(|e| !e.change_source.is_empty())
            .map(|e| gomark_proto::hubspot_sync::v1::WebhookEvent {
                portal_id: e.portal_id.unwrap_or(portal),
                occurred_time: gomark_proto::time::timestamp_opt(e.occurred_at),
                subscription_type: e.subscription_type.clone(),
                property_name: e.property_name.clone(),
                change_source: e.change_source.clone(),
                source_id: e.source_id.clone(),
                ..Default::default()
            })
            .collect();
        if !events.is_empty()
            && let Err(err) = sources.record(&events).await
        {
            tracing::warn!(portal_id, error = %err, "change sources from the journal not recorded");
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease_ms).unwrap_or(30_000)
    }

    /// Ends the journal leases an earlier process left, so its portals are read again at
    /// once. Only for a database no other process uses
    /// ([`gomark_service::Backends::exclusive`]), before this reader runs. Returns how many.
    pub async fn take_back_leases(&self) -> Result<u64, JournalError> {
        let taken =
            sqlx::query("UPDATE journal_state SET lease_until_ms = 0 WHERE lease_owner <> $1 AND lease_until_ms > 0")
                .bind(&self.owner)
                .execute(self.db.pool())
                .await?;
        Ok(taken.rows_affected())
    }

    /// Takes or renews the company's lease; false when another replica holds it.
    async fn lease(&self, company_id: &str) -> Result<bool, JournalError> {
        let now = gomark_storage::now_ms();
        sqlx::query("INSERT INTO journal_state (company_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(company_id)
            .execute(self.db.pool())
            .await?;
        let held = sqlx::query(
            "UPDATE journal_state SET lease_owner = $1, lease_until_ms = $2 \
             WHERE company_id = $3 AND (lease_owner = $1 OR lease_until_ms < $4)",
        )
        .bind(&self.owner)
        .bind(now + self.lease_ms())
        .bind(company_id)
        .bind(now)
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1;
        Ok(held)
    }

    pub async fn status(&self, company_id: &str) -> Result<JournalStatus, JournalError> {
        let row = sqlx::query(
            "SELECT journal_offset, caught_up_at_ms, recoveries, last_error FROM journal_state WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(r) = row else { return Ok(JournalStatus::default()) };
        let mut status = JournalStatus {
            offset: r.try_get("journal_offset")?,
            caught_up_at_ms: r.try_get("caught_up_at_ms")?,
            recoveries: r.try_get("recoveries")?,
            last_error: r.try_get("last_error")?,
            offset_at_risk: false,
        };
        status.offset_at_risk = offset_age_ms(&status, gomark_storage::now_ms())
            .is_some_and(|age| at_risk(age, self.settings.warn_after_secs));
        Ok(status)
    }

    /// The client-credentials token of the portal's journal, cached until shortly before it
    /// expires.
    async fn token(&self, portal: &Portal) -> Result<Option<AccessToken>, JournalError> {
        let Some(cc) = &portal.journal else { return Ok(None) };
        let now = tokio::time::Instant::now();
        if let Some((token, until)) = self.cached(&portal.company_id)
            && until > now
        {
            return Ok(Some(token));
        }
        let fresh = self
            .client
            .client_credentials_token(&portal.token(), &cc.client_id, &cc.client_secret, JOURNAL_READ_SCOPE)
            .await?;
        let until = now + fresh.expires_in.saturating_sub(TOKEN_MARGIN);
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(portal.company_id.clone(), (fresh.access_token.clone(), until));
        Ok(Some(fresh.access_token))
    }

    fn cached(&self, company_id: &str) -> Option<(AccessToken, tokio::time::Instant)> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(company_id).cloned()
    }

    fn forget_token(&self, company_id: &str) {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(company_id);
    }

    /// Reads what is new in the company's journal (if this replica gets its lease), within
    /// the lease's time. Errors are recorded on the portal's state and retried next pass.
    pub async fn poll(&self, company_id: &str) -> Result<Pass, JournalError> {
        if !self.lease(company_id).await? {
            return Ok(Pass { leased_elsewhere: true, ..Pass::default() });
        }
        let Some(portal) = self.portals.get(company_id).await? else { return Ok(Pass::default()) };
        // Before any call to HubSpot: a reader that cannot read is the one whose offset ages.
        let state = self.status(company_id).await?;
        self.warn_if_old(&portal, &state);
        let budget = Duration::from_millis(self.settings.lease_ms);
        let result = match tokio::time::timeout(budget, self.read(&portal, state)).await {
            Ok(result) => result,
            Err(_) => Err(JournalError::Timeout),
        };
        let error = match &result {
            Ok(_) => String::new(),
            Err(err) => err.to_string().chars().take(300).collect(),
        };
        if let Err(err) = &result {
            if matches!(err, JournalError::HubSpot(e) if e.status() == Some(401)) {
                self.forget_token(company_id);
            }
            metrics::counter!("hubspot_journal_errors_total").increment(1);
        }
        sqlx::query("UPDATE journal_state SET last_error = $1 WHERE company_id = $2")
            .bind(&error)
            .bind(company_id)
            .execute(self.db.pool())
            .await?;
        result
    }

    async fn read(&self, portal: &Portal, mut state: JournalStatus) -> Result<Pass, JournalError> {
        let mut pass = Pass::default();
        let company_id = portal.company_id.as_str();
        let Some(token) = self.token(portal).await? else { return Ok(pass) };
        while pass.entries < self.settings.max_entries_per_pass {
            let next = if state.offset.is_empty() {
                // First read: from the oldest entry kept, so nothing of the last 3 days is
                // missed (the backfill covers what is older; re-reads publish only news).
                self.client.journal_earliest(&token, &portal.portal_id).await
            } else {
                self.client.journal_next(&token, &portal.portal_id, &state.offset).await
            };
            let entry = match next {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    self.caught_up(company_id).await?;
                    pass.caught_up = true;
                    break;
                }
                Err(e) if e.is_expired_offset() && !state.offset.is_empty() => {
                    state.offset = self.recover(portal, &token, &state.offset).await?;
                    pass.recovered = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let events = self.client.journal_entry_events(&entry).await?;
            let changes: Vec<(String, Change)> = events
                .iter()
                .filter(|e| e.portal_id.is_none_or(|p| p.to_string() == portal.portal_id))
                .filter(|e| !e.object_id.is_empty())
                .map(|e| {
                    let change = Change {
                        portal_id: portal.portal_id.clone(),
                        object_id: e.object_id.clone(),
                        event_id: e.event_id.clone(),
                        occurred_at: e.occurred_at,
                        about_deals: e.is_about_deals(),
                        // The journal's entries carry no values: its changes are re-read only.
                        moved: None,
                    };
                    (company_id.to_owned(), change)
                })
                .collect();
            if !self.take(company_id, &state.offset, &entry, &changes).await? {
                // Another replica moved the offset (our lease lapsed): stop, it reads on.
                break;
            }
            self.record_sources(&portal.portal_id, &events).await;
            state.offset = entry.current_offset;
            pass.entries += 1;
            pass.events += u32::try_from(changes.len()).unwrap_or(u32::MAX);
            pass.queued += changes.iter().filter(|(_, c)| c.about_deals).count();
        }
        metrics::counter!("hubspot_journal_entries_total").increment(u64::from(pass.entries));
        Ok(pass)
    }

    /// Queues the entry's changes and moves the offset past it, in one transaction, only if
    /// the offset is still `from` and this replica still holds the lease.
    async fn take(
        &self,
        company_id: &str,
        from: &str,
        entry: &JournalEntry,
        changes: &[(String, Change)],
    ) -> Result<bool, JournalError> {
        let now = gomark_storage::now_ms();
        let mut tx = self.db.begin().await?;
        let moved = sqlx::query(
            "UPDATE journal_state SET journal_offset = $1, lease_until_ms = $2 \
             WHERE company_id = $3 AND journal_offset = $4 AND lease_owner = $5 AND lease_until_ms >= $6",
        )
        .bind(&entry.current_offset)
        .bind(now + self.lease_ms())
        .bind(company_id)
        .bind(from)
        .bind(&self.owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            return Ok(false);
        }
        let taken = take_changes(&mut tx, changes).await.map_err(JournalError::Sync)?;
        tx.commit().await?;
        self.deals.after_taken(&taken, "journal");
        Ok(true)
    }

    async fn caught_up(&self, company_id: &str) -> Result<(), JournalError> {
        sqlx::query("UPDATE journal_state SET caught_up_at_ms = $1 WHERE company_id = $2 AND lease_owner = $3")
            .bind(gomark_storage::now_ms())
            .bind(company_id)
            .bind(&self.owner)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The offset fell out of the journal: remember the journal's newest entry, re-read every
    /// deal (publishing what is newer), then read on after that entry. Changes made after
    /// the snapshot started are in entries after it, so nothing is lost.
    async fn recover(&self, portal: &Portal, token: &AccessToken, expired: &str) -> Result<String, JournalError> {
        tracing::warn!(company_id = %portal.company_id, portal_id = %portal.portal_id, "journal offset expired; recovering with a snapshot");
        let latest = self.client.journal_latest(token, &portal.portal_id).await?;
        let deals = self.deals.resync_all(&portal.company_id).await?;
        let offset = latest.map(|e| e.current_offset).unwrap_or_default();
        let now = gomark_storage::now_ms();
        sqlx::query(
            "UPDATE journal_state SET journal_offset = $1, recoveries = recoveries + 1, caught_up_at_ms = $2, lease_until_ms = $3 \
             WHERE company_id = $4 AND journal_offset = $5 AND lease_owner = $6",
        )
        .bind(&offset)
        .bind(now)
        .bind(now + self.lease_ms())
        .bind(&portal.company_id)
        .bind(expired)
        .bind(&self.owner)
        .execute(self.db.pool())
        .await?;
        metrics::counter!("hubspot_journal_recoveries_total").increment(1);
        tracing::info!(company_id = %portal.company_id, deals, "journal recovered from a snapshot");
        Ok(offset)
    }

    /// Warns (log and metric) when the offset may be old enough to fall out of the window soon.
    fn warn_if_old(&self, portal: &Portal, state: &JournalStatus) {
        let now = gomark_storage::now_ms();
        let Some(age_ms) = offset_age_ms(state, now) else { return };
        metrics::gauge!("hubspot_journal_offset_age_seconds", "portal_id" => portal.portal_id.clone())
            .set(age_ms as f64 / 1000.0);
        if state.offset_at_risk {
            let left_h = (WINDOW.as_millis() as i64 - age_ms).max(0) / 3_600_000;
            tracing::warn!(company_id = %portal.company_id, portal_id = %portal.portal_id, age_hours = age_ms / 3_600_000, hours_left = left_h, "journal offset is close to leaving HubSpot's 3-day window");
            metrics::counter!("hubspot_journal_offset_at_risk_total").increment(1);
        }
    }

    /// Polls every journal-enabled portal, a few at once, until shutdown. A portal with news
    /// is polled again at once; otherwise every `poll_ms`. Survives its database going away.
    pub async fn run(self, shutdown: Shutdown) {
        use futures::StreamExt as _;
        const CONCURRENT_PORTALS: usize = 8;
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut outage = gomark_platform::Outage::new("journal reader");
        while !shutdown.is_triggered() {
            let companies = match self.portals.journal_company_ids().await {
                Ok(c) => {
                    outage.ok();
                    c
                }
                Err(err) => {
                    outage.failed(&err);
                    Vec::new()
                }
            };
            let this = &self;
            let busy = futures::stream::iter(companies)
                .take_while(|_| std::future::ready(!shutdown.is_triggered()))
                .map(|company| {
                    let poll = async move {
                        match this.poll(&company).await {
                            Ok(pass) => pass.entries > 0 && !pass.caught_up,
                            Err(err) => {
                                tracing::warn!(company_id = %company, error = %err, "journal read failed, will retry");
                                false
                            }
                        }
                    };
                    // One trace per portal's poll, like a deal sync pass.
                    poll.instrument(gomark_platform::telemetry::root_span("journal poll"))
                })
                .buffer_unordered(CONCURRENT_PORTALS)
                .fold(false, |any, busy| std::future::ready(any || busy))
                .await;
            if !busy {
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
    }
}

/// How old the offset may be: time since the reader last caught up; `None` before the first
/// catch-up (nothing to warn about yet).
fn offset_age_ms(state: &JournalStatus, now_ms: i64) -> Option<i64> {
    (!state.offset.is_empty() && state.caught_up_at_ms > 0).then(|| now_ms.saturating_sub(state.caught_up_at_ms).max(0))
}

/// Whether an offset this old is past the warning age.
fn at_risk(age_ms: i64, warn_after_secs: u64) -> bool {
    age_ms > i64::try_from(warn_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_at_risk_well_before_the_window_ends() {
        let hour = 3_600_000;
        let state = |offset: &str, caught_up_at_ms| JournalStatus {
            offset: offset.into(),
            caught_up_at_ms,
            ..JournalStatus::default()
        };
        let now = 100 * 24 * hour;
        assert_eq!(offset_age_ms(&state("", 0), now), None, "never read");
        assert_eq!(offset_age_ms(&state("o1", 0), now), None, "never caught up yet");
        let warn = JournalSettings::default().warn_after_secs;
        let age = |hours: i64| offset_age_ms(&state("o1", now - hours * hour), now).expect("age");
        assert!(!at_risk(age(47), warn), "47 h behind: fine");
        assert!(at_risk(age(49), warn), "49 h behind: warned, 23 h before HubSpot drops it");
        assert!(JournalSettings::default().validate().is_ok());
        let too_late = JournalSettings { warn_after_secs: WINDOW.as_secs(), ..JournalSettings::default() };
        assert!(too_late.validate().is_err(), "a warning at the window's end is no warning");
        let too_fast = JournalSettings { poll_ms: 10, ..JournalSettings::default() };
        assert!(too_fast.validate().is_err());
    }
}

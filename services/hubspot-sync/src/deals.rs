//! Deal ingest: HubSpot's deals become `deal.upserted` / `deal.deleted` events, each
//! version exactly once.
//!
//! Four ways in, one way out:
//! - the webhooks journal ([`crate::journal`]), the primary feed: read in order from a stored
//!   offset, each event taken once, queued;
//! - push webhooks (hints): verified by the gateway, deduplicated here (with the journal's
//!   events: an event that arrives both ways is taken once), queued;
//! - the incremental sync, per company, on a timer: deals modified since the cursor
//!   (the safety net for lost webhooks);
//! - the backfill, once per company when it is onboarded: every deal.
//!
//! All of them re-read deals from HubSpot and publish only when `hs_lastmodifieddate`
//! moved forward, recorded in `deal_versions` in the same transaction as the outbox
//! event, so duplicates, reordering and several replicas change nothing.
//!
//! One shortcut: a push webhook's new `dealstage` or `pipeline` goes out at once as
//! `deal.stage_changed`, in the dedupe's transaction (so once), for funnels to move before
//! the re-read the portal's budget paces. Readers let the re-read's version replace it.

use crate::portals::{Portal, Portals};
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::Shutdown;
use gomark_proto::events::v1::{DealDeleted, DealStageChanged, DealUpserted};
use gomark_proto::hubspot_sync::v1::{SyncStatus, WebhookEvent};
use gomark_proto::time::{millis_opt, timestamp_opt};
use gomark_storage::group::{GroupCommit, GroupError};
use gomark_storage::{Database, Engine, StorageError};
use hubspot_client::{Deal, HubSpotClient};
use serde::Deserialize;
use sqlx::{AnyConnection, Row};
use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

/// The deal's amount as exact money: HubSpot's decimal text in `deal_currency_code`.
/// `None` when the deal has no amount, no currency or an unreadable one (the event still
/// carries the double, which readers take in the company's currency).
fn deal_money(deal: &Deal) -> Option<gomark_proto::common::v1::Money> {
    let amount = gomark_proto::money::parse_decimal(deal.amount_text()?).ok()?;
    let currency = deal.currency_code()?.parse().ok()?;
    gomark_proto::money::Money::new(amount, currency).to_proto().ok()
}

/// The deal properties every event carries.
pub const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "dealstage",
    "pipeline",
    "amount",
    "deal_currency_code",
    "closedate",
    "hubspot_owner_id",
    "hs_lastmodifieddate",
    "createdate",
    "gomark_contact_email",
    "gomark_contact_first_name",
    "gomark_contact_time_zone",
    "gomark_product_usage",
    "gomark_renewal_date",
    "gomark_seats",
    "gomark_customer_tier",
    "gomark_escalation",
];

/// The customer properties (read as well, HubSpot omits the ones a portal lacks) that
/// events carry in `properties` for the upsell engine's rules.
const CUSTOMER_PROPERTIES: &[&str] = &[
    "gomark_contact_email",
    "gomark_contact_first_name",
    "gomark_contact_time_zone",
    "gomark_product_usage",
    "gomark_renewal_date",
    "gomark_seats",
    "gomark_customer_tier",
    "gomark_escalation",
];

/// HubSpot's batch read takes at most 100 ids.
const BATCH: usize = 100;
/// Webhook dedupe records are kept this long (HubSpot retries for about a day).
const KEEP_SEEN_MS: i64 = 3 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DealSyncSettings {
    /// How often each company's incremental sync runs.
    pub interval_secs: u64,
    /// Each run re-reads this far behind the cursor, for writes the index showed late.
    pub overlap_secs: u64,
    /// How often queued webhook hints are looked for when no webhook woke the loop (one
    /// landed on another replica, or a wake was lost).
    pub queue_poll_ms: u64,
    /// HubSpot's search shows writes after a lag; the sync never looks closer to now.
    pub index_lag_secs: u64,
}

impl Default for DealSyncSettings {
    fn default() -> Self {
        Self { interval_secs: 300, overlap_secs: 120, queue_poll_ms: 200, index_lag_secs: 60 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Portal(#[from] crate::portals::PortalError),
    #[error(transparent)]
    Events(#[from] gomark_events::EventError),
    #[error("HubSpot: {0}")]
    HubSpot(#[from] hubspot_client::Error),
    /// A webhook batch's group (see [`DealSync::ingest`]) was not taken.
    #[error(transparent)]
    Grouped(#[from] GroupError<SyncError>),
}

impl From<sqlx::Error> for SyncError {
    fn from(err: sqlx::Error) -> Self {
        SyncError::Storage(err.into())
    }
}

pub type Result<T> = std::result::Result<T, SyncError>;

#[derive(Clone)]
pub struct DealSync {
    db: Database,
    portals: Portals,
    client: HubSpotClient,
    relay: RelayWaker,
    settings: DealSyncSettings,
    /// Rung when webhooks queued deals, so they are re-read at once, not on the next poll.
    queued: std::sync::Arc<Queued>,
    /// Who made each change, recorded with the webhook batches that bring them.
    sources: Option<crate::sources::Sources>,
    /// Webhook batches arriving together, taken in one transaction.
    intake: std::sync::Arc<GroupCommit<Vec<WebhookEvent>, Ingested, SyncError>>,
}

/// Webhook events per [`DealSync::ingest`] transaction at most: a group stays a few
/// statements of each kind, so its turn at SQLite's writer stays short.
const INGEST_GROUP_EVENTS: usize = 2_000;

/// The companies this process queued deals for since the re-read loop last looked, and the
/// bell that wakes it. Only a hint: deals queued by another replica are found by the poll.
#[derive(Default)]
struct Queued {
    companies: std::sync::Mutex<QueuedCompanies>,
    bell: tokio::sync::Notify,
}

/// Companies with deals queued for a re-read, and those of them with urgent deals
/// ([`Taken::urgent`]).
#[derive(Debug, Default)]
struct QueuedCompanies {
    all: HashSet<String>,
    urgent: HashSet<String>,
}

impl Queued {
    fn ring(&self, taken: &Taken) {
        {
            let mut queued = self.companies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queued.all.extend(taken.companies.iter().cloned());
            queued.urgent.extend(taken.urgent.iter().cloned());
        }
        // A permit is kept if the loop is busy, so this wake is never lost.
        self.bell.notify_one();
    }

    fn take(&self) -> QueuedCompanies {
        std::mem::take(&mut *self.companies.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// One change event, from either feed (push webhooks or the journal), in the terms dedupe
/// needs. Both feeds key it alike, so an event arriving both ways is taken once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub portal_id: String,
    pub object_id: String,
    pub event_id: String,
    pub occurred_at: i64,
    /// Whether the object is a deal (only those are re-read).
    pub about_deals: bool,
    /// The deal's new stage or pipeline, when the event is a change of one with its value.
    pub moved: Option<Moved>,
}

/// What a `deal.propertyChange` event said about where the deal is, published at once as
/// `deal.stage_changed` (the re-read that follows is the truth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    Stage(String),
    Pipeline(String),
}

impl Moved {
    /// The move a property change event describes: `dealstage` or `pipeline` set to a value.
    pub fn of(subscription_type: &str, property: &str, value: &str) -> Option<Self> {
        if !subscription_type.ends_with(".propertyChange") || value.is_empty() {
            return None;
        }
        match property {
            "dealstage" => Some(Self::Stage(value.to_owned())),
            "pipeline" => Some(Self::Pipeline(value.to_owned())),
            _ => None,
        }
    }
}

/// What [`take_changes`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    pub accepted: u32,
    pub duplicates: u32,
    /// Deals queued for a re-read.
    pub queued: usize,
    /// The companies those deals belong to.
    pub companies: Vec<String>,
    /// Those of them with a deal queued for more than a published move: its re-read is what
    /// shows the change, so it is not held back to gather (see [`HINTED_WAIT`]).
    pub urgent: Vec<String>,
    /// `deal.stage_changed` events put in the outbox.
    pub moves: usize,
    /// Per change, in order: whether it was new (not a duplicate).
    pub fresh: Vec<bool>,
}

/// Records `changes` (each with its company) as seen and queues their deals for a re-read, in
/// the caller's transaction: a change seen before (by either feed) is a duplicate and queues
/// nothing. One statement per 100 rows, so a batch holds the write lock briefly (SQLite has a
/// single writer).
pub(crate) async fn take_changes(conn: &mut AnyConnection, changes: &[(String, Change)]) -> Result<Taken> {
    let now = gomark_storage::now_ms();
    let mut fresh = HashSet::new();
    // In key order, so concurrent transactions (groups on Postgres, replicas) taking the
    // same events lock them alike instead of deadlocking.
    let mut in_key_order: Vec<&(String, Change)> = changes.iter().collect();
    in_key_order.sort_by(|(_, a), (_, b)| {
        (&a.portal_id, &a.object_id, &a.event_id, a.occurred_at).cmp(&(
            &b.portal_id,
            &b.object_id,
            &b.event_id,
            b.occurred_at,
        ))
    });
    let engine = Engine::of_connection(conn);
    for chunk in in_key_order.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO change_events_seen (portal_id, object_id, event_id, occurred_at, seen_at) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING portal_id, object_id, event_id, occurred_at",
            engine.values_rows(chunk.len(), 5)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, c) in chunk {
            query = query
                .bind(c.portal_id.clone())
                .bind(c.object_id.clone())
                .bind(c.event_id.clone())
                .bind(c.occurred_at)
                .bind(now);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let key: (String, String, String, i64) = (
                row.try_get("portal_id")?,
                row.try_get("object_id")?,
                row.try_get("event_id")?,
                row.try_get("occurred_at")?,
            );
            fresh.insert(key);
        }
    }
    let mut taken = Taken { fresh: Vec::with_capacity(changes.len()), ..Taken::default() };
    // Each deal to re-read, and whether all its changes here were moves published below; and
    // where each deal is in that list (a group holds thousands of changes).
    let mut to_refresh: Vec<((String, String), bool)> = Vec::new();
    let mut refresh_index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    // Stage and pipeline changes of one deal at one instant become one event: HubSpot sends
    // a move to another pipeline as two.
    let mut moves: std::collections::BTreeMap<(&str, &str, &str, i64), DealStageChanged> =
        std::collections::BTreeMap::new();
    for (company, c) in changes {
        let key = (c.portal_id.clone(), c.object_id.clone(), c.event_id.clone(), c.occurred_at);
        let new = fresh.remove(&key);
        taken.fresh.push(new);
        if !new {
            taken.duplicates += 1;
            continue;
        }
        taken.accepted += 1;
        if let (true, Some(moved)) = (c.about_deals, &c.moved) {
            let event = moves.entry((company, &c.portal_id, &c.object_id, c.occurred_at)).or_insert_with(|| {
                DealStageChanged {
                    company_id: company.clone(),
                    portal_id: c.portal_id.clone(),
                    deal_id: c.object_id.clone(),
                    ..DealStageChanged::default()
                }
                .with_changed_at(c.occurred_at)
            });
            match moved {
                Moved::Stage(stage) => event.stage_id = Some(stage.clone()),
                Moved::Pipeline(pipeline) => event.pipeline_id = Some(pipeline.clone()),
            }
        }
        if c.about_deals {
            let deal = (company.clone(), c.object_id.clone());
            match refresh_index.get(&deal) {
                Some(&at) => to_refresh[at].1 &= c.moved.is_some(),
                None => {
                    refresh_index.insert(deal.clone(), to_refresh.len());
                    to_refresh.push((deal, c.moved.is_some()));
                }
            }
        }
    }
    // Key order again, for the same reason.
    to_refresh.sort_by(|(a, _), (b, _)| a.cmp(b));
    for chunk in to_refresh.chunks(BATCH) {
        let sql = format!(
            // A deal already queued keeps its place but bumps its generation: a re-read in
            // flight then leaves it queued, since what it read may predate this change. It
            // stays hinted only while every change was.
            "INSERT INTO deal_refresh_queue (company_id, deal_id, enqueued_at, hinted) VALUES {} \
             ON CONFLICT (company_id, deal_id) DO UPDATE SET generation = deal_refresh_queue.generation + 1, \
             hinted = CASE WHEN excluded.hinted = 0 THEN 0 ELSE deal_refresh_queue.hinted END",
            engine.values_rows(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((company, deal), hinted) in chunk {
            query = query.bind(company.clone()).bind(deal.clone()).bind(now).bind(i64::from(*hinted));
        }
        query.execute(&mut *conn).await?;
    }
    let events: Vec<_> =
        moves.into_values().map(|m| new_event(&m.company_id, event_types::DEAL_STAGE_CHANGED, &m)).collect();
    gomark_events::outbox::enqueue_all(conn, &events).await?;
    taken.moves = events.len();
    taken.queued = to_refresh.len();
    let mut companies = HashSet::new();
    let mut urgent = HashSet::new();
    for ((company, _), hinted) in to_refresh {
        if !hinted && urgent.insert(company.clone()) {
            taken.urgent.push(company.clone());
        }
        if companies.insert(company.clone()) {
            taken.companies.push(company);
        }
    }
    Ok(taken)
}

/// A deal picked from the refresh queue, at the generation it was picked at.
struct Picked {
    deal_id: String,
    generation: i64,
}

/// What one re-read of a company's queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// This many queued deals were read (and published when newer); 0 when none waited.
    Done(usize),
    /// Nothing was read: the queue waits, and why.
    Rests(Rest),
}

/// What one pass over one company did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassOutcome {
    /// How many deals its last re-read took (0: it read none).
    last_read: usize,
    /// Its backfill is known to be done.
    done: bool,
    /// Its queue waits this long, and why.
    deferred: Option<Rest>,
}

/// Why a company's queue waits before its next re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// The portal's budget has no slot before then.
    Budget(Duration),
    /// Hinted moves gather into one read ([`HINTED_WAIT`]): urgent work ends the wait.
    Gathering(Duration),
}

/// What `ingest` did with a batch of webhook events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: u32,
    pub duplicates: u32,
    pub unknown_portal: u32,
}

impl DealSync {
    pub fn new(
        db: Database,
        portals: Portals,
        client: HubSpotClient,
        relay: RelayWaker,
        settings: DealSyncSettings,
    ) -> Self {
        // SQLite has one writer: one group at a time. Postgres commits as many as the pool
        // has connections, so batches group only once they would wait for a connection.
        let committers = match db.engine() {
            Engine::Sqlite => 1,
            Engine::Postgres => db.pool().options().get_max_connections() as usize,
        };
        let intake = std::sync::Arc::new(GroupCommit::new(committers, INGEST_GROUP_EVENTS));
        Self { db, portals, client, relay, settings, queued: std::sync::Arc::default(), sources: None, intake }
    }

    /// Records who made each change (see [`crate::sources`]) with the webhook batches.
    pub fn with_sources(mut self, sources: crate::sources::Sources) -> Self {
        self.sources = Some(sources);
        self
    }

    fn index_lag_ms(&self) -> i64 {
        self.settings.index_lag_secs as i64 * 1000
    }

    /// Records webhook events and queues their deals for a re-read, and (with
    /// [`Self::with_sources`]) who made each change, all in one transaction. Fast: no HubSpot
    /// call.
    ///
    /// Batches arriving while another commits are taken together in the next transaction
    /// ([`GroupCommit`]): at 2,000 changes/s over 200 portals, a transaction per webhook
    /// request kept hubspot-sync's SQLite writer busy and each batch waited 70 ms for it
    /// (3.8 ms in groups).
    /// A batch is taken only with its whole group; each gets its own counts.
    pub async fn ingest(&self, events: Vec<WebhookEvent>) -> Result<Ingested> {
        let weight = events.len();
        let this = self.clone();
        let commit = move |group: Vec<Vec<WebhookEvent>>| {
            let this = this.clone();
            async move { this.ingest_group(group).await }
        };
        Ok(self.intake.submit(events, weight, commit).await?)
    }

    /// [`Self::ingest`]'s transaction for a group of batches; one outcome per batch.
    async fn ingest_group(&self, group: Vec<Vec<WebhookEvent>>) -> Result<Vec<Ingested>> {
        let mut outcomes = vec![Ingested::default(); group.len()];
        let events: Vec<(usize, WebhookEvent)> = group
            .into_iter()
            .enumerate()
            .flat_map(|(batch, events)| events.into_iter().map(move |e| (batch, e)))
            .collect();
        let portal_ids: Vec<String> = events.iter().map(|(_, e)| e.portal_id.to_string()).collect();
        // One statement for the group's portals, not one per portal.
        let companies = self.portals.companies_of_portals(&portal_ids).await?;
        let mut known = Vec::with_capacity(events.len());
        let mut owners = Vec::with_capacity(events.len());
        for (batch, e) in &events {
            let change = Change {
                portal_id: e.portal_id.to_string(),
                object_id: e.object_id.to_string(),
                event_id: e.event_id.to_string(),
                occurred_at: gomark_proto::time::millis_opt(e.occurred_time.as_ref()),
                about_deals: e.subscription_type.starts_with("deal.") || e.subscription_type.starts_with("object."),
                moved: Moved::of(&e.subscription_type, &e.property_name, &e.property_value),
            };
            match companies.get(&change.portal_id) {
                Some(company) => {
                    known.push((company.clone(), change));
                    owners.push(*batch);
                }
                None => outcomes[*batch].unknown_portal += 1,
            }
        }
        // Urgent: stage moves reach the funnels from this transaction's outbox.
        let mut tx = self.db.begin_urgent().await?;
        let taken = take_changes(&mut tx, &known).await?;
        if let Some(sources) = &self.sources {
            let events: Vec<WebhookEvent> = events.into_iter().map(|(_, e)| e).collect();
            sources.record_in(&mut tx, &companies, &events).await?;
        }
        tx.commit().await?;
        for (batch, fresh) in owners.into_iter().zip(&taken.fresh) {
            if *fresh {
                outcomes[batch].accepted += 1;
            } else {
                outcomes[batch].duplicates += 1;
            }
        }
        self.after_taken(&taken, "webhook");
        Ok(outcomes)
    }

    /// After a transaction holding [`take_changes`] committed: wake the re-read loop, count.
    pub(crate) fn after_taken(&self, taken: &Taken, feed: &'static str) {
        if taken.queued > 0 {
            self.queued.ring(taken);
        }
        if taken.moves > 0 {
            self.relay.wake();
            metrics::counter!("hubspot_deals_published_total", "kind" => "stage_changed").increment(taken.moves as u64);
        }
        metrics::counter!("hubspot_webhook_events_ingested_total", "outcome" => "accepted", "feed" => feed)
            .increment(u64::from(taken.accepted));
        metrics::counter!("hubspot_webhook_events_ingested_total", "outcome" => "duplicate", "feed" => feed)
            .increment(u64::from(taken.duplicates));
    }

    /// Reads every deal of the company and publishes those newer than what was published:
    /// the snapshot that recovers a journal whose offset expired.
    pub async fn resync_all(&self, company_id: &str) -> Result<usize> {
        let Some(portal) = self.portals.get(company_id).await? else { return Ok(0) };
        let mut after = String::new();
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let (deals, next) =
                list_deals_page(&self.client, &portal, (!after.is_empty()).then_some(after.as_str())).await?;
            self.publish_all(&portal, &deals).await?;
            seen.extend(deals.into_iter().map(|d| d.id));
            after = next.unwrap_or_default();
            if after.is_empty() {
                break;
            }
        }
        self.publish_missing(&portal, &seen).await?;
        Ok(seen.len())
    }

    /// Deals GoMark holds as live that a full listing did not show: deleted while nobody was
    /// told (an expired journal offset). Each is read once more (it may have been created or
    /// changed while the listing ran); those HubSpot no longer has are published as deleted.
    async fn publish_missing(&self, portal: &Portal, listed: &HashSet<String>) -> Result<()> {
        let rows = sqlx::query("SELECT deal_id FROM deal_versions WHERE company_id = $1 AND deleted = 0")
            .bind(&portal.company_id)
            .fetch_all(self.db.pool())
            .await?;
        let candidates: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("deal_id"))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|id| !listed.contains(id))
            .collect();
        for chunk in candidates.chunks(BATCH) {
            let found = read_deals(&self.client, portal, chunk).await?;
            let mut tx = self.db.begin().await?;
            publish_read(&mut tx, portal, chunk, &found).await?;
            tx.commit().await?;
        }
        if !candidates.is_empty() {
            self.relay.wake();
        }
        Ok(())
    }

    /// Re-reads up to one batch of queued deals of `company`; returns how many were done.
    /// Waits for the portal's budget when it has no slot.
    pub async fn refresh_queued(&self, company_id: &str) -> Result<usize> {
        match self.refresh(company_id, &self.client, false).await? {
            Refresh::Done(n) => Ok(n),
            // Only asked for: `refresh` defers and gathers when told to.
            Refresh::Rests(_) => Ok(0),
        }
    }

    /// Like [`Self::refresh_queued`], but when the portal's budget has no slot free now it
    /// reads nothing and says when to come back: the deals queued meanwhile then share that
    /// one batch read, instead of each read waiting with the ids it picked before the wait.
    async fn refresh_or_defer(&self, company_id: &str) -> Result<Refresh> {
        let client = self.client.clone().with_budget_wait_until(tokio::time::Instant::now());
        self.refresh(company_id, &client, true).await
    }

    async fn refresh(&self, company_id: &str, client: &HubSpotClient, defer: bool) -> Result<Refresh> {
        let rows = sqlx::query(
            "SELECT deal_id, generation, hinted, enqueued_at FROM deal_refresh_queue WHERE company_id = $1 \
             ORDER BY enqueued_at LIMIT $2",
        )
        .bind(company_id)
        .bind(BATCH as i64)
        .fetch_all(self.db.pool())
        .await?;
        let mut oldest = i64::MAX;
        let mut all_hinted = true;
        let mut picked = Vec::with_capacity(rows.len());
        for r in &rows {
            picked.push(Picked { deal_id: r.try_get("deal_id")?, generation: r.try_get("generation")? });
            all_hinted &= r.try_get::<i64, _>("hinted")? != 0;
            oldest = oldest.min(r.try_get::<i64, _>("enqueued_at")?);
        }
        if picked.is_empty() {
            return Ok(Refresh::Done(0));
        }
        // Only moves that funnels already show: wait for more deals to share the read (urgent
        // work queued meanwhile ends the wait: see `Schedule::queued`).
        let waited = Duration::from_millis(u64::try_from(gomark_storage::now_ms() - oldest).unwrap_or(0));
        if defer && all_hinted && picked.len() < BATCH && waited < HINTED_WAIT {
            return Ok(Refresh::Rests(Rest::Gathering(HINTED_WAIT - waited)));
        }
        let ids: Vec<String> = picked.iter().map(|q| q.deal_id.clone()).collect();
        let Some(portal) = self.portals.get(company_id).await? else {
            self.dequeue(company_id, &picked).await?;
            return Ok(Refresh::Done(ids.len()));
        };
        let found = match read_deals(client, &portal, &ids).await {
            Ok(found) => found,
            Err(SyncError::HubSpot(hubspot_client::Error::RateLimited {
                policy: hubspot_client::RateLimitPolicy::TenSecondlyRolling,
                retry_after: Some(wait),
            })) if defer => return Ok(Refresh::Rests(Rest::Budget(wait))),
            Err(err) => return Err(err),
        };
        let mut tx = self.db.begin().await?;
        publish_read(&mut tx, &portal, &ids, &found).await?;
        delete_from_queue(&mut tx, company_id, &picked).await?;
        tx.commit().await?;
        self.relay.wake();
        Ok(Refresh::Done(ids.len()))
    }

    async fn dequeue(&self, company_id: &str, picked: &[Picked]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        delete_from_queue(&mut tx, company_id, picked).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Publishes every deal in `deals` that is newer than what was published.
    async fn publish_all(&self, portal: &Portal, deals: &[Deal]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        publish_newer(&mut tx, portal, deals).await?;
        tx.commit().await?;
        self.relay.wake();
        Ok(())
    }

    async fn state(&self, company_id: &str) -> Result<SyncStatus> {
        let row = sqlx::query(
            "SELECT backfill_state, backfill_deals, cursor_ms, last_sync_at_ms, last_error FROM deal_sync_state WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_optional(self.db.pool())
        .await?;
        let queued: i64 = sqlx::query("SELECT COUNT(*) AS n FROM deal_refresh_queue WHERE company_id = $1")
            .bind(company_id)
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        let mut status =
            SyncStatus { company_id: company_id.to_owned(), backfill_state: "pending".into(), ..SyncStatus::default() };
        if let Some(r) = row {
            status.backfill_state = r.try_get("backfill_state")?;
            status.backfill_deals = r.try_get::<i64, _>("backfill_deals")?.max(0) as u64;
            status.cursor = timestamp_opt(r.try_get("cursor_ms")?);
            status.last_sync_at = timestamp_opt(r.try_get("last_sync_at_ms")?);
            status.last_error = r.try_get("last_error")?;
        }
        status.queued_deals = queued.max(0) as u64;
        Ok(status)
    }

    pub async fn status(&self, company_id: &str) -> Result<SyncStatus> {
        self.state(company_id).await
    }

    async fn ensure_state(&self, company_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO deal_sync_state (company_id, backfill_state) VALUES ($1, 'pending') ON CONFLICT DO NOTHING",
        )
        .bind(company_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn save_backfill(&self, company_id: &str, state: &str, deals: i64, after: &str) -> Result<()> {
        self.ensure_state(company_id).await?;
        sqlx::query("UPDATE deal_sync_state SET backfill_state = $1, backfill_deals = $2, backfill_after = $3 WHERE company_id = $4")
            .bind(state)
            .bind(deals)
            .bind(after)
            .bind(company_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn save_cursor(&self, company_id: &str, cursor_ms: i64) -> Result<()> {
        self.ensure_state(company_id).await?;
        sqlx::query(
            "UPDATE deal_sync_state SET cursor_ms = $1, last_sync_at_ms = $2, last_error = '' WHERE company_id = $3",
        )
        .bind(cursor_ms)
        .bind(gomark_storage::now_ms())
        .bind(company_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Reads every deal of a newly onboarded company, resumably (the paging cursor is saved
    /// after each page), and sets the incremental cursor to when it started.
    pub async fn backfill(&self, company_id: &str) -> Result<()> {
        let Some(portal) = self.portals.get(company_id).await? else { return Ok(()) };
        let started = gomark_storage::now_ms();
        let row = sqlx::query(
            "SELECT backfill_state, backfill_deals, backfill_after FROM deal_sync_state WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_optional(self.db.pool())
        .await?;
        let (mut seen, mut after) = match &row {
            Some(r) if r.try_get::<String, _>("backfill_state")? == "done" => return Ok(()),
            Some(r) => (r.try_get::<i64, _>("backfill_deals")?, r.try_get::<String, _>("backfill_after")?),
            None => (0, String::new()),
        };
        loop {
            let (deals, next) =
                list_deals_page(&self.client, &portal, (!after.is_empty()).then_some(after.as_str())).await?;
            self.publish_all(&portal, &deals).await?;
            seen += deals.len() as i64;
            after = next.unwrap_or_default();
            let state = if after.is_empty() { "done" } else { "running" };
            self.save_backfill(company_id, state, seen, &after).await?;
            tracing::info!(company_id, portal_id = %portal.portal_id, deals = seen, state, "deal backfill progress");
            if after.is_empty() {
                break;
            }
        }
        self.save_cursor(company_id, started - self.index_lag_ms()).await?;
        Ok(())
    }

    /// Publishes deals modified since the cursor (minus the overlap) up to now minus the
    /// index lag, and moves the cursor.
    pub async fn incremental(&self, company_id: &str) -> Result<usize> {
        let Some(portal) = self.portals.get(company_id).await? else { return Ok(0) };
        let status = self.state(company_id).await?;
        let until = gomark_storage::now_ms() - self.index_lag_ms();
        let known = millis_opt(status.cursor.as_ref());
        let since = (known - self.settings.overlap_secs as i64 * 1000).max(0);
        let deals = search_modified(&self.client, &portal, since, until).await?;
        self.publish_all(&portal, &deals).await?;
        let cursor = deals.iter().filter_map(|d| d.last_modified()).max().unwrap_or(known).max(known);
        self.save_cursor(company_id, cursor).await?;
        Ok(deals.len())
    }

    async fn record_error(&self, company_id: &str, err: &SyncError) {
        let text: String = err.to_string().chars().take(300).collect();
        let saved = match self.ensure_state(company_id).await {
            Ok(()) => sqlx::query("UPDATE deal_sync_state SET last_error = $1 WHERE company_id = $2")
                .bind(&text)
                .bind(company_id)
                .execute(self.db.pool())
                .await
                .map(|_| ())
                .map_err(SyncError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            tracing::warn!(error = %e, "sync state not saved");
        }
    }

    /// One pass over one company: drain its queue (unless `drain` is false: its budget is
    /// known to be spent), finish its backfill, and run its incremental sync if due. Errors
    /// are recorded and retried next pass. Says whether it did queued work, whether its
    /// backfill is known to be done (then its sync state is read again only when its
    /// incremental sync is due), and how long its queue waits for the budget.
    async fn pass(&self, company: &str, sync_due: bool, known_done: bool, drain: bool) -> PassOutcome {
        let mut outcome = PassOutcome { last_read: 0, done: known_done, deferred: None };
        if drain {
            loop {
                match self.refresh_or_defer(company).await {
                    Ok(Refresh::Done(0)) => break,
                    Ok(Refresh::Done(n)) => {
                        outcome.last_read = n;
                        // Less than a batch: the queue was drained (what came meanwhile is
                        // read after the pace, with whatever else comes by then).
                        if n < BATCH {
                            break;
                        }
                    }
                    Ok(Refresh::Rests(rest)) => {
                        if let Rest::Budget(_) = rest {
                            metrics::counter!("hubspot_deal_refresh_deferred_total").increment(1);
                        }
                        outcome.deferred = Some(rest);
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(company_id = %company, error = %err, "deal refresh failed, will retry");
                        self.record_error(company, &err).await;
                        break;
                    }
                }
            }
        }
        if known_done && !sync_due {
            return outcome;
        }
        outcome.done = match self.state(company).await {
            Ok(state) if state.backfill_state != "done" => {
                if let Err(err) = self.backfill(company).await {
                    tracing::warn!(company_id = %company, error = %err, "deal backfill failed, will resume");
                    self.record_error(company, &err).await;
                }
                false
            }
            Ok(_) if sync_due => {
                if let Err(err) = self.incremental(company).await {
                    tracing::warn!(company_id = %company, error = %err, "incremental deal sync failed");
                    self.record_error(company, &err).await;
                }
                true
            }
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(company_id = %company, error = %err, "deal sync state unreadable");
                false
            }
        };
        outcome
    }

    /// The companies with deals queued for a re-read, and those of them with urgent deals (not
    /// only published moves: queued by another replica, or before a restart).
    async fn queued_companies(&self) -> Result<QueuedCompanies> {
        let rows = sqlx::query("SELECT company_id, MIN(hinted) AS hinted FROM deal_refresh_queue GROUP BY company_id")
            .fetch_all(self.db.pool())
            .await?;
        let mut queued = QueuedCompanies::default();
        for r in &rows {
            let company: String = r.try_get("company_id")?;
            if r.try_get::<i64, _>("hinted")? == 0 {
                queued.urgent.insert(company.clone());
            }
            queued.all.insert(company);
        }
        Ok(queued)
    }

    /// Drains the webhook queue continuously, runs backfills, and each company's
    /// incremental sync spread evenly over the interval, until shutdown. Companies are
    /// worked on concurrently and each as soon as it has work: a slow portal never holds up
    /// the others, and a deal queued while others are read waits only for a free slot, not
    /// for a pass over the whole portfolio to end.
    pub async fn run(self, shutdown: Shutdown) {
        let poll = Duration::from_millis(self.settings.queue_poll_ms.max(10));
        let mut plan = Schedule::new(Duration::from_secs(self.settings.interval_secs.max(1)));
        // Tasks of their own: a pass must go on while this loop awaits the database (one
        // holding SQLite's write lock and left unpolled would stall every writer).
        let mut passes: tokio::task::JoinSet<(String, PassOutcome)> = tokio::task::JoinSet::new();
        let mut next_poll = tokio::time::Instant::now();
        let mut last_prune = tokio::time::Instant::now();
        // Polled every few hundred milliseconds: a database outage is logged once.
        let mut outage = gomark_platform::Outage::new("deal sync");
        while !shutdown.is_triggered() {
            let now = tokio::time::Instant::now();
            if now >= next_poll {
                next_poll = now + poll;
                match self.portals.company_ids().await {
                    Ok(companies) => {
                        outage.ok();
                        // Unknown (the database is failing): every company may have queued deals.
                        match self.queued_companies().await {
                            Ok(queued) => {
                                plan.poll(companies, Some(&queued.all));
                                plan.urgent(queued.urgent);
                            }
                            Err(_) => plan.poll(companies, None),
                        }
                    }
                    Err(err) => outage.failed(&err),
                }
                if last_prune.elapsed() > Duration::from_secs(3600) {
                    last_prune = now;
                    self.prune_seen().await;
                }
            }
            plan.wake_rested(tokio::time::Instant::now());
            let queued = self.queued.take();
            plan.urgent(queued.urgent);
            plan.queued(queued.all);
            while passes.len() < CONCURRENT_COMPANIES {
                let Some((company, work)) = plan.start(tokio::time::Instant::now()) else { break };
                let this = self.clone();
                passes.spawn(async move {
                    let pass = this.pass(&company, work.sync_due, work.done, work.drain);
                    // One trace per company's pass: it is the unit of work, and its calls
                    // and statements belong together.
                    let pass = pass.instrument(gomark_platform::telemetry::root_span("deal sync pass"));
                    // A pass that panics ends like one that failed: retried on a later poll.
                    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(pass))
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(company_id = %company, "deal sync pass panicked, will retry");
                            PassOutcome { last_read: 0, done: false, deferred: None }
                        });
                    (company, outcome)
                });
            }
            let wake = plan.next_wake().map_or(next_poll, |at| at.min(next_poll));
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                Some(ended) = passes.join_next(), if !passes.is_empty() => match ended {
                    Ok((company, outcome)) => plan.finished(company, outcome),
                    // Never aborted, and a panic is caught inside the task.
                    Err(err) => tracing::error!(error = %err, "deal sync pass ended abnormally"),
                },
                () = self.queued.bell.notified() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Passes under way finish: each ends at a transaction boundary.
        while passes.join_next().await.is_some() {}
    }

    async fn prune_seen(&self) {
        let cutoff = gomark_storage::now_ms() - KEEP_SEEN_MS;
        let prune = async {
            if let Err(err) = sqlx::query("DELETE FROM change_events_seen WHERE seen_at < $1")
                .bind(cutoff)
                .execute(self.db.pool())
                .await
            {
                tracing::warn!(error = %err, "webhook dedupe prune failed");
            }
        };
        prune.instrument(gomark_platform::telemetry::poll_span("webhook dedupe prune")).await;
    }
}

/// Companies whose passes run at once (each mostly waits on HubSpot or the database).
const CONCURRENT_COMPANIES: usize = 8;

/// After a re-read of one deal, a company's queue rests this long: 8 reads a second, 80 of the
/// smallest tier's 100 requests per 10 s, which leaves room for the portal's other calls
/// (incremental sync, rollouts, drift checks) under the 90 % the budget allows. Read greedily,
/// a portal with a steady stream of changes spends its window in a few seconds and then waits
/// up to a second for the next slot; paced, its deals wait at most this long and gather into
/// shared reads. A fuller read rests less ([`rest_after`]): under a heavy stream reads are
/// full and follow at once.
const READ_PACE: Duration = Duration::from_millis(125);

/// How long a deal whose every queued change was a published move (`hinted`) may wait for
/// its re-read, so that a portal with a steady stream of stage moves reads them about once a
/// second in one batch instead of eight times in small ones: an eighth of the requests, and of
/// the writes that publish what they read. Funnels show the moves already; the re-read
/// confirms them (or corrects a guess) within this long plus the pace.
const HINTED_WAIT: Duration = Duration::from_secs(1);

/// How long a company's queue rests after a re-read that took `read` deals: [`READ_PACE`]
/// shortened in proportion to how full the read was, none after a full batch.
fn rest_after(read: usize) -> Duration {
    let empty = BATCH.saturating_sub(read) as u32;
    READ_PACE * empty / BATCH as u32
}

/// What a company's pass is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Work {
    sync_due: bool,
    done: bool,
    drain: bool,
}

/// Which company's pass runs next, and what it does: the deal sync loop's bookkeeping, apart
/// from its I/O. A company is waiting, running, or idle; one that gets work while running runs
/// again when it ends.
struct Schedule {
    interval: Duration,
    next_sync: std::collections::HashMap<String, tokio::time::Instant>,
    /// Companies whose backfill is done: visited only when deals are queued for them or
    /// their incremental sync is due, so a pass costs what is queued, not the portfolio.
    backfilled: HashSet<String>,
    /// Companies whose queue rests until a moment: their portal had no budget slot (only a
    /// hint: the budget itself is shared by every replica and decides), or they were just
    /// read ([`READ_PACE`]). Their deals gather meanwhile into one read.
    resting: std::collections::HashMap<String, tokio::time::Instant>,
    /// Resting companies with deals waiting: drained when their rest ends.
    held: HashSet<String>,
    /// Resting companies whose rest is for hinted moves to gather: urgent work ends it.
    gathering: HashSet<String>,
    waiting: std::collections::VecDeque<String>,
    waiting_set: HashSet<String>,
    running: HashSet<String>,
    /// Running companies that got work meanwhile.
    again: HashSet<String>,
}

impl Schedule {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_sync: Default::default(),
            backfilled: HashSet::new(),
            resting: Default::default(),
            held: HashSet::new(),
            gathering: HashSet::new(),
            waiting: Default::default(),
            waiting_set: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
        }
    }

    fn wants(&mut self, company: String) {
        if self.running.contains(&company) {
            self.again.insert(company);
        } else if self.waiting_set.insert(company.clone()) {
            self.waiting.push_back(company);
        }
    }

    /// The portfolio as the database shows it: companies with deals queued (`None`: unknown,
    /// so any may have), a backfill to finish or an incremental sync due want a pass.
    fn poll(&mut self, companies: Vec<String>, queued: Option<&HashSet<String>>) {
        let now = tokio::time::Instant::now();
        let count = companies.len().max(1) as u32;
        for (i, company) in companies.into_iter().enumerate() {
            // Spread first runs over the interval so a thousand portals never poll at once.
            let interval = self.interval;
            let due = *self.next_sync.entry(company.clone()).or_insert_with(|| now + interval / count * i as u32);
            let has_queued = queued.is_none_or(|q| q.contains(&company));
            if has_queued || due <= now || !self.backfilled.contains(&company) {
                self.wants(company);
            }
        }
    }

    /// Companies with deals queued.
    fn queued(&mut self, companies: HashSet<String>) {
        for company in companies {
            self.wants(company);
        }
    }

    /// Companies with urgent deals queued: a rest for moves to gather ends (a rest for the
    /// budget does not).
    fn urgent(&mut self, companies: HashSet<String>) {
        for company in companies {
            if self.gathering.remove(&company) {
                self.resting.remove(&company);
            }
            self.wants(company);
        }
    }

    /// Companies whose rest is over: those with deals waiting want a pass.
    fn wake_rested(&mut self, now: tokio::time::Instant) {
        let due: Vec<String> = self.resting.iter().filter(|(_, at)| **at <= now).map(|(c, _)| c.clone()).collect();
        for company in due {
            self.resting.remove(&company);
            self.gathering.remove(&company);
            if self.held.remove(&company) {
                self.wants(company);
            }
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        self.resting.values().min().copied()
    }

    /// The next company to pass over and what to do there; it counts as running until
    /// [`Self::finished`].
    fn start(&mut self, now: tokio::time::Instant) -> Option<(String, Work)> {
        while let Some(company) = self.waiting.pop_front() {
            self.waiting_set.remove(&company);
            let interval = self.interval;
            let due = self.next_sync.entry(company.clone()).or_insert(now + interval);
            let sync_due = *due <= now;
            if sync_due {
                *due = now + interval;
            }
            let done = self.backfilled.contains(&company);
            let drain = self.resting.get(&company).is_none_or(|at| *at <= now);
            if drain {
                self.held.remove(&company);
            } else {
                self.held.insert(company.clone());
            }
            if drain || sync_due || !done {
                self.running.insert(company.clone());
                return Some((company, Work { sync_due, done, drain }));
            }
        }
        None
    }

    fn finished(&mut self, company: String, outcome: PassOutcome) {
        self.running.remove(&company);
        if outcome.done {
            self.backfilled.insert(company.clone());
        } else {
            self.backfilled.remove(&company);
        }
        let now = tokio::time::Instant::now();
        self.gathering.remove(&company);
        match outcome.deferred {
            // Its deals are still queued.
            Some(rest) => {
                let wait = match rest {
                    Rest::Budget(wait) => wait,
                    Rest::Gathering(wait) => {
                        self.gathering.insert(company.clone());
                        wait
                    }
                };
                self.resting.insert(company.clone(), now + wait);
                self.held.insert(company.clone());
            }
            None if outcome.last_read > 0 && outcome.last_read < BATCH => {
                self.resting.insert(company.clone(), now + rest_after(outcome.last_read));
            }
            None => {
                self.resting.remove(&company);
            }
        }
        if self.again.remove(&company) {
            self.wants(company);
        }
    }
}

/// `$from, $from+1, …` for `count` rows of `width` values each: `($2, $3), ($4, $5)`.
pub(crate) fn placeholders(count: usize, width: usize, from: usize) -> String {
    (0..count)
        .map(|row| {
            let cols: Vec<String> = (0..width).map(|col| format!("${}", from + row * width + col)).collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes the picked queue rows, each only at the generation it was picked at: a deal
/// queued again meanwhile stays for the next re-read.
async fn delete_from_queue(conn: &mut AnyConnection, company_id: &str, picked: &[Picked]) -> Result<()> {
    for chunk in picked.chunks(BATCH) {
        // Only numbered placeholders are spliced in; the values are bound.
        let sql = format!(
            "DELETE FROM deal_refresh_queue WHERE company_id = $1 AND (deal_id, generation) IN (VALUES {})",
            placeholders(chunk.len(), 2, 2)
        );
        let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(company_id.to_owned());
        for q in chunk {
            delete = delete.bind(q.deal_id.clone()).bind(q.generation);
        }
        delete.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Publishes what a batch read of `asked` gave: each deal found if newer than what was
/// published, and each deal HubSpot no longer has as deleted.
async fn publish_read(conn: &mut AnyConnection, portal: &Portal, asked: &[String], found: &[Deal]) -> Result<()> {
    let present: HashSet<&str> = found.iter().map(|d| d.id.as_str()).collect();
    publish_newer(conn, portal, found).await?;
    let gone: Vec<&str> = asked.iter().map(String::as_str).filter(|id| !present.contains(id)).collect();
    publish_deleted(conn, portal, &gone).await?;
    Ok(())
}

/// Publishes each deal of `deals` whose modification time is newer than the last one
/// published; returns how many were. One conditional upsert per hundred deals decides which
/// (only one replica wins a version), and their events go to the outbox in the same
/// transaction, so a batch costs a few statements instead of three per deal.
async fn publish_newer(conn: &mut AnyConnection, portal: &Portal, deals: &[Deal]) -> Result<usize> {
    // One row per deal (a statement may not upsert a row twice), its newest version, in
    // deal id order: replicas then lock rows in the same order and never deadlock.
    let mut newest: std::collections::BTreeMap<&str, &Deal> = std::collections::BTreeMap::new();
    for deal in deals {
        let modified = deal.last_modified().unwrap_or(0);
        match newest.get(deal.id.as_str()) {
            Some(kept) if kept.last_modified().unwrap_or(0) >= modified => {}
            _ => {
                newest.insert(deal.id.as_str(), deal);
            }
        }
    }
    let newest: Vec<&Deal> = newest.into_values().collect();
    let mut events = Vec::new();
    for chunk in newest.chunks(BATCH) {
        // Only numbered placeholders are spliced in; the values are bound.
        let sql = format!(
            "INSERT INTO deal_versions (company_id, deal_id, last_modified_ms, deleted) VALUES {} \
             ON CONFLICT (company_id, deal_id) DO UPDATE SET last_modified_ms = excluded.last_modified_ms, deleted = 0 \
             WHERE deal_versions.last_modified_ms < excluded.last_modified_ms RETURNING deal_id",
            placeholders(chunk.len(), 4, 1)
        );
        let mut upsert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for deal in chunk {
            upsert = upsert
                .bind(portal.company_id.clone())
                .bind(deal.id.clone())
                .bind(deal.last_modified().unwrap_or(0))
                .bind(0_i64);
        }
        let won = returned_deal_ids(upsert, conn).await?;
        events.extend(chunk.iter().filter(|d| won.contains(&d.id)).map(|deal| upserted_event(portal, deal)));
    }
    gomark_events::outbox::enqueue_all(conn, &events).await?;
    metrics::counter!("hubspot_deals_published_total", "kind" => "upserted").increment(events.len() as u64);
    Ok(events.len())
}

/// The `deal_id`s an upsert's `RETURNING deal_id` gave back: the rows it actually changed.
async fn returned_deal_ids(
    query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    conn: &mut AnyConnection,
) -> Result<HashSet<String>> {
    let rows = query.fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(|r| r.try_get("deal_id")).collect::<std::result::Result<_, _>>()?)
}

fn upserted_event(portal: &Portal, deal: &Deal) -> gomark_events::EventEnvelope {
    let modified = deal.last_modified().unwrap_or(0);
    #[allow(deprecated)]
    let payload = DealUpserted {
        company_id: portal.company_id.clone(),
        portal_id: portal.portal_id.clone(),
        deal_id: deal.id.clone(),
        name: deal.name().unwrap_or_default().to_owned(),
        pipeline_id: deal.pipeline().unwrap_or_default().to_owned(),
        stage_id: deal.stage().unwrap_or_default().to_owned(),
        // The double too: it is the only amount of a deal without a currency code.
        amount: deal.amount(),
        amount_money: deal_money(deal),
        owner_id: deal.owner().unwrap_or_default().to_owned(),
        properties: CUSTOMER_PROPERTIES
            .iter()
            .filter_map(|name| {
                let value = deal.property(name)?;
                (!value.is_empty()).then(|| ((*name).to_owned(), value.to_owned()))
            })
            .collect(),
        ..DealUpserted::default()
    }
    .with_times(deal.close_date().unwrap_or(0), modified, deal.create_date().unwrap_or(0));
    new_event(&portal.company_id, event_types::DEAL_UPSERTED, &payload)
}

/// Publishes each of `deal_ids` not already known as deleted as deleted; returns how many were.
async fn publish_deleted(conn: &mut AnyConnection, portal: &Portal, deal_ids: &[&str]) -> Result<usize> {
    let now = gomark_storage::now_ms();
    let mut ids: Vec<&str> = deal_ids.to_vec();
    // Sorted and unique, as in `publish_newer`.
    ids.sort_unstable();
    ids.dedup();
    let mut events = Vec::new();
    for chunk in ids.chunks(BATCH) {
        // Only numbered placeholders are spliced in; the values are bound.
        let sql = format!(
            "INSERT INTO deal_versions (company_id, deal_id, last_modified_ms, deleted) VALUES {} \
             ON CONFLICT (company_id, deal_id) DO UPDATE SET deleted = 1 WHERE deal_versions.deleted = 0 RETURNING deal_id",
            placeholders(chunk.len(), 4, 1)
        );
        let mut upsert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            upsert = upsert.bind(portal.company_id.clone()).bind((*id).to_owned()).bind(now).bind(1_i64);
        }
        let changed = returned_deal_ids(upsert, conn).await?;
        for id in chunk.iter().filter(|id| changed.contains(**id)) {
            let payload = DealDeleted {
                company_id: portal.company_id.clone(),
                portal_id: portal.portal_id.clone(),
                deal_id: (*id).to_owned(),
                ..DealDeleted::default()
            }
            .with_deleted_at(now);
            events.push(new_event(&portal.company_id, event_types::DEAL_DELETED, &payload));
        }
    }
    gomark_events::outbox::enqueue_all(conn, &events).await?;
    metrics::counter!("hubspot_deals_published_total", "kind" => "deleted").increment(events.len() as u64);
    Ok(events.len())
}

// The three HubSpot reads this module needs, kept together so the client's API shows in
// one place.

async fn read_deals(client: &HubSpotClient, portal: &Portal, ids: &[String]) -> Result<Vec<Deal>> {
    let batch = client.batch_read_deals(&portal.token(), ids, DEAL_PROPERTIES).await?;
    Ok(batch.results)
}

async fn list_deals_page(
    client: &HubSpotClient,
    portal: &Portal,
    after: Option<&str>,
) -> Result<(Vec<Deal>, Option<String>)> {
    let page = client.list_deals(&portal.token(), DEAL_PROPERTIES, after, 100).await?;
    Ok((page.results, page.next_after))
}

async fn search_modified(client: &HubSpotClient, portal: &Portal, since_ms: i64, until_ms: i64) -> Result<Vec<Deal>> {
    let mut deals = Vec::new();
    client
        .sync_modified_deals(&portal.token(), since_ms, until_ms, DEAL_PROPERTIES, 200, |page| deals.extend(page))
        .await?;
    Ok(deals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(last_read: usize, deferred: Option<Duration>) -> PassOutcome {
        PassOutcome { last_read, done: true, deferred: deferred.map(Rest::Budget) }
    }

    fn started(plan: &mut Schedule) -> Vec<String> {
        let now = tokio::time::Instant::now();
        std::iter::from_fn(|| plan.start(now).map(|(c, _)| c)).collect()
    }

    fn queued(plan: &mut Schedule, companies: &[&str]) {
        plan.queued(companies.iter().map(|c| (*c).to_owned()).collect());
    }

    async fn rest(plan: &mut Schedule, wait: Duration) {
        tokio::time::advance(wait).await;
        plan.wake_rested(tokio::time::Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_company_is_passed_over_once_at_a_time_and_again_when_it_got_work_meanwhile() {
        let mut plan = Schedule::new(Duration::from_secs(300));
        queued(&mut plan, &["a"]);
        queued(&mut plan, &["a", "b"]);
        let mut first = started(&mut plan);
        first.sort();
        assert_eq!(first, ["a", "b"], "each company once, however often it was queued");
        // Deals queued for "a" while its pass runs: it runs again when that pass ends.
        queued(&mut plan, &["a"]);
        assert!(started(&mut plan).is_empty(), "not twice at once");
        plan.finished("b".into(), outcome(0, None));
        assert!(started(&mut plan).is_empty(), "b got nothing new");
        plan.finished("a".into(), outcome(0, None));
        assert_eq!(started(&mut plan), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_read_the_queue_rests_so_the_next_deals_share_one_read() {
        let mut plan = Schedule::new(Duration::from_secs(300));
        queued(&mut plan, &["a"]);
        assert_eq!(started(&mut plan), ["a"]);
        plan.finished("a".into(), outcome(1, None));
        queued(&mut plan, &["a"]);
        queued(&mut plan, &["a"]);
        assert!(started(&mut plan).is_empty(), "resting");
        assert_eq!(plan.next_wake(), Some(tokio::time::Instant::now() + rest_after(1)));
        rest(&mut plan, rest_after(1)).await;
        assert_eq!(started(&mut plan), ["a"], "once for both");
        // A rest with nothing queued meanwhile ends without a pass.
        plan.finished("a".into(), outcome(1, None));
        rest(&mut plan, READ_PACE).await;
        assert!(started(&mut plan).is_empty());
        // After a full batch there is no rest: more may be queued.
        queued(&mut plan, &["a"]);
        assert_eq!(started(&mut plan), ["a"]);
        plan.finished("a".into(), outcome(BATCH, None));
        queued(&mut plan, &["a"]);
        assert_eq!(started(&mut plan), ["a"]);
    }

    #[test]
    fn the_rest_shortens_as_reads_fill_up() {
        assert_eq!(rest_after(1), Duration::from_micros(123_750));
        assert_eq!(rest_after(50), Duration::from_micros(62_500));
        assert_eq!(rest_after(BATCH), Duration::ZERO);
        assert!(rest_after(1) < READ_PACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_company_waiting_for_its_budget_is_drained_when_the_wait_is_over() {
        let mut plan = Schedule::new(Duration::from_secs(300));
        queued(&mut plan, &["a"]);
        assert_eq!(started(&mut plan), ["a"]);
        plan.finished("a".into(), outcome(0, Some(Duration::from_millis(500))));
        queued(&mut plan, &["a"]);
        assert!(started(&mut plan).is_empty(), "its deals gather while the budget has no slot");
        rest(&mut plan, Duration::from_millis(499)).await;
        assert!(started(&mut plan).is_empty());
        // Its deals are still queued: it is drained without being told again.
        rest(&mut plan, Duration::from_millis(1)).await;
        let (company, work) = plan.start(tokio::time::Instant::now()).expect("due again");
        assert_eq!(company, "a");
        assert_eq!(work, Work { sync_due: false, done: true, drain: true });
    }

    #[tokio::test(start_paused = true)]
    async fn moves_gather_until_their_wait_ends_or_urgent_work_comes() {
        let mut plan = Schedule::new(Duration::from_secs(300));
        let gathering = PassOutcome { last_read: 0, done: true, deferred: Some(Rest::Gathering(HINTED_WAIT)) };
        queued(&mut plan, &["a", "b"]);
        let mut first = started(&mut plan);
        // (in no particular order: the companies come as a set)
        first.sort();
        assert_eq!(first, ["a", "b"]);
        plan.finished("a".into(), gathering);
        plan.finished("b".into(), gathering);
        // More moves: they gather too.
        queued(&mut plan, &["a", "b"]);
        rest(&mut plan, HINTED_WAIT / 2).await;
        assert!(started(&mut plan).is_empty(), "gathering");
        // A creation in "b": read now, with the moves gathered so far.
        plan.urgent(["b".to_owned()].into());
        assert_eq!(started(&mut plan), ["b"]);
        plan.finished("b".into(), outcome(3, None));
        rest(&mut plan, HINTED_WAIT / 2).await;
        assert_eq!(started(&mut plan), ["a"], "the wait is over");
        // A wait for the budget is not ended by urgent work: the portal has no slot.
        plan.finished("a".into(), outcome(0, Some(Duration::from_millis(500))));
        plan.urgent(["a".to_owned()].into());
        assert!(started(&mut plan).is_empty(), "the budget decides");
        rest(&mut plan, Duration::from_millis(500)).await;
        assert_eq!(started(&mut plan), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_finds_backfills_queues_and_incremental_syncs_that_are_due() {
        let mut plan = Schedule::new(Duration::from_secs(300));
        let companies = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        // Nothing backfilled yet: every company is visited.
        plan.poll(companies(), Some(&HashSet::new()));
        assert_eq!(started(&mut plan), ["a", "b", "c"]);
        for c in ["a", "b", "c"] {
            plan.finished(c.into(), outcome(0, None));
        }
        // Backfilled, no sync due: only the company with queued deals.
        tokio::time::advance(Duration::from_secs(1)).await;
        plan.poll(companies(), Some(&["b".to_owned()].into()));
        let now = tokio::time::Instant::now();
        let (company, work) = plan.start(now).expect("b has queued deals");
        assert_eq!((company.as_str(), work.drain), ("b", true));
        assert!(plan.start(now).is_none());
        plan.finished("b".into(), outcome(0, None));
        // After the interval every company's incremental sync is due.
        tokio::time::advance(Duration::from_secs(300)).await;
        plan.poll(companies(), Some(&HashSet::new()));
        let now = tokio::time::Instant::now();
        let due: Vec<bool> = std::iter::from_fn(|| plan.start(now).map(|(_, w)| w.sync_due)).collect();
        assert_eq!(due, [true, true, true]);
    }
}

//! Publishes what the outbox holds, in order, and deletes what it published.

use crate::{EventBus, EventEnvelope, Result};
use gomark_platform::Shutdown;
use gomark_storage::Database;
use gomark_storage::sqlx::{self, Row};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Events per claim: their publishes are in flight together and one DELETE removes them, so a
/// backlog drains at a few round trips per 500 events (100 kept the relay near 5,000/s).
const BATCH: i64 = 500;
/// Polling interval when nobody wakes the relay (another replica wrote, or a wake was lost).
const IDLE_POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog gauges are refreshed (one query over the rows still waiting).
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// What the outbox holds that has not left yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    /// Age of the oldest unpublished event, ms (0 when none).
    pub oldest_age_ms: i64,
}

/// Wakes the relay right after a commit, so events leave within milliseconds.
#[derive(Clone, Default, Debug)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct OutboxRelay {
    db: Database,
    bus: Arc<dyn EventBus>,
    waker: RelayWaker,
}

impl OutboxRelay {
    pub fn new(db: Database, bus: Arc<dyn EventBus>, waker: RelayWaker) -> Self {
        Self { db, bus, waker }
    }

    /// Publishes one batch; returns how many events left the outbox.
    ///
    /// Several relays may run at once (replicas): they may publish an event twice, which
    /// the bus dedupes by event id and consumers tolerate anyway.
    pub async fn relay_once(&self) -> Result<usize> {
        let rows = sqlx::query("SELECT seq, envelope FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1")
            .bind(BATCH)
            .fetch_all(self.db.pool())
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.try_get::<i64, _>("seq")?);
            let bytes: Vec<u8> = row.try_get("envelope")?;
            events.push(EventEnvelope::decode(bytes.as_slice())?);
        }
        self.bus.publish_all(&events).await?;
        // Exactly the rows read: a seq range could catch a row committed late in between.
        // Deleted, not marked: a mark rewrote each row with its envelope and index entries,
        // and nothing reads a published event here again (the bus keeps them).
        let placeholders: Vec<String> = (0..seqs.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!("DELETE FROM outbox WHERE seq IN ({})", placeholders.join(", "));
        // Only numbered placeholders are spliced in; the values are bound.
        let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql));
        for seq in &seqs {
            delete = delete.bind(*seq);
        }
        // Urgent: the next events wait for this before they are read and published.
        let turn = self.db.urgent_writer_turn().await;
        delete.execute(self.db.pool()).await?;
        drop(turn);
        for event in &events {
            metrics::counter!("events_published_total", "type" => event.r#type.clone()).increment(1);
        }
        Ok(events.len())
    }

    /// Unpublished events and the age of the oldest, for the backlog gauges.
    pub async fn backlog(&self) -> Result<Backlog> {
        let row = sqlx::query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.db.pool())
            .await?;
        let pending: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        let oldest_age_ms = oldest.map_or(0, |t| (gomark_storage::now_ms() - t).max(0));
        Ok(Backlog { pending, oldest_age_ms })
    }

    async fn report_backlog(&self) {
        match self.backlog().await {
            Ok(b) => {
                metrics::gauge!("events_outbox_pending").set(b.pending as f64);
                metrics::gauge!("events_outbox_oldest_age_seconds").set(b.oldest_age_ms as f64 / 1000.0);
            }
            Err(err) => tracing::debug!(error = %err, "outbox backlog not measured"),
        }
    }

    /// Removes rows a replica of an older version marked published instead of deleting.
    async fn prune(&self) -> Result<()> {
        let _turn = self.db.writer_turn().await;
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL").execute(self.db.pool()).await?;
        Ok(())
    }

    /// Relays until shutdown; failures back off (bounded) and are retried, never dropped.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut rounds: u64 = 0;
        let mut outage = gomark_platform::Outage::new("outbox relay");
        let mut measured = tokio::time::Instant::now() - BACKLOG_EVERY;
        while !shutdown.is_triggered() {
            let pass = async {
                if measured.elapsed() >= BACKLOG_EVERY && !outage.is_failing() {
                    self.report_backlog().await;
                    measured = tokio::time::Instant::now();
                }
                let relayed = self.relay_once().await;
                if relayed.is_ok() {
                    outage.ok();
                }
                let wait = match relayed {
                    Ok(n) if n as i64 == BATCH => Duration::ZERO,
                    Ok(_) => {
                        backoff = Duration::from_millis(100);
                        IDLE_POLL
                    }
                    Err(err) => {
                        outage.failed(&err);
                        let wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        wait
                    }
                };
                rounds += 1;
                if rounds.is_multiple_of(1000)
                    && !outage.is_failing()
                    && let Err(err) = self.prune().await
                {
                    tracing::warn!(error = %err, "outbox prune failed");
                }
                wait
            };
            let wait = pass.instrument(gomark_platform::telemetry::poll_span("outbox relay")).await;
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

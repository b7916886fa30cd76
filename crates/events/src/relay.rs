//! Publishes what the outbox holds, in order, and marks it published.

use crate::{EventBus, EventEnvelope, Result};
use gomark_platform::Shutdown;
use gomark_storage::Database;
use gomark_storage::sqlx::{self, Row};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const BATCH: i64 = 100;
/// Polling interval when nobody wakes the relay (another replica wrote, or a wake was lost).
const IDLE_POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Published rows are kept this long for inspection, then pruned.
const KEEP_PUBLISHED_MS: i64 = 24 * 3600 * 1000;

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
        let placeholders: Vec<String> = (0..seqs.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("UPDATE outbox SET published_at = $1 WHERE seq IN ({})", placeholders.join(", "));
        // Only numbered placeholders are spliced in; the values are bound.
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(gomark_storage::now_ms());
        for seq in &seqs {
            update = update.bind(*seq);
        }
        update.execute(self.db.pool()).await?;
        for event in &events {
            metrics::counter!("events_published_total", "type" => event.r#type.clone()).increment(1);
        }
        Ok(events.len())
    }

    async fn prune(&self) -> Result<()> {
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
            .bind(gomark_storage::now_ms() - KEEP_PUBLISHED_MS)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Relays until shutdown; failures back off (bounded) and are retried, never dropped.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut rounds: u64 = 0;
        // An outage is logged once when it starts and once when it ends, not per retry.
        let mut failing = false;
        while !shutdown.is_triggered() {
            let relayed = self.relay_once().await;
            if relayed.is_ok() && failing {
                tracing::info!("outbox relay: publishing again");
                failing = false;
            }
            let wait = match relayed {
                Ok(n) if n as i64 == BATCH => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    IDLE_POLL
                }
                Err(err) => {
                    if failing {
                        tracing::debug!(error = %err, retry_in_ms = backoff.as_millis() as u64, "outbox relay still failing");
                    } else {
                        tracing::warn!(error = %err, "outbox relay failed; retrying with backoff until it recovers");
                        failing = true;
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            rounds += 1;
            if rounds.is_multiple_of(1000)
                && let Err(err) = self.prune().await
            {
                tracing::warn!(error = %err, "outbox prune failed");
            }
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

//! The in-process bus's memory across restarts: a SQLite file holding the event log and
//! each durable consumer's position.
//!
//! Without it, an event the outbox relay had published (and deleted) but no consumer had
//! handled yet died with the process. With it, `publish` returns only once the event is stored (as
//! JetStream's ack means "stored"), and after a crash every consumer resumes from its last
//! saved position: what it had not acknowledged — and possibly a little more, which its
//! inbox claims turn into no-ops — is delivered again.

use crate::{EventEnvelope, Result};
use gomark_storage::sqlx::{self, Row};
use gomark_storage::{Database, DatabaseSettings};
use prost::Message;
use std::path::Path;
use std::time::Duration;

/// Events per INSERT in [`Journal::append`]: few enough that binding stays cheap.
const APPEND_ROWS: usize = 50;

/// Events every consumer has passed are still kept this long, for a consumer that
/// subscribes late (a service started after the others) and for inspection.
const KEEP_CONSUMED: Duration = Duration::from_secs(3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    envelope BLOB NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_cursors (
    durable TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    next_seq INTEGER NOT NULL
);";

/// Where one durable consumer stands: it has acknowledged everything before `next_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCursor {
    pub durable: String,
    pub event_type: String,
    pub next_seq: u64,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Restored {
    /// In sequence order, without gaps.
    pub events: Vec<(u64, EventEnvelope)>,
    pub cursors: Vec<SavedCursor>,
}

impl Restored {
    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        let after_events = self.events.last().map_or(0, |(seq, _)| seq + 1);
        let after_cursors = self.cursors.iter().map(|c| c.next_seq).max().unwrap_or(0);
        after_events.max(after_cursors)
    }
}

#[derive(Debug, Clone)]
pub struct Journal {
    db: Database,
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads back what it holds.
    pub async fn open(path: &Path) -> Result<(Self, Restored)> {
        let settings = DatabaseSettings {
            url: gomark_platform::settings::Secret::new(format!("sqlite://{}?mode=rwc", path.display())),
            max_connections: 2,
            acquire_timeout_secs: 10,
            ..DatabaseSettings::default()
        };
        let db = Database::connect(&settings).await?;
        sqlx::raw_sql(SCHEMA).execute(db.pool()).await?;
        let journal = Self { db };
        let restored = journal.restore().await?;
        Ok((journal, restored))
    }

    async fn restore(&self) -> Result<Restored> {
        let mut events: Vec<(u64, EventEnvelope)> = Vec::new();
        for row in sqlx::query("SELECT seq, envelope FROM bus_events ORDER BY seq").fetch_all(self.db.pool()).await? {
            let seq = u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0);
            let bytes: Vec<u8> = row.try_get("envelope")?;
            // Only whole prefixes are ever pruned, so a gap means rows were removed by hand:
            // keep the contiguous tail, which is what a consumer can still be positioned in.
            if events.last().is_some_and(|(last, _)| *last + 1 != seq) {
                events.clear();
            }
            events.push((seq, EventEnvelope::decode(bytes.as_slice())?));
        }
        let cursors = sqlx::query("SELECT durable, event_type, next_seq FROM bus_cursors")
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(SavedCursor {
                    durable: row.try_get("durable")?,
                    event_type: row.try_get("event_type")?,
                    next_seq: u64::try_from(row.try_get::<i64, _>("next_seq")?).unwrap_or(0),
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        Ok(Restored { events, cursors })
    }

    /// Stores `events` (numbered by the bus) in one transaction; when this returns Ok they
    /// survive a crash of the process.
    pub async fn append(&self, events: &[(u64, EventEnvelope)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let now = gomark_storage::now_ms();
        let mut tx = self.db.begin().await?;
        // A statement per 50 events, not per event: each is a round trip to SQLite's worker
        // thread while this process's writer turn is held.
        for chunk in events.chunks(APPEND_ROWS) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, ${})", i * 4 + 1, i * 4 + 2, i * 4 + 3, i * 4 + 4))
                .collect();
            let sql = format!(
                "INSERT INTO bus_events (seq, event_id, envelope, stored_at) VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            // Only numbered placeholders are spliced in; the values are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, event) in chunk {
                query = query.bind(seq_i64(*seq)).bind(event.id.clone()).bind(event.encode_to_vec()).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Saves the consumers' positions, then forgets the events all of them have passed
    /// (once older than [`KEEP_CONSUMED`]) and those beyond `retention`.
    pub async fn save(&self, cursors: &[SavedCursor], retention: usize) -> Result<()> {
        let mut tx = self.db.begin().await?;
        for c in cursors {
            sqlx::query(
                "INSERT INTO bus_cursors (durable, event_type, next_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (durable) DO UPDATE SET event_type = excluded.event_type, next_seq = excluded.next_seq",
            )
            .bind(&c.durable)
            .bind(&c.event_type)
            .bind(seq_i64(c.next_seq))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        let max_seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM bus_events").fetch_one(self.db.pool()).await?;
        let Some(max_seq) = max_seq else { return Ok(()) };
        let beyond_retention = max_seq - seq_i64(retention as u64);
        let consumed = match cursors.iter().map(|c| c.next_seq).min() {
            Some(min) => {
                let cutoff = gomark_storage::now_ms() - KEEP_CONSUMED.as_millis() as i64;
                // The old events are the log's head: walk it from the oldest to the first
                // kept one, which costs what is about to be deleted. (`MAX(seq) ... WHERE
                // stored_at < $1` walked every kept event on every save: 12 ms a save, a
                // seventh of the embedded run's database time at 2,000 moves/s.) Should the
                // clock have stepped back, an older-stamped event behind a newer one is
                // merely kept longer.
                let first_kept: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM bus_events WHERE stored_at >= $1 ORDER BY seq LIMIT 1")
                        .bind(cutoff)
                        .fetch_optional(self.db.pool())
                        .await?;
                first_kept.map_or(max_seq, |kept| kept - 1).min(seq_i64(min) - 1)
            }
            None => -1,
        };
        // Always a prefix of the log, so what remains stays contiguous.
        let _turn = self.db.writer_turn().await;
        sqlx::query("DELETE FROM bus_events WHERE seq <= $1")
            .bind(beyond_retention.max(consumed))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(next_seq: u64) -> SavedCursor {
        SavedCursor { durable: "d".into(), event_type: "t".into(), next_seq }
    }

    /// Ten events, the first `aged` of them stored two hours ago.
    async fn journal_with(aged: i64) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (journal, _) = Journal::open(&dir.path().join("bus.db")).await.expect("open");
        let events: Vec<(u64, EventEnvelope)> =
            (1..=10).map(|seq| (seq, EventEnvelope { id: format!("e{seq}"), ..EventEnvelope::default() })).collect();
        journal.append(&events).await.expect("append");
        let two_hours_ago = gomark_storage::now_ms() - 2 * 3_600_000;
        sqlx::query("UPDATE bus_events SET stored_at = $1 WHERE seq <= $2")
            .bind(two_hours_ago)
            .bind(aged)
            .execute(journal.db.pool())
            .await
            .expect("age");
        (dir, journal)
    }

    async fn kept(journal: &Journal) -> Vec<i64> {
        sqlx::query_scalar("SELECT seq FROM bus_events ORDER BY seq").fetch_all(journal.db.pool()).await.expect("seqs")
    }

    #[tokio::test]
    async fn save_forgets_only_events_both_consumed_and_old() {
        // Consumers are behind the old events: only what they passed goes.
        let (_dir, journal) = journal_with(6).await;
        journal.save(&[cursor(5)], 1000).await.expect("save");
        assert_eq!(kept(&journal).await, (5..=10).collect::<Vec<_>>());

        // Consumers are past everything: only the old events go.
        journal.save(&[cursor(11)], 1000).await.expect("save");
        assert_eq!(kept(&journal).await, (7..=10).collect::<Vec<_>>());

        // No consumer: nothing goes but what retention drops.
        let (_dir, journal) = journal_with(10).await;
        journal.save(&[], 1000).await.expect("save");
        assert_eq!(kept(&journal).await.len(), 10);
        journal.save(&[], 3).await.expect("save");
        assert_eq!(kept(&journal).await, vec![8, 9, 10]);

        // Everything old and consumed: everything goes.
        let (_dir, journal) = journal_with(10).await;
        journal.save(&[cursor(11)], 1000).await.expect("save");
        assert!(kept(&journal).await.is_empty());

        // Nothing old: nothing goes, however far the consumers are.
        let (_dir, journal) = journal_with(0).await;
        journal.save(&[cursor(11)], 1000).await.expect("save");
        assert_eq!(kept(&journal).await.len(), 10);
    }
}

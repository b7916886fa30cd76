//! The transactional outbox: an event is stored in the same transaction as the state change
//! that caused it, and [`crate::relay::OutboxRelay`] publishes it afterwards. A crash between
//! commit and publish only delays the event. The relay deletes the rows it published.
//!
//! Each producing service has an `outbox` table in its own migrations:
//! `(seq, event_id, envelope, created_at, published_at)`; only releases from before the relay
//! deleted set `published_at`, and the relay prunes such rows.

use crate::{EventEnvelope, Result};
use gomark_storage::sqlx::{self, AnyConnection};
use prost::Message;

/// Rows per INSERT in [`enqueue_all`]: 300 bound values, under every SQLite build's limit.
const ROWS_PER_STATEMENT: usize = 100;

/// Stores `event` for publication; call inside the transaction that changes the state.
pub async fn enqueue(conn: &mut AnyConnection, event: &EventEnvelope) -> Result<()> {
    enqueue_all(conn, std::slice::from_ref(event)).await
}

/// Stores `events` for publication, in this order (they leave in it), with one statement per
/// hundred: a batch of deals costs a few round trips, not one per event. Call inside the
/// transaction that changes the state.
pub async fn enqueue_all(conn: &mut AnyConnection, events: &[EventEnvelope]) -> Result<()> {
    let now = gomark_storage::now_ms();
    let engine = gomark_storage::Engine::of_connection(conn);
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        // Only placeholders are spliced in; the values are bound. Rows of one multi-row
        // INSERT take their `seq` in the order listed, so the outbox order holds.
        let sql = format!(
            "INSERT INTO outbox (event_id, envelope, created_at) VALUES {}",
            engine.values_rows(chunk.len(), 3)
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            insert = insert.bind(event.id.clone()).bind(event.encode_to_vec()).bind(now);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

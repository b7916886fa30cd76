//! The transactional outbox: an event is stored in the same transaction as the state change
//! that caused it, and [`crate::relay::OutboxRelay`] publishes it afterwards. A crash between
//! commit and publish only delays the event.
//!
//! Each producing service has an `outbox` table in its own migrations:
//! `(seq, event_id UNIQUE, envelope, created_at, published_at)`.

use crate::{EventEnvelope, Result};
use gomark_storage::sqlx::{self, AnyConnection};
use prost::Message;

/// Stores `event` for publication; call inside the transaction that changes the state.
pub async fn enqueue(conn: &mut AnyConnection, event: &EventEnvelope) -> Result<()> {
    sqlx::query("INSERT INTO outbox (event_id, envelope, created_at) VALUES ($1, $2, $3)")
        .bind(&event.id)
        .bind(event.encode_to_vec())
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

//! Idempotent consumption: a consumer claims an event id in the same transaction as the
//! change the event causes; a second delivery finds the claim and changes nothing.
//!
//! Each consuming service has a `processed_events (consumer, event_id)` table.

use crate::Result;
use gomark_storage::sqlx::{self, AnyConnection};

/// True if this is the first time `consumer` sees `event_id` (the claim is now held by the
/// caller's transaction); false if it was already processed.
pub async fn claim(conn: &mut AnyConnection, consumer: &str, event_id: &str) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(gomark_storage::now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

//! Who changed a portal: HubSpot's `changeSource`/`sourceId` from the events it sends
//! (webhooks, or the journal), kept per company for the property each event names and
//! portal-wide, so a drift can say who made it (a person, another app, an AI agent, GoMark).

use gomark_proto::hubspot_sync::v1::{ChangeSource, WebhookEvent};
use gomark_storage::{Database, StorageError};
use gtm_config::ChangeSourceKind;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// The portal-wide entry's target.
const PORTAL: &str = "";

/// Rows per INSERT (five parameters each): well under both engines' parameter limits.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Clone)]
pub struct Sources {
    db: Database,
    /// GoMark's own HubSpot app ids: changes they made are GoMark's.
    gomark_app_ids: Vec<String>,
}

impl Sources {
    pub fn new(db: Database, gomark_app_ids: Vec<String>) -> Self {
        Self { db, gomark_app_ids }
    }

    fn kind(&self, change_source: &str, source_id: &str) -> ChangeSourceKind {
        let ours: Vec<&str> = self.gomark_app_ids.iter().map(String::as_str).collect();
        ChangeSourceKind::classify(change_source, source_id, &ours)
    }

    /// Remembers the newest source per company, per property and portal-wide, in its own
    /// transaction (the journal's events). Events of portals no company holds, and events
    /// without a source, are skipped.
    pub async fn record(&self, events: &[WebhookEvent]) -> Result<(), StorageError> {
        if events.iter().all(|e| e.change_source.is_empty()) {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let portal_ids: Vec<String> = events.iter().map(|e| e.portal_id.to_string()).collect();
        let companies = crate::portals::companies_of_portals(&mut tx, &portal_ids).await?;
        self.record_in(&mut tx, &companies, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Sources::record`] in a caller's transaction, with its portals' companies already
    /// looked up (a webhook batch's dedupe: one lookup, one commit for both).
    ///
    /// A batch is first reduced to its newest source per (company, target), then written in
    /// one statement: every event of a portal names the same portal-wide row, and a
    /// statement per event held that row's lock across the batch's whole transaction,
    /// queueing the portal's concurrent webhook deliveries behind it.
    pub(crate) async fn record_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        companies: &HashMap<String, String>,
        events: &[WebhookEvent],
    ) -> Result<(), StorageError> {
        // In key order, so concurrent batches lock the rows alike. Of two events at the same
        // instant the later one in the batch wins, as it did when each was written in turn.
        let mut newest: BTreeMap<(&str, &str), (i64, &WebhookEvent)> = BTreeMap::new();
        for e in events.iter().filter(|e| !e.change_source.is_empty()) {
            let Some(company) = companies.get(&e.portal_id.to_string()) else { continue };
            let at = gomark_proto::time::millis_opt(e.occurred_time.as_ref());
            let property = Some(e.property_name.as_str()).filter(|p| !p.is_empty());
            for target in std::iter::once(PORTAL).chain(property) {
                let slot = newest.entry((company.as_str(), target)).or_insert((at, e));
                if at >= slot.0 {
                    *slot = (at, e);
                }
            }
        }
        let rows: Vec<_> = newest.into_iter().collect();
        let engine = gomark_storage::Engine::of_connection(conn);
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO change_sources (company_id, target, change_source, source_id, occurred_at) VALUES {} \
                 ON CONFLICT (company_id, target) DO UPDATE SET change_source = excluded.change_source, \
                 source_id = excluded.source_id, occurred_at = excluded.occurred_at \
                 WHERE change_sources.occurred_at <= excluded.occurred_at",
                engine.values_rows(chunk.len(), 5)
            );
            // Only placeholders are spliced in; the values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((company, target), (at, e)) in chunk {
                let source: String = e.change_source.chars().take(100).collect();
                let source_id: String = e.source_id.chars().take(100).collect();
                q = q.bind(company.to_string()).bind(target.to_string()).bind(source).bind(source_id).bind(*at);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The newest source recorded for any of `targets` (property names), else the portal's
    /// newest; None when HubSpot reported none.
    pub async fn last_change(
        &self,
        company_id: &str,
        targets: &[String],
    ) -> Result<Option<ChangeSource>, StorageError> {
        let rows = sqlx::query(
            "SELECT target, change_source, source_id, occurred_at FROM change_sources WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut best: Option<(bool, i64, ChangeSource)> = None;
        for r in &rows {
            let target: String = r.try_get("target")?;
            let specific = targets.contains(&target);
            if !specific && target != PORTAL {
                continue;
            }
            let change_source: String = r.try_get("change_source")?;
            let source_id: String = r.try_get("source_id")?;
            let at: i64 = r.try_get("occurred_at")?;
            let candidate = ChangeSource {
                kind: self.kind(&change_source, &source_id).as_str().to_owned(),
                change_source,
                source_id,
                occurred_at: gomark_proto::time::timestamp_opt(at),
            };
            if best.as_ref().is_none_or(|(s, t, _)| (specific, at) > (*s, *t)) {
                best = Some((specific, at, candidate));
            }
        }
        Ok(best.map(|(_, _, c)| c))
    }
}

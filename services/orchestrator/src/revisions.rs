//! The portfolio's desired-state document, kept as immutable numbered revisions.
//!
//! A revision is accepted only when the document is valid (every error names its path)
//! and every company it names is registered; it is stored as canonical JSON with its
//! content hash, an audit entry and a `revision.created` event, in one transaction.
//! Submitting the document the latest revision already holds creates nothing. A rollback is
//! a new revision equal to an old one.

use crate::store::{AuditRecord, Store};
use crate::{Actor, Error, Result};
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::{ErrorKind, PublicError};
use gomark_proto::events::v1::RevisionCreated;
use gtm_config::Document;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRow {
    pub number: i64,
    pub author: String,
    pub message: String,
    pub created_at: i64,
    pub content_hash: String,
    /// Canonical JSON.
    pub document: String,
    pub rolled_back_to: Option<i64>,
}

impl RevisionRow {
    pub fn parse(&self) -> Result<Document> {
        Document::from_json(&self.document)
            .map_err(|e| gomark_storage::StorageError::Corrupt(format!("revision {}: {e}", self.number)).into())
    }
}

/// How long an edit of the latest revision is tried again while other edits store theirs
/// between its read and its write (see [`retry_on_conflict`]).
const EDIT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `attempt` (read the latest revision, change it, store the result as the next one)
/// again while it loses that race: another edit stored a revision between its read and its
/// write. Each lost race is another edit stored, so N edits at once need at most N tries; they
/// are spread a little, and given up after [`EDIT_RETRY_FOR`].
pub async fn retry_on_conflict<T, F: std::future::Future<Output = Result<T>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let started = std::time::Instant::now();
    let mut tries: u64 = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(Error::RevisionRace(_)) if started.elapsed() < EDIT_RETRY_FOR => {
                // Apart, so that the edits that lost this round do not meet again at once.
                let jitter = rand::random_range(0..=5 * tries.min(20));
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            done => return done,
        }
    }
}

/// Audit entries about the whole portfolio (not one company) carry this company id.
pub const PORTFOLIO: &str = "";

const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

fn corrupt(err: gtm_config::ConfigError) -> Error {
    gomark_storage::StorageError::Corrupt(err.to_string()).into()
}

fn row(r: &AnyRow) -> Result<RevisionRow> {
    Ok(RevisionRow {
        number: r.try_get("number")?,
        author: r.try_get("author")?,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
        content_hash: r.try_get("content_hash")?,
        document: r.try_get("document")?,
        rolled_back_to: r.try_get("rolled_back_to")?,
    })
}

macro_rules! revision_query {
    ($tail:literal) => {
        concat!(
            "SELECT number, author, message, created_at, content_hash, document, rolled_back_to FROM revisions",
            $tail
        )
    };
}

/// Parsed documents kept in memory: revisions are immutable, and a rollout or a drift pass
/// reads the same few over and over.
const PARSED_KEPT: usize = 8;

pub struct Revisions {
    store: Store,
    relay: RelayWaker,
    parsed: Mutex<VecDeque<(i64, Arc<Document>)>>,
}

impl Revisions {
    pub fn new(store: Store, relay: RelayWaker) -> Self {
        Self { store, relay, parsed: Mutex::new(VecDeque::new()) }
    }

    /// Revision `number`'s document (the latest for 0), parsed once and shared.
    pub async fn document(&self, number: i64) -> Result<(i64, Arc<Document>)> {
        let cached = |n: i64| {
            let parsed = self.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            parsed.iter().find(|(k, _)| *k == n).map(|(_, d)| d.clone())
        };
        // The latest's number alone: its document (the whole portfolio's) is read and
        // parsed only when not kept already, not on every read of a company's properties.
        let number = match number {
            0 => self
                .latest_number()
                .await?
                .ok_or_else(|| PublicError::not_found("a configuration revision (none yet)"))?,
            n => n,
        };
        if let Some(doc) = cached(number) {
            return Ok((number, doc));
        }
        let row = self.get(number).await?;
        let doc = Arc::new(row.parse()?);
        let mut parsed = self.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        parsed.push_front((row.number, doc.clone()));
        parsed.truncate(PARSED_KEPT);
        Ok((row.number, doc))
    }

    async fn latest_number(&self) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT number FROM revisions ORDER BY number DESC LIMIT 1")
            .fetch_optional(self.store.db().pool())
            .await?;
        Ok(r.map(|r| r.try_get("number")).transpose()?)
    }

    pub async fn latest(&self) -> Result<Option<RevisionRow>> {
        let r = sqlx::query(revision_query!(" ORDER BY number DESC LIMIT 1"))
            .fetch_optional(self.store.db().pool())
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Revision `number`, or the latest for 0.
    pub async fn get(&self, number: i64) -> Result<RevisionRow> {
        if number == 0 {
            return self
                .latest()
                .await?
                .ok_or_else(|| PublicError::not_found("a configuration revision (none yet)").into());
        }
        let r = sqlx::query(revision_query!(" WHERE number = $1"))
            .bind(number)
            .fetch_optional(self.store.db().pool())
            .await?;
        r.as_ref().map(row).transpose()?.ok_or_else(|| PublicError::not_found(format!("revision {number}")).into())
    }

    /// Newest first, before the cursor `before`.
    pub async fn list(&self, before: Option<i64>, limit: i64) -> Result<Vec<RevisionRow>> {
        let rows = sqlx::query(revision_query!(" WHERE number < $1 ORDER BY number DESC LIMIT $2"))
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(self.store.db().pool())
            .await?;
        rows.iter().map(row).collect()
    }

    /// Parses and validates `text` (YAML or JSON), checking that every company it names
    /// exists.
    pub async fn accept(&self, text: &str) -> Result<Document> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::invalid("document", "is larger than 4 MiB"));
        }
        let document = Document::from_yaml(text).map_err(|e| Error::invalid("document", e.to_string()))?;
        if let Err(errors) = document.validate() {
            let first = errors.errors.first().map(|e| e.path.clone()).unwrap_or_else(|| "document".into());
            let all: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
            return Err(Error::Public(PublicError {
                kind: ErrorKind::InvalidArgument,
                message: format!("the document is invalid: {}", all.join("; ")),
                field: Some(first),
                retry_after: None,
            }));
        }
        for (key, overlay) in &document.companies {
            if self.store.get_company(&overlay.company_id).await?.is_none() {
                return Err(Error::invalid(
                    &format!("companies.{key}.companyId"),
                    format!("no company {:?} is registered", overlay.company_id),
                ));
            }
        }
        Ok(document)
    }

    /// Stores `document` as the next revision (unless it equals the latest one).
    pub async fn create(
        &self,
        actor: &Actor,
        document: &Document,
        message: &str,
        expected_latest: Option<i64>,
        rolled_back_to: Option<i64>,
    ) -> Result<RevisionRow> {
        self.create_with_audit(actor, document, message, expected_latest, rolled_back_to, &[]).await
    }

    /// Like [`Revisions::create`], with more audit entries written in the same transaction
    /// (a company's view of an edit of its overlay).
    pub async fn create_with_audit(
        &self,
        actor: &Actor,
        document: &Document,
        message: &str,
        expected_latest: Option<i64>,
        rolled_back_to: Option<i64>,
        extra_audit: &[AuditRecord],
    ) -> Result<RevisionRow> {
        let message = message.trim();
        if message.is_empty() || message.chars().count() > 1000 {
            return Err(Error::invalid("message", "must be 1 to 1000 characters"));
        }
        let canonical = document.to_canonical_json().map_err(corrupt)?;
        let hash = document.content_hash().map_err(corrupt)?;
        let latest = self.latest().await?;
        let latest_number = latest.as_ref().map_or(0, |r| r.number);
        if let Some(expected) = expected_latest
            && expected != latest_number
        {
            return Err(Error::RevisionRace(format!("the latest revision is {latest_number}, not {expected}")));
        }
        if let Some(latest) = latest.filter(|l| l.content_hash == hash) {
            return Ok(latest);
        }
        let revision = RevisionRow {
            number: latest_number + 1,
            author: actor.0.clone(),
            message: message.to_owned(),
            created_at: gomark_storage::now_ms(),
            content_hash: hash,
            document: canonical,
            rolled_back_to,
        };
        let mut tx = self.store.db().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO revisions (number, author, message, created_at, content_hash, document, rolled_back_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(revision.number)
        .bind(&revision.author)
        .bind(&revision.message)
        .bind(revision.created_at)
        .bind(&revision.content_hash)
        .bind(&revision.document)
        .bind(revision.rolled_back_to)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if gomark_storage::is_unique_violation(&e) => {
                return Err(Error::RevisionRace("another revision was created concurrently; retry".into()));
            }
            other => {
                other?;
            }
        }
        let action = if rolled_back_to.is_some() { "config.rollback" } else { "config.revision" };
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: PORTFOLIO.into(),
                    actor: actor.0.clone(),
                    action: action.into(),
                    resource: format!("revision/{}", revision.number),
                    before: (latest_number > 0).then(|| json!({ "revision": latest_number })),
                    after: Some(json!({
                        "revision": revision.number,
                        "contentHash": revision.content_hash,
                        "message": revision.message,
                        "rolledBackTo": revision.rolled_back_to,
                    })),
                },
            )
            .await?;
        for record in extra_audit {
            self.store.append_audit(&mut tx, record).await?;
        }
        let created = RevisionCreated { number: revision.number, content_hash: revision.content_hash.clone() };
        gomark_events::outbox::enqueue(&mut tx, &new_event(PORTFOLIO, event_types::REVISION_CREATED, &created)).await?;
        tx.commit().await?;
        self.relay.wake();
        tracing::info!(revision = revision.number, actor = %actor.0, action, "configuration revision created");
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn an_edit_that_lost_the_race_is_tried_again_and_other_errors_are_not() {
        let tries = AtomicU32::new(0);
        let stored = retry_on_conflict(|| async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(Error::RevisionRace("another revision was stored first".into())),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(stored.ok(), Some(3), "stored on the fourth try");

        let tries = AtomicU32::new(0);
        let refused: Result<()> = retry_on_conflict(|| async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(Error::kind_of(ErrorKind::Conflict, "If-Match names another definition"))
        })
        .await;
        assert_eq!(refused.map_err(|e| e.to_public().kind).err(), Some(ErrorKind::Conflict));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a stale If-Match is not tried again");
    }
}

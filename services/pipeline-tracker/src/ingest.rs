//! Ingest: `deal.upserted` / `deal.deleted` events become deal versions, stored a batch
//! at a time; `deal.stage_changed` moves deals before their re-read arrives;
//! `company.created` names the companies.

use crate::funnel::Version;
use crate::store::{Incoming, Move};
use crate::tracker::{Counted, Tracker};
use async_trait::async_trait;
use gomark_events::consumer::{AfterBatch, BatchHandler, EventHandler, HandlerError};
use gomark_events::envelope::decode_payload;
use gomark_events::{EventEnvelope, event_types};
use gomark_proto::events::v1 as ev;
use gomark_proto::money::{MoneyError, deal_amount};
use std::sync::Arc;

pub const DEALS_UPSERTED_CONSUMER: &str = "pipeline-tracker.deals-upserted";
pub const DEALS_DELETED_CONSUMER: &str = "pipeline-tracker.deals-deleted";
pub const DEALS_MOVED_CONSUMER: &str = "pipeline-tracker.deals-moved";
pub const COMPANIES_CONSUMER: &str = "pipeline-tracker.companies";

/// Why an event carries no usable deal version.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("undecodable payload: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid amount: {0}")]
    Amount(#[from] MoneyError),
}

/// The deal version an event carries; `None` for an event of another type.
pub fn incoming(event: &EventEnvelope) -> Result<Option<Incoming>, IncomingError> {
    Ok(match event.r#type.as_str() {
        event_types::DEAL_UPSERTED => {
            let d: ev::DealUpserted = decode_payload(event)?;
            // `amount_money` when the event has it, else the old double (currency unknown).
            let (amount, currency) = match deal_amount(&d)? {
                Some((amount, currency)) => (Some(amount), currency),
                None => (None, None),
            };
            let (modified_ms, close_date_ms, created_ms) =
                (d.last_modified_millis(), d.close_date_millis(), d.created_millis());
            Some(Incoming {
                company_id: d.company_id,
                deal_id: d.deal_id,
                version: Version {
                    modified_ms,
                    pipeline_id: d.pipeline_id,
                    stage_id: d.stage_id,
                    amount,
                    currency,
                    close_date_ms,
                    created_ms,
                    deleted: false,
                },
                name: d.name,
                owner_id: d.owner_id,
            })
        }
        event_types::DEAL_DELETED => {
            let d: ev::DealDeleted = decode_payload(event)?;
            let modified_ms = d.deleted_at_millis();
            Some(Incoming {
                company_id: d.company_id,
                deal_id: d.deal_id,
                version: Version::deleted(modified_ms),
                name: String::new(),
                owner_id: String::new(),
            })
        }
        _ => None,
    })
}

pub struct DealEvents {
    pub tracker: Arc<Tracker>,
}

#[async_trait]
impl BatchHandler for DealEvents {
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
        let batch = decode_all(
            events,
            "deal event",
            |e| incoming(e).map_err(|e| e.to_string()),
            |i| (&i.company_id, &i.deal_id),
        );
        if batch.is_empty() {
            return Ok(AfterBatch::done());
        }
        let touched =
            self.tracker.store().ingest_counted(&batch).await.map_err(|err| HandlerError::Retry(err.to_string()))?;
        metrics::counter!("pipeline_tracker_deal_versions_ingested_total").increment(batch.len() as u64);
        Ok(hand_over(&self.tracker, batch.iter().map(|i| (i.company_id.as_str(), i.deal_id.as_str())), &touched))
    }
}

/// What `decode` gives for each of `events` that names a company and a deal (`ids`). One bad
/// event must not hold back the others: it is logged and skipped.
fn decode_all<T>(
    events: &[EventEnvelope],
    what: &str,
    decode: impl Fn(&EventEnvelope) -> Result<Option<T>, String>,
    ids: impl Fn(&T) -> (&String, &String),
) -> Vec<T> {
    let mut items = Vec::with_capacity(events.len());
    for event in events {
        match decode(event) {
            Ok(Some(item)) if names_a_deal(ids(&item)) => items.push(item),
            Ok(_) => tracing::error!(event_id = %event.id, "{what} without company or deal id skipped"),
            Err(err) => tracing::error!(event_id = %event.id, error = %err, "unreadable {what} skipped"),
        }
    }
    items
}

fn names_a_deal((company, deal): (&String, &String)) -> bool {
    !company.is_empty() && !deal.is_empty()
}

/// After a batch was stored: the kept sums take the `changed` deals before readers are woken,
/// so they read them; the other replicas are told. This runs while the next batch is
/// written: batches may reach it out of order, as another replica's do.
fn hand_over<'a>(
    tracker: &Arc<Tracker>,
    changed: impl Iterator<Item = (&'a str, &'a str)>,
    touched: &[(String, i64)],
) -> AfterBatch {
    let (tracker, counted) = (tracker.clone(), Counted::group(changed, touched));
    AfterBatch::then(async move { tracker.stored(&counted).await })
}

/// The move a `deal.stage_changed` event carries.
pub fn moved(event: &EventEnvelope) -> Result<Move, prost::DecodeError> {
    let d: ev::DealStageChanged = decode_payload(event)?;
    let at_ms = d.changed_at_millis();
    Ok(Move { company_id: d.company_id, deal_id: d.deal_id, at_ms, stage_id: d.stage_id, pipeline_id: d.pipeline_id })
}

/// `deal.stage_changed`: the funnels move as the webhook arrives, not after the re-read.
pub struct DealMoves {
    pub tracker: Arc<Tracker>,
}

#[async_trait]
impl BatchHandler for DealMoves {
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
        let moves = decode_all(
            events,
            "deal move",
            |e| moved(e).map(Some).map_err(|e| e.to_string()),
            |m| (&m.company_id, &m.deal_id),
        );
        if moves.is_empty() {
            return Ok(AfterBatch::done());
        }
        let touched =
            self.tracker.store().apply_moves(&moves).await.map_err(|err| HandlerError::Retry(err.to_string()))?;
        metrics::counter!("pipeline_tracker_deal_moves_ingested_total").increment(moves.len() as u64);
        Ok(hand_over(&self.tracker, moves.iter().map(|m| (m.company_id.as_str(), m.deal_id.as_str())), &touched))
    }
}

pub struct CompanyEvents {
    pub tracker: Arc<Tracker>,
}

#[async_trait]
impl EventHandler for CompanyEvents {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let created: ev::CompanyCreated = decode_payload(event).map_err(|e| HandlerError::Reject(e.to_string()))?;
        let Some(company) = created.company else { return Err(HandlerError::Reject("no company".into())) };
        self.tracker
            .store()
            .record_company(&company.id, &company.name)
            .await
            .map_err(|err| HandlerError::Retry(err.to_string()))?;
        self.tracker.changed(std::slice::from_ref(&company.id)).await;
        Ok(())
    }
}

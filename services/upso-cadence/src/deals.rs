//! The customers read model: `deal.upserted` events that name a contact
//! (`gomark_contact_email`) are kept per company, idempotently, and `deal.deleted` removes
//! them; a changed deal wakes the engine for its company.

use crate::store::{CustomerDeal, Store};
use gomark_events::EventEnvelope;
use gomark_events::consumer::{AfterBatch, BatchHandler, EventHandler, HandlerError};
use gomark_proto::events::v1::{DealDeleted, DealUpserted};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub const CONSUMER: &str = "upso-cadence.deals";
pub const DELETIONS_CONSUMER: &str = "upso-cadence.deal-deletions";

/// Companies whose engine should run soon, and the wake-up for the loop that runs them.
#[derive(Debug, Default)]
pub struct EngineTriggers {
    pending: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl EngineTriggers {
    pub fn trigger(&self, company_id: &str) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(company_id.to_owned());
        self.wake.notify_one();
    }

    pub fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

pub struct DealEvents {
    pub store: Store,
    pub triggers: Arc<EngineTriggers>,
}

#[async_trait::async_trait]
impl BatchHandler for DealEvents {
    /// A batch in one transaction: one commit instead of one per event (a busy portal
    /// sends hundreds of deal events a second). Each event is still claimed in the inbox,
    /// so a redelivered batch changes nothing twice.
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
        let transient = |e: crate::Error| HandlerError::Retry(e.to_string());
        let mut deals = Vec::with_capacity(events.len());
        for event in events {
            match gomark_events::envelope::decode_payload::<DealUpserted>(event) {
                Ok(deal) => deals.push((event.id.as_str(), deal)),
                // One bad event must not hold back the others: it is logged and skipped.
                Err(err) => tracing::error!(event_id = %event.id, error = %err, "undecodable deal.upserted skipped"),
            }
        }
        let mut tx = self.store.db().begin().await.map_err(|e| transient(e.into()))?;
        let ids: Vec<&str> = deals.iter().map(|(id, _)| *id).collect();
        let mut claimed =
            gomark_events::inbox::claim_all(&mut tx, CONSUMER, &ids).await.map_err(|e| transient(e.into()))?;
        // Each event first seen now, in order, as the row it makes (none: the deal no
        // longer names a contact, so it is nobody's any more).
        let mut outcomes = Vec::with_capacity(deals.len());
        for (id, deal) in &deals {
            if claimed.remove(*id) {
                outcomes.push((deal, customer_deal(deal)));
            }
        }
        // Deletions go first, in one statement; a deal's rows written before its last
        // deletion in the batch are skipped, so the end state is the one of events in order.
        let mut last_deletion = HashMap::new();
        for (i, (deal, row)) in outcomes.iter().enumerate() {
            if row.is_none() {
                last_deletion.insert((deal.company_id.as_str(), deal.deal_id.as_str()), i);
            }
        }
        let deleted: Vec<(&str, &str)> = last_deletion.keys().copied().collect();
        self.store.delete_customer_deals(&mut tx, &deleted).await.map_err(transient)?;
        let mut changed = BTreeSet::new();
        for (i, (deal, row)) in outcomes.iter().enumerate() {
            let Some(row) = row else { continue };
            if last_deletion.get(&(deal.company_id.as_str(), deal.deal_id.as_str())).is_some_and(|&d| d > i) {
                continue;
            }
            if self.store.upsert_customer_deal(&mut tx, &deal.company_id, row).await.map_err(transient)? {
                changed.insert(deal.company_id.clone());
            }
        }
        tx.commit().await.map_err(|e| transient(crate::Error::from(e)))?;
        for company_id in &changed {
            self.triggers.trigger(company_id);
        }
        Ok(AfterBatch::done())
    }
}

/// The customer row a deal makes, if it names a contact.
fn customer_deal(deal: &DealUpserted) -> Option<CustomerDeal> {
    let email = deal.properties.get(crate::rules::CONTACT_EMAIL).map(|e| e.trim().to_ascii_lowercase());
    let email = email.filter(|e| e.contains('@'))?;
    Some(CustomerDeal {
        deal_id: deal.deal_id.clone(),
        email,
        deal_name: deal.name.clone(),
        stage: deal.stage_id.clone(),
        // Upsell rules score the amount (a threshold, never summed across currencies):
        // `amount_money` when present, else the old double.
        amount: gomark_proto::money::deal_amount(deal)
            .ok()
            .flatten()
            .and_then(|(amount, _)| rust_decimal::prelude::ToPrimitive::to_f64(&amount)),
        close_date_ms: deal.close_date_millis(),
        owner_id: deal.owner_id.clone(),
        properties: deal.properties.clone().into_iter().collect(),
        last_modified_ms: deal.last_modified_millis(),
    })
}

/// A deal deleted in HubSpot no longer makes anyone a customer.
pub struct DealDeletions {
    pub store: Store,
}

#[async_trait::async_trait]
impl EventHandler for DealDeletions {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let deal: DealDeleted = gomark_events::envelope::decode_payload(event)
            .map_err(|e| HandlerError::Reject(format!("undecodable deal.deleted: {e}")))?;
        let transient = |e: crate::Error| HandlerError::Retry(e.to_string());
        let mut tx = self.store.db().begin().await.map_err(|e| transient(e.into()))?;
        if gomark_events::inbox::claim(&mut tx, DELETIONS_CONSUMER, &event.id).await.map_err(|e| transient(e.into()))? {
            self.store.delete_customer_deal(&mut tx, &deal.company_id, &deal.deal_id).await.map_err(transient)?;
        }
        tx.commit().await.map_err(|e| transient(crate::Error::from(e)))?;
        Ok(())
    }
}

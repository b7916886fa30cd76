//! The customers read model: `deal.upserted` events that name a contact
//! (`gomark_contact_email`) are kept per company, idempotently, and `deal.deleted` removes
//! them; a changed deal wakes the engine for its company.

use crate::store::{CustomerDeal, Store};
use gomark_events::EventEnvelope;
use gomark_events::consumer::{BatchHandler, EventHandler, HandlerError};
use gomark_proto::events::v1::{DealDeleted, DealUpserted};
use std::collections::BTreeSet;
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
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<(), HandlerError> {
        let transient = |e: crate::Error| HandlerError::Retry(e.to_string());
        let mut tx = self.store.db().begin().await.map_err(|e| transient(e.into()))?;
        let mut changed = BTreeSet::new();
        for event in events {
            let deal: DealUpserted = match gomark_events::envelope::decode_payload(event) {
                Ok(deal) => deal,
                // One bad event must not hold back the others: it is logged and skipped.
                Err(err) => {
                    tracing::error!(event_id = %event.id, error = %err, "undecodable deal.upserted skipped");
                    continue;
                }
            };
            if !gomark_events::inbox::claim(&mut tx, CONSUMER, &event.id).await.map_err(|e| transient(e.into()))? {
                continue;
            }
            let email = deal.properties.get(crate::rules::CONTACT_EMAIL).map(|e| e.trim().to_ascii_lowercase());
            match email.filter(|e| e.contains('@')) {
                Some(email) => {
                    let row = CustomerDeal {
                        deal_id: deal.deal_id.clone(),
                        email,
                        deal_name: deal.name.clone(),
                        stage: deal.stage_id.clone(),
                        // Upsell rules score the amount (a threshold, never summed across
                        // currencies): `amount_money` when present, else the old double.
                        amount: gomark_proto::money::deal_amount(&deal)
                            .ok()
                            .flatten()
                            .and_then(|(amount, _)| rust_decimal::prelude::ToPrimitive::to_f64(&amount)),
                        close_date_ms: deal.close_date_millis(),
                        owner_id: deal.owner_id.clone(),
                        properties: deal.properties.clone().into_iter().collect(),
                        last_modified_ms: deal.last_modified_millis(),
                    };
                    if self.store.upsert_customer_deal(&mut tx, &deal.company_id, &row).await.map_err(transient)? {
                        changed.insert(deal.company_id);
                    }
                }
                // The deal no longer names a contact: it is nobody's any more.
                None => {
                    self.store
                        .delete_customer_deal(&mut tx, &deal.company_id, &deal.deal_id)
                        .await
                        .map_err(transient)?;
                }
            }
        }
        tx.commit().await.map_err(|e| transient(crate::Error::from(e)))?;
        for company_id in &changed {
            self.triggers.trigger(company_id);
        }
        Ok(())
    }
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

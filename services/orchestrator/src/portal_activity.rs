//! Portal activity as a drift trigger: every deal event hubspot-sync publishes (from a
//! webhook or its sync) asks for a drift check of that company soon.

use crate::drift::DriftWatch;
use async_trait::async_trait;
use gomark_events::EventEnvelope;
use gomark_events::consumer::{AfterBatch, BatchHandler, HandlerError};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const CONSUMER: &str = "orchestrator.portal-activity";

pub struct PortalActivity {
    pub drift: Arc<DriftWatch>,
}

/// The companies a batch of deal events names, each once.
fn companies(events: &[EventEnvelope]) -> BTreeSet<&str> {
    events.iter().map(|e| e.company_id.as_str()).filter(|c| !c.is_empty()).collect()
}

#[async_trait]
impl BatchHandler for PortalActivity {
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
        // Idempotent by nature: a repeated trigger only asks for the same check again, so a
        // batch asks once per company, however many of its deals moved, and for all its
        // companies at once (a busy portal sends hundreds of deal events a second).
        let companies: Vec<&str> = companies(events).into_iter().collect();
        if !companies.is_empty() {
            self.drift.trigger(&companies).await.map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        Ok(AfterBatch::done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_each_company_once() {
        let event = |company: &str| {
            gomark_events::envelope::new_event(
                company,
                "deal.upserted",
                &gomark_proto::events::v1::DealUpserted::default(),
            )
        };
        let events = [event("c2"), event("c1"), event(""), event("c2"), event("c1"), event("c3")];
        assert_eq!(companies(&events).into_iter().collect::<Vec<_>>(), ["c1", "c2", "c3"]);
    }
}

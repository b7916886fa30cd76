//! Consumes hubspot-sync's `deal_property.applied` events into each property's sync state.

use crate::desired::DesiredState;
use async_trait::async_trait;
use gomark_events::EventEnvelope;
use gomark_events::consumer::{EventHandler, HandlerError};
use gomark_events::envelope::decode_payload;
use gomark_proto::events::v1::{ApplyOutcome, DealPropertyApplied};
use std::sync::Arc;

pub const CONSUMER: &str = "orchestrator.deal-property-applied";

pub struct ApplyResults {
    desired: Arc<DesiredState>,
}

impl ApplyResults {
    pub fn new(desired: Arc<DesiredState>) -> Self {
        Self { desired }
    }
}

#[async_trait]
impl EventHandler for ApplyResults {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let applied: DealPropertyApplied = decode_payload(event).map_err(|e| HandlerError::Reject(e.to_string()))?;
        let result = match ApplyOutcome::try_from(applied.outcome) {
            Ok(ApplyOutcome::Failed) => Err(applied.error.clone()),
            _ => Ok(()),
        };
        self.desired
            .record_apply_result(
                &event.id,
                CONSUMER,
                &applied.company_id,
                &applied.property_name,
                applied.version,
                result,
            )
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))
    }
}

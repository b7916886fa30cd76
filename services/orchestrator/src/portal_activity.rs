//! Portal activity as a drift trigger: every deal event hubspot-sync publishes (from a
//! webhook or its sync) asks for a drift check of that company soon.

use crate::drift::DriftWatch;
use async_trait::async_trait;
use gomark_events::EventEnvelope;
use gomark_events::consumer::{EventHandler, HandlerError};
use std::sync::Arc;

pub const CONSUMER: &str = "orchestrator.portal-activity";

pub struct PortalActivity {
    pub drift: Arc<DriftWatch>,
}

#[async_trait]
impl EventHandler for PortalActivity {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        // Idempotent by nature: a repeated trigger only asks for the same check again.
        if !event.company_id.is_empty() {
            self.drift.trigger(&event.company_id).await.map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        Ok(())
    }
}

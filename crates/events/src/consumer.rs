//! The loop that feeds a durable consumer's events to a handler, acking on success and
//! asking for redelivery, with bounded backoff, on transient failure.

use crate::{ConsumerSpec, EventBus, EventEnvelope};
use async_trait::async_trait;
use gomark_platform::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try later (a dependency is down, a rate limit was hit).
    #[error("transient: {0}")]
    Retry(String),
    /// Will never succeed (malformed payload); acknowledged and logged.
    #[error("rejected: {0}")]
    Reject(String),
}

#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError>;
}

const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(30);

/// Delay before the `attempt`-th redelivery: 250 ms doubling, capped.
fn redelivery_delay(attempt: u32) -> Duration {
    (Duration::from_millis(250) * 2u32.saturating_pow(attempt.saturating_sub(1).min(8))).min(MAX_REDELIVERY_DELAY)
}

/// Consumes `spec` until shutdown. A lost bus connection is re-established with backoff.
pub async fn run_consumer(
    bus: Arc<dyn EventBus>,
    spec: ConsumerSpec,
    handler: Arc<dyn EventHandler>,
    shutdown: Shutdown,
) {
    let mut reconnect = Duration::from_millis(200);
    while !shutdown.is_triggered() {
        let mut stream = match bus.subscribe(&spec).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(consumer = %spec.durable, error = %err, "subscribe failed, retrying");
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(reconnect) => {}
                }
                reconnect = (reconnect * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        reconnect = Duration::from_millis(200);
        loop {
            let next = tokio::select! {
                () = shutdown.wait() => return,
                next = stream.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(err)) => {
                    tracing::warn!(consumer = %spec.durable, error = %err, "event stream failed, resubscribing");
                    break;
                }
                None => break,
            };
            let span = tracing::info_span!("event.consume", consumer = %spec.durable, event_id = %delivery.event.id, event_type = %delivery.event.r#type, company_id = %delivery.event.company_id, attempt = delivery.attempt);
            gomark_platform::telemetry::adopt_trace_context(&span, &delivery.event.trace_context);
            // Handling is not raced against shutdown: a handler mid-way finishes its work.
            let outcome = handler.handle(&delivery.event).instrument(span.clone()).await;
            let _entered = span.enter();
            let (label, settled) = match outcome {
                Ok(()) => ("ok", delivery.ack().await),
                Err(HandlerError::Reject(reason)) => {
                    tracing::error!(reason = %reason, "event rejected");
                    ("rejected", delivery.ack().await)
                }
                Err(HandlerError::Retry(reason)) => {
                    let delay = redelivery_delay(delivery.attempt);
                    tracing::warn!(reason = %reason, retry_in_ms = delay.as_millis() as u64, "event handling failed, will retry");
                    ("retry", delivery.nak(delay).await)
                }
            };
            metrics::counter!("events_consumed_total", "consumer" => spec.durable.clone(), "outcome" => label)
                .increment(1);
            if let Err(err) = settled {
                tracing::warn!(error = %err, "could not settle event; it will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backs_off_and_is_bounded() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(250));
        assert_eq!(redelivery_delay(2), Duration::from_millis(500));
        assert_eq!(redelivery_delay(50), MAX_REDELIVERY_DELAY);
    }
}

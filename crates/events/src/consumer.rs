//! The loop that feeds a durable consumer's events to a handler, acking on success and
//! asking for redelivery, with bounded backoff, on transient failure.

use crate::{ConsumerSpec, EventBus, EventEnvelope};
use async_trait::async_trait;
use gomark_platform::{Outage, Shutdown};
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

/// Handles events a batch at a time, for consumers whose writes are cheaper in bulk.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// All or nothing: on error, every event of the batch is delivered again. What it
    /// returns runs before the batch is acked, while the next batch is handled.
    async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError>;
}

/// What a handled batch leaves to do that need not hold the next batch back (dropping cached
/// figures, waking readers): the consumer runs it while the next batch is written, and acks
/// the batch once it is done, so a crash before then still redelivers the batch.
#[must_use = "a batch's follow-up runs only when awaited: call `run`"]
#[derive(Default)]
pub struct AfterBatch(Option<futures::future::BoxFuture<'static, ()>>);

impl AfterBatch {
    /// Nothing left to do.
    pub fn done() -> Self {
        Self(None)
    }

    pub fn then(work: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(Box::pin(work)))
    }

    fn in_span(self, span: tracing::Span) -> Self {
        Self(self.0.map(|work| -> futures::future::BoxFuture<'static, ()> { Box::pin(work.instrument(span)) }))
    }

    /// Does what is left (callers outside the consumer: tests, replays).
    pub async fn run(self) {
        if let Some(work) = self.0 {
            work.await;
        }
    }
}

impl std::fmt::Debug for AfterBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "AfterBatch(work)" } else { "AfterBatch(done)" })
    }
}

/// How a batch consumer gathers its batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most events per batch.
    pub max_events: usize,
    /// While the bus is busy (the last batch had [`BUSY_BATCH`] events or more), how long a
    /// batch waits to fill from its oldest event on, on a bus that delivers more meanwhile.
    /// Otherwise the events waiting go at once.
    pub linger: Duration,
    /// Batches handled at once (at least 1). More than one suits a handler whose batches
    /// commute (idempotent, order-free writes): one batch's round trips to its database
    /// overlap another's, as they would across replicas.
    pub in_flight: usize,
}

/// A batch this large says events arrive faster than the handler writes them: the next
/// batch lingers (see [`BatchLimits::linger`]). Smaller ones (a lone event, one company's
/// burst) go at once, for latency.
pub const BUSY_BATCH: usize = 16;

impl Default for BatchLimits {
    fn default() -> Self {
        Self { max_events: 500, linger: Duration::from_millis(10), in_flight: 1 }
    }
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
    // Bus trouble (subscribing, the stream) and handler trouble (its database, a service it
    // calls) are logged once per outage each, not once per attempt or per event.
    let mut bus_outage = Outage::new("event consumer: bus");
    let mut handler_outage = Outage::new("event consumer: handler");
    while !shutdown.is_triggered() {
        let mut stream = match bus.subscribe(&spec).await {
            Ok(s) => s,
            Err(err) => {
                bus_outage.failed(&format!("{}: {err}", spec.durable));
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
                    bus_outage.failed(&format!("{}: {err}", spec.durable));
                    break;
                }
                None => break,
            };
            bus_outage.ok();
            let span = consume_span(&spec.durable, &delivery.event, delivery.attempt);
            // Handling is not raced against shutdown: a handler mid-way finishes its work.
            let outcome = handler.handle(&delivery.event).instrument(span.clone()).await;
            let _entered = span.enter();
            let (label, settled) = match outcome {
                Ok(()) => {
                    handler_outage.ok();
                    ("ok", delivery.ack().await)
                }
                Err(HandlerError::Reject(reason)) => {
                    tracing::error!(reason = %reason, "event rejected");
                    ("rejected", delivery.ack().await)
                }
                Err(HandlerError::Retry(reason)) => {
                    let delay = redelivery_delay(delivery.attempt);
                    tracing::debug!(reason = %reason, retry_in_ms = delay.as_millis() as u64, "event handling failed, will retry");
                    handler_outage.failed(&format!("{}: {reason}", spec.durable));
                    ("retry", delivery.nak(delay).await)
                }
            };
            metrics::counter!("events_consumed_total", "consumer" => spec.durable.clone(), "outcome" => label)
                .increment(1);
            if let Err(err) = settled {
                // The bus redelivers it; the consumer's inbox claim makes that a no-op.
                bus_outage.failed(&format!("{}: could not settle an event: {err}", spec.durable));
            }
        }
    }
}

/// Consumes `spec` until shutdown like [`run_consumer`], handing events over in batches: when
/// the handler has room for one, the events fetched meanwhile, up to `limits.max_events`.
/// An event on a quiet bus is handled at once; while the bus is busy a batch waits up to
/// `limits.linger` to fill, so that a saturated handler writes fewer, larger batches.
pub async fn run_batch_consumer(
    bus: Arc<dyn EventBus>,
    spec: ConsumerSpec,
    handler: Arc<dyn BatchHandler>,
    limits: BatchLimits,
    shutdown: Shutdown,
) {
    let mut reconnect = Duration::from_millis(200);
    // Bus trouble (subscribing, the stream) and handler trouble (its database, a service it
    // calls) are logged once per outage each, not once per attempt or per event.
    let mut bus_outage = Outage::new("event consumer: bus");
    let mut handler_outage = Outage::new("event consumer: handler");
    while !shutdown.is_triggered() {
        let stream = match bus.subscribe(&spec).await {
            Ok(s) => s,
            Err(err) => {
                bus_outage.failed(&format!("{}: {err}", spec.durable));
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(reconnect) => {}
                }
                reconnect = (reconnect * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        reconnect = Duration::from_millis(200);
        // Events are fetched and decoded by their own task while batches are handled: the
        // handler never waits for the bus between batches, and the bus is read while the
        // handler writes. Up to `in_flight` batches are handled at once; a handled batch is
        // settled (its follow-up run, then its events acked) while the next one is handled,
        // so the next write waits for neither.
        let linger = if stream.fills_while_unsettled() { limits.linger } else { Duration::ZERO };
        let max = limits.max_events.max(1);
        let ahead = Arc::new(Ahead::default());
        let gatherer = tokio::spawn(gather(stream, ahead.clone(), max, shutdown.clone()));
        let mut handling = futures::stream::FuturesUnordered::new();
        let mut settling = futures::stream::FuturesUnordered::new();
        let mut busy = false;
        loop {
            // Settling is bounded too: with the bus stalled, batches do not pile up unacked.
            let room = handling.len() < limits.in_flight.max(1) && settling.len() <= limits.in_flight.max(1);
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                Some(handled) = futures::StreamExt::next(&mut handling), if !handling.is_empty() => {
                    settling.push(settle(&spec, handled));
                }
                // Before the acks: the next batch starts (its first poll, above, sends its
                // write), and the acks of the last one go out while that write is under way,
                // instead of in front of it.
                next = ahead.take(max, if busy { linger } else { Duration::ZERO }), if room => match next {
                    Some(Ok(batch)) => {
                        bus_outage.ok();
                        busy = batch.len() >= BUSY_BATCH;
                        handling.push(handle_batch(&spec, handler.as_ref(), batch));
                    }
                    Some(Err(err)) => {
                        bus_outage.failed(&format!("{}: {err}", spec.durable));
                        break;
                    }
                    None => break,
                },
                Some(settled) = futures::StreamExt::next(&mut settling), if !settling.is_empty() => {
                    note_settled(&spec, settled, &mut bus_outage, &mut handler_outage);
                }
            }
        }
        // Batches being handled finish and are settled (a shutdown waits for them, as for
        // one batch before); a batch gathered but not handled is not acked: the bus delivers
        // it again.
        while let Some(handled) = futures::StreamExt::next(&mut handling).await {
            settling.push(settle(&spec, handled));
        }
        while let Some(settled) = futures::StreamExt::next(&mut settling).await {
            note_settled(&spec, settled, &mut bus_outage, &mut handler_outage);
        }
        gatherer.abort();
    }
}

/// Deliveries fetched ahead of the handler: [`gather`] adds them as they arrive, the
/// consumer takes a batch when it has room for one.
#[derive(Default)]
struct Ahead {
    fetched: std::sync::Mutex<Fetched>,
    /// Deliveries were added, or the stream ended.
    added: tokio::sync::Notify,
    /// Deliveries were taken.
    taken: tokio::sync::Notify,
}

#[derive(Default)]
struct Fetched {
    deliveries: Vec<crate::Delivery>,
    /// When the oldest of them was added; `None` while none waits.
    since: Option<tokio::time::Instant>,
    /// How the stream ended: closed (`Some(None)`) or failed.
    ended: Option<Option<crate::EventError>>,
}

impl Fetched {
    /// The oldest `max` deliveries; what did not fit is older than any linger already, so
    /// it keeps its `since` and goes next.
    fn cut(&mut self, max: usize) -> Vec<crate::Delivery> {
        let rest = self.deliveries.split_off(self.deliveries.len().min(max));
        let batch = std::mem::replace(&mut self.deliveries, rest);
        if self.deliveries.is_empty() {
            self.since = None;
        }
        batch
    }
}

impl Ahead {
    fn fetched(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next batch: up to `max` of the deliveries waiting, once there is one and the
    /// oldest has waited `linger` (or they fill a batch, or the stream ended). After the
    /// last one, `None` if the stream closed, or its error. Cancel-safe: nothing is taken
    /// until it returns.
    async fn take(&self, max: usize, linger: Duration) -> Option<crate::Result<Vec<crate::Delivery>>> {
        loop {
            // Interest first, so deliveries added between the look and the wait are not missed.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let fill_until = {
                let mut fetched = self.fetched();
                match fetched.since {
                    None => match &mut fetched.ended {
                        Some(ended) => return ended.take().map(Err),
                        None => None,
                    },
                    Some(since) => {
                        let full = fetched.deliveries.len() >= max || fetched.ended.is_some();
                        if full || since + linger <= tokio::time::Instant::now() {
                            let batch = fetched.cut(max);
                            self.taken.notify_one();
                            return Some(Ok(batch));
                        }
                        Some(since + linger)
                    }
                }
            };
            match fill_until {
                Some(due) => {
                    tokio::select! {
                        () = &mut added => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => added.await,
            }
        }
    }
}

/// Fetches deliveries from `stream` into `ahead` until the bus closes or fails, or shutdown;
/// it waits while a full batch is waiting (the bus keeps the rest).
async fn gather(mut stream: Box<dyn crate::EventStream>, ahead: Arc<Ahead>, max: usize, shutdown: Shutdown) {
    loop {
        loop {
            let taken = ahead.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if ahead.fetched().deliveries.len() < max {
                break;
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = taken => {}
            }
        }
        let next = tokio::select! {
            () = shutdown.wait() => return,
            next = stream.next_batch(max) => next,
        };
        let ended = {
            let mut fetched = ahead.fetched();
            match next {
                Some(Ok(deliveries)) => {
                    fetched.since.get_or_insert_with(tokio::time::Instant::now);
                    fetched.deliveries.extend(deliveries);
                }
                Some(Err(err)) => fetched.ended = Some(Some(err)),
                None => fetched.ended = Some(None),
            }
            fetched.ended.is_some()
        };
        ahead.added.notify_one();
        if ended {
            return;
        }
    }
}

/// How one batch went: the handler's failure to retry, if any, and whether every event of
/// it was acknowledged (or handed back) on the bus.
struct Settled {
    retry: Option<String>,
    on_bus: crate::Result<()>,
}

/// Tells the outage trackers how a batch went.
fn note_settled(spec: &ConsumerSpec, settled: Settled, bus: &mut Outage, handler: &mut Outage) {
    match settled.retry {
        Some(reason) => handler.failed(&format!("{}: {reason}", spec.durable)),
        None => handler.ok(),
    }
    if let Err(err) = settled.on_bus {
        // The bus redelivers them; the consumer's inbox claims make that a no-op.
        bus.failed(&format!("{}: could not settle events: {err}", spec.durable));
    }
}

/// A batch its handler is done with, to be settled on the bus.
struct Handled {
    batch: Vec<crate::Delivery>,
    /// `ok`, `rejected` or `retry`, for the consumed-events counter.
    label: &'static str,
    retry: Option<String>,
    after: AfterBatch,
}

async fn handle_batch(spec: &ConsumerSpec, handler: &dyn BatchHandler, mut batch: Vec<crate::Delivery>) -> Handled {
    // A batch mixes traces: its span is the consumer's own, not any one producer's child.
    let span = tracing::info_span!(
        "event.consume_batch",
        otel.name = %format!("process {}", spec.durable),
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.consumer.group.name = %spec.durable,
        messaging.batch.message_count = batch.len(),
        consumer = %spec.durable,
        events = batch.len(),
    );
    // Moved out, not copied: settling a delivery needs its acker, not its event.
    let events: Vec<EventEnvelope> = batch.iter_mut().map(|d| std::mem::take(&mut d.event)).collect();
    let outcome = handler.handle_batch(&events).instrument(span.clone()).await;
    // In the span only while logging: a guard held across an await would leave the span
    // entered while other batches run on this thread.
    let label = span.in_scope(|| match &outcome {
        Ok(_) => "ok",
        Err(HandlerError::Reject(reason)) => {
            tracing::error!(reason = %reason, "batch rejected");
            "rejected"
        }
        Err(HandlerError::Retry(reason)) => {
            tracing::debug!(reason = %reason, "batch handling failed, will retry");
            "retry"
        }
    });
    let (retry, after) = match outcome {
        Ok(after) => (None, after.in_span(span)),
        Err(HandlerError::Retry(reason)) => (Some(reason), AfterBatch::done()),
        Err(HandlerError::Reject(_)) => (None, AfterBatch::done()),
    };
    Handled { batch, label, retry, after }
}

/// Acks a handled batch, or asks for it again (with backoff) when its handler failed.
async fn settle(spec: &ConsumerSpec, handled: Handled) -> Settled {
    let Handled { batch, label, retry, after } = handled;
    after.run().await;
    let count = batch.len() as u64;
    // All at once, not one after another: on NATS each settlement is a message, and queued
    // together they leave in a few writes instead of one write (and one wake-up) each.
    let naks = retry.is_some();
    let settlements = batch.into_iter().map(|delivery| async move {
        if naks {
            let delay = redelivery_delay(delivery.attempt);
            delivery.nak(delay).await
        } else {
            delivery.ack().await
        }
    });
    let unsettled = futures::future::join_all(settlements).await.into_iter().collect::<crate::Result<Vec<()>>>();
    metrics::counter!("events_consumed_total", "consumer" => spec.durable.clone(), "outcome" => label).increment(count);
    Settled { retry, on_bus: unsettled.map(drop) }
}

/// The span one event is handled in: an OpenTelemetry consumer span named `process
/// <event type>` (messaging conventions), continuing the producer's trace from the envelope.
fn consume_span(durable: &str, event: &EventEnvelope, attempt: u32) -> tracing::Span {
    let span = tracing::info_span!(
        "event.consume",
        otel.name = %format!("process {}", event.r#type),
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.destination.name = %event.r#type,
        messaging.consumer.group.name = %durable,
        messaging.message.id = %event.id,
        consumer = %durable,
        event_id = %event.id,
        event_type = %event.r#type,
        company_id = %event.company_id,
        attempt,
    );
    gomark_platform::telemetry::adopt_trace_context(&span, &event.trace_context);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_handled_in_a_consumer_span_of_the_producers_trace() {
        use gomark_platform::settings::LogFormat;
        use gomark_platform::telemetry::capture::{Captured, attribute};
        let c = Captured::new(LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            let producer = tracing::info_span!("producer");
            let event = producer.in_scope(|| {
                crate::envelope::new_event(
                    "c1",
                    "company.created",
                    &gomark_proto::events::v1::CompanyCreated::default(),
                )
            });
            drop(producer);
            consume_span("hubspot-sync", &event, 1).in_scope(|| {});
        });
        let producer = c.span("producer").expect("producer span");
        let consumer = c.span("process company.created").expect("named by operation and event type");
        assert_eq!(consumer.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_eq!(consumer.span_context.trace_id(), producer.span_context.trace_id());
        assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
        assert_eq!(attribute(&consumer, "messaging.consumer.group.name").as_deref(), Some("hubspot-sync"));
        assert_eq!(attribute(&consumer, "messaging.operation.type").as_deref(), Some("process"));
    }

    #[test]
    fn redelivery_backs_off_and_is_bounded() {
        assert_eq!(redelivery_delay(1), Duration::from_millis(250));
        assert_eq!(redelivery_delay(2), Duration::from_millis(500));
        assert_eq!(redelivery_delay(50), MAX_REDELIVERY_DELAY);
    }

    /// Makes the acker of each delivery.
    type MakeAcker = Arc<dyn Fn() -> Box<dyn crate::bus::Acker> + Send + Sync>;

    /// A bus handing out endless one-event batches, counting how often a batch is asked
    /// for, each delivery settled by an acker of `acker`'s making.
    struct CountingBus {
        asked: Arc<std::sync::atomic::AtomicUsize>,
        acker: MakeAcker,
    }

    impl CountingBus {
        /// Deliveries whose settling does nothing.
        fn new(asked: Arc<std::sync::atomic::AtomicUsize>) -> Self {
            Self { asked, acker: Arc::new(|| Box::new(NoAck)) }
        }
    }

    struct NoAck;

    #[async_trait]
    impl crate::bus::Acker for NoAck {
        async fn ack(self: Box<Self>) -> crate::Result<()> {
            Ok(())
        }

        async fn nak(self: Box<Self>, _delay: Duration) -> crate::Result<()> {
            Ok(())
        }
    }

    struct CountingStream {
        asked: Arc<std::sync::atomic::AtomicUsize>,
        acker: MakeAcker,
    }

    #[async_trait]
    impl crate::EventStream for CountingStream {
        async fn next(&mut self) -> Option<crate::Result<crate::Delivery>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let event = crate::envelope::new_event("c", "test.counted", &prost_types::Timestamp::default());
            Some(Ok(crate::Delivery::new(event, 1, (self.acker)())))
        }

        async fn next_batch(&mut self, _max: usize) -> Option<crate::Result<Vec<crate::Delivery>>> {
            Some(self.next().await?.map(|d| vec![d]))
        }
    }

    #[async_trait]
    impl EventBus for CountingBus {
        async fn publish(&self, _event: &EventEnvelope) -> crate::Result<()> {
            Ok(())
        }

        async fn subscribe(&self, _spec: &ConsumerSpec) -> crate::Result<Box<dyn crate::EventStream>> {
            Ok(Box::new(CountingStream { asked: self.asked.clone(), acker: self.acker.clone() }))
        }
    }

    /// Waits, in its first batch, for the bus to be asked for the next one.
    struct SlowWriter {
        asked: Arc<std::sync::atomic::AtomicUsize>,
        fetched_while_writing: tokio::sync::Mutex<Option<bool>>,
    }

    #[async_trait]
    impl BatchHandler for SlowWriter {
        async fn handle_batch(&self, _events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            let mut seen = self.fetched_while_writing.lock().await;
            if seen.is_none() {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while self.asked.load(std::sync::atomic::Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                *seen = Some(self.asked.load(std::sync::atomic::Ordering::SeqCst) >= 2);
            }
            Ok(AfterBatch::done())
        }
    }

    #[tokio::test]
    async fn the_next_batch_is_fetched_while_one_is_handled() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bus: Arc<dyn EventBus> = Arc::new(CountingBus::new(asked.clone()));
        let writer =
            Arc::new(SlowWriter { asked: asked.clone(), fetched_while_writing: tokio::sync::Mutex::new(None) });
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run_batch_consumer(
            bus,
            ConsumerSpec::new("test.pipelined", "test.counted"),
            writer.clone(),
            BatchLimits { max_events: 10, linger: Duration::from_millis(1), in_flight: 1 },
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while writer.fetched_while_writing.lock().await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the first batch was not handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.trigger();
        task.await.expect("consumer ends");
        assert_eq!(*writer.fetched_while_writing.lock().await, Some(true), "the bus was not read during the write");
    }

    /// Acks only once its gate opens; counts the acks done.
    struct GatedAck {
        gate: Arc<tokio::sync::Semaphore>,
        acked: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl crate::bus::Acker for GatedAck {
        async fn ack(self: Box<Self>) -> crate::Result<()> {
            let _pass = self.gate.acquire().await;
            self.acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }

        async fn nak(self: Box<Self>, _delay: Duration) -> crate::Result<()> {
            Ok(())
        }
    }

    /// Counts the batches it handled, and their events.
    #[derive(Default)]
    struct Tally(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl BatchHandler for Tally {
        async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.1.fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(AfterBatch::done())
        }
    }

    #[tokio::test]
    async fn the_next_batch_is_handled_while_one_is_acked_and_unacked_batches_are_bounded() {
        use std::sync::atomic::Ordering::SeqCst;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acker: MakeAcker = {
            let (gate, acked) = (gate.clone(), acked.clone());
            Arc::new(move || Box::new(GatedAck { gate: gate.clone(), acked: acked.clone() }))
        };
        let bus: Arc<dyn EventBus> = Arc::new(CountingBus { asked: Arc::default(), acker });
        let tally = Arc::new(Tally::default());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run_batch_consumer(
            bus,
            ConsumerSpec::new("test.gated", "test.gated"),
            tally.clone(),
            BatchLimits { max_events: 10, linger: Duration::from_millis(1), in_flight: 1 },
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tally.0.load(SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the second batch waited for the first one's ack");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // With every ack stuck, handling stops after the next one: unacked batches are bounded.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!((tally.0.load(SeqCst), acked.load(SeqCst)), (2, 0), "handled, acked");
        gate.add_permits(1_000_000);
        while acked.load(SeqCst) < 10 {
            assert!(tokio::time::Instant::now() < deadline, "acks did not resume");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.trigger();
        task.await.expect("consumer ends");
        assert_eq!(acked.load(SeqCst), tally.1.load(SeqCst), "every handled event is acked before the end");
    }

    /// Counts how many batches it is handling at once.
    #[derive(Default)]
    struct Overlap {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        handled: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl BatchHandler for Overlap {
        async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.now.fetch_sub(1, SeqCst);
            self.handled.fetch_add(events.len(), SeqCst);
            Ok(AfterBatch::done())
        }
    }

    #[tokio::test]
    async fn batches_in_flight_are_bounded_by_the_limit() {
        for in_flight in [1, 2, 3] {
            // Endless one-event batches, each acked on its own, as on NATS (the in-memory
            // bus hands out one batch at a time by design).
            let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let bus: Arc<dyn EventBus> = Arc::new(CountingBus::new(asked));
            let handler = Arc::new(Overlap::default());
            let shutdown = Shutdown::new();
            let task = tokio::spawn(run_batch_consumer(
                bus,
                ConsumerSpec::new("test.overlap", "test.counted"),
                handler.clone(),
                BatchLimits { max_events: 5, linger: Duration::from_millis(1), in_flight },
                shutdown.clone(),
            ));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while handler.handled.load(std::sync::atomic::Ordering::SeqCst) < 12 {
                assert!(tokio::time::Instant::now() < deadline, "{in_flight}: too few batches handled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shutdown.trigger();
            task.await.expect("consumer ends");
            assert_eq!(handler.now.load(std::sync::atomic::Ordering::SeqCst), 0, "{in_flight}: shutdown waits for all");
            assert_eq!(handler.most.load(std::sync::atomic::Ordering::SeqCst), in_flight, "batches at once");
        }
    }

    /// Makes the acker of each delivery, knowing its event.
    type MakeEventAcker = Arc<dyn Fn(&EventEnvelope) -> Box<dyn crate::bus::Acker> + Send + Sync>;

    /// A bus whose one consumer gets the events the test sends, when it sends them, each
    /// settled by an acker of `acker`'s making.
    struct FedBus {
        events: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<EventEnvelope>>>,
        fetched: Arc<std::sync::atomic::AtomicUsize>,
        acker: MakeEventAcker,
    }

    impl FedBus {
        fn new(events: tokio::sync::mpsc::UnboundedReceiver<EventEnvelope>, acker: MakeEventAcker) -> Self {
            Self { events: std::sync::Mutex::new(Some(events)), fetched: Arc::default(), acker }
        }
    }

    struct FedStream {
        events: tokio::sync::mpsc::UnboundedReceiver<EventEnvelope>,
        fetched: Arc<std::sync::atomic::AtomicUsize>,
        acker: MakeEventAcker,
    }

    #[async_trait]
    impl crate::EventStream for FedStream {
        async fn next(&mut self) -> Option<crate::Result<crate::Delivery>> {
            let event = self.events.recv().await?;
            self.fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acker = (self.acker)(&event);
            Some(Ok(crate::Delivery::new(event, 1, acker)))
        }
    }

    #[async_trait]
    impl EventBus for FedBus {
        async fn publish(&self, _event: &EventEnvelope) -> crate::Result<()> {
            Ok(())
        }

        async fn subscribe(&self, _spec: &ConsumerSpec) -> crate::Result<Box<dyn crate::EventStream>> {
            let events = self.events.lock().expect("lock").take().expect("one subscription");
            Ok(Box::new(FedStream { events, fetched: self.fetched.clone(), acker: self.acker.clone() }))
        }
    }

    /// Records batch sizes; the first batch waits for the gate.
    struct GatedFirst {
        sizes: std::sync::Mutex<Vec<usize>>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl BatchHandler for GatedFirst {
        async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            let first = {
                let mut sizes = self.sizes.lock().expect("lock");
                sizes.push(events.len());
                sizes.len() == 1
            };
            if first {
                let _pass = self.gate.acquire().await;
            }
            Ok(AfterBatch::done())
        }
    }

    /// A consumer of a [`FedBus`] with a [`GatedFirst`] handler, and the test's ends of it.
    struct Fed {
        send: tokio::sync::mpsc::UnboundedSender<EventEnvelope>,
        fetched: Arc<std::sync::atomic::AtomicUsize>,
        handler: Arc<GatedFirst>,
        shutdown: Shutdown,
        task: tokio::task::JoinHandle<()>,
        /// The end of the test's patience, for every wait in it.
        deadline: tokio::time::Instant,
    }

    impl Fed {
        fn start(limits: BatchLimits) -> Self {
            let (send, events) = tokio::sync::mpsc::unbounded_channel();
            let bus = FedBus::new(events, Arc::new(|_| Box::new(NoAck)));
            let fetched = bus.fetched.clone();
            let bus: Arc<dyn EventBus> = Arc::new(bus);
            let handler =
                Arc::new(GatedFirst { sizes: std::sync::Mutex::default(), gate: tokio::sync::Semaphore::new(0) });
            let shutdown = Shutdown::new();
            let task = tokio::spawn(run_batch_consumer(
                bus,
                ConsumerSpec::new("test.fed", "test.fed"),
                handler.clone(),
                limits,
                shutdown.clone(),
            ));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            Self { send, fetched, handler, shutdown, task, deadline }
        }

        /// Waits until `done`; fails naming `what` (and the batch sizes so far) at the deadline.
        async fn until(&self, what: &str, done: impl Fn() -> bool) {
            while !done() {
                assert!(tokio::time::Instant::now() < self.deadline, "{what}: {:?}", self.sizes());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }

        fn send(&self) {
            let event = crate::envelope::new_event("c", "test.fed", &prost_types::Timestamp::default());
            self.send.send(event).expect("send");
        }

        fn sizes(&self) -> Vec<usize> {
            self.handler.sizes.lock().expect("lock").clone()
        }

        /// Stops the consumer; the batch sizes it handled.
        async fn stop(mut self) -> Vec<usize> {
            self.shutdown.trigger();
            (&mut self.task).await.expect("consumer ends");
            self.sizes()
        }
    }

    #[tokio::test]
    async fn a_lone_event_goes_alone_and_events_arriving_meanwhile_make_the_next_batches() {
        use std::sync::atomic::Ordering::SeqCst;
        let fed = Fed::start(BatchLimits { max_events: 5, linger: Duration::from_millis(20), in_flight: 1 });
        fed.send();
        // Alone: the batch does not wait for more (max is 5).
        fed.until("a lone event was not handled", || !fed.sizes().is_empty()).await;
        // While it is handled, five more arrive one by one, each fetched before the next.
        for n in 2..=6 {
            fed.send();
            let what = format!("event {n} was not fetched while a batch was handled");
            fed.until(&what, || fed.fetched.load(SeqCst) >= n).await;
        }
        // With a full batch waiting, the bus keeps the next ones.
        fed.send();
        fed.send();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fed.fetched.load(SeqCst), 6, "fetched beyond a full batch");
        fed.handler.gate.add_permits(1);
        fed.until("the waiting events were not handled", || fed.sizes().iter().sum::<usize>() >= 8).await;
        let handled = fed.stop().await;
        // Those that waited go together, within the limit: not one batch each.
        assert_eq!(handled, vec![1, 5, 2]);
    }

    #[tokio::test]
    async fn while_the_bus_is_busy_a_batch_waits_to_fill() {
        use std::sync::atomic::Ordering::SeqCst;
        // A linger no run reaches: a busy batch here goes only once full.
        let fed = Fed::start(BatchLimits { max_events: BUSY_BATCH, linger: Duration::from_secs(600), in_flight: 1 });
        fed.send();
        fed.until("a lone event", || !fed.sizes().is_empty()).await;
        // A full batch arrives while the first is handled: busy from then on.
        for _ in 0..BUSY_BATCH {
            fed.send();
        }
        fed.until("a full batch fetched", || fed.fetched.load(SeqCst) == 1 + BUSY_BATCH).await;
        fed.handler.gate.add_permits(1);
        fed.until("the full batch", || fed.sizes().len() == 2).await;
        // Now one event waits for company instead of going alone.
        fed.send();
        fed.until("one more fetched", || fed.fetched.load(SeqCst) == 2 + BUSY_BATCH).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fed.sizes().len(), 2, "a batch went before it filled while the bus was busy");
        for _ in 1..BUSY_BATCH {
            fed.send();
        }
        fed.until("the filled batch", || fed.sizes().len() == 3).await;
        let handled = fed.stop().await;
        assert_eq!(handled, vec![1, BUSY_BATCH, BUSY_BATCH]);
    }

    /// Records the ids of the events it acks, in order.
    struct RecordedAck(String, Arc<std::sync::Mutex<Vec<String>>>);

    #[async_trait]
    impl crate::bus::Acker for RecordedAck {
        async fn ack(self: Box<Self>) -> crate::Result<()> {
            self.1.lock().expect("lock").push(self.0);
            Ok(())
        }

        async fn nak(self: Box<Self>, _delay: Duration) -> crate::Result<()> {
            Ok(())
        }
    }

    /// The first batch's follow-up waits for the gate; every batch's events are recorded.
    struct SlowFollowUp {
        handled: std::sync::Mutex<Vec<String>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl BatchHandler for SlowFollowUp {
        async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            let first = {
                let mut handled = self.handled.lock().expect("lock");
                let first = handled.is_empty();
                handled.extend(events.iter().map(|e| e.id.clone()));
                first
            };
            if !first {
                return Ok(AfterBatch::done());
            }
            let gate = self.gate.clone();
            Ok(AfterBatch::then(async move {
                let _pass = gate.acquire().await;
            }))
        }
    }

    #[tokio::test]
    async fn a_batch_is_acked_after_its_follow_up_which_does_not_hold_back_the_next_batch() {
        let (send, events) = tokio::sync::mpsc::unbounded_channel();
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let acker: MakeEventAcker = {
            let acked = acked.clone();
            Arc::new(move |event| Box::new(RecordedAck(event.id.clone(), acked.clone())))
        };
        let bus: Arc<dyn EventBus> = Arc::new(FedBus::new(events, acker));
        let handler = Arc::new(SlowFollowUp {
            handled: std::sync::Mutex::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        });
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run_batch_consumer(
            bus,
            ConsumerSpec::new("test.after", "test.after"),
            handler.clone(),
            BatchLimits { max_events: 10, linger: Duration::ZERO, in_flight: 1 },
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let until = |what: &'static str, done: &dyn Fn() -> bool| {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            done()
        };
        let first = crate::envelope::new_event("c", "test.after", &prost_types::Timestamp::default());
        let second = crate::envelope::new_event("c", "test.after", &prost_types::Timestamp::default());
        send.send(first.clone()).expect("send");
        while !until("the first batch was not handled", &|| handler.handled.lock().expect("lock").len() == 1) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Its follow-up waits; the next batch is handled (and acked) meanwhile.
        send.send(second.clone()).expect("send");
        while !until("the second batch waited for the first one's follow-up", &|| {
            acked.lock().expect("lock").len() == 1
        }) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*acked.lock().expect("lock"), vec![second.id.clone()], "acked before its follow-up ran");
        handler.gate.add_permits(1);
        while !until("the first batch was not acked after its follow-up", &|| acked.lock().expect("lock").len() == 2) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(*acked.lock().expect("lock"), vec![second.id, first.id]);
        shutdown.trigger();
        task.await.expect("consumer ends");
    }

    struct Recorder {
        sizes: std::sync::Mutex<Vec<usize>>,
        fail_first: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl BatchHandler for Recorder {
        async fn handle_batch(&self, events: &[EventEnvelope]) -> Result<AfterBatch, HandlerError> {
            if self.fail_first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(HandlerError::Retry("first batch fails".into()));
            }
            self.sizes.lock().expect("lock").push(events.len());
            Ok(AfterBatch::done())
        }
    }

    #[tokio::test]
    async fn batches_are_bounded_and_a_failed_batch_comes_back_whole() {
        let bus: Arc<dyn EventBus> = Arc::new(crate::memory::MemoryBus::new());
        for i in 0..25 {
            let payload = prost_types::Timestamp { seconds: i, nanos: 0 };
            bus.publish(&crate::envelope::new_event("c", "test.batched", &payload)).await.expect("publish");
        }
        let recorder = Arc::new(Recorder {
            sizes: std::sync::Mutex::new(Vec::new()),
            fail_first: std::sync::atomic::AtomicBool::new(true),
        });
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run_batch_consumer(
            bus,
            ConsumerSpec::new("test.batch", "test.batched"),
            recorder.clone(),
            BatchLimits { max_events: 10, linger: Duration::from_millis(1), in_flight: 1 },
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while recorder.sizes.lock().expect("lock").iter().sum::<usize>() < 25 {
            assert!(tokio::time::Instant::now() < deadline, "events not all handled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.trigger();
        task.await.expect("consumer ends");
        let sizes = recorder.sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25, "each event handled once after the retry: {sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
        assert!(sizes.len() <= 5, "events travel in batches, not one by one: {sizes:?}");
    }
}

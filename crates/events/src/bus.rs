//! The event bus contract both implementations honour.
//!
//! Semantics (JetStream's): events are retained; a durable consumer, identified by name,
//! receives every event of its type published since it was first created, resumes where
//! it left off after a restart, and gets an event again until it acknowledges it (up to
//! [`MAX_DELIVER`] attempts).

use crate::{EventEnvelope, Result};
use async_trait::async_trait;
use gomark_platform::settings::{SettingsError, Validate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// After this many deliveries without an ack, an event is given up on (and logged).
pub const MAX_DELIVER: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process: one `gomark` process, nothing to install.
    #[default]
    Memory,
    /// NATS JetStream: shared by every replica of every service.
    Nats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BusSettings {
    pub kind: BusKind,
    pub nats_url: String,
    /// JetStream stream holding every GoMark event.
    pub stream: String,
    /// First token of every subject; tests use a unique one to stay isolated.
    pub subject_prefix: String,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            kind: BusKind::Memory,
            nats_url: "nats://127.0.0.1:4222".into(),
            stream: "GOMARK_EVENTS".into(),
            subject_prefix: "gomark".into(),
        }
    }
}

impl Validate for BusSettings {
    fn validate(&self) -> std::result::Result<(), SettingsError> {
        if !token_ok(&self.stream) {
            return Err(SettingsError::invalid("bus.stream", "must be letters, digits, '-' or '_'"));
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err(SettingsError::invalid(
                "bus.subject_prefix",
                "must be dot-separated tokens of letters, digits, '-' or '_'",
            ));
        }
        if self.kind == BusKind::Nats && !self.nats_url.starts_with("nats://") {
            return Err(SettingsError::invalid("bus.nats_url", "must start with nats://"));
        }
        Ok(())
    }
}

/// Who consumes what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name, unique per consumer role (`hubspot-sync.deal-property-changes`).
    pub durable: String,
    /// The one event type it receives.
    pub event_type: String,
}

impl ConsumerSpec {
    pub fn new(durable: impl Into<String>, event_type: impl Into<String>) -> Self {
        Self { durable: durable.into(), event_type: event_type.into() }
    }
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send {
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Asks for the event again after `delay`.
    async fn nak(self: Box<Self>, delay: Duration) -> Result<()>;
}

/// One event handed to a consumer; settle it with [`Delivery::ack`] or [`Delivery::nak`].
pub struct Delivery {
    pub event: EventEnvelope,
    /// 1 on first delivery.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(event: EventEnvelope, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Self { event, attempt, acker }
    }

    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    pub async fn nak(self, delay: Duration) -> Result<()> {
        self.acker.nak(delay).await
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("event_id", &self.event.id).field("attempt", &self.attempt).finish()
    }
}

/// Deliveries for one durable consumer.
#[async_trait]
pub trait EventStream: Send {
    /// The next delivery; `None` once the bus is closed.
    async fn next(&mut self) -> Option<Result<Delivery>>;

    /// Whether more deliveries can arrive while earlier ones are unsettled, so that a batch
    /// gains by waiting to fill (see [`crate::consumer::BatchLimits::linger`]).
    fn fills_while_unsettled(&self) -> bool {
        true
    }

    /// Up to `max` deliveries: waits for the first, then takes those already there. `None`
    /// once the bus is closed; an error ends the batch early only when nothing was gathered
    /// yet (what was gathered is returned first).
    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>>> {
        let first = match self.next().await? {
            Ok(d) => d,
            Err(err) => return Some(Err(err)),
        };
        let mut batch = vec![first];
        while batch.len() < max {
            // A delivery not ready yet is left for the next call.
            match futures::FutureExt::now_or_never(self.next()) {
                Some(Some(Ok(d))) => batch.push(d),
                Some(Some(Err(_)) | None) | None => break,
            }
        }
        Some(Ok(batch))
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes durably: when this returns Ok, the event will reach every consumer.
    /// Publishing an event id twice delivers it once (within the dedupe window).
    async fn publish(&self, event: &EventEnvelope) -> Result<()>;

    /// Publishes `events` in order, as durably as [`EventBus::publish`]; buses that can
    /// pipeline (NATS) wait for all acks at once instead of one round trip per event.
    async fn publish_all(&self, events: &[EventEnvelope]) -> Result<()> {
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn EventStream>>;

    /// Ok while the bus can take and deliver events (readiness probes ask).
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Hands `payload` to whoever listens on `topic` now, on every replica, itself included:
    /// not stored, not redelivered, not deduplicated. For hints whose loss costs only
    /// latency, never for facts (those are events). A bus that cannot fan out drops it.
    async fn announce(&self, topic: &str, payload: bytes::Bytes) -> Result<()> {
        let _ = (topic, payload);
        Ok(())
    }

    /// What is announced on `topic` from now on. It ends when the bus closes; a listener
    /// that falls behind skips what it missed (announcements are hints). A bus that cannot
    /// fan out hears nothing.
    async fn listen(&self, topic: &str) -> Result<Announcements> {
        let _ = topic;
        Ok(Box::pin(futures::stream::pending()))
    }
}

/// Announcements on one topic, as they arrive (see [`EventBus::listen`]).
pub type Announcements = std::pin::Pin<Box<dyn futures::Stream<Item = bytes::Bytes> + Send>>;

/// Whether `s` is one subject token: letters, digits, `-` or `_`.
fn token_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `topic` when it can name announcements (dot-separated tokens, as a subject prefix).
pub fn checked_topic(topic: &str) -> Result<&str> {
    if topic.split('.').all(token_ok) { Ok(topic) } else { Err(crate::EventError::Topic(topic.to_owned())) }
}

/// Connects the bus `settings` describe.
pub async fn connect(settings: &BusSettings) -> Result<std::sync::Arc<dyn EventBus>> {
    Ok(match settings.kind {
        BusKind::Memory => std::sync::Arc::new(crate::memory::MemoryBus::new()),
        BusKind::Nats => std::sync::Arc::new(crate::nats::NatsBus::connect(settings).await?),
    })
}

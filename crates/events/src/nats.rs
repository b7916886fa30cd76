//! The distributed bus: NATS JetStream, one durable stream for all GoMark events, a durable
//! pull consumer per consumer role, explicit acks, and `Nats-Msg-Id` dedupe on publish.

use crate::bus::{
    Acker, Announcements, BusSettings, ConsumerSpec, Delivery, EventBus, EventStream, MAX_DELIVER, checked_topic,
};
use crate::envelope::subject;
use crate::{EventEnvelope, EventError, Result};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use futures::StreamExt;
use prost::Message;
use std::time::Duration;

/// Events are kept a week: long enough for a consumer outage, short enough to bound disk.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Republishing the same event id within this window is a no-op.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// An unacked delivery is handed out again after this long.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// No server-side cap on a consumer's unacked deliveries (`max_ack_pending`): each replica
/// bounds its own (the pull stream asks for at most 300 ahead, a consumer holds a bounded
/// number of batches), and at the server's default cap of 1,000, which every replica of a
/// batch consumer shares, NATS 2.9 stopped feeding the pull stream. It then sat idle until
/// its heartbeat check gave up after 30 s, and the deliveries it had been sent waited out
/// the ack wait before coming back, so the stall repeated (BENCHMARKS.md, backlog ingest).
const UNLIMITED_ACK_PENDING: i64 = -1;

pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

fn unavailable(err: impl std::fmt::Display) -> EventError {
    EventError::Unavailable(err.to_string())
}

impl NatsBus {
    /// Connects and makes sure the stream exists (creating it on first start).
    pub async fn connect(settings: &BusSettings) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(settings.nats_url.as_str())
            .await
            .map_err(unavailable)?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: settings.stream.clone(),
                subjects: vec![format!("{}.>", settings.subject_prefix)],
                max_age: RETENTION,
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Self { client, js, stream, prefix: settings.subject_prefix.clone() })
    }

    /// The core NATS subject of announcements on `topic`: outside the stream's subjects
    /// (`{prefix}.>`), so they are never stored.
    fn announcement_subject(&self, topic: &str) -> Result<String> {
        Ok(format!("_announce.{}.{}", self.prefix, checked_topic(topic)?))
    }

    /// Deletes the stream; for tests cleaning up after themselves.
    pub async fn delete_stream(&self) -> Result<()> {
        let name = self.stream.cached_info().config.name.clone();
        self.js.delete_stream(name).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: &EventEnvelope) -> Result<()> {
        self.publish_all(std::slice::from_ref(event)).await
    }

    async fn publish_all(&self, events: &[EventEnvelope]) -> Result<()> {
        // Sends go out in order on one connection; the acks are awaited together. Waiting
        // for the stream's ack is what makes "published" mean "stored".
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.id.as_str());
            let ack = self
                .js
                .publish_with_headers(subject(&self.prefix, event), headers, event.encode_to_vec().into())
                .await
                .map_err(unavailable)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn EventStream>> {
        // Consumer names may not contain dots.
        let durable = spec.durable.replace('.', "_");
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: format!("{}.{}.>", self.prefix, spec.event_type),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: i64::from(MAX_DELIVER),
            max_ack_pending: UNLIMITED_ACK_PENDING,
            ..Default::default()
        };
        // Created, or brought to this config (one made by an earlier version keeps its
        // position and unacked deliveries, and loses the server's cap).
        let consumer: consumer::PullConsumer = self.stream.create_consumer(config).await.map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(Box::new(NatsStream { messages, durable: spec.durable.clone() }))
    }

    async fn announce(&self, topic: &str, payload: bytes::Bytes) -> Result<()> {
        // Core NATS: sent to whoever subscribes now, no ack to wait for.
        self.client.publish(self.announcement_subject(topic)?, payload).await.map_err(unavailable)
    }

    async fn listen(&self, topic: &str) -> Result<Announcements> {
        // The client subscribes again by itself after a reconnect; what was announced
        // while it was away is missed, as a hint may be.
        let subscriber = self.client.subscribe(self.announcement_subject(topic)?).await.map_err(unavailable)?;
        Ok(Box::pin(subscriber.map(|m| m.payload)))
    }

    async fn ping(&self) -> Result<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(EventError::Unavailable(format!("NATS connection {state}"))),
        }
    }
}

struct NatsStream {
    messages: consumer::pull::Stream,
    /// The consumer's name, labelling its backlog gauge.
    durable: String,
}

#[async_trait]
impl EventStream for NatsStream {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(unavailable(e))),
            };
            let attempt = match message.info() {
                Ok(info) => {
                    // The server counts what is still waiting for this consumer: its lag.
                    metrics::gauge!("events_consumer_pending", "consumer" => self.durable.clone())
                        .set(info.pending as f64);
                    info.delivered.max(1) as u32
                }
                Err(_) => 1,
            };
            match EventEnvelope::decode(message.payload.clone()) {
                Ok(event) => {
                    return Some(Ok(Delivery::new(event, attempt, Box::new(NatsAcker(message)))));
                }
                Err(err) => {
                    // A message that is not an envelope can never be handled; drop it loudly.
                    let span = gomark_platform::telemetry::root_span("event consumer");
                    span.in_scope(
                        || tracing::error!(error = %err, subject = %message.subject, "undecodable event dropped"),
                    );
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        span.in_scope(|| tracing::warn!(error = %e, "could not terminate undecodable event"));
                    }
                }
            }
        }
    }
}

struct NatsAcker(jetstream::Message);

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.0.ack().await.map_err(unavailable)
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<()> {
        self.0.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)
    }
}

//! GoMark's events: the envelope, a bus with a NATS JetStream and an in-process
//! implementation, the transactional outbox that feeds it, and idempotent consumers.
//!
//! The rule every producer follows: write the state change and its event in ONE database
//! transaction ([`outbox::enqueue`]); the [`relay::OutboxRelay`] publishes afterwards. Every
//! consumer records the event ids it processed in the same transaction as its own change
//! ([`inbox::claim`]), so redelivery changes nothing.

pub mod bus;
pub mod consumer;
pub mod envelope;
pub mod inbox;
pub mod journal;
pub mod memory;
pub mod nats;
pub mod outbox;
pub mod relay;

pub use bus::{Announcements, BusSettings, ConsumerSpec, Delivery, EventBus, EventStream};
pub use envelope::{EventEnvelope, event_types};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("not an announcement topic: {0:?}")]
    Topic(String),
    #[error("event could not be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(transparent)]
    Storage(#[from] gomark_storage::StorageError),
}

impl From<gomark_storage::sqlx::Error> for EventError {
    fn from(err: gomark_storage::sqlx::Error) -> Self {
        EventError::Storage(err.into())
    }
}

pub type Result<T> = std::result::Result<T, EventError>;

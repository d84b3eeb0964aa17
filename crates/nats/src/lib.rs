//! [`MessageSource`](orders_domain::MessageSource) over NATS JetStream: a
//! stream that captures the orders subject and a durable pull consumer with
//! explicit acks, shared by every replica.

/// The broker, as the messaging conventions name it in spans
/// (`messaging.system`).
pub const MESSAGING_SYSTEM: &str = "nats";

mod messages;
mod setup;
mod source;
mod undeliverable;

pub use messages::JetStreamMessages;
pub use setup::{
    DEFAULT_MAX_AGE, JetStreamSettings, NatsError, StreamSettings, age_warning, check_urls,
    connect, connect_in_background, covers, ensure_consumer, ensure_stream,
};
pub use source::{JetStreamAcker, JetStreamSource};
pub use undeliverable::{UndeliverableSource, advisory_stream, advisory_subject};

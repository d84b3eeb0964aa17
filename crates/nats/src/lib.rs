//! [`MessageSource`](orders_domain::MessageSource) over NATS JetStream: a
//! stream that captures the orders subject and a durable pull consumer with
//! explicit acks, shared by every replica.

mod setup;
mod source;

pub use setup::{
    JetStreamSettings, NatsError, StreamSettings, check_urls, connect, connect_in_background,
    ensure_consumer, ensure_stream,
};
pub use source::{JetStreamAcker, JetStreamSource};

//! The messages the broker gave up on: after `max_deliver` deliveries that
//! no replica settled, JetStream publishes a `MAX_DELIVERIES` advisory and
//! stops delivering the message. A stream of our own captures those
//! advisories, so none is lost while no replica runs, and a durable
//! consumer on it hands each one over as the message it is about: read back
//! from the orders stream by its sequence, through the JetStream API (its
//! headers and payload as raw bytes, not parsed by the client, since a
//! header block the client cannot parse is one way a message goes
//! unsettled).

use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use orders_domain::{Message, MessageMeta, MessageSource, SourceError};
use serde::Deserialize;

use crate::messages::{Held, get};
use crate::setup::{JetStreamSettings, NatsError, StreamSettings, covers};
use crate::source::JetStreamSource;

/// The advisories of `settings`' consumer, as a [`MessageSource`] of the
/// messages they are about. Each message's acker settles its advisory.
pub struct UndeliverableSource {
    advisories: JetStreamSource,
    js: jetstream::Context,
    /// The orders stream the advisories are about.
    stream: String,
}

impl std::fmt::Debug for UndeliverableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UndeliverableSource")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// The subject JetStream publishes `settings`' consumer's max-deliveries
/// advisories on.
pub fn advisory_subject(settings: &JetStreamSettings) -> String {
    format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        settings.stream.name, settings.durable
    )
}

/// The stream that keeps `settings`' consumer's advisories:
/// `<stream>_<durable>_UNDELIVERABLE`, one per durable, since two streams
/// may not capture the same subject and each durable has its own. An
/// earlier version named it `<stream>_UNDELIVERABLE`, for whichever one
/// durable started first: where that stream captures this durable's
/// advisories it is kept (it may hold some not yet recorded), and any
/// other durable gets a stream of its own instead of the "not captured"
/// error it met before.
pub async fn advisory_stream(
    js: &jetstream::Context,
    settings: &JetStreamSettings,
) -> Result<String, NatsError> {
    let subject = advisory_subject(settings);
    let legacy = format!("{}_UNDELIVERABLE", settings.stream.name);
    match js.get_stream(&legacy).await {
        Ok(stream) => {
            let subjects = &stream.cached_info().config.subjects;
            if subjects.iter().any(|s| covers(s, &subject)) {
                return Ok(legacy);
            }
        }
        Err(err)
            if matches!(
                err.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) => {}
        Err(err) => return Err(NatsError::Stream(legacy, err.into())),
    }
    Ok(format!(
        "{}_{}_UNDELIVERABLE",
        settings.stream.name, settings.durable
    ))
}

impl UndeliverableSource {
    /// Ensures the advisory stream ([`advisory_stream`]) and its durable
    /// consumer exist, and starts pulling.
    pub async fn open(
        client: async_nats::Client,
        settings: &JetStreamSettings,
    ) -> Result<Self, NatsError> {
        let js = jetstream::new(client.clone());
        let advisories = JetStreamSettings {
            stream: StreamSettings {
                subject: advisory_subject(settings),
                name: advisory_stream(&js, settings).await?,
                replicas: settings.stream.replicas,
                // Advisories name a stream, a consumer and a sequence, no
                // personal data; one kept until recorded, however long the
                // database is away.
                max_age: None,
            },
            // Recording is idempotent and fails only while the database
            // is down: an advisory is tried until it is recorded.
            max_deliver: -1,
            ..settings.clone()
        };
        Ok(Self {
            js,
            stream: settings.stream.name.clone(),
            advisories: JetStreamSource::open(client, advisories).await?,
        })
    }

    /// The message an advisory is about, with the advisory's acker.
    async fn about(&self, advisory: Message) -> Message {
        let Ok(event) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
            // Not the advisory we know: keep it as it came, to be recorded.
            tracing::error!(payload = ?advisory.payload, "an advisory that does not read as MAX_DELIVERIES");
            return advisory;
        };
        let (subject, headers, payload) = match get(&self.js, &self.stream, event.stream_seq).await
        {
            Ok(Some(Held {
                subject,
                headers,
                payload,
            })) => (subject, headers, payload),
            Ok(None) => (String::new(), None, Bytes::new()),
            Err(err) => {
                tracing::warn!(error = %err, seq = event.stream_seq, "reading an undeliverable message back");
                (String::new(), None, Bytes::new())
            }
        };
        Message {
            payload,
            meta: MessageMeta {
                subject,
                stream: self.stream.clone(),
                stream_sequence: event.stream_seq,
                delivered: event.deliveries,
                headers,
                // The advisory's own time is not the message's: no lag.
                published: None,
            },
            acker: advisory.acker,
        }
    }
}

/// `io.nats.jetstream.advisory.v1.max_deliver`, the fields we use.
#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

#[async_trait]
impl MessageSource for UndeliverableSource {
    async fn next_batch(
        &mut self,
        max: usize,
        linger: std::time::Duration,
    ) -> Result<Vec<Message>, SourceError> {
        let advisories = self.advisories.next_batch(max, linger).await?;
        let mut messages = Vec::with_capacity(advisories.len());
        for advisory in advisories {
            messages.push(self.about(advisory).await);
        }
        Ok(messages)
    }
}

//! One message of a stream at a time, by its sequence, through the
//! JetStream API (`STREAM.MSG.GET`, `STREAM.MSG.DELETE`): reading back a
//! message the broker gave up on, and deleting what an erasure finds.

use async_nats::jetstream;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use orders_domain::{StreamError, StreamMessages};
use serde::Deserialize;

/// JetStream's error codes for "there is nothing there": no such stream,
/// no message at that sequence.
const STREAM_NOT_FOUND: u64 = 10_059;
const NO_MESSAGE_FOUND: u64 = 10_037;

/// A message as the stream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) subject: String,
    /// The header block as text (the version line, then `Name: value`
    /// lines), if it has one.
    pub(crate) headers: Option<String>,
    pub(crate) payload: Bytes,
}

/// The JetStream API's answer to `STREAM.MSG.GET`.
#[derive(Deserialize)]
struct GetAnswer {
    message: Option<RawMessage>,
}

#[derive(Deserialize)]
struct RawMessage {
    subject: String,
    hdrs: Option<String>,
    data: Option<String>,
}

/// The JetStream API's answer to `STREAM.MSG.DELETE`.
#[derive(Deserialize)]
struct DeleteAnswer {
    #[serde(default)]
    success: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// The message at `sequence` in `stream`, or `None` if the stream no
/// longer holds it (or there is no such stream).
pub(crate) async fn get(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<Option<Held>, async_nats::Error> {
    let subject = format!("$JS.API.STREAM.MSG.GET.{stream}");
    let request = serde_json::json!({ "seq": sequence }).to_string();
    let reply = js.client().request(subject, request.into()).await?;
    let answer: GetAnswer = serde_json::from_slice(&reply.payload)?;
    let Some(raw) = answer.message else {
        return Ok(None);
    };
    let headers = match raw.hdrs {
        Some(encoded) => Some(
            String::from_utf8_lossy(&STANDARD.decode(encoded)?)
                .trim_end()
                .replace("\r\n", "\n"),
        ),
        None => None,
    };
    let payload = Bytes::from(STANDARD.decode(raw.data.unwrap_or_default())?);
    Ok(Some(Held {
        subject: raw.subject,
        headers,
        payload,
    }))
}

/// Deletes the message at `sequence` from `stream`, overwriting its bytes
/// on the server's disk (the API's default: without `no_erase`); whether
/// the stream held it.
pub(crate) async fn delete(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<bool, async_nats::Error> {
    let subject = format!("$JS.API.STREAM.MSG.DELETE.{stream}");
    let request = serde_json::json!({ "seq": sequence }).to_string();
    let reply = js.client().request(subject, request.into()).await?;
    let answer: DeleteAnswer = serde_json::from_slice(&reply.payload)?;
    match answer.error {
        None => Ok(answer.success),
        Some(e)
            if e.err_code == STREAM_NOT_FOUND
                || e.err_code == NO_MESSAGE_FOUND
                // nats-server wraps the store's "no message found" in its
                // generic delete failure (10057).
                || e.description.contains("no message found") =>
        {
            Ok(false)
        }
        Some(e) => Err(format!(
            "deleting message {sequence} of stream {stream}: {} ({})",
            e.description, e.err_code
        )
        .into()),
    }
}

/// [`StreamMessages`] over a JetStream connection.
#[derive(Debug, Clone)]
pub struct JetStreamMessages {
    js: jetstream::Context,
}

impl JetStreamMessages {
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(client),
        }
    }
}

#[async_trait]
impl StreamMessages for JetStreamMessages {
    async fn payload(&self, stream: &str, sequence: u64) -> Result<Option<Bytes>, StreamError> {
        let held = get(&self.js, stream, sequence).await.map_err(StreamError)?;
        Ok(held.map(|h| h.payload))
    }

    async fn delete(&self, stream: &str, sequence: u64) -> Result<bool, StreamError> {
        delete(&self.js, stream, sequence)
            .await
            .map_err(StreamError)
    }
}

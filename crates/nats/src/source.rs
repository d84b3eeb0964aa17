//! The durable pull consumer, pulled by hand over core NATS.
//!
//! async-nats's own pull stream (`consumer.stream().messages()`) decides
//! whether a message is the server's status or a stream message by its
//! header's status line alone. A publisher can put any status line in a
//! message's headers, and JetStream stores and delivers it as is: a forged
//! `NATS/1.0 408` made the library drop the message silently (forever
//! redelivered), a forged `500` ended the pull in an error, and the
//! buffered messages with it. Here a message is JetStream's delivery when
//! it comes with a `$JS.ACK.` reply subject, whatever its headers say; only
//! a message without one is the server's own status. (The upstream report
//! is in docs/reliability.md.)

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_nats::{StatusCode, Subscriber};
use async_trait::async_trait;
use futures::StreamExt;
use orders_domain::{AckError, Acker, Message, MessageMeta, MessageSource, SourceError};
use tokio::time::Instant;

use crate::setup::{JetStreamSettings, NatsError, age_warning, ensure_consumer, ensure_stream};

/// The most messages one pull asks for (and so the largest batch).
///
/// A pull asks only for what the batch being filled still lacks, not for
/// more ahead: a message delivered to us starts its ack wait at once, and
/// one waiting in our inbox while earlier batches commit could expire on a
/// busy machine and be redelivered, its next wait doubled by the backoff
/// (a chain of such expiries left orders waiting minutes with a 2 s ack
/// wait). Asking per batch costs one small request per batch and no
/// throughput: the server delivers a backlog at once.
const PULL_BATCH: usize = 1_000;

/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// The server sends a heartbeat this often while a pull waits with nothing to
/// deliver. Without heartbeats a pull whose consumer vanished (deleted, or
/// lost in a broker restart) would wait silently forever; with them, two
/// missed beats mean the pull is gone and it is sent again. On a cluster, a
/// pull sent while the consumer's leader is being elected can be lost: with
/// beats every second, a replica starts receiving within about two seconds
/// instead of idling while the others work.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// After a reconnect (or a lost pull), this many messages are pulled one at
/// a time. A message whose headers the client library cannot parse closes
/// the connection, and with it every message delivered behind it in the
/// same burst; those come back together and would go down together again
/// until all of them were given up. One at a time, such a message goes down
/// alone.
const CAREFUL_MESSAGES: u32 = 50;

/// After this many faults in a row (missed heartbeats, a consumer the
/// server says is gone), the stream and the consumer are looked up (or
/// created) again: after a broker restart with a new store, the old
/// consumer is gone.
const FAULTS_BEFORE_REOPEN: u32 = 2;

/// A durable pull consumer on a JetStream stream.
pub struct JetStreamSource {
    js: jetstream::Context,
    settings: JetStreamSettings,
    /// Where the server delivers what our pulls ask for. Kept across
    /// reopening, so messages already delivered are never dropped; replaced
    /// after a reconnect (see [`Self::notice_reconnect`]).
    inbox: String,
    deliveries: Subscriber,
    /// Messages taken from a replaced inbox, to hand out first.
    backlog: std::collections::VecDeque<async_nats::Message>,
    /// Whether the stream and consumer are known to exist.
    open: bool,
    /// Messages asked for by pulls the server still holds.
    requested: usize,
    /// Messages the batch being filled still lacks: pulls ask for no more.
    wanted: usize,
    /// The last time anything arrived on the inbox.
    last_heard: Instant,
    faults_in_a_row: u32,
    /// The client's connection count when last looked at: a change is a
    /// reconnect.
    connects: u64,
    /// Messages still to be pulled one at a time (see [`CAREFUL_MESSAGES`]).
    careful: u32,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("settings", &self.settings)
            .field("open", &self.open)
            .field("requested", &self.requested)
            .finish()
    }
}

/// What arrived on the inbox.
enum Arrival {
    /// A message of the stream.
    Message(Box<jetstream::Message>),
    /// The server's status about our pulls.
    Status(StatusCode, Option<String>, Option<usize>),
}

impl JetStreamSource {
    /// Ensures the stream and the consumer exist and starts pulling.
    pub async fn open(
        client: async_nats::Client,
        settings: JetStreamSettings,
    ) -> Result<Self, NatsError> {
        let inbox = client.new_inbox();
        let deliveries = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| NatsError::Consumer(settings.durable.clone(), e.into()))?;
        let mut source = Self {
            js: jetstream::new(client),
            settings,
            inbox,
            deliveries,
            backlog: std::collections::VecDeque::new(),
            open: false,
            requested: 0,
            wanted: 1,
            last_heard: Instant::now(),
            faults_in_a_row: 0,
            connects: 0,
            careful: 0,
        };
        source.connects = source.connects_now();
        let stream = source.reopen().await?;
        // Once, at start: a reopen after a broker restart finds the same.
        if let Some(warning) = age_warning(&stream.cached_info().config, &source.settings.stream) {
            tracing::warn!("{warning}");
        }
        Ok(source)
    }

    /// Looks up (or creates) the stream and the consumer, and returns the
    /// stream as found.
    async fn reopen(&mut self) -> Result<jetstream::stream::Stream, NatsError> {
        self.open = false;
        let stream = ensure_stream(&self.js, &self.settings.stream).await?;
        ensure_consumer(&stream, &self.settings).await?;
        self.open = true;
        // Pulls sent before are gone with the old consumer (or will expire).
        self.requested = 0;
        tracing::info!(
            stream = %self.settings.stream.name,
            durable = %self.settings.durable,
            "pulling messages"
        );
        Ok(stream)
    }

    fn connects_now(&self) -> u64 {
        self.js
            .client()
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After a reconnect, the next messages are pulled one at a time, into a
    /// new inbox: the pulls sent before the reconnect still name the old one
    /// (the server keeps them while the client resubscribes it) and would
    /// deliver in bursts again. What the old inbox already holds is kept.
    async fn notice_reconnect(&mut self) -> Result<(), SourceError> {
        let connects = self.connects_now();
        if connects == self.connects {
            return Ok(());
        }
        self.connects = connects;
        let client = self.js.client();
        let inbox = client.new_inbox();
        let fresh = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| SourceError(e.into()))?;
        let mut old = std::mem::replace(&mut self.deliveries, fresh);
        while let Some(Some(message)) = futures::FutureExt::now_or_never(old.next()) {
            self.backlog.push_back(message);
        }
        if let Err(err) = old.unsubscribe().await {
            tracing::debug!(error = %err, "unsubscribing the old inbox");
        }
        self.inbox = inbox;
        self.requested = 0;
        self.careful = CAREFUL_MESSAGES;
        tracing::info!("reconnected to NATS: pulling one message at a time for a while");
        Ok(())
    }

    /// Asks for what the batch being filled lacks beyond what is still
    /// coming (one at a time while careful).
    async fn pull_if_low(&mut self) -> Result<(), SourceError> {
        let wanted = if self.careful > 0 {
            1
        } else {
            self.wanted.clamp(1, PULL_BATCH)
        };
        if self.requested >= wanted {
            return Ok(());
        }
        let batch = wanted - self.requested;
        let request = serde_json::json!({
            "batch": batch,
            "expires": PULL_EXPIRES.as_nanos() as u64,
            "idle_heartbeat": PULL_HEARTBEAT.as_nanos() as u64,
        });
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            self.settings.stream.name, self.settings.durable
        );
        self.js
            .client()
            .publish_with_reply(subject, self.inbox.clone(), request.to_string().into())
            .await
            .map_err(|e| SourceError(e.into()))?;
        if self.requested == 0 {
            // A new pull: its heartbeats start now.
            self.last_heard = Instant::now();
        }
        self.requested += batch;
        Ok(())
    }

    /// Waits for the next message of the stream until `deadline` (`None`:
    /// until two heartbeats are missed), dealing with the server's statuses
    /// on the way. `Ok(None)`: the deadline passed.
    async fn next_message(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<jetstream::Message>, SourceError> {
        loop {
            if !self.open
                && let Err(err) = self.reopen().await
            {
                return Err(self.fault(SourceError(err.into())).await);
            }
            self.notice_reconnect().await?;
            self.pull_if_low().await?;
            let silence = self.last_heard + 2 * PULL_HEARTBEAT;
            let wait_until = deadline.map_or(silence, |d| d.min(silence));
            let arrived = match self.backlog.pop_front() {
                Some(kept) => Ok(Some(kept)),
                None => tokio::time::timeout_at(wait_until, self.deliveries.next()).await,
            };
            let arrival = match arrived {
                Ok(Some(raw)) => {
                    self.last_heard = Instant::now();
                    classify(raw, &self.js)
                }
                Ok(None) => {
                    return Err(SourceError("the NATS connection is closed".into()));
                }
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                Err(_) => {
                    // Two beats missed: the pulls are lost (a leader
                    // election, a restart). Ask again; after repeated
                    // silence, look the consumer up again too.
                    self.requested = 0;
                    self.careful = CAREFUL_MESSAGES;
                    let err = SourceError("no heartbeat from the server: pulling again".into());
                    return Err(self.fault(err).await);
                }
            };
            match arrival {
                Arrival::Message(message) => {
                    self.requested = self.requested.saturating_sub(1);
                    self.careful = self.careful.saturating_sub(1);
                    self.faults_in_a_row = 0;
                    return Ok(Some(*message));
                }
                Arrival::Status(StatusCode::IDLE_HEARTBEAT, ..) => {}
                Arrival::Status(status, description, pending)
                    if status == StatusCode::TIMEOUT
                        || status == StatusCode::NOT_FOUND
                        || (status == StatusCode::REQUEST_TERMINATED
                            && description.as_deref() != Some("Consumer Deleted")) =>
                {
                    // A pull ended (expired, or cut short): what it did not
                    // deliver is not coming.
                    let undelivered = pending.unwrap_or(PULL_BATCH);
                    self.requested = self.requested.saturating_sub(undelivered);
                }
                Arrival::Status(status, description, _) => {
                    // The consumer is gone, or JetStream does not answer.
                    self.requested = 0;
                    self.open = false;
                    let err = SourceError(
                        format!(
                            "the server answered the pull with {status} {}",
                            description.unwrap_or_default()
                        )
                        .into(),
                    );
                    return Err(self.fault(err).await);
                }
            }
        }
    }

    /// Counts a fault, reopens after repeated ones, and pauses (100 ms,
    /// doubling, at most 5 s) so a broker that is down is not hammered.
    async fn fault(&mut self, err: SourceError) -> SourceError {
        self.faults_in_a_row += 1;
        if self.faults_in_a_row >= FAULTS_BEFORE_REOPEN {
            self.open = false;
        }
        let doublings = self.faults_in_a_row.saturating_sub(1).min(6);
        let pause = (Duration::from_millis(100) * 2u32.pow(doublings)).min(Duration::from_secs(5));
        tokio::time::sleep(pause).await;
        err
    }
}

/// A stream message when it has JetStream's ack subject as its reply,
/// whatever status line its headers carry; else the server's status.
fn classify(raw: async_nats::Message, js: &jetstream::Context) -> Arrival {
    let from_stream = raw
        .reply
        .as_ref()
        .is_some_and(|r| r.as_str().starts_with("$JS.ACK."));
    if from_stream {
        return Arrival::Message(Box::new(jetstream::Message {
            message: raw,
            context: js.clone(),
        }));
    }
    let pending = raw
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Pending-Messages"))
        .and_then(|v| v.as_str().parse().ok());
    Arrival::Status(
        raw.status.unwrap_or(StatusCode::OK),
        raw.description,
        pending,
    )
}

#[async_trait]
impl MessageSource for JetStreamSource {
    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Message>, SourceError> {
        let max = max.clamp(1, PULL_BATCH);
        self.wanted = max;
        let first = loop {
            if let Some(message) = self.next_message(None).await? {
                break message;
            }
        };
        let mut batch = Vec::with_capacity(max);
        batch.push(message_of(first));
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            self.wanted = max - batch.len();
            match self.next_message(Some(deadline)).await {
                Ok(Some(message)) => batch.push(message_of(message)),
                Ok(None) => break,
                Err(err) => {
                    // What is in hand goes on; the next call meets the fault again.
                    tracing::debug!(error = %err, "a fault while filling a batch");
                    break;
                }
            }
        }
        Ok(batch)
    }
}

fn message_of(message: jetstream::Message) -> Message {
    let (stream, stream_sequence, delivered, published) = match message.info() {
        Ok(info) => (
            info.stream.to_owned(),
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1),
            Some(std::time::SystemTime::from(info.published)),
        ),
        Err(_) => (String::new(), 0, 1, None),
    };
    let headers = headers_text(&message.message);
    let (message, acker) = message.split();
    Message {
        payload: message.payload,
        meta: MessageMeta {
            subject: message.subject.to_string(),
            stream,
            stream_sequence,
            delivered,
            headers,
            published,
        },
        acker: Box::new(JetStreamAcker(acker)),
    }
}

/// The headers as they arrived: the version line (with a status, if the
/// message carries one), then `Name: value` lines, names sorted.
fn headers_text(message: &async_nats::Message) -> Option<String> {
    let headers = message.headers.as_ref().filter(|h| !h.is_empty());
    if headers.is_none() && message.status.is_none() {
        return None;
    }
    let mut text = String::from("NATS/1.0");
    if let Some(status) = message.status {
        text.push_str(&format!(" {}", status.as_u16()));
        if let Some(description) = &message.description {
            text.push(' ');
            text.push_str(description);
        }
    }
    if let Some(headers) = headers {
        // The usual message has one header (the publisher's Nats-Msg-Id):
        // written straight, without a list to sort.
        let mut iter = headers.iter();
        match (iter.next(), iter.next()) {
            (Some((name, values)), None) if values.len() == 1 => {
                text.push('\n');
                text.push_str(name.as_ref());
                text.push_str(": ");
                text.push_str(values[0].as_str());
            }
            _ => {
                let mut lines: Vec<String> = headers
                    .iter()
                    .flat_map(|(name, values)| values.iter().map(move |v| format!("{name}: {v}")))
                    .collect();
                lines.sort();
                for line in lines {
                    text.push('\n');
                    text.push_str(&line);
                }
            }
        }
    }
    Some(text)
}

/// Settles one JetStream message.
pub struct JetStreamAcker(jetstream::message::Acker);

impl std::fmt::Debug for JetStreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JetStreamAcker")
    }
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), AckError> {
        // Not waiting for the server's confirmation of each ack (a round
        // trip per message) made batched ingest 1.13x faster; a graceful
        // stop flushes the connection, and an ack lost in a crash only
        // means a redelivery, stored as a duplicate.
        self.0.ack().await.map_err(AckError)
    }

    async fn nak(&self, delay: Duration) -> Result<(), AckError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(AckError)
    }

    async fn term(&self) -> Result<(), AckError> {
        self.0
            .double_ack_with(AckKind::Term)
            .await
            .map_err(AckError)
    }

    async fn in_progress(&self) -> Result<(), AckError> {
        // Sent only while a batch takes longer than a third of the ack
        // wait: no round trip to wait for on the usual path.
        self.0.ack_with(AckKind::Progress).await.map_err(AckError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)]) -> async_nats::Message {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, *value);
        }
        async_nats::Message {
            subject: "orders".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: (!headers.is_empty()).then_some(map),
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn headers_are_kept_as_text_one_a_line_names_sorted() {
        assert_eq!(headers_text(&message(&[])), None);
        assert_eq!(
            headers_text(&message(&[("Nats-Msg-Id", "b563")])).as_deref(),
            Some("NATS/1.0\nNats-Msg-Id: b563")
        );
        assert_eq!(
            headers_text(&message(&[("b", "2"), ("a", "1"), ("b", "3")])).as_deref(),
            Some("NATS/1.0\na: 1\nb: 2\nb: 3")
        );
    }
}

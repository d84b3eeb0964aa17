//! The ports: what the core needs from the outside world, as contracts the
//! adapters MUST keep.

use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::listing::{OrderCursor, OrderSummary};
use crate::live::{EventId, Notice, StoredOrder};
use crate::order::Order;
use crate::rejected::{RejectedId, RejectedMessage, RejectedSummary};
use crate::search::OrderQuery;
use crate::uid::OrderUid;
use crate::validation::RejectReason;

type BoxError = Box<dyn StdError + Send + Sync>;

/// An order as the cache keeps it: its uid and its compact JSON, byte for
/// byte [`Order::to_json`] of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderJson {
    pub uid: OrderUid,
    pub json: Bytes,
}

impl OrderJson {
    /// The order's uid and its JSON.
    pub fn of(order: &Order) -> Self {
        Self {
            uid: order.order_uid.clone(),
            json: Bytes::from(order.to_json()),
        }
    }
}

/// An order on its way into storage, made once per message at ingest: the
/// decoded order, its JSON (which becomes the stored document, the cached
/// answer and the source of the live event, so it is serialized once), and
/// where its message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub order: Order,
    /// Byte for byte [`Order::to_json`] of `order`.
    pub json: Bytes,
    /// The message's sequence in the stream, when it came from one: kept
    /// with the order, so erasing the order can delete its message too.
    pub stream_sequence: Option<u64>,
}

impl NewOrder {
    /// `order` with its JSON, from the stream's message `stream_sequence`.
    pub fn new(order: Order, stream_sequence: Option<u64>) -> Self {
        Self::sized(order, stream_sequence, 0)
    }

    /// [`new`](Self::new), for an order read from a message of `size`
    /// bytes (its JSON is about as long).
    pub fn sized(order: Order, stream_sequence: Option<u64>, size: usize) -> Self {
        let json = Bytes::from(order.to_json_sized(size));
        Self {
            order,
            json,
            stream_sequence,
        }
    }
}

/// Orders in chunks, as a repository reads them: the consumer works on one
/// chunk while the next is read. An error ends the stream.
pub type OrderChunks = futures::stream::BoxStream<'static, Result<Vec<OrderJson>, RepositoryError>>;

/// What storing an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The order was new and is now committed.
    Stored,
    /// An equal order with this uid was already stored; nothing changed.
    Duplicate,
    /// A different order with this uid was already stored; it stays.
    Conflict,
    /// The order with this uid was erased on request; nothing changed, and
    /// nothing of this one may be kept.
    Erased,
    /// The database refused this order for good (a constraint the
    /// validation did not foresee); nothing of it was stored. The detail
    /// says why.
    Refused(String),
}

/// Why the repository could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The database cannot be reached or did not answer in time. Transient:
    /// the same call can succeed later.
    #[error("database unavailable")]
    Unavailable(#[source] BoxError),
    /// The database refused this data for good (a data or integrity error).
    /// Retrying the same input cannot succeed.
    #[error("database refused the data: {0}")]
    Refused(String),
}

/// A message that was not an order, kept with its reason and raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The full, human-readable reason (`payment.amount: expected ...`).
    pub detail: String,
    /// The uid, when the message had a readable one.
    pub order_uid: Option<String>,
    pub subject: String,
    /// The stream and the message's sequence in it: recording the same
    /// message twice (a redelivery) keeps one row.
    pub stream: String,
    pub stream_sequence: Option<u64>,
    /// The message's NATS headers as they arrived, one `Name: value` a
    /// line after the version line, if it had any.
    pub headers: Option<String>,
    pub payload: Bytes,
}

/// How a rejected message was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// With its reason, bytes and headers.
    Kept,
    /// As `erased`, without its bytes or headers: it named an order erased
    /// on request (a producer resending a malformed copy, say).
    Erased,
}

/// What ingest writes: a batch's orders, and the messages that were not
/// orders.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// MUST store every order of the batch that is new, each with all its
    /// parts and its JSON as its document, in ONE transaction, and return
    /// one outcome per order, in order. An order whose uid is stored
    /// already MUST change nothing and be [`SaveOutcome::Erased`] if that
    /// order was erased, else [`SaveOutcome::Duplicate`] if its JSON
    /// equals the stored document, [`SaveOutcome::Conflict`] if not; a uid
    /// repeated within the batch is judged against its first occurrence. An order the database refuses MUST be
    /// [`SaveOutcome::Refused`] with nothing of it stored, while the
    /// batch's other orders are stored all the same. MUST return
    /// [`RepositoryError::Unavailable`], with nothing stored, for faults
    /// that may heal.
    async fn save(&self, orders: &[NewOrder]) -> Result<Vec<SaveOutcome>, RepositoryError>;

    /// MUST record the rejected message; recording the same stream and
    /// sequence again MUST keep one row. When the message names an order
    /// that was erased on request, MUST record it as
    /// [`RejectReason::Erased`] without its bytes or headers (keeping them
    /// would store the erased data again) and answer
    /// [`Recorded::Erased`].
    async fn record_rejection(&self, rejection: &Rejection) -> Result<Recorded, RepositoryError>;
}

/// Reading stored orders: lookups that miss the cache, the list and the
/// search, the warm-up, the live list.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OrderReads: Send + Sync {
    /// MUST return the JSON of the stored order with this uid, exactly as
    /// [`Order::to_json`] writes that order, or `None`.
    async fn find_json(&self, uid: &OrderUid) -> Result<Option<Bytes>, RepositoryError>;

    /// MUST yield the newest `limit` orders (by `date_created`, then uid;
    /// all of them if there are fewer), in any order, in chunks as they are
    /// read, each as its JSON exactly as [`Order::to_json`] writes the
    /// stored order (all its items, in their order), all from one
    /// consistent snapshot, reading each table at most once rather than
    /// once per order.
    fn load_recent(&self, limit: usize) -> OrderChunks;

    /// MUST return at most `limit` orders that match `query`, newest
    /// (`date_created`, then uid) first, only those strictly older than
    /// `before` when given. A key MUST match exactly: a track number,
    /// customer id or transaction byte for byte, a phone by its
    /// [`normalize_phone`](crate::normalize_phone) form (the key holds it
    /// so), an email case-insensitively; never a part of a value. `from`
    /// MUST be inclusive and `to` exclusive. Each kind of query MUST be
    /// served by an index, never by reading every order.
    async fn list_recent(
        &self,
        query: &OrderQuery,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<Vec<OrderSummary>, RepositoryError>;

    /// MUST return the stored orders whose event id is greater than `after`
    /// and, when `through` is given, at most `through`, lowest id first, at
    /// most `limit` of them, each with its event id, its summary and its
    /// JSON as [`find_json`](Self::find_json) returns it. Ids are taken
    /// before the commit, so an order with a lower id MAY appear on a later
    /// call than one with a higher id.
    async fn stored_since(
        &self,
        after: EventId,
        through: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, RepositoryError>;

    /// MUST return the uid of every erased order (a few per erasure
    /// request), read by an index of them alone.
    async fn erased_orders(&self) -> Result<Vec<OrderUid>, RepositoryError>;
}

/// The rejected messages, as the support desk reads them.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RejectedReads: Send + Sync {
    /// MUST return at most `limit` rejected messages, newest (highest id)
    /// first, only those of `reason` when given and with an id below
    /// `before` when given.
    async fn list_rejected(
        &self,
        reason: Option<RejectReason>,
        limit: usize,
        before: Option<RejectedId>,
    ) -> Result<Vec<RejectedSummary>, RepositoryError>;

    /// MUST return the rejected message with this id, its bytes exactly as
    /// they arrived, or `None`.
    async fn find_rejected(
        &self,
        id: RejectedId,
    ) -> Result<Option<RejectedMessage>, RepositoryError>;
}

/// Whether the database can take ingest's writes now: what the health
/// watcher asks.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DatabaseProbe: Send + Sync {
    /// MUST succeed only when the database answers a query.
    async fn ping(&self) -> Result<(), RepositoryError>;

    /// MUST return whether a commit [`OrderStore::save`] acknowledges now
    /// is held by more than one server: `true` only while the database
    /// waits for a synchronous standby to confirm each of our commits and
    /// at least one such standby is attached and streaming; `false` while
    /// a commit lives on the primary alone (no standby, or only
    /// asynchronous ones), so that losing the primary may lose it. MUST
    /// return [`RepositoryError::Unavailable`] when the database does not
    /// answer.
    async fn has_sync_standby(&self) -> Result<bool, RepositoryError>;
}

/// Orders held in memory, as the JSON bytes an HTTP answer sends.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait OrderCache: Send + Sync {
    /// The order's JSON, if held. MUST NOT block on writers for long.
    fn get(&self, uid: &OrderUid) -> Option<Bytes>;
    /// Holds the order's JSON. Callers insert only committed orders. A bounded
    /// cache MAY evict others to make room.
    fn insert(&self, uid: OrderUid, json: Bytes);
    /// Drops the order, if held: a later lookup reads it through.
    fn remove(&self, uid: &OrderUid);
    /// How many orders are held.
    fn len(&self) -> usize;
    /// Whether no order is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a message came from, for logs and the rejected-messages table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageMeta {
    pub subject: String,
    /// The stream that holds the message.
    pub stream: String,
    /// The message's sequence in the stream.
    pub stream_sequence: u64,
    /// How many times the broker has delivered it, this time included.
    pub delivered: u64,
    /// Its NATS headers as they arrived (see [`Rejection::headers`]).
    pub headers: Option<String>,
    /// When the broker stored it (its JetStream timestamp): ingest lag is
    /// measured from here to the commit.
    pub published: Option<std::time::SystemTime>,
}

/// A message from the broker, with the handle that settles it.
pub struct Message {
    pub payload: Bytes,
    pub meta: MessageMeta,
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("payload_len", &self.payload.len())
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// The broker failed to take a settlement. The message will be redelivered,
/// which the core handles as a duplicate.
#[derive(Debug, thiserror::Error)]
#[error("broker did not take the acknowledgement")]
pub struct AckError(#[source] pub BoxError);

/// Settles one delivered message.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Acker: Send + Sync {
    /// MUST hand the ack to the broker connection, which is flushed before
    /// the process exits gracefully. It need not wait for the broker's
    /// confirmation: an ack lost in a crash means a redelivery, which
    /// idempotent storage acks as a duplicate.
    async fn ack(&self) -> Result<(), AckError>;
    /// Asks for redelivery after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), AckError>;
    /// Tells the broker never to deliver this message again.
    async fn term(&self) -> Result<(), AckError>;
    /// Tells the broker the message is still being worked on, so its ack
    /// wait starts again: a slow commit MUST NOT turn into a redelivery.
    /// Need not wait for the broker's confirmation.
    async fn in_progress(&self) -> Result<(), AckError>;
    /// MUST delete this message from the stream that holds it, its bytes
    /// overwritten, so that neither a consumer nor a reader of the stream
    /// gets it again; a message the stream no longer holds MUST be `Ok`.
    /// Called after the message is settled (`term`).
    async fn delete_from_stream(&self) -> Result<(), AckError>;
}

/// The broker could not deliver.
#[derive(Debug, thiserror::Error)]
#[error("message source failed")]
pub struct SourceError(#[source] pub BoxError);

/// Where orders come from: a durable subscription with explicit acks.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MessageSource: Send {
    /// Waits for the next message, then takes up to `max` in all, waiting at
    /// most `linger` for more to arrive. MUST NOT return an empty batch
    /// unless the source is closed for good. MUST recover from a lost
    /// connection by itself; an `Err` is a fault worth logging, and the
    /// caller may call again.
    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Message>, SourceError>;
}

/// Announcements of stored orders, from every replica: an inbound port
/// that feeds [`OrderService::follow`](crate::OrderService::follow).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait OrderEvents: Send {
    /// MUST wait for the next announcement and return it: one
    /// [`Notice::Stored`] per committed batch of any replica, this one
    /// included, and only for committed batches. MUST survive a lost
    /// connection by itself: reconnect with backoff, and once listening
    /// again return [`Notice::Reconnected`] (announcements made meanwhile
    /// are lost; the caller reads what it missed). One [`Notice::Erased`]
    /// per committed batch of an erasure, from any process, and only for
    /// committed batches. `None` only when closed for good.
    async fn next(&mut self) -> Option<Notice>;
}

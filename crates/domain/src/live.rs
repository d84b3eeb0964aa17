//! Orders as they are stored, on every replica: the announcements the
//! database makes at each commit ([`OrderEvents`]) put other replicas'
//! orders into this replica's cache and go out to the open event streams
//! as summaries, each with the order's event id so a client can resume.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::listing::OrderSummary;
use crate::order::Order;
use crate::ports::{OrderEvents, RepositoryError};
use crate::service::{OrderService, error_chain};
use crate::uid::OrderUid;

/// An order's place in the sequence of stored orders. The database gives
/// it when the order is inserted, so it is the same on every replica and a
/// client can resume on any of them. Taken before the commit: a higher id
/// can commit before a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(i64);

/// Why a string is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID: expected an event id (a whole number) from this stream")]
pub struct InvalidEventId;

impl EventId {
    /// Before every stored order.
    pub const START: EventId = EventId(0);

    /// The id the database gave (the adapter's side).
    pub fn new(id: i64) -> Self {
        Self(id)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// An id as a client sends it back (`Last-Event-ID`): decimal digits.
    pub fn parse(raw: &str) -> Result<Self, InvalidEventId> {
        if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidEventId);
        }
        raw.parse().map(Self).map_err(|_| InvalidEventId)
    }

    fn before(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A stored order as the live list and the other replicas' caches take
/// it: its event id, its line of the list, and its JSON as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    pub id: EventId,
    pub summary: OrderSummary,
    /// Byte for byte [`Order::to_json`] of the stored order.
    pub json: Bytes,
}

impl StoredOrder {
    /// `order`, stored with event id `id`.
    pub fn of(id: EventId, order: &Order) -> Self {
        Self {
            id,
            summary: OrderSummary::of(order),
            json: Bytes::from(order.to_json()),
        }
    }
}

/// What the database announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A batch of orders was committed, with ids from `first` to `last`
    /// (the range may hold other batches' ids too), by this replica
    /// (`own`) or another.
    Stored {
        first: EventId,
        last: EventId,
        own: bool,
    },
    /// These orders were erased (one batch of `order-service erase`): their
    /// JSON as cached holds the personal data no more stored.
    Erased(Vec<OrderUid>),
    /// The listener lost its connection and listens again: orders
    /// committed or erased meanwhile were not announced.
    Reconnected,
}

/// One order on an event stream: its id and its summary as JSON
/// (`order_uid`, `date_created`, `amount`, `currency`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveOrder {
    pub id: EventId,
    pub summary: Bytes,
}

impl LiveOrder {
    fn of(stored: &StoredOrder) -> Self {
        let summary = serde_json::to_vec(&stored.summary)
            .expect("a summary of strings and integers serializes");
        Self {
            id: stored.id,
            summary: Bytes::from(summary),
        }
    }
}

/// What an event stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveItem {
    Order(LiveOrder),
    /// Orders were left out (more missed than [`RESUME_LIMIT`], or the
    /// client fell behind the fan-out): the client should reload the list;
    /// the stream goes on with the orders stored from now.
    Reset,
}

/// An open event stream. Dropping it frees its place among
/// `SSE_MAX_CLIENTS`.
pub type LiveStream = BoxStream<'static, LiveItem>;

/// Why no event stream was opened.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// As many event streams are open as allowed.
    #[error("too many open event streams")]
    Full,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// The most missed orders a resuming stream is sent; past that it gets
/// [`LiveItem::Reset`] instead.
pub const RESUME_LIMIT: usize = 1_000;

/// Event streams open at once, by default (`SSE_MAX_CLIENTS`).
pub const DEFAULT_MAX_STREAMS: usize = 1_000;

/// Orders the fan-out holds for the slowest stream: one buffer shared by
/// all streams (about 150 bytes an order), so a client that does not read
/// costs no more memory than one that does. A stream this far behind skips
/// ahead with a [`LiveItem::Reset`].
const FAN_OUT: usize = 4_096;

/// Orders read from the database at a time when following announcements.
const FOLLOW_PAGE: usize = 1_000;

/// Event ids remembered to drop an order announced twice (announced
/// ranges may overlap).
const REMEMBERED: usize = 65_536;

/// The fan-out to event streams, and the cap on how many are open.
pub(crate) struct Live {
    sender: broadcast::Sender<LiveOrder>,
    streams: Arc<Semaphore>,
    max_streams: usize,
}

impl Live {
    pub(crate) fn new(max_streams: usize) -> Self {
        Self {
            sender: broadcast::Sender::new(FAN_OUT),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        }
    }
}

/// The event ids already taken, the last [`REMEMBERED`] of them, and the
/// highest.
#[derive(Default)]
struct SeenIds {
    set: HashSet<EventId>,
    order: VecDeque<EventId>,
    highest: Option<EventId>,
}

impl SeenIds {
    fn note_highest(&mut self, id: EventId) {
        self.highest = Some(self.highest.map_or(id, |h| h.max(id)));
    }

    /// Whether `id` is new.
    fn insert(&mut self, id: EventId) -> bool {
        self.note_highest(id);
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }
}

impl OrderService {
    /// At most `streams` event streams open at once (`SSE_MAX_CLIENTS`).
    pub fn with_max_event_streams(mut self, streams: usize) -> Self {
        self.live = Live::new(streams);
        self
    }

    /// How many event streams are open.
    pub fn event_streams(&self) -> usize {
        self.live.max_streams - self.live.streams.available_permits()
    }

    /// Follows the announcements of stored orders until `events` closes:
    /// other replicas' orders are read from the database into the cache
    /// (so the first lookup of one here is a hit), and every order goes to
    /// the open event streams, once, after it is cached. This replica's
    /// own orders are in the cache already, and are read only when a
    /// stream is open. Erased orders are dropped from the cache. After a
    /// reconnect, or a failed read, the orders after the highest id seen
    /// are read again, and every erased order is dropped (those erased
    /// meanwhile cannot be told from the rest).
    pub async fn follow(&self, events: &mut dyn OrderEvents) {
        let mut seen = SeenIds::default();
        // Where to read from again after a failed read.
        let mut behind: Option<EventId> = None;
        // Whether erasures may have gone unannounced (a reconnect, and the
        // erased orders not read since).
        let mut erasures_missed = false;
        while let Some(notice) = events.next().await {
            erasures_missed |= notice == Notice::Reconnected;
            if erasures_missed {
                erasures_missed = !self.drop_every_erased().await;
            }
            let (after, through, own) = match notice {
                Notice::Erased(uids) => {
                    self.drop_erased(&uids);
                    continue;
                }
                Notice::Stored { first, last, own } => {
                    if own && behind.is_none() && self.live.sender.receiver_count() == 0 {
                        seen.note_highest(last);
                        continue;
                    }
                    let after = behind.map_or(first.before(), |b| b.min(first.before()));
                    (after, Some(last), own && behind.is_none())
                }
                Notice::Reconnected => match behind.or(seen.highest) {
                    Some(highest) => (highest, None, false),
                    None => continue,
                },
            };
            behind = None;
            if let Err(err) = self.take_stored(after, through, own, &mut seen).await {
                tracing::warn!(
                    error = %error_chain(&err),
                    "reading stored orders for the event streams failed; read again at the next announcement"
                );
                behind = Some(after);
            }
        }
    }

    /// Drops every erased order from the cache: whether it did (else it is
    /// tried again at the next announcement).
    async fn drop_every_erased(&self) -> bool {
        match self.reads.erased_orders().await {
            Ok(uids) => {
                self.drop_erased(&uids);
                true
            }
            Err(err) => {
                tracing::warn!(
                    error = %error_chain(&err),
                    "reading the erased orders after a reconnect failed; read again at the next announcement"
                );
                false
            }
        }
    }

    /// Reads the orders after `after` (through `through`), caches those of
    /// other replicas and sends each new one to the event streams.
    async fn take_stored(
        &self,
        mut after: EventId,
        through: Option<EventId>,
        own: bool,
        seen: &mut SeenIds,
    ) -> Result<(), RepositoryError> {
        loop {
            let page = self.reads.stored_since(after, through, FOLLOW_PAGE).await?;
            let full = page.len() == FOLLOW_PAGE;
            for stored in page {
                after = after.max(stored.id);
                if !seen.insert(stored.id) {
                    continue;
                }
                let live = LiveOrder::of(&stored);
                if !own {
                    self.cache
                        .insert(stored.summary.order_uid.clone(), stored.json);
                }
                // No stream open: nobody to tell.
                let _ = self.live.sender.send(live);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Opens an event stream: the orders stored from now on, and first,
    /// when `after` is given (a reconnecting client's `Last-Event-ID`),
    /// those stored with a higher id (at most [`RESUME_LIMIT`], else a
    /// [`LiveItem::Reset`]), each once. [`SubscribeError::Full`] when
    /// `SSE_MAX_CLIENTS` streams are open.
    pub async fn subscribe(&self, after: Option<EventId>) -> Result<LiveStream, SubscribeError> {
        let permit = Arc::clone(&self.live.streams)
            .try_acquire_owned()
            .map_err(|_| SubscribeError::Full)?;
        // Subscribed before reading what was missed: an order stored in
        // between is in both, and sent once.
        let receiver = self.live.sender.subscribe();
        let mut backlog = VecDeque::new();
        let mut replayed = HashSet::new();
        if let Some(after) = after {
            let missed = self
                .reads
                .stored_since(after, None, RESUME_LIMIT + 1)
                .await?;
            if missed.len() > RESUME_LIMIT {
                backlog.push_back(LiveItem::Reset);
            } else {
                for stored in &missed {
                    replayed.insert(stored.id);
                    backlog.push_back(LiveItem::Order(LiveOrder::of(stored)));
                }
            }
        }
        let subscription = Subscription {
            backlog,
            replayed,
            receiver,
            _permit: permit,
        };
        Ok(futures::stream::unfold(subscription, Subscription::next).boxed())
    }
}

/// One open event stream's state.
struct Subscription {
    /// What is sent before the live orders.
    backlog: VecDeque<LiveItem>,
    /// Ids sent from the backlog, not to be sent again.
    replayed: HashSet<EventId>,
    /// This stream's place in the fan-out: bounded by the shared buffer.
    receiver: broadcast::Receiver<LiveOrder>,
    /// Its place among the streams allowed, given back on drop.
    _permit: OwnedSemaphorePermit,
}

impl Subscription {
    async fn next(mut self) -> Option<(LiveItem, Self)> {
        if let Some(item) = self.backlog.pop_front() {
            return Some((item, self));
        }
        loop {
            match self.receiver.recv().await {
                Ok(order) if self.replayed.remove(&order.id) => {}
                Ok(order) => return Some((LiveItem::Order(order), self)),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "an event stream fell behind; reset");
                    return Some((LiveItem::Reset, self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mockall::Sequence;
    use mockall::predicate::eq;

    use super::*;
    use crate::ports::{MockOrderCache, MockOrderEvents, MockOrderReads};
    use crate::service::testing::{order_bytes, unavailable};

    fn service(reads: MockOrderReads, cache: MockOrderCache) -> OrderService {
        OrderService::new(
            crate::service::Ports {
                reads: Arc::new(reads),
                cache: Arc::new(cache),
                ..crate::service::Ports::mocks()
            },
            1 << 20,
        )
    }

    fn stored(id: i64, uid: &str) -> StoredOrder {
        StoredOrder::of(
            EventId::new(id),
            &Order::parse(&order_bytes(uid)).expect("valid order"),
        )
    }

    /// Events that yield `notices`, then close.
    fn events(notices: Vec<Notice>) -> MockOrderEvents {
        let mut events = MockOrderEvents::new();
        let mut notices = notices.into_iter();
        events.expect_next().returning(move || notices.next());
        events
    }

    fn stored_notice(first: i64, last: i64, own: bool) -> Notice {
        Notice::Stored {
            first: EventId::new(first),
            last: EventId::new(last),
            own,
        }
    }

    fn uid_of(item: &LiveItem) -> String {
        match item {
            LiveItem::Order(order) => {
                let v: serde_json::Value = serde_json::from_slice(&order.summary).expect("json");
                v["order_uid"].as_str().expect("uid").to_owned()
            }
            LiveItem::Reset => "reset".to_owned(),
        }
    }

    #[test]
    fn event_ids_are_parsed_from_digits_only() {
        assert_eq!(EventId::parse("42"), Ok(EventId::new(42)));
        assert_eq!(EventId::parse("0"), Ok(EventId::START));
        for bad in ["", "-1", "+1", "1.0", "x", " 1", "99999999999999999999"] {
            assert_eq!(EventId::parse(bad), Err(InvalidEventId), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn another_replicas_orders_are_read_then_cached_then_streamed() {
        let mut seq = Sequence::new();
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .with(
                eq(EventId::new(10)),
                eq(Some(EventId::new(12))),
                eq(FOLLOW_PAGE),
            )
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(vec![stored(11, "other-a"), stored(12, "other-b")]));
        let cached: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut cache = MockOrderCache::new();
        let log = Arc::clone(&cached);
        cache.expect_insert().times(2).returning(move |uid, json| {
            assert!(!json.is_empty());
            log.lock().expect("lock").push(uid.to_string());
        });
        let service = service(repo, cache);
        let mut stream = service.subscribe(None).await.expect("open");

        service
            .follow(&mut events(vec![stored_notice(11, 12, false)]))
            .await;

        assert_eq!(*cached.lock().expect("lock"), ["other-a", "other-b"]);
        let first = stream.next().await.expect("an order");
        assert_eq!(uid_of(&first), "other-a");
        assert!(matches!(first, LiveItem::Order(LiveOrder { id, .. }) if id == EventId::new(11)));
        assert_eq!(uid_of(&stream.next().await.expect("an order")), "other-b");
    }

    #[tokio::test]
    async fn own_orders_are_not_read_while_no_stream_is_open() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since().never();
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();

        service(repo, cache)
            .follow(&mut events(vec![stored_notice(1, 500, true)]))
            .await;
    }

    #[tokio::test]
    async fn own_orders_are_streamed_but_not_cached_again() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .times(1)
            .returning(|_, _, _| Ok(vec![stored(1, "mine")]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();
        let service = service(repo, cache);
        let mut stream = service.subscribe(None).await.expect("open");

        service
            .follow(&mut events(vec![stored_notice(1, 1, true)]))
            .await;

        assert_eq!(uid_of(&stream.next().await.expect("an order")), "mine");
    }

    #[tokio::test]
    async fn an_order_in_two_overlapping_announcements_is_streamed_once() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .with(
                eq(EventId::new(0)),
                eq(Some(EventId::new(2))),
                eq(FOLLOW_PAGE),
            )
            .returning(|_, _, _| Ok(vec![stored(1, "a"), stored(2, "b")]));
        repo.expect_stored_since()
            .with(
                eq(EventId::new(1)),
                eq(Some(EventId::new(3))),
                eq(FOLLOW_PAGE),
            )
            .returning(|_, _, _| Ok(vec![stored(2, "b"), stored(3, "c")]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(3).return_const(());
        let service = service(repo, cache);
        let stream = service.subscribe(None).await.expect("open");

        service
            .follow(&mut events(vec![
                stored_notice(1, 2, false),
                stored_notice(2, 3, false),
            ]))
            .await;
        drop(service);

        let uids: Vec<String> = stream.map(|item| uid_of(&item)).collect().await;
        assert_eq!(uids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn after_a_reconnect_the_orders_after_the_highest_id_seen_are_read() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .with(
                eq(EventId::new(4)),
                eq(Some(EventId::new(5))),
                eq(FOLLOW_PAGE),
            )
            .returning(|_, _, _| Ok(vec![stored(5, "before")]));
        repo.expect_stored_since()
            .with(eq(EventId::new(5)), eq(None), eq(FOLLOW_PAGE))
            .times(1)
            .returning(|_, _, _| Ok(vec![stored(6, "in-the-gap")]));
        repo.expect_erased_orders().returning(|| Ok(vec![]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(2).return_const(());
        let service = service(repo, cache);
        let stream = service.subscribe(None).await.expect("open");

        service
            .follow(&mut events(vec![
                stored_notice(5, 5, false),
                Notice::Reconnected,
            ]))
            .await;
        drop(service);

        let uids: Vec<String> = stream.map(|item| uid_of(&item)).collect().await;
        assert_eq!(uids, ["before", "in-the-gap"]);
    }

    #[tokio::test]
    async fn an_announced_erasure_drops_its_orders_from_the_cache() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since().never();
        repo.expect_erased_orders().never();
        let removed: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&removed);
        let mut cache = MockOrderCache::new();
        cache
            .expect_remove()
            .times(2)
            .returning(move |uid| log.lock().expect("lock").push(uid.to_string()));
        let uids = ["ann-1", "ann-2"].map(|u| OrderUid::parse(u).expect("uid"));

        service(repo, cache)
            .follow(&mut events(vec![Notice::Erased(uids.to_vec())]))
            .await;

        assert_eq!(*removed.lock().expect("lock"), ["ann-1", "ann-2"]);
    }

    #[tokio::test]
    async fn after_a_reconnect_every_erased_order_is_dropped_and_a_failed_read_is_tried_again() {
        let mut seq = Sequence::new();
        let mut repo = MockOrderReads::new();
        repo.expect_erased_orders()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Err(unavailable()));
        repo.expect_erased_orders()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(vec![OrderUid::parse("erased-long-ago").expect("uid")]));
        repo.expect_stored_since().returning(|_, _, _| Ok(vec![]));
        let mut cache = MockOrderCache::new();
        cache
            .expect_remove()
            .withf(|uid| uid.as_str() == "erased-long-ago")
            .times(1)
            .return_const(());

        service(repo, cache)
            .follow(&mut events(vec![
                stored_notice(1, 1, false),
                Notice::Reconnected,
                stored_notice(2, 2, false),
                stored_notice(3, 3, false),
            ]))
            .await;
    }

    #[tokio::test]
    async fn a_failed_read_is_read_again_at_the_next_announcement() {
        let mut seq = Sequence::new();
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .with(
                eq(EventId::new(0)),
                eq(Some(EventId::new(1))),
                eq(FOLLOW_PAGE),
            )
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Err(unavailable()));
        repo.expect_stored_since()
            .with(
                eq(EventId::new(0)),
                eq(Some(EventId::new(2))),
                eq(FOLLOW_PAGE),
            )
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(vec![stored(1, "a"), stored(2, "b")]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(2).return_const(());

        service(repo, cache)
            .follow(&mut events(vec![
                stored_notice(1, 1, false),
                stored_notice(2, 2, false),
            ]))
            .await;
    }

    #[tokio::test]
    async fn a_resumed_stream_gets_the_missed_orders_first_and_each_once() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since()
            .with(eq(EventId::new(7)), eq(None), eq(RESUME_LIMIT + 1))
            .times(1)
            .returning(|_, _, _| Ok(vec![stored(8, "missed")]));
        repo.expect_stored_since()
            .with(
                eq(EventId::new(7)),
                eq(Some(EventId::new(9))),
                eq(FOLLOW_PAGE),
            )
            .returning(|_, _, _| Ok(vec![stored(8, "missed"), stored(9, "new")]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let service = service(repo, cache);
        let stream = service
            .subscribe(Some(EventId::new(7)))
            .await
            .expect("open");

        service
            .follow(&mut events(vec![stored_notice(8, 9, false)]))
            .await;
        drop(service);

        let uids: Vec<String> = stream.map(|item| uid_of(&item)).collect().await;
        assert_eq!(uids, ["missed", "new"]);
    }

    #[tokio::test]
    async fn a_client_that_missed_too_much_is_told_to_reset() {
        let mut repo = MockOrderReads::new();
        repo.expect_stored_since().returning(|after, _, limit| {
            Ok((1..=limit as i64)
                .map(|n| stored(after.get() + n, &format!("o{n}")))
                .collect())
        });
        let service = service(repo, MockOrderCache::new());

        let mut stream = service
            .subscribe(Some(EventId::new(1)))
            .await
            .expect("open");

        assert_eq!(stream.next().await, Some(LiveItem::Reset));
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_skips_ahead_with_a_reset() {
        let mut repo = MockOrderReads::new();
        let total = FAN_OUT as i64 + 10;
        repo.expect_stored_since().returning(move |_, _, _| {
            Ok((1..=total).map(|n| stored(n, &format!("o{n}"))).collect())
        });
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let service = service(repo, cache);
        let mut slow = service.subscribe(None).await.expect("open");

        service
            .follow(&mut events(vec![stored_notice(1, total, false)]))
            .await;

        assert_eq!(slow.next().await, Some(LiveItem::Reset));
        // Then the newest the fan-out still holds.
        assert_eq!(uid_of(&slow.next().await.expect("an order")), "o11");
    }

    #[tokio::test]
    async fn streams_over_the_cap_are_refused_and_a_dropped_one_frees_its_place() {
        let service =
            service(MockOrderReads::new(), MockOrderCache::new()).with_max_event_streams(2);

        let first = service.subscribe(None).await.expect("first");
        let _second = service.subscribe(None).await.expect("second");
        assert_eq!(service.event_streams(), 2);
        assert!(matches!(
            service.subscribe(None).await,
            Err(SubscribeError::Full)
        ));
        drop(first);

        assert_eq!(service.event_streams(), 1);
        assert!(service.subscribe(None).await.is_ok());
    }
}

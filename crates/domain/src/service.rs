//! The core: [`OrderService`] holds the ports; its use cases live beside it
//! (`ingest.rs`, `lookup.rs`), each in an `impl OrderService` block of its own.

use std::sync::Arc;

use bytes::Bytes;

use crate::erased::{Epoch, RecentErasures};
use crate::live::{DEFAULT_MAX_STREAMS, Live};
use crate::misses::RecentMisses;
use crate::ports::{OrderCache, OrderReads, OrderStore, RejectedReads};
use crate::retention::Retention;
use crate::trace::Consumer;
use crate::uid::OrderUid;

/// Lookups that may read through to the database at once, by default:
/// half the connection pool, so misses never take the connections ingest
/// needs.
pub const DEFAULT_READ_THROUGH: usize = 8;

/// The core. Inbound adapters (the ingest loop, HTTP) call it directly; it
/// reaches the outside only through the ports it holds.
pub struct OrderService {
    pub(crate) store: Arc<dyn OrderStore>,
    pub(crate) reads: Arc<dyn OrderReads>,
    pub(crate) rejected: Arc<dyn RejectedReads>,
    pub(crate) cache: Arc<dyn OrderCache>,
    /// Messages larger than this are rejected without being parsed.
    pub(crate) max_order_bytes: usize,
    /// Uids just found missing.
    pub(crate) misses: RecentMisses,
    /// Orders erased lately: what was read before is not cached.
    pub(crate) erased: RecentErasures,
    /// Permits to read through to the database; a lookup that finds none
    /// is answered "busy" at once rather than queued.
    pub(crate) read_through: tokio::sync::Semaphore,
    /// The orders just stored, fanned out to the open event streams.
    pub(crate) live: Live,
    /// How often a batch still being stored is reported in progress to
    /// the broker (well within its ack wait).
    pub(crate) progress_every: std::time::Duration,
    /// How long rejected messages are kept, as the list tells its readers.
    pub(crate) rejected_retention: Retention,
    /// The broker and consumer group the messages' spans name.
    pub(crate) consumer: Consumer,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("max_order_bytes", &self.max_order_bytes)
            .finish_non_exhaustive()
    }
}

/// The ports the core reaches the outside through: each use case uses
/// only some of them, so a test fakes only those.
#[derive(Clone)]
pub struct Ports {
    /// What ingest writes.
    pub store: Arc<dyn OrderStore>,
    /// Stored orders, read.
    pub reads: Arc<dyn OrderReads>,
    /// The rejected messages, read.
    pub rejected: Arc<dyn RejectedReads>,
    /// Orders in memory.
    pub cache: Arc<dyn OrderCache>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports")
    }
}

impl Ports {
    /// One adapter for the three database ports (as PostgreSQL serves
    /// them all), and the cache.
    pub fn of<R>(database: Arc<R>, cache: Arc<dyn OrderCache>) -> Self
    where
        R: OrderStore + OrderReads + RejectedReads + 'static,
    {
        Self {
            store: Arc::clone(&database) as Arc<dyn OrderStore>,
            reads: Arc::clone(&database) as Arc<dyn OrderReads>,
            rejected: database,
            cache,
        }
    }
}

#[cfg(any(test, feature = "mocks"))]
impl Ports {
    /// Mocks that expect nothing: a test replaces the ones it uses
    /// (`Ports { reads: Arc::new(reads), ..Ports::mocks() }`), and a call
    /// to any other fails the test.
    pub fn mocks() -> Self {
        use crate::ports::{MockOrderCache, MockOrderReads, MockOrderStore, MockRejectedReads};
        Self {
            store: Arc::new(MockOrderStore::new()),
            reads: Arc::new(MockOrderReads::new()),
            rejected: Arc::new(MockRejectedReads::new()),
            cache: Arc::new(MockOrderCache::new()),
        }
    }
}

impl OrderService {
    pub fn new(ports: Ports, max_order_bytes: usize) -> Self {
        let Ports {
            store,
            reads,
            rejected,
            cache,
        } = ports;
        Self {
            store,
            reads,
            rejected,
            cache,
            max_order_bytes,
            misses: RecentMisses::default(),
            erased: RecentErasures::default(),
            read_through: tokio::sync::Semaphore::new(DEFAULT_READ_THROUGH),
            live: Live::new(DEFAULT_MAX_STREAMS),
            progress_every: crate::ingest::DEFAULT_PROGRESS_EVERY,
            rejected_retention: Retention::FOREVER,
            consumer: Consumer::default(),
        }
    }

    /// Reports a batch still being stored in progress to the broker every
    /// `period` (a third of `NATS_ACK_WAIT`), so a slow commit never lets
    /// its messages' deliveries expire.
    pub fn with_progress_every(mut self, period: std::time::Duration) -> Self {
        self.progress_every = period.max(std::time::Duration::from_millis(10));
        self
    }

    /// The broker and the consumer group ingest's spans name
    /// (`messaging.system`, `messaging.consumer.group.name`).
    pub fn with_consumer(mut self, consumer: Consumer) -> Self {
        self.consumer = consumer;
        self
    }

    /// How long rejected messages are kept (`REJECTED_RETENTION`; forever
    /// unless set), for the list's readers: the purge itself runs apart.
    pub fn with_rejected_retention(mut self, retention: Retention) -> Self {
        self.rejected_retention = retention;
        self
    }

    /// At most `permits` lookups read through to the database at once
    /// (`READ_THROUGH_LIMIT`); keep it below the pool size.
    pub fn with_read_through_limit(mut self, permits: usize) -> Self {
        self.read_through = tokio::sync::Semaphore::new(permits.max(1));
        self
    }
}

impl OrderService {
    /// Caches orders read (or stored) by a read or a write that began at
    /// `since`, leaving out any erased since then: a read that raced an
    /// erasure never puts the old JSON back. Returns how many were cached.
    pub(crate) fn cache_unless_erased(
        &self,
        since: Epoch,
        orders: impl IntoIterator<Item = (OrderUid, Bytes)>,
    ) -> usize {
        self.erased.unless_erased_since(since, |erased| {
            let mut cached = 0;
            for (uid, json) in orders {
                if !erased(&uid) {
                    self.cache.insert(uid, json);
                    cached += 1;
                }
            }
            cached
        })
    }

    /// Drops erased orders from the cache, and keeps reads that began
    /// before from caching them again.
    pub(crate) fn drop_erased(&self, uids: &[OrderUid]) {
        self.erased.note(uids, || {
            for uid in uids {
                self.cache.remove(uid);
            }
        });
    }
}

/// An error and its sources on one line, for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Test support shared by the use cases' tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::Bytes;

    use crate::order::Order;
    use crate::ports::{Message, MessageMeta, MockAcker, RepositoryError};

    pub const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    pub fn sample() -> Order {
        Order::parse(SAMPLE).expect("sample is valid")
    }

    /// The sample with another uid, as bytes.
    pub fn order_bytes(uid: &str) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
        value["order_uid"] = serde_json::Value::from(uid);
        serde_json::to_vec(&value).expect("json")
    }

    pub fn message(payload: &[u8], acker: MockAcker) -> Message {
        Message {
            payload: Bytes::copy_from_slice(payload),
            meta: MessageMeta {
                subject: "orders".into(),
                stream: "ORDERS".into(),
                stream_sequence: 7,
                delivered: 1,
                headers: None,
                published: None,
            },
            acker: Box::new(acker),
        }
    }

    /// An acker that expects exactly one `ack`, `term` or `nak`.
    pub fn acker_expecting(what: &'static str) -> MockAcker {
        let mut acker = MockAcker::new();
        match what {
            "ack" => {
                acker.expect_ack().times(1).returning(|| Ok(()));
            }
            "term" => {
                acker.expect_term().times(1).returning(|| Ok(()));
            }
            "nak" => {
                acker.expect_nak().times(1).returning(|_| Ok(()));
            }
            _ => unreachable!("ack, term or nak"),
        }
        acker
    }

    pub fn unavailable() -> RepositoryError {
        RepositoryError::Unavailable("connection refused".into())
    }
}

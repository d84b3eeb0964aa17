//! The core of the order service: the `Order` model and the decoder that
//! reads messages into it, the ports the adapters implement, and the use
//! cases written against them.
//!
//! Nothing in this crate does I/O. Adapters (PostgreSQL, NATS, the cache, HTTP)
//! live in their own crates and are handed to [`OrderService`] as trait objects.

mod audit;
mod decode;
mod ingest;
mod listing;
mod live;
mod lookup;
mod misses;
mod newtype;
mod order;
mod ports;
mod readiness;
mod rejected;
mod retention;
mod search;
mod service;
mod uid;
mod validation;

pub use audit::{AuditLog, OrderRead, ReadAudit, ReadRecord, ReadsOf};
pub use decode::Decoded;
pub use ingest::{IngestOutcome, Ingested, retry_delay};
pub use listing::{DEFAULT_PAGE, InvalidCursor, MAX_PAGE, OrderCursor, OrderPage, OrderSummary};
pub use live::{
    DEFAULT_MAX_STREAMS, EventId, InvalidEventId, LiveItem, LiveOrder, LiveStream, Notice,
    RESUME_LIMIT, StoredOrder, SubscribeError,
};
pub use lookup::{Lookup, LookupError};
pub use misses::MISS_TTL;
pub use order::{
    DateCreated, Delivery, InvalidDate, InvalidPercent, Item, Order, Payment, Percent,
};
pub use ports::{
    AckError, Acker, Message, MessageMeta, MessageSource, OrderCache, OrderChunks, OrderEvents,
    OrderJson, OrderRepository, Rejection, RepositoryError, SaveOutcome, SourceError,
};
pub use readiness::{Readiness, ReadinessReport};
pub use rejected::{
    InvalidRejectedId, MAX_REJECTED_PAGE, Payload, RejectedId, RejectedMessage, RejectedPage,
    RejectedSummary,
};
pub use retention::{
    InvalidRetention, PURGE_BATCH, PurgeOutcome, PurgePass, PurgeTarget, Purger, Retention,
    purge_once,
};
pub use search::{
    InvalidSearch, MAX_SEARCH_LEN, OrderQuery, SEARCH_KEYS, SearchKey, normalize_phone,
};
pub use service::{DEFAULT_READ_THROUGH, OrderService, error_chain};
pub use uid::{InvalidOrderUid, MAX_UID_LEN, OrderUid};
pub use validation::{FieldProblem, FieldProblems, MAX_PROBLEMS, RejectReason, ValidationError};

#[cfg(any(test, feature = "mocks"))]
pub use audit::{MockAuditLog, MockReadAudit};
#[cfg(any(test, feature = "mocks"))]
pub use ports::{
    MockAcker, MockMessageSource, MockOrderCache, MockOrderEvents, MockOrderRepository,
};
#[cfg(any(test, feature = "mocks"))]
pub use retention::{MockPurgePass, MockPurger};

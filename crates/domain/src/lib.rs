//! The core of the order service: the `Order` model and the decoder that
//! reads messages into it, the ports the adapters implement, and the use
//! cases written against them.
//!
//! Nothing in this crate does I/O. Adapters (PostgreSQL, NATS, the cache, HTTP)
//! live in their own crates and are handed to [`OrderService`] as trait objects.

/// The methods of a `serde::Serializer` for every shape it does not take,
/// each failing with `$err`: the decoder's check of plain values and the
/// order's JSON writer take only strings, integers, newtypes, lists and
/// structs.
macro_rules! other_shapes_fail {
    ($err:expr) => {
        fn serialize_bool(self, _: bool) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_i8(self, _: i8) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_i16(self, _: i16) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_i32(self, _: i32) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_u8(self, _: u8) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_u16(self, _: u16) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_u32(self, _: u32) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_u64(self, _: u64) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_f32(self, _: f32) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_f64(self, _: f64) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_char(self, _: char) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_none(self) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_some<T: ::serde::Serialize + ?Sized>(self, _: &T) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_unit(self) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_newtype_variant<T: ::serde::Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Self::Error> {
            Err($err)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
            Err($err)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Self::Error> {
            Err($err)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            Err($err)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
            Err($err)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Self::Error> {
            Err($err)
        }
    };
}

mod audit;
pub mod dates;
mod decode;
mod digits;
mod erased;
mod erasure;
mod ingest;
mod json;
mod listing;
mod live;
mod lookup;
mod misses;
mod newtype;
mod order;
mod panics;
mod ports;
mod readiness;
mod rejected;
mod retention;
mod search;
mod service;
pub mod trace;
mod uid;
mod validation;

pub use audit::{AuditLog, OrderRead, ReadAudit, ReadRecord, ReadsOf};
pub use dates::InvalidDate;
pub use decode::{Decoded, NotAnOrder};
pub use digits::DIGIT_ZEROS;
pub use erasure::{
    ERASE_BATCH, ERASED, ErasureBatch, ErasureError, ErasureFailed, ErasureId, ErasureReport,
    ErasureRequest, ErasureTarget, Erasures, InvalidTarget, Matched, RejectedCopy, StreamError,
    StreamMessages, erase,
};
pub use ingest::{DEFAULT_PROGRESS_EVERY, IngestOutcome, Ingested, retry_delay};
pub use listing::{DEFAULT_PAGE, InvalidCursor, MAX_PAGE, OrderCursor, OrderPage, OrderSummary};
pub use live::{
    DEFAULT_MAX_STREAMS, EventId, InvalidEventId, LiveItem, LiveOrder, LiveStream, Notice,
    RESUME_LIMIT, StoredOrder, SubscribeError,
};
pub use lookup::{Lookup, LookupError};
pub use misses::MISS_TTL;
pub use order::{DateCreated, Delivery, InvalidPercent, Item, Order, Payment, Percent};
pub use panics::{Panicked, catch as catch_panic, catch_async as catch_panic_async};
pub use ports::{
    AckError, Acker, DatabaseProbe, Message, MessageMeta, MessageSource, NewOrder, OrderCache,
    OrderChunks, OrderEvents, OrderJson, OrderReads, OrderStore, Recorded, RejectedReads,
    Rejection, RepositoryError, SaveOutcome, SourceError,
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
    InvalidSearch, MAX_SEARCH_LEN, OrderQuery, SEARCH_KEYS, SearchKey, normalize_email,
    normalize_phone,
};
pub use service::{DEFAULT_READ_THROUGH, OrderService, Ports, error_chain};
pub use uid::{InvalidOrderUid, MAX_UID_LEN, OrderUid};
pub use validation::{FieldProblem, FieldProblems, MAX_PROBLEMS, RejectReason, ValidationError};

#[cfg(any(test, feature = "mocks"))]
pub use audit::{MockAuditLog, MockReadAudit};
#[cfg(any(test, feature = "mocks"))]
pub use erasure::{MockErasureBatch, MockErasures, MockStreamMessages};
#[cfg(any(test, feature = "mocks"))]
pub use ports::{
    MockAcker, MockDatabaseProbe, MockMessageSource, MockOrderCache, MockOrderEvents,
    MockOrderReads, MockOrderStore, MockRejectedReads,
};
#[cfg(any(test, feature = "mocks"))]
pub use retention::{MockPurgePass, MockPurger};

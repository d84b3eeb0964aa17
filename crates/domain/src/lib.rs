//! The core of the order service: the `Order` model and its validation, the
//! ports the adapters implement, and the use cases written against them.
//!
//! Nothing in this crate does I/O. Adapters (PostgreSQL, NATS, the cache, HTTP)
//! live in their own crates and are handed to [`OrderService`] as trait objects.

mod listing;
mod order;
mod ports;
mod service;
mod uid;
mod validation;

pub use listing::{DEFAULT_PAGE, InvalidCursor, MAX_PAGE, OrderCursor, OrderPage, OrderSummary};
pub use order::{DateCreated, Delivery as DeliveryInfo, Item, Order, Payment};
pub use ports::{
    AckError, Acker, Delivery, DeliveryMeta, MessageSource, OrderCache, OrderChunks,
    OrderRepository, Rejection, RepositoryError, SaveOutcome, SourceError,
};
pub use service::{
    IngestOutcome, Lookup, LookupError, OrderService, Readiness, ReadinessReport, error_chain,
    retry_delay,
};
pub use uid::{InvalidOrderUid, OrderUid};
pub use validation::{RejectReason, ValidationError};

#[cfg(any(test, feature = "mocks"))]
pub use ports::{MockAcker, MockMessageSource, MockOrderCache, MockOrderRepository};

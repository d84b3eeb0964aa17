//! The read audit (`AUDIT_READS`): who was given which orders, and when.
//! The HTTP adapter notes each answer that gave out orders through
//! [`ReadAudit`], which never waits; [`AuditLog`] stores them in batches
//! and reads them back for `order-service audit`.

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::ports::RepositoryError;
use crate::uid::OrderUid;

/// One answer that gave out orders (or opened the event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRead {
    /// The caller: the token's name with `API_TOKENS_FILE`, else the
    /// client's address.
    pub who: String,
    /// When the answer was given.
    pub at: OffsetDateTime,
    /// The route's fixed label (`/order`, `/rejected/{id}`), never the path
    /// or query string: those may hold a phone or an email.
    pub route: &'static str,
    /// The order uids the answer gave out (a rejected message's uid, when
    /// it named one), in the answer's order; none for the event stream's
    /// opening.
    pub order_uids: Vec<String>,
}

/// A stored read, as `order-service audit` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadRecord {
    #[serde(serialize_with = "crate::rejected::rfc3339")]
    pub at: OffsetDateTime,
    pub who: String,
    pub route: String,
    /// The uids of the read that were asked about (not the rest of the
    /// answer's).
    pub order_uids: Vec<String>,
}

/// Whose reads to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadsOf {
    /// The reads that gave out this order.
    Order(OrderUid),
    /// The reads that gave out any order of this customer (`customer_id`).
    Customer(String),
}

/// Where the HTTP adapter notes the answers that gave out orders. It runs
/// on the request path.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait ReadAudit: Send + Sync {
    /// MUST return at once: never wait for I/O, nor for a lock held across
    /// I/O. MAY drop the read when it cannot keep it (a full queue), and
    /// then MUST count it where operators see it.
    fn record(&self, read: OrderRead);
}

/// Durable storage of the read audit (`order_reads`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// MUST store every read of the batch, in one statement: all or none.
    /// MUST NOT store anything the read does not hold (no path, no query
    /// string).
    async fn append(&self, reads: &[OrderRead]) -> Result<(), RepositoryError>;

    /// MUST return every stored read that gave out an order `of` names,
    /// oldest first, each with those of its uids that `of` names. Served
    /// by an index on the uids, never by reading every read.
    async fn reads_of(&self, of: &ReadsOf) -> Result<Vec<ReadRecord>, RepositoryError>;
}

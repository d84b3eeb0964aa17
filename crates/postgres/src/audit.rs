//! [`AuditLog`] over PostgreSQL: `order_reads` (migrations/V7), written a
//! batch per statement, read by its GIN index on the uids.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use orders_domain::{AuditLog, OrderRead, ReadRecord, ReadsOf, RepositoryError};
use time::OffsetDateTime;

use crate::errors::{corrupt, from_pg, from_pool};

/// A batch of reads in one statement: each column as an array, and the
/// reads' uids all in one array, each read's taken back as its slice
/// (`start` uids before it, `n` of its own; an empty slice is `{}`).
const APPEND: &str = "INSERT INTO order_reads (at, who, route, order_uids) \
     SELECT r.at, r.who, r.route, ($4::text[])[r.start + 1 : r.start + r.n] \
     FROM unnest($1::timestamptz[], $2::text[], $3::text[], $5::int4[], $6::int4[]) \
          AS r(at, who, route, start, n)";

/// The reads of any of the uids in `$1`, oldest first, each with the uids
/// of `$1` among its own.
pub const READS_OF_ORDERS: &str = "SELECT at, who, route, \
       ARRAY(SELECT u FROM unnest(order_uids) AS u WHERE u = ANY($1)) \
     FROM order_reads WHERE order_uids && $1::text[] ORDER BY at, id";

/// The reads of any order of customer `$1`: its uids found by the
/// customer's index (V3), the reads by theirs.
pub const READS_OF_CUSTOMER: &str = "WITH uids AS (\
       SELECT ARRAY(SELECT order_uid FROM order_info WHERE customer_id = $1) AS all_uids) \
     SELECT at, who, route, \
       ARRAY(SELECT u FROM unnest(order_uids) AS u WHERE u = ANY(uids.all_uids)) \
     FROM order_reads, uids WHERE order_uids && uids.all_uids ORDER BY at, id";

/// [`AuditLog`] on the primary's pool.
#[derive(Clone)]
pub struct PgAuditLog {
    pool: Pool,
}

impl std::fmt::Debug for PgAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditLog").finish_non_exhaustive()
    }
}

impl PgAuditLog {
    /// Writes and reads through `pool` (the primary's: the writer inserts;
    /// `order-service audit` has no other).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AuditLog for PgAuditLog {
    async fn append(&self, reads: &[OrderRead]) -> Result<(), RepositoryError> {
        if reads.is_empty() {
            return Ok(());
        }
        let mut at: Vec<OffsetDateTime> = Vec::with_capacity(reads.len());
        let mut who: Vec<&str> = Vec::with_capacity(reads.len());
        let mut route: Vec<&str> = Vec::with_capacity(reads.len());
        let mut start: Vec<i32> = Vec::with_capacity(reads.len());
        let mut n: Vec<i32> = Vec::with_capacity(reads.len());
        let mut uids: Vec<&str> = Vec::new();
        for read in reads {
            at.push(read.at);
            who.push(&read.who);
            route.push(read.route);
            let count = |len: usize| {
                i32::try_from(len)
                    .map_err(|_| RepositoryError::Refused("too many uids in one batch".into()))
            };
            start.push(count(uids.len())?);
            n.push(count(read.order_uids.len())?);
            uids.extend(read.order_uids.iter().map(String::as_str));
        }
        let client = self.pool.get().await.map_err(from_pool)?;
        let statement = client.prepare_cached(APPEND).await.map_err(from_pg)?;
        client
            .execute(&statement, &[&at, &who, &route, &uids, &start, &n])
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn reads_of(&self, of: &ReadsOf) -> Result<Vec<ReadRecord>, RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let rows = match of {
            ReadsOf::Order(uid) => {
                let uids = [uid.as_str()];
                client
                    .query(READS_OF_ORDERS, &[&&uids[..]])
                    .await
                    .map_err(from_pg)?
            }
            ReadsOf::Customer(customer) => client
                .query(READS_OF_CUSTOMER, &[customer])
                .await
                .map_err(from_pg)?,
        };
        rows.iter()
            .map(|row| {
                let read = |e: tokio_postgres::Error| corrupt("order read", e);
                Ok(ReadRecord {
                    at: row.try_get(0).map_err(read)?,
                    who: row.try_get(1).map_err(read)?,
                    route: row.try_get(2).map_err(read)?,
                    order_uids: row.try_get(3).map_err(read)?,
                })
            })
            .collect()
    }
}

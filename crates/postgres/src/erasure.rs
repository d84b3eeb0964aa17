//! [`Erasures`] over PostgreSQL (`migrations/V9__erasure.sql`): the
//! `erasures` record, and each batch a transaction on a connection of its
//! own that finds and locks the orders, then writes them erased, deletes
//! their rejected messages and announces them on `orders_erased`.

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use orders_domain::{
    ERASED, ErasureBatch, ErasureId, ErasureTarget, Erasures, Matched, Order, OrderJson, OrderUid,
    RejectedCopy, RejectedId, RepositoryError,
};

use crate::errors::{corrupt, from_pg, from_pool};
use crate::events::ERASED_CHANNEL;
use crate::reads::orders_of;
use crate::search::{NORMALIZED_EMAIL, NORMALIZED_PHONE};

const OPEN_RECORD: &str = "INSERT INTO erasures (reason, matched_by) VALUES ($1, $2) RETURNING id";

const CLOSE_RECORD: &str = "UPDATE erasures SET finished_at = now() WHERE id = $1";

/// The orders a target matches that are not erased yet, at most $2, each
/// locked (in the uids' order, so two erasures at once take their locks
/// alike). Only the target's condition is written, so each kind of match
/// reads its own index, as a search does: the primary key, the customer's
/// (`order_info_customer_id`, V3), the phone's and the email's
/// (`delivery_phone_key`, `delivery_email_key`, V6).
pub fn matching(target: &ErasureTarget) -> String {
    let (join, condition) = match target {
        ErasureTarget::OrderUid(_) => ("", "o.order_uid = $1".to_owned()),
        ErasureTarget::CustomerId(_) => ("", "o.customer_id = $1".to_owned()),
        ErasureTarget::Phone(_) => (
            " JOIN delivery d USING (order_uid)",
            format!("{NORMALIZED_PHONE} = $1"),
        ),
        ErasureTarget::Email(_) => (
            " JOIN delivery d USING (order_uid)",
            format!("{NORMALIZED_EMAIL} = $1"),
        ),
    };
    format!(
        "SELECT o.order_uid, o.stream_sequence, o.document FROM order_info o{join} \
         WHERE {condition} AND o.erased_at IS NULL \
         ORDER BY o.order_uid LIMIT $2 FOR UPDATE OF o"
    )
}

/// The rejected messages of the uids in $1, or whose payload holds any of
/// the byte strings in $2, locked. A scan of the table, which the purge
/// keeps to `REJECTED_RETENTION`'s worth.
const REJECTED: &str = "SELECT id, stream, stream_sequence, payload FROM rejected_messages \
     WHERE order_uid = ANY($1) \
        OR EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS n(needle) \
                   WHERE position(n.needle IN payload) > 0) \
     ORDER BY id FOR UPDATE";

/// Writes a batch erased: each order's document ($1 the uids, $2 the
/// documents) and every field `Order::erased` replaces, with the marker
/// ($3), in its rows; marks them erased; deletes the rejected messages
/// ($4). Returns how many orders it wrote.
const ERASE: &str = "\
WITH e AS (SELECT * FROM UNNEST($1::text[], $2::bytea[]) AS e(order_uid, document)),
o AS (UPDATE order_info o SET customer_id = $3, track_number = $3, document = e.document,
             erased_at = now()
      FROM e WHERE o.order_uid = e.order_uid RETURNING o.order_uid),
d AS (UPDATE delivery d SET name = $3, phone = $3, zip = $3, city = $3, address = $3,
             region = $3, email = $3
      FROM e WHERE d.order_uid = e.order_uid),
p AS (UPDATE payment p SET transaction = $3 FROM e WHERE p.order_uid = e.order_uid),
i AS (UPDATE items i SET track_number = $3 FROM e WHERE i.order_uid = e.order_uid),
r AS (DELETE FROM rejected_messages WHERE id = ANY($4::bigint[]))
SELECT count(*) FROM o";

/// Adds a batch to the record: its uids ($2), rejected messages ($3) and
/// stream messages ($4).
const ADD_TO_RECORD: &str = "UPDATE erasures SET orders = orders + cardinality($2::text[]), \
     order_uids = order_uids || $2::text[], rejected_messages = rejected_messages + $3, \
     stream_messages = stream_messages + $4 WHERE id = $1";

/// [`Erasures`] on the primary's pool.
#[derive(Clone)]
pub struct PgErasures {
    pool: Pool,
}

impl std::fmt::Debug for PgErasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgErasures").finish_non_exhaustive()
    }
}

impl PgErasures {
    /// Erases through `pool` (the primary's).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Erasures for PgErasures {
    async fn open_record(
        &self,
        reason: &str,
        kind: &'static str,
    ) -> Result<ErasureId, RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let row = client
            .query_one(OPEN_RECORD, &[&reason, &kind])
            .await
            .map_err(from_pg)?;
        Ok(ErasureId(row.try_get(0).map_err(from_pg)?))
    }

    async fn begin(&self) -> Result<Box<dyn ErasureBatch>, RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client.batch_execute("BEGIN").await.map_err(from_pg)?;
        Ok(Box::new(PgErasureBatch {
            client: Some(client),
        }))
    }

    async fn close_record(&self, id: ErasureId) -> Result<(), RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .execute(CLOSE_RECORD, &[&id.0])
            .await
            .map_err(from_pg)?;
        Ok(())
    }
}

/// One batch: the connection whose transaction it is.
pub struct PgErasureBatch {
    /// `None` once committed.
    client: Option<Object>,
}

impl std::fmt::Debug for PgErasureBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgErasureBatch")
            .field("committed", &self.client.is_none())
            .finish()
    }
}

impl PgErasureBatch {
    fn client(&self) -> Result<&Object, RepositoryError> {
        self.client
            .as_ref()
            .ok_or_else(|| RepositoryError::Unavailable("the batch is committed".into()))
    }
}

/// A batch dropped before its commit (a dry run, an error) takes its
/// connection out of the pool and closes it: the server rolls the
/// transaction back, which a pooled connection would hand on open.
impl Drop for PgErasureBatch {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

#[async_trait]
impl ErasureBatch for PgErasureBatch {
    async fn matching(
        &mut self,
        target: &ErasureTarget,
        limit: usize,
    ) -> Result<Vec<Matched>, RepositoryError> {
        let client = self.client()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&matching(target), &[&target.value(), &limit])
            .await
            .map_err(from_pg)?;
        let read = |e: tokio_postgres::Error| corrupt("order row", e);
        let mut matched = Vec::with_capacity(rows.len());
        // Orders stored before documents were kept (V5): from their rows.
        let mut without = Vec::new();
        for row in &rows {
            let uid: String = row.try_get(0).map_err(read)?;
            let sequence: Option<i64> = row.try_get(1).map_err(read)?;
            let stream_sequence = sequence.and_then(|s| u64::try_from(s).ok());
            match row.try_get::<_, Option<&[u8]>>(2).map_err(read)? {
                Some(json) => matched.push(Matched {
                    order: Order::parse(json).map_err(|e| corrupt("order document", e))?,
                    stream_sequence,
                }),
                None => without.push((uid, stream_sequence)),
            }
        }
        if !without.is_empty() {
            let uids: Vec<String> = without.iter().map(|(uid, _)| uid.clone()).collect();
            for order in orders_of(client, &uids).await? {
                let stream_sequence = without
                    .iter()
                    .find(|(uid, _)| uid == order.order_uid.as_str())
                    .and_then(|(_, s)| *s);
                matched.push(Matched {
                    order,
                    stream_sequence,
                });
            }
        }
        Ok(matched)
    }

    async fn rejected(
        &mut self,
        uids: &[OrderUid],
        needles: &[String],
    ) -> Result<Vec<RejectedCopy>, RepositoryError> {
        let client = self.client()?;
        let uids: Vec<&str> = uids.iter().map(OrderUid::as_str).collect();
        let needles: Vec<&[u8]> = needles.iter().map(|n| n.as_bytes()).collect();
        let rows = client
            .query(REJECTED, &[&uids, &needles])
            .await
            .map_err(from_pg)?;
        let read = |e: tokio_postgres::Error| corrupt("rejected message", e);
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0).map_err(read)?;
                let sequence: Option<i64> = row.try_get(2).map_err(read)?;
                let payload: Vec<u8> = row.try_get(3).map_err(read)?;
                Ok(RejectedCopy {
                    id: RejectedId::new(id).map_err(|e| corrupt("rejected message id", e))?,
                    stream: row.try_get(1).map_err(read)?,
                    stream_sequence: sequence.and_then(|s| u64::try_from(s).ok()),
                    payload: Bytes::from(payload),
                })
            })
            .collect()
    }

    async fn commit(
        &mut self,
        record: Option<ErasureId>,
        erased: &[OrderJson],
        rejected: &[RejectedId],
        stream_messages: u64,
    ) -> Result<(), RepositoryError> {
        let client = self.client()?;
        let uids: Vec<&str> = erased.iter().map(|o| o.uid.as_str()).collect();
        let documents: Vec<&[u8]> = erased.iter().map(|o| o.json.as_ref()).collect();
        let rejected: Vec<i64> = rejected.iter().map(|id| id.get()).collect();
        let row = client
            .query_one(ERASE, &[&uids, &documents, &ERASED, &rejected])
            .await
            .map_err(from_pg)?;
        let written: i64 = row.try_get(0).map_err(from_pg)?;
        if written != erased.len() as i64 {
            // Dropped, so rolled back.
            return Err(RepositoryError::Unavailable(
                format!("{} orders to erase, {written} found", erased.len()).into(),
            ));
        }
        if let Some(ErasureId(id)) = record {
            let rejected_count = i32::try_from(rejected.len()).unwrap_or(i32::MAX);
            let stream_count = i32::try_from(stream_messages).unwrap_or(i32::MAX);
            client
                .execute(ADD_TO_RECORD, &[&id, &uids, &rejected_count, &stream_count])
                .await
                .map_err(from_pg)?;
        }
        if !uids.is_empty() {
            client
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&ERASED_CHANNEL, &uids.join(" ")],
                )
                .await
                .map_err(from_pg)?;
        }
        client.batch_execute("COMMIT").await.map_err(from_pg)?;
        self.client.take();
        Ok(())
    }
}

//! Reading stored orders ([`OrderReads`]), on the read pool
//! (`DATABASE_READ_URL`) while it answers and on the primary otherwise,
//! through one helper: [`PgOrderRepository::read`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Object, Pool};
use futures::future::BoxFuture;
use orders_domain::{
    EventId, Item, Order, OrderChunks, OrderCursor, OrderQuery, OrderReads, OrderSummary, OrderUid,
    RepositoryError, StoredOrder,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::errors::{corrupt, from_pg, from_pool};
use crate::repository::PgOrderRepository;
use crate::rows::{read_item, read_order};
use crate::sql;
use crate::trace;
use tracing::Instrument as _;

/// How long reads skip a read pool that failed.
const READS_BACKOFF: Duration = Duration::from_secs(5);

/// The pool for reads, and when it last failed: for a while after a
/// failure reads go straight to the primary, so a standby that is down
/// does not cost every lookup the pool's timeout.
#[derive(Clone)]
pub(crate) struct ReadPool {
    pub(crate) pool: Pool,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl ReadPool {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            failed_at: Arc::default(),
        }
    }

    fn worth_trying(&self) -> bool {
        self.failed_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= READS_BACKOFF))
            .unwrap_or(true)
    }

    pub(crate) fn failed(&self, err: &RepositoryError) {
        if let Ok(mut at) = self.failed_at.lock() {
            if at.is_none() {
                tracing::warn!(
                    error = %orders_domain::error_chain(err),
                    "reads go to the primary: the read pool (DATABASE_READ_URL) failed"
                );
            }
            *at = Some(Instant::now());
        }
    }

    fn answered(&self) {
        if let Ok(mut at) = self.failed_at.lock()
            && at.take().is_some()
        {
            tracing::info!("the read pool (DATABASE_READ_URL) answers again");
        }
    }
}

/// A connection for reads, and whether it came from the read pool.
pub(crate) struct ReadClient {
    pub(crate) client: Object,
    pub(crate) from_reads: bool,
}

/// A read to run on a connection.
type Read<'c, T> = BoxFuture<'c, Result<T, RepositoryError>>;

impl PgOrderRepository {
    /// A connection from the read pool while it answers, else the primary's.
    pub(crate) async fn read_client(&self) -> Result<ReadClient, RepositoryError> {
        if let Some(reads) = self.reads.as_ref().filter(|r| r.worth_trying()) {
            match reads.pool.get().await.map_err(from_pool) {
                Ok(client) => {
                    reads.answered();
                    return Ok(ReadClient {
                        client,
                        from_reads: true,
                    });
                }
                Err(err) => reads.failed(&err),
            }
        }
        Ok(ReadClient {
            client: self.client().await?,
            from_reads: false,
        })
    }

    /// Notes that a read on the read pool failed (after it gave a connection).
    pub(crate) fn read_failed(&self, err: &RepositoryError) {
        if let Some(reads) = &self.reads {
            reads.failed(err);
        }
    }

    /// Runs `read` with `input` on the read pool while it answers; on the
    /// primary when the read pool is unset, down or fails the read, and
    /// also when its answer is one `ask_primary` says a standby behind the
    /// primary may give (an order not there yet).
    pub(crate) async fn read<I: Sync + ?Sized, T>(
        &self,
        input: &I,
        read: impl for<'c> Fn(&'c Object, &'c I) -> Read<'c, T>,
        ask_primary: impl Fn(&T) -> bool,
    ) -> Result<T, RepositoryError> {
        let first = self.read_client().await?;
        if !first.from_reads {
            return read(&first.client, input).await;
        }
        match read(&first.client, input).await {
            Ok(found) if !ask_primary(&found) => return Ok(found),
            Ok(_) => {}
            Err(err) => self.read_failed(&err),
        }
        drop(first);
        read(&self.client().await?, input).await
    }

    /// The order with this uid, read from its rows (tests compare what
    /// was stored field by field with it).
    pub async fn find(&self, uid: &OrderUid) -> Result<Option<Order>, RepositoryError> {
        self.read(uid, |c, uid| Box::pin(find_with(c, uid)), Option::is_none)
            .await
    }
}

#[async_trait]
impl OrderReads for PgOrderRepository {
    async fn find_json(&self, uid: &OrderUid) -> Result<Option<Bytes>, RepositoryError> {
        let span = trace::statement("SELECT", "order_info");
        let found = self
            .read(
                uid,
                |c, uid| Box::pin(find_json_with(c, uid)),
                Option::is_none,
            )
            .instrument(span.clone())
            .await;
        trace::ended(&span, &found);
        found
    }

    fn load_recent(&self, limit: usize) -> OrderChunks {
        crate::warm_up::load_recent(self.clone(), limit)
    }

    async fn list_recent(
        &self,
        query: &OrderQuery,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<Vec<OrderSummary>, RepositoryError> {
        let statement = crate::search::list_orders(query, limit, before.as_ref());
        let span = trace::statement("SELECT", "order_info");
        let rows = self
            .read(&statement, |c, s| Box::pin(query_all(c, s)), |_| false)
            .instrument(span.clone())
            .await;
        trace::ended(&span, &rows);
        let rows = rows?;
        rows.iter().map(summary_from_row).collect()
    }

    /// On the primary: the announcements come from it, and a standby may
    /// not have the orders yet.
    async fn stored_since(
        &self,
        after: EventId,
        through: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredOrder>, RepositoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql::STORED_SINCE)
            .await
            .map_err(from_pg)?;
        let through = through.map_or(i64::MAX, EventId::get);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&after.get(), &through, &limit])
            .await
            .map_err(from_pg)?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = |e| corrupt("order row", e);
            let summary = summary_from_row(row)?;
            let json = match row.try_get::<_, Option<&[u8]>>("document").map_err(read)? {
                Some(json) => Bytes::copy_from_slice(json),
                // Stored before documents were kept: from its rows.
                None => find_with(&client, &summary.order_uid)
                    .await?
                    .map(|order| Bytes::from(order.to_json()))
                    .ok_or_else(|| corrupt("order", "its rows vanished"))?,
            };
            stored.push(StoredOrder {
                id: EventId::new(row.try_get("event_id").map_err(read)?),
                summary,
                json,
            });
        }
        Ok(stored)
    }

    /// On the primary: an erasure commits there, and the replica asks
    /// because it may have missed the announcement.
    async fn erased_orders(&self) -> Result<Vec<OrderUid>, RepositoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql::ERASED_ORDERS)
            .await
            .map_err(from_pg)?;
        let rows = client.query(&statement, &[]).await.map_err(from_pg)?;
        rows.iter()
            .map(|row| {
                let uid: &str = row.try_get(0).map_err(|e| corrupt("order row", e))?;
                OrderUid::parse(uid).map_err(|e| corrupt("order uid", e))
            })
            .collect()
    }
}

/// The order with this uid, read from its rows on `client`.
pub(crate) async fn find_with(
    client: &Object,
    uid: &OrderUid,
) -> Result<Option<Order>, RepositoryError> {
    let (find_order, find_items) = tokio::try_join!(
        client.prepare_cached(&sql::FIND_ORDER),
        client.prepare_cached(&sql::FIND_ITEMS)
    )
    .map_err(from_pg)?;
    // Both queries go out before either answer comes back (pipelined).
    let uid = uid.as_str();
    let params: [&(dyn ToSql + Sync); 1] = [&uid];
    let (row, item_rows) = tokio::try_join!(
        client.query_opt(&find_order, &params),
        client.query(&find_items, &params)
    )
    .map_err(from_pg)?;
    let Some(row) = row else { return Ok(None) };
    let items = item_rows
        .iter()
        .map(read_item)
        .collect::<Result<Vec<_>, _>>()?;
    read_order(&row, items).map(Some)
}

/// The order's document, from its one row; from all its rows for an order
/// stored without one.
async fn find_json_with(client: &Object, uid: &OrderUid) -> Result<Option<Bytes>, RepositoryError> {
    let statement = client
        .prepare_cached(sql::FIND_DOCUMENT)
        .await
        .map_err(from_pg)?;
    let Some(row) = client
        .query_opt(&statement, &[&uid.as_str()])
        .await
        .map_err(from_pg)?
    else {
        return Ok(None);
    };
    match row
        .try_get::<_, Option<&[u8]>>(0)
        .map_err(|e| corrupt("order row", e))?
    {
        Some(json) => Ok(Some(Bytes::copy_from_slice(json))),
        None => Ok(find_with(client, uid)
            .await?
            .map(|order| Bytes::from(order.to_json()))),
    }
}

/// The orders with these uids, read from their rows (in any order; a uid
/// with no order is left out).
pub(crate) async fn orders_of(
    client: &impl GenericClient,
    uids: &[String],
) -> Result<Vec<Order>, RepositoryError> {
    let (orders, items_of) = tokio::try_join!(
        client.prepare_cached(&sql::ORDERS_OF),
        client.prepare_cached(&sql::ITEMS_OF)
    )
    .map_err(from_pg)?;
    let params: [&(dyn ToSql + Sync); 1] = [&uids];
    let (rows, item_rows) = tokio::try_join!(
        client.query(&orders, &params),
        client.query(&items_of, &params)
    )
    .map_err(from_pg)?;
    let mut items = ItemsByOrder::default();
    for row in &item_rows {
        items.add(row)?;
    }
    rows.iter()
        .map(|row| {
            let uid: &str = row.try_get(0).map_err(|e| corrupt("order row", e))?;
            read_order(row, items.take(uid))
        })
        .collect()
}

/// Items read for many orders at once, by order, each with its position
/// (rows of `order_uid, position, ITEMS fields...`): sorting per order in
/// memory is cheaper than a sort of every item by the database.
#[derive(Default)]
struct ItemsByOrder(HashMap<String, Vec<(i32, Item)>>);

impl ItemsByOrder {
    fn add(&mut self, row: &Row) -> Result<(), RepositoryError> {
        let uid: String = row.try_get(0).map_err(|e| corrupt("item row", e))?;
        let position: i32 = row.try_get(1).map_err(|e| corrupt("item row", e))?;
        self.0
            .entry(uid)
            .or_default()
            .push((position, read_item(row)?));
        Ok(())
    }

    /// The order's items, in their order.
    fn take(&mut self, uid: &str) -> Vec<Item> {
        let mut own = self.0.remove(uid).unwrap_or_default();
        own.sort_unstable_by_key(|(position, _)| *position);
        own.into_iter().map(|(_, item)| item).collect()
    }
}

/// Runs a built statement on `client`.
pub(crate) async fn query_all(
    client: &Object,
    statement: &crate::search::Statement,
) -> Result<Vec<Row>, RepositoryError> {
    let prepared = client
        .prepare_cached(&statement.sql)
        .await
        .map_err(from_pg)?;
    client
        .query(&prepared, &statement.params())
        .await
        .map_err(from_pg)
}

/// A line of the list: uid, date_created, micros, amount, currency.
fn summary_from_row(row: &Row) -> Result<OrderSummary, RepositoryError> {
    let read = |e: tokio_postgres::Error| corrupt("list row", e);
    let uid: String = row.try_get(0).map_err(read)?;
    let order_uid = OrderUid::try_from(uid).map_err(|e| corrupt("order_uid", e))?;
    Ok(OrderSummary {
        cursor: OrderCursor {
            created_micros: row.try_get(2).map_err(read)?,
            order_uid: order_uid.clone(),
        },
        order_uid,
        date_created: row.try_get(1).map_err(read)?,
        amount: row.try_get(3).map_err(read)?,
        currency: row.try_get(4).map_err(read)?,
    })
}

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Pool};
use futures::{SinkExt, StreamExt, TryStreamExt, pin_mut};
use orders_domain::{
    EventId, Item, Order, OrderChunks, OrderCursor, OrderJson, OrderQuery, OrderRepository,
    OrderSummary, OrderUid, Payload, RejectReason, RejectedId, RejectedMessage, RejectedSummary,
    Rejection, RepositoryError, SaveOutcome, StoredOrder,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::columns::UnnestColumns;
use crate::errors::{corrupt, from_pg, from_pool};
use crate::rows::{read_item, read_order};
use crate::schema::{DELIVERY, ITEMS, ORDER_INFO, PAYMENT, TABLES};

/// Inserts a batch of orders into the four tables in ONE statement, so in
/// one transaction and one round trip. Each column comes as an array and is
/// turned back into rows by `UNNEST`. Uids already stored are skipped by `ON
/// CONFLICT DO NOTHING`; the other tables take only the rows whose uid
/// `info` returned, so a skipped order adds nothing anywhere. The uids in a
/// batch must be distinct (the caller sees to it). Every parameter is cast
/// so its type does not depend on inference. Built from `schema.rs`:
///
/// ```sql
/// WITH info AS (INSERT INTO order_info (order_uid, ...) SELECT u.* FROM UNNEST($1::text[], ...)
///               AS u(order_uid, ...) ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid),
///      t1 AS (INSERT INTO delivery (order_uid, ...) SELECT u.* FROM UNNEST($13::text[], ...)
///               AS u(order_uid, ...) JOIN info USING (order_uid)), ...
/// SELECT order_uid FROM info
/// ```
static INSERT_ORDERS: LazyLock<String> = LazyLock::new(|| {
    let mut next = 0;
    insert_all(|table| {
        let params: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                next += 1;
                format!("${next}::{}[]", c.sql_type.as_sql())
            })
            .collect();
        (
            "u.*".to_owned(),
            format!(
                "UNNEST({}) AS u({})",
                params.join(", "),
                table.column_list()
            ),
        )
    })
});

/// One statement that inserts into the four tables: `order_info` first,
/// skipping uids stored already, then each other table's rows of the uids
/// it took, each table's rows from `source(table)` (a select list and a
/// FROM item). Returns the uids taken.
fn insert_all(mut source: impl FnMut(&crate::schema::Table) -> (String, String)) -> String {
    let [info, parts @ ..] = TABLES;
    let (select, from) = source(info);
    let mut sql = format!(
        "WITH info AS (INSERT INTO {} ({}) SELECT {select} FROM {from} \
         ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid)",
        info.name,
        info.column_list(),
    );
    for (n, part) in parts.iter().enumerate() {
        let (select, from) = source(part);
        sql.push_str(&format!(
            ", t{n} AS (INSERT INTO {} ({}) SELECT {select} FROM {from} JOIN info USING (order_uid))",
            part.name,
            part.column_list(),
        ));
    }
    sql.push_str(" SELECT order_uid FROM info");
    sql
}

/// The staging tables binary COPY fills, one per table, private to the
/// connection and emptied at each commit. They hold the columns COPY
/// writes and nothing else (not `order_info.event_id`, which the insert
/// from them takes from its sequence).
static CREATE_STAGING: LazyLock<String> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|t| {
            format!(
                "CREATE TEMP TABLE IF NOT EXISTS stage_{0} WITH (toast_tuple_target = 8160) \
                 ON COMMIT DELETE ROWS AS SELECT {1} FROM {0} WITH NO DATA;",
                t.name,
                t.column_list()
            )
        })
        .collect()
});

/// [`INSERT_ORDERS`] from the staging tables instead of arrays.
static INSERT_STAGED: LazyLock<String> = LazyLock::new(|| {
    insert_all(|table| {
        let select = table
            .columns
            .iter()
            .map(|c| format!("s.{}", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        (select, format!("stage_{} s", table.name))
    })
});

/// An order's own columns from `order_info`, `delivery` and `payment`,
/// named like its fields, over the aliases `o`, `d` and `p`.
static ORDER_FIELDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, {}, {}",
        ORDER_INFO.field_select(),
        DELIVERY.field_select(),
        PAYMENT.field_select()
    )
});

/// The joins that put an order's one-row parts beside it.
const ORDER_JOINS: &str = "JOIN delivery d USING (order_uid) JOIN payment p USING (order_uid)";

static FIND_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM order_info o {ORDER_JOINS} WHERE o.order_uid = $1",
        *ORDER_FIELDS
    )
});

static FIND_ITEMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM items i WHERE i.order_uid = $1 ORDER BY i.position",
        ITEMS.field_select()
    )
});

/// One order's document: one row of one table, by its primary key.
const FIND_DOCUMENT: &str = "SELECT document FROM order_info WHERE order_uid = $1";

/// Where the newest `$1 + 1` orders end: the oldest of them, by the
/// index `order_info_newest` alone (an index-only scan where the table is
/// vacuumed). No row: there are no more orders than that.
const NEWEST_CUTOFF: &str = "SELECT created_at, order_uid FROM order_info \
     ORDER BY created_at DESC, order_uid DESC OFFSET $1 LIMIT 1";

/// Every order's document, read straight through the table (in no order:
/// a sequential scan, where the index's order would read the table's pages
/// at random, 2.3x slower for a million orders).
const ALL_DOCUMENTS: &str = "SELECT order_uid, document FROM order_info";

/// The documents of the orders at or after a cutoff ($1, $2). The planner
/// picks the index for a few, a sequential scan for most: the statement is
/// planned with the cutoff's values.
const DOCUMENTS_SINCE: &str = "SELECT order_uid, document FROM order_info \
     WHERE (created_at, order_uid) >= ($1, $2)";

/// The orders whose uids are in $1, with their own fields.
static ORDERS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM order_info o {ORDER_JOINS} WHERE o.order_uid = ANY($1)",
        *ORDER_FIELDS
    )
});

/// Writes the documents of orders stored before they were kept (V5):
/// only where none is yet, so a document is never replaced.
const BACKFILL_DOCUMENTS: &str = "UPDATE order_info o SET document = d.document \
     FROM UNNEST($1::text[], $2::bytea[]) AS d(order_uid, document) \
     WHERE o.order_uid = d.order_uid AND o.document IS NULL";

/// The orders after an event id ($1), through another ($2), lowest id
/// first, at most $3, with their ids, by the index `order_info_event`.
static STORED_SINCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, o.event_id FROM order_info o {ORDER_JOINS} \
         WHERE o.event_id > $1 AND o.event_id <= $2 ORDER BY o.event_id LIMIT $3",
        *ORDER_FIELDS
    )
});

/// The items of the orders whose uids are in $1, each with its position.
static ITEMS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT i.order_uid, i.position, {} FROM items i WHERE i.order_uid = ANY($1)",
        ITEMS.field_select()
    )
});

/// Whether our commits are confirmed by a synchronous standby: the primary
/// names synchronous standbys, this session's commits wait for them
/// (`synchronous_commit` from `remote_write` up), and at least one is
/// streaming as `sync` (or `quorum`, for `ANY n (...)`). Standbys whose
/// details the role may not see (without `pg_read_all_stats`) are
/// counted apart.
const SYNC_STANDBY: &str = "\
SELECT current_setting('synchronous_standby_names') <> ''
         AND current_setting('synchronous_commit') IN ('on', 'remote_write', 'remote_apply'),
       count(*) FILTER (WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')),
       count(*) FILTER (WHERE sync_state IS NULL)
FROM pg_stat_replication";

const INSERT_REJECTION: &str = "\
INSERT INTO rejected_messages (reason, detail, order_uid, subject, stream, stream_sequence, headers, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT ON CONSTRAINT rejected_once DO NOTHING";

/// How a batch's rows reach the tables.
///
/// `orders-bench --only ingest` measures both alone, on the same orders.
/// With two batches in flight (the service's default) COPY into staging
/// was 1.25x, 1.08x, 1.06x, 0.88x and 1.07x UNNEST in five runs on
/// 2026-11-26 (median 1.07x; the machine was noisy), and the service used
/// COPY. Since each order also stores its document, staging copies every
/// document twice (into the staging table, then into `order_info`), and
/// UNNEST was ahead in four runs of four, interleaved with and without
/// documents: 1.22x, 1.07x, 1.07x, 1.28x. The service uses UNNEST; COPY
/// stays for that comparison row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InsertMethod {
    /// One statement: every column as an array, `UNNEST`ed into the four
    /// tables in data-modifying CTEs. One round trip.
    #[default]
    Unnest,
    /// Binary COPY into staging tables, then one `INSERT ... SELECT ... ON
    /// CONFLICT` from them, in one transaction.
    CopyStaging,
}

/// [`OrderRepository`] over deadpool-postgres pools: the primary's for
/// writes and pings, and optionally another for reads (a standby). Statements are
/// prepared once per connection and cached by the pool's client wrapper.
#[derive(Clone)]
pub struct PgOrderRepository {
    pool: Pool,
    insert: InsertMethod,
    /// Where lookups, listings and the warm-up go first, if not to the
    /// primary ([`PgOrderRepository::with_reads`]).
    reads: Option<Reads>,
    /// Whether the warning that standbys are hidden from this role was
    /// logged: once is enough, the health watcher asks every second.
    hidden_standbys_logged: Arc<AtomicBool>,
}

/// The pool for reads, and when it last failed: for a while after a
/// failure reads go straight to the primary, so a standby that is down
/// does not cost every lookup the pool's timeout.
#[derive(Clone)]
struct Reads {
    pool: Pool,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

/// How long reads skip a read pool that failed.
const READS_BACKOFF: Duration = Duration::from_secs(5);

impl Reads {
    fn worth_trying(&self) -> bool {
        self.failed_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= READS_BACKOFF))
            .unwrap_or(true)
    }

    fn failed(&self, err: &RepositoryError) {
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
struct ReadClient {
    client: deadpool_postgres::Object,
    from_reads: bool,
}

impl std::fmt::Debug for PgOrderRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderRepository")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgOrderRepository {
    /// A repository on the primary's `pool` ([`connect_pool`](crate::connect_pool)).
    pub fn new(pool: Pool) -> Self {
        Self::with_insert(pool, InsertMethod::default())
    }

    /// Inserting batches by `insert` (the bench measures both).
    pub fn with_insert(pool: Pool, insert: InsertMethod) -> Self {
        Self {
            pool,
            insert,
            reads: None,
            hidden_standbys_logged: Arc::default(),
        }
    }

    /// Sends `find`, `list_recent` and `load_recent` to `reads` first
    /// ([`connect_read_pool`](crate::connect_read_pool): a standby). A
    /// standby may lag, so an order it does not have is looked for on the
    /// primary; when it fails, reads go to the primary (and skip it for
    /// a few seconds). Writes, pings and the duplicate check of `save`
    /// stay on the primary.
    pub fn with_reads(mut self, reads: Pool) -> Self {
        self.reads = Some(Reads {
            pool: reads,
            failed_at: Arc::default(),
        });
        self
    }

    /// The primary's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes both pools: no new connection, idle ones dropped.
    pub fn close(&self) {
        self.pool.close();
        if let Some(reads) = &self.reads {
            reads.pool.close();
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(from_pool)
    }

    /// A connection from the read pool while it answers, else the primary's.
    async fn read_client(&self) -> Result<ReadClient, RepositoryError> {
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
    fn read_failed(&self, err: &RepositoryError) {
        if let Some(reads) = &self.reads {
            reads.failed(err);
        }
    }

    /// Runs `statement` on the read pool while it answers, and on the
    /// primary when it does not (or fails the statement).
    async fn read_rows(
        &self,
        statement: &crate::search::Statement,
    ) -> Result<Vec<tokio_postgres::Row>, RepositoryError> {
        let read = self.read_client().await?;
        if read.from_reads {
            match query_all(&read.client, statement).await {
                Ok(rows) => return Ok(rows),
                Err(err) => self.read_failed(&err),
            }
            drop(read);
            return query_all(&self.client().await?, statement).await;
        }
        query_all(&read.client, statement).await
    }
}

/// What inserting a batch did: the uids it stored, and the orders the
/// database refused, by their place in the batch, with why.
#[derive(Debug, Default)]
struct Inserted {
    stored: HashSet<String>,
    refused: HashMap<usize, String>,
}

/// Runs the batch INSERT for `orders` (distinct uids) on `client`.
async fn insert(
    client: &impl GenericClient,
    orders: &[&Order],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let columns = UnnestColumns::of(orders.iter().copied());
    let statement = client.prepare_cached(&INSERT_ORDERS).await?;
    let rows = client.query(&statement, &columns.params()).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Runs the batch insert for `orders` (distinct uids) by binary COPY into
/// the staging tables, inside `tx`.
async fn insert_copy(
    tx: &deadpool_postgres::Transaction<'_>,
    orders: &[&Order],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    tx.batch_execute(&CREATE_STAGING).await?;
    let data = crate::copy::CopyData::of(orders.iter().copied()).unwrap_or_else(|mismatch| {
        // The order's shape and schema.rs disagree: a build that cannot
        // have passed its tests.
        panic!("{mismatch}")
    });
    for (table, _, bytes) in data.into_parts() {
        let statement = format!(
            "COPY stage_{} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            table.column_list()
        );
        let sink = tx.copy_in(&statement).await?;
        futures::pin_mut!(sink);
        sink.send(bytes).await?;
        sink.finish().await?;
    }
    let statement = tx.prepare_cached(&INSERT_STAGED).await?;
    let rows = tx.query(&statement, &[]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Inserts `orders` by `method` inside `tx`.
async fn insert_in(
    tx: &deadpool_postgres::Transaction<'_>,
    orders: &[&Order],
    method: InsertMethod,
) -> Result<HashSet<String>, tokio_postgres::Error> {
    match method {
        InsertMethod::Unnest => insert(tx, orders).await,
        InsertMethod::CopyStaging => insert_copy(tx, orders).await,
    }
}

/// Inserts what the database takes of `orders` inside `tx`, finding the
/// orders it refuses by halves: each attempt runs under a savepoint, so a
/// refused attempt leaves nothing behind, and a batch with one bad order
/// costs about 2 log2(n) statements, the good orders still stored in large
/// inserts.
async fn insert_isolating(
    tx: &mut deadpool_postgres::Transaction<'_>,
    orders: &[&Order],
    method: InsertMethod,
    inserted: &mut Inserted,
) -> Result<(), RepositoryError> {
    let mut pending = vec![(0, orders)];
    while let Some((at, part)) = pending.pop() {
        let savepoint = tx.savepoint("isolate").await.map_err(from_pg)?;
        match insert_in(&savepoint, part, method).await.map_err(from_pg) {
            Ok(stored) => {
                savepoint.commit().await.map_err(from_pg)?;
                inserted.stored.extend(stored);
            }
            Err(RepositoryError::Refused(why)) => {
                savepoint.rollback().await.map_err(from_pg)?;
                if let [_] = part {
                    inserted.refused.insert(at, why);
                } else {
                    let half = part.len() / 2;
                    pending.push((at + half, &part[half..]));
                    pending.push((at, &part[..half]));
                }
            }
            Err(transient) => return Err(transient),
        }
    }
    Ok(())
}

/// Items read for many orders at once, by order, each with its position
/// (rows of `order_uid, position, ITEMS fields...`): sorting per order in
/// memory is cheaper than a sort of every item by the database.
#[derive(Default)]
struct ItemsByOrder(HashMap<String, Vec<(i32, Item)>>);

impl ItemsByOrder {
    fn add(&mut self, row: &tokio_postgres::Row) -> Result<(), RepositoryError> {
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

/// Orders per chunk of the warm-up stream.
const LOAD_CHUNK: usize = 4_096;

/// Chunks read ahead of the consumer: bounds the memory a slow consumer costs.
const LOAD_CHUNKS_AHEAD: usize = 4;

type ChunkSender = futures::channel::mpsc::Sender<Result<Vec<OrderJson>, RepositoryError>>;

/// Sends the newest `limit` orders' documents to `sender` in chunks, all
/// read in ONE snapshot (a repeatable-read transaction on `reads`):
/// which orders are the newest `limit` is decided first, by the index,
/// then their documents are read in one pass over the table. Orders stored
/// before documents were kept are read from their rows afterwards, in the
/// same snapshot, and their documents written on the `primary` for the
/// next time. Stops early, without an error, when the receiver is dropped.
async fn stream_recent(
    mut reads: deadpool_postgres::Object,
    primary: &Pool,
    limit: usize,
    sender: &mut ChunkSender,
) -> Result<(), RepositoryError> {
    if limit == 0 {
        return Ok(());
    }
    let offset = i64::try_from(limit - 1).unwrap_or(i64::MAX);
    let tx = reads
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(from_pg)?;
    let cutoff = tx
        .query_opt(NEWEST_CUTOFF, &[&offset])
        .await
        .map_err(from_pg)?;
    let rows = match &cutoff {
        Some(row) => {
            let at: time::OffsetDateTime = row.try_get(0).map_err(|e| corrupt("order row", e))?;
            let uid: &str = row.try_get(1).map_err(|e| corrupt("order row", e))?;
            let params: [&(dyn ToSql + Sync); 2] = [&at, &uid];
            tx.query_raw(DOCUMENTS_SINCE, params).await
        }
        None => {
            tx.query_raw(ALL_DOCUMENTS, std::iter::empty::<&(dyn ToSql + Sync)>())
                .await
        }
    }
    .map_err(from_pg)?;
    pin_mut!(rows);
    let mut chunk = Vec::with_capacity(LOAD_CHUNK);
    let mut without_document = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(from_pg)? {
        let read = |e| corrupt("order row", e);
        let uid: &str = row.try_get(0).map_err(read)?;
        let Some(json) = row.try_get::<_, Option<&[u8]>>(1).map_err(read)? else {
            without_document.push(uid.to_owned());
            continue;
        };
        let uid = OrderUid::try_from(uid.to_owned())
            .map_err(|e| corrupt("order row", format!("order_uid {uid:?}: {e}")))?;
        chunk.push(OrderJson {
            uid,
            json: Bytes::copy_from_slice(json),
        });
        if chunk.len() == LOAD_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() && sender.send(Ok(chunk)).await.is_err() {
        return Ok(());
    }
    for uids in without_document.chunks(LOAD_CHUNK) {
        let orders = orders_of(&tx, uids).await?;
        let documents: Vec<OrderJson> = orders.iter().map(OrderJson::of).collect();
        backfill(primary, &documents).await;
        if sender.send(Ok(documents)).await.is_err() {
            return Ok(());
        }
    }
    tx.commit().await.map_err(from_pg)?;
    Ok(())
}

/// The orders with these uids, read from their rows (in any order; a uid
/// with no order is left out).
async fn orders_of(
    client: &impl GenericClient,
    uids: &[String],
) -> Result<Vec<Order>, RepositoryError> {
    let (orders, items_of) = tokio::try_join!(
        client.prepare_cached(&ORDERS_OF),
        client.prepare_cached(&ITEMS_OF)
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

/// Writes the documents of orders stored without one, on the primary. Best
/// effort: the warm-up has what it needs either way, and the next one
/// tries again.
async fn backfill(primary: &Pool, documents: &[OrderJson]) {
    let uids: Vec<&str> = documents.iter().map(|d| d.uid.as_str()).collect();
    let jsons: Vec<&[u8]> = documents.iter().map(|d| d.json.as_ref()).collect();
    let written = async {
        let client = primary.get().await.map_err(from_pool)?;
        client
            .execute(BACKFILL_DOCUMENTS, &[&uids, &jsons])
            .await
            .map_err(from_pg)
    }
    .await;
    match written {
        Ok(rows) => tracing::info!(rows, "wrote the documents of orders stored without one"),
        Err(err) => tracing::warn!(
            error = %orders_domain::error_chain(&err),
            "could not write the documents of orders stored without one; the next warm-up tries again"
        ),
    }
}

#[async_trait]
impl OrderRepository for PgOrderRepository {
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    async fn save(&self, orders: &[Order]) -> Result<Vec<SaveOutcome>, RepositoryError> {
        // A uid repeated within the batch is inserted once (its first
        // occurrence) and the rest are judged against that one.
        let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(orders.len());
        let mut firsts: Vec<&Order> = Vec::with_capacity(orders.len());
        let mut place_of_first: Vec<usize> = Vec::with_capacity(orders.len());
        for (i, order) in orders.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                first_of.entry(order.order_uid.as_str())
            {
                slot.insert(i);
                firsts.push(order);
                place_of_first.push(i);
            }
        }

        let mut client = self.client().await?;
        // The common case in one transaction; only if the database refuses
        // some order, the batch again under savepoints to find which.
        let first_try = match self.insert {
            InsertMethod::Unnest => insert(&client, &firsts).await,
            InsertMethod::CopyStaging => {
                let tx = client.transaction().await.map_err(from_pg)?;
                match insert_copy(&tx, &firsts).await {
                    Ok(stored) => tx.commit().await.map(|()| stored),
                    Err(err) => Err(err),
                }
            }
        };
        let inserted = match first_try.map_err(from_pg) {
            Ok(stored) => Inserted {
                stored,
                refused: HashMap::new(),
            },
            Err(RepositoryError::Refused(why)) => {
                tracing::warn!(%why, "the database refused an order of the batch; finding which");
                let mut inserted = Inserted::default();
                let mut tx = client.transaction().await.map_err(from_pg)?;
                insert_isolating(&mut tx, &firsts, self.insert, &mut inserted).await?;
                tx.commit().await.map_err(from_pg)?;
                inserted
            }
            Err(transient) => return Err(transient),
        };
        drop(client);
        let refused: HashMap<usize, String> = inserted
            .refused
            .into_iter()
            .map(|(k, why)| (place_of_first[k], why))
            .collect();

        // Orders stored before this batch, read once per uid that needs it.
        let mut before: HashMap<&str, Order> = HashMap::new();
        let mut outcomes = Vec::with_capacity(orders.len());
        for (i, order) in orders.iter().enumerate() {
            let uid = order.order_uid.as_str();
            let first = first_of.get(uid).copied().unwrap_or(i);
            if let Some(why) = refused.get(&first) {
                outcomes.push(SaveOutcome::Refused(why.clone()));
                continue;
            }
            let stored = if inserted.stored.contains(uid) {
                if first == i {
                    outcomes.push(SaveOutcome::Stored);
                    continue;
                }
                &orders[first]
            } else {
                if !before.contains_key(uid) {
                    // The uid was taken before: the same order again, or another?
                    // On the primary: a standby may not have it yet.
                    let client = self.client().await?;
                    let Some(found) = find_with(&client, &order.order_uid).await? else {
                        // Deleted between our insert and this read: rare; retry.
                        return Err(RepositoryError::Unavailable(
                            "order vanished while checking for a duplicate".into(),
                        ));
                    };
                    before.insert(uid, found);
                }
                &before[uid]
            };
            outcomes.push(if stored == order {
                SaveOutcome::Duplicate
            } else {
                SaveOutcome::Conflict
            });
        }
        Ok(outcomes)
    }

    async fn find(&self, uid: &OrderUid) -> Result<Option<Order>, RepositoryError> {
        let read = self.read_client().await?;
        if read.from_reads {
            match find_with(&read.client, uid).await {
                Ok(Some(order)) => return Ok(Some(order)),
                // A standby behind the primary may not have it yet.
                Ok(None) => {}
                Err(err) => self.read_failed(&err),
            }
            drop(read);
            return find_with(&self.client().await?, uid).await;
        }
        find_with(&read.client, uid).await
    }

    /// The stored document; for an order stored before documents were
    /// kept, its rows, serialized here.
    async fn find_json(&self, uid: &OrderUid) -> Result<Option<Bytes>, RepositoryError> {
        let read = self.read_client().await?;
        if read.from_reads {
            match find_json_with(&read.client, uid).await {
                Ok(Some(json)) => return Ok(Some(json)),
                // A standby behind the primary may not have it yet.
                Ok(None) => {}
                Err(err) => self.read_failed(&err),
            }
            drop(read);
            return find_json_with(&self.client().await?, uid).await;
        }
        find_json_with(&read.client, uid).await
    }

    /// Read by a task of its own, so the caller caches one chunk while the
    /// next is read.
    fn load_recent(&self, limit: usize) -> OrderChunks {
        let repo = self.clone();
        let (mut sender, receiver) = futures::channel::mpsc::channel(LOAD_CHUNKS_AHEAD);
        tokio::spawn(async move {
            let streamed = match repo.read_client().await {
                Ok(read) => {
                    let from_reads = read.from_reads;
                    let streamed = stream_recent(read.client, &repo.pool, limit, &mut sender).await;
                    if let (true, Err(err)) = (from_reads, &streamed) {
                        // The warm-up is retried; the next try reads the primary.
                        repo.read_failed(err);
                    }
                    streamed
                }
                Err(err) => Err(err),
            };
            if let Err(err) = streamed {
                let _ = sender.send(Err(err)).await;
            }
        });
        receiver.boxed()
    }

    async fn list_recent(
        &self,
        query: &OrderQuery,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<Vec<OrderSummary>, RepositoryError> {
        let statement = crate::search::list_orders(query, limit, before.as_ref());
        let rows = self.read_rows(&statement).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn list_rejected(
        &self,
        reason: Option<RejectReason>,
        limit: usize,
        before: Option<RejectedId>,
    ) -> Result<Vec<RejectedSummary>, RepositoryError> {
        let statement = crate::search::list_rejected(reason, limit, before);
        let rows = self.read_rows(&statement).await?;
        rows.iter().map(rejected_from_row).collect()
    }

    async fn find_rejected(
        &self,
        id: RejectedId,
    ) -> Result<Option<RejectedMessage>, RepositoryError> {
        let rows = self.read_rows(&crate::search::find_rejected(id)).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let read = |e: tokio_postgres::Error| corrupt("rejected message", e);
        let payload: Vec<u8> = row.try_get("payload").map_err(read)?;
        Ok(Some(RejectedMessage {
            summary: rejected_from_row(row)?,
            subject: row.try_get("subject").map_err(read)?,
            stream: row.try_get("stream").map_err(read)?,
            stream_sequence: row.try_get("stream_sequence").map_err(read)?,
            headers: row.try_get("headers").map_err(read)?,
            payload: Payload(payload.into()),
        }))
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
        let (orders, items_of) = tokio::try_join!(
            client.prepare_cached(&STORED_SINCE),
            client.prepare_cached(&ITEMS_OF)
        )
        .map_err(from_pg)?;
        let through = through.map_or(i64::MAX, EventId::get);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&orders, &[&after.get(), &through, &limit])
            .await
            .map_err(from_pg)?;
        let uids = rows
            .iter()
            .map(|row| row.try_get::<_, &str>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt("order row", e))?;
        let mut items = ItemsByOrder::default();
        for row in client.query(&items_of, &[&uids]).await.map_err(from_pg)? {
            items.add(&row)?;
        }
        rows.iter()
            .map(|row| {
                let id: i64 = row
                    .try_get("event_id")
                    .map_err(|e| corrupt("order row", e))?;
                let uid: &str = row.try_get(0).map_err(|e| corrupt("order row", e))?;
                Ok(StoredOrder {
                    id: EventId::new(id),
                    order: read_order(row, items.take(uid))?,
                })
            })
            .collect()
    }

    async fn record_rejection(&self, r: &Rejection) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(INSERT_REJECTION)
            .await
            .map_err(from_pg)?;
        let sequence = r.stream_sequence.and_then(|s| i64::try_from(s).ok());
        client
            .execute(
                &statement,
                &[
                    &r.reason.as_str(),
                    &r.detail,
                    &r.order_uid,
                    &r.subject,
                    &r.stream,
                    &sequence,
                    &r.headers,
                    &r.payload.as_ref(),
                ],
            )
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(from_pg)?;
        Ok(())
    }

    async fn has_sync_standby(&self) -> Result<bool, RepositoryError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(SYNC_STANDBY).await.map_err(from_pg)?;
        let row = client.query_one(&statement, &[]).await.map_err(from_pg)?;
        let read = |e| corrupt("pg_stat_replication row", e);
        let commits_wait: bool = row.try_get(0).map_err(read)?;
        let synchronous: i64 = row.try_get(1).map_err(read)?;
        let hidden: i64 = row.try_get(2).map_err(read)?;
        if commits_wait
            && synchronous == 0
            && hidden > 0
            && !self.hidden_standbys_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                standbys = hidden,
                "cannot see whether the standbys are synchronous: the database role needs \
                 pg_read_all_stats (GRANT pg_monitor TO ...); counted as no synchronous standby"
            );
        }
        Ok(commits_wait && synchronous > 0)
    }
}

/// The order with this uid, read on `client`.
async fn find_with(
    client: &deadpool_postgres::Object,
    uid: &OrderUid,
) -> Result<Option<Order>, RepositoryError> {
    let (find_order, find_items) = tokio::try_join!(
        client.prepare_cached(&FIND_ORDER),
        client.prepare_cached(&FIND_ITEMS)
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
async fn find_json_with(
    client: &deadpool_postgres::Object,
    uid: &OrderUid,
) -> Result<Option<Bytes>, RepositoryError> {
    let statement = client
        .prepare_cached(FIND_DOCUMENT)
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

/// Runs a built statement on `client`.
async fn query_all(
    client: &deadpool_postgres::Object,
    statement: &crate::search::Statement,
) -> Result<Vec<tokio_postgres::Row>, RepositoryError> {
    let prepared = client
        .prepare_cached(&statement.sql)
        .await
        .map_err(from_pg)?;
    client
        .query(&prepared, &statement.params())
        .await
        .map_err(from_pg)
}

/// A line of the rejected messages' list (`search::REJECTED_SUMMARY`).
fn rejected_from_row(row: &tokio_postgres::Row) -> Result<RejectedSummary, RepositoryError> {
    let read = |e: tokio_postgres::Error| corrupt("rejected message", e);
    let id: i64 = row.try_get("id").map_err(read)?;
    let reason: &str = row.try_get("reason").map_err(read)?;
    Ok(RejectedSummary {
        id: RejectedId::new(id).map_err(|e| corrupt("rejected message id", e))?,
        received_at: row.try_get("received_at").map_err(read)?,
        reason: RejectReason::from_name(reason)
            .ok_or_else(|| corrupt("rejected message reason", reason))?,
        detail: row.try_get("detail").map_err(read)?,
        order_uid: row.try_get("order_uid").map_err(read)?,
        size: row.try_get("size").map_err(read)?,
        replayed_at: row.try_get("replayed_at").map_err(read)?,
    })
}

/// A line of the list: uid, date_created, micros, amount, currency.
fn summary_from_row(row: &tokio_postgres::Row) -> Result<OrderSummary, RepositoryError> {
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

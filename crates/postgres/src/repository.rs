use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use futures::{SinkExt, StreamExt, TryStreamExt, pin_mut};
use orders_domain::{
    Item, Order, OrderChunks, OrderCursor, OrderRepository, OrderSummary, OrderUid, Rejection,
    RepositoryError, SaveOutcome,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::errors::{from_pg, from_pool};
use crate::rows::{ITEM_COLUMNS, ORDER_COLUMNS, item_from_row, order_from_row, summary_from_row};

/// Inserts a batch of orders into the four tables in ONE statement, so in
/// one transaction and one round trip. Each column comes as an array and is
/// turned back into rows by `UNNEST`. Uids already stored are skipped by `ON
/// CONFLICT DO NOTHING`; the other tables take only the rows whose uid
/// `info` returned, so a skipped order adds nothing anywhere. The uids in a
/// batch must be distinct (the caller sees to it). Every parameter is cast
/// so its type does not depend on inference.
const INSERT_ORDERS: &str = "\
WITH info AS (
    INSERT INTO order_info (order_uid, track_number, entry, locale, internal_signature,
        customer_id, delivery_service, shardkey, sm_id, date_created, created_at, oof_shard)
    SELECT u.order_uid, u.track_number, u.entry, u.locale, u.internal_signature,
        u.customer_id, u.delivery_service, u.shardkey, u.sm_id, u.date_created,
        u.date_created::timestamptz, u.oof_shard
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[])
        AS u(order_uid, track_number, entry, locale, internal_signature, customer_id,
            delivery_service, shardkey, sm_id, date_created, oof_shard)
    ON CONFLICT (order_uid) DO NOTHING
    RETURNING order_uid
), d AS (
    INSERT INTO delivery (order_uid, name, phone, zip, city, address, region, email)
    SELECT u.* FROM UNNEST($1::text[], $12::text[], $13::text[], $14::text[], $15::text[],
        $16::text[], $17::text[], $18::text[])
        AS u(order_uid, name, phone, zip, city, address, region, email)
    JOIN info USING (order_uid)
), p AS (
    INSERT INTO payment (order_uid, transaction, request_id, currency, provider, amount,
        payment_dt, bank, delivery_cost, goods_total, custom_fee)
    SELECT u.* FROM UNNEST($1::text[], $19::text[], $20::text[], $21::text[], $22::text[],
        $23::bigint[], $24::bigint[], $25::text[], $26::bigint[], $27::bigint[], $28::bigint[])
        AS u(order_uid, transaction, request_id, currency, provider, amount, payment_dt, bank,
            delivery_cost, goods_total, custom_fee)
    JOIN info USING (order_uid)
), i AS (
    INSERT INTO items (order_uid, position, chrt_id, track_number, price, rid, name, sale,
        size, total_price, nm_id, brand, status)
    SELECT u.* FROM UNNEST($29::text[], $30::integer[], $31::bigint[], $32::text[],
        $33::bigint[], $34::text[], $35::text[], $36::bigint[], $37::text[], $38::bigint[],
        $39::bigint[], $40::text[], $41::bigint[])
        AS u(order_uid, position, chrt_id, track_number, price, rid, name, sale, size,
            total_price, nm_id, brand, status)
    JOIN info USING (order_uid)
)
SELECT order_uid FROM info";

static FIND_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ORDER_COLUMNS} FROM order_info o \
         JOIN delivery d USING (order_uid) JOIN payment p USING (order_uid) \
         WHERE o.order_uid = $1"
    )
});

static FIND_ITEMS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {ITEM_COLUMNS} FROM items i WHERE i.order_uid = $1 ORDER BY i.position")
});

/// The newest orders, by the index `order_info_newest`.
const NEWEST: &str = "SELECT * FROM order_info ORDER BY created_at DESC, order_uid DESC LIMIT $1";

static RECENT_ORDERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ORDER_COLUMNS} FROM ({NEWEST}) o \
         JOIN delivery d USING (order_uid) JOIN payment p USING (order_uid) \
         ORDER BY o.created_at DESC, o.order_uid DESC"
    )
});

static RECENT_ITEMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ITEM_COLUMNS} FROM ({NEWEST}) o JOIN items i USING (order_uid) \
         ORDER BY i.order_uid, i.position"
    )
});

/// One page of the list, newest first, strictly older than the cursor when
/// one is given ($1 micros, $2 uid; both NULL for the first page). The row
/// comparison walks the index `order_info_newest`. Microseconds are added to
/// the epoch as an interval, exactly, rather than through a float.
const LIST_RECENT: &str = "\
SELECT o.order_uid, o.date_created,
       (extract(epoch FROM o.created_at) * 1000000)::bigint AS micros,
       p.amount, p.currency
FROM order_info o JOIN payment p USING (order_uid)
WHERE $1::bigint IS NULL
   OR (o.created_at, o.order_uid) < ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', $2::text)
ORDER BY o.created_at DESC, o.order_uid DESC
LIMIT $3";

const INSERT_REJECTION: &str = "\
INSERT INTO rejected_messages (reason, detail, order_uid, subject, stream, stream_sequence, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT ON CONSTRAINT rejected_once DO NOTHING";

/// [`OrderRepository`] over a deadpool-postgres pool. Statements are
/// prepared once per connection and cached by the pool's client wrapper.
#[derive(Clone)]
pub struct PgOrderRepository {
    pool: Pool,
}

impl std::fmt::Debug for PgOrderRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderRepository")
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// A batch's columns as arrays, one per column, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    // order_info
    order_uid: Vec<&'a str>,
    track_number: Vec<&'a str>,
    entry: Vec<&'a str>,
    locale: Vec<&'a str>,
    internal_signature: Vec<&'a str>,
    customer_id: Vec<&'a str>,
    delivery_service: Vec<&'a str>,
    shardkey: Vec<&'a str>,
    sm_id: Vec<i64>,
    date_created: Vec<&'a str>,
    oof_shard: Vec<&'a str>,
    // delivery
    d_name: Vec<&'a str>,
    d_phone: Vec<&'a str>,
    d_zip: Vec<&'a str>,
    d_city: Vec<&'a str>,
    d_address: Vec<&'a str>,
    d_region: Vec<&'a str>,
    d_email: Vec<&'a str>,
    // payment
    p_transaction: Vec<&'a str>,
    p_request_id: Vec<&'a str>,
    p_currency: Vec<&'a str>,
    p_provider: Vec<&'a str>,
    p_amount: Vec<i64>,
    p_payment_dt: Vec<i64>,
    p_bank: Vec<&'a str>,
    p_delivery_cost: Vec<i64>,
    p_goods_total: Vec<i64>,
    p_custom_fee: Vec<i64>,
    // items
    i_order_uid: Vec<&'a str>,
    i_position: Vec<i32>,
    i_chrt_id: Vec<i64>,
    i_track_number: Vec<&'a str>,
    i_price: Vec<i64>,
    i_rid: Vec<&'a str>,
    i_name: Vec<&'a str>,
    i_sale: Vec<i64>,
    i_size: Vec<&'a str>,
    i_total_price: Vec<i64>,
    i_nm_id: Vec<i64>,
    i_brand: Vec<&'a str>,
    i_status: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, o: &'a Order) {
        let uid = o.order_uid.as_str();
        self.order_uid.push(uid);
        self.track_number.push(&o.track_number);
        self.entry.push(&o.entry);
        self.locale.push(&o.locale);
        self.internal_signature.push(&o.internal_signature);
        self.customer_id.push(&o.customer_id);
        self.delivery_service.push(&o.delivery_service);
        self.shardkey.push(&o.shardkey);
        self.sm_id.push(o.sm_id);
        self.date_created.push(o.date_created.as_str());
        self.oof_shard.push(&o.oof_shard);
        let d = &o.delivery;
        self.d_name.push(&d.name);
        self.d_phone.push(&d.phone);
        self.d_zip.push(&d.zip);
        self.d_city.push(&d.city);
        self.d_address.push(&d.address);
        self.d_region.push(&d.region);
        self.d_email.push(&d.email);
        let p = &o.payment;
        self.p_transaction.push(&p.transaction);
        self.p_request_id.push(&p.request_id);
        self.p_currency.push(&p.currency);
        self.p_provider.push(&p.provider);
        self.p_amount.push(p.amount);
        self.p_payment_dt.push(p.payment_dt);
        self.p_bank.push(&p.bank);
        self.p_delivery_cost.push(p.delivery_cost);
        self.p_goods_total.push(p.goods_total);
        self.p_custom_fee.push(p.custom_fee);
        for (position, it) in o.items.iter().enumerate() {
            self.i_order_uid.push(uid);
            self.i_position
                .push(i32::try_from(position).unwrap_or(i32::MAX));
            self.i_chrt_id.push(it.chrt_id);
            self.i_track_number.push(&it.track_number);
            self.i_price.push(it.price);
            self.i_rid.push(&it.rid);
            self.i_name.push(&it.name);
            self.i_sale.push(it.sale);
            self.i_size.push(&it.size);
            self.i_total_price.push(it.total_price);
            self.i_nm_id.push(it.nm_id);
            self.i_brand.push(&it.brand);
            self.i_status.push(it.status);
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 41] {
        [
            &self.order_uid,
            &self.track_number,
            &self.entry,
            &self.locale,
            &self.internal_signature,
            &self.customer_id,
            &self.delivery_service,
            &self.shardkey,
            &self.sm_id,
            &self.date_created,
            &self.oof_shard,
            &self.d_name,
            &self.d_phone,
            &self.d_zip,
            &self.d_city,
            &self.d_address,
            &self.d_region,
            &self.d_email,
            &self.p_transaction,
            &self.p_request_id,
            &self.p_currency,
            &self.p_provider,
            &self.p_amount,
            &self.p_payment_dt,
            &self.p_bank,
            &self.p_delivery_cost,
            &self.p_goods_total,
            &self.p_custom_fee,
            &self.i_order_uid,
            &self.i_position,
            &self.i_chrt_id,
            &self.i_track_number,
            &self.i_price,
            &self.i_rid,
            &self.i_name,
            &self.i_sale,
            &self.i_size,
            &self.i_total_price,
            &self.i_nm_id,
            &self.i_brand,
            &self.i_status,
        ]
    }
}

impl PgOrderRepository {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(from_pool)
    }
}

/// Orders per chunk of the warm-up stream.
const LOAD_CHUNK: usize = 4_096;

/// Chunks read ahead of the consumer: bounds the memory a slow consumer costs.
const LOAD_CHUNKS_AHEAD: usize = 4;

/// Sends the newest `limit` orders to `sender` in chunks. Both queries read
/// ONE snapshot (a read-only repeatable-read transaction): an order
/// committed between them would otherwise be read without its items, and
/// the newest `limit` would not be the same set in both. Stops early,
/// without an error, when the receiver is dropped.
async fn stream_recent(
    pool: &Pool,
    limit: usize,
    sender: &mut futures::channel::mpsc::Sender<Result<Vec<Order>, RepositoryError>>,
) -> Result<(), RepositoryError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut client = pool.get().await.map_err(from_pool)?;
    let snapshot = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(from_pg)?;

    let mut items: HashMap<String, Vec<Item>> = HashMap::new();
    let rows = snapshot
        .query_raw(RECENT_ITEMS.as_str(), [&limit])
        .await
        .map_err(from_pg)?;
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(from_pg)? {
        let (uid, item) = item_from_row(&row)?;
        items.entry(uid).or_default().push(item);
    }

    let rows = snapshot
        .query_raw(RECENT_ORDERS.as_str(), [&limit])
        .await
        .map_err(from_pg)?;
    pin_mut!(rows);
    let mut chunk = Vec::with_capacity(LOAD_CHUNK);
    while let Some(row) = rows.try_next().await.map_err(from_pg)? {
        let uid: &str = row.get(0);
        let own = items.remove(uid).unwrap_or_default();
        chunk.push(order_from_row(&row, own)?);
        if chunk.len() == LOAD_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    snapshot.commit().await.map_err(from_pg)?;
    if !chunk.is_empty() {
        let _ = sender.send(Ok(chunk)).await;
    }
    Ok(())
}

#[async_trait]
impl OrderRepository for PgOrderRepository {
    #[tracing::instrument(skip_all, fields(order_uid = %order.order_uid))]
    async fn save(&self, order: &Order) -> Result<SaveOutcome, RepositoryError> {
        let outcomes = self.save_batch(std::slice::from_ref(order)).await?;
        outcomes
            .into_iter()
            .next()
            .ok_or_else(|| RepositoryError::Unavailable("no outcome for the order".into()))
    }

    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    async fn save_batch(&self, orders: &[Order]) -> Result<Vec<SaveOutcome>, RepositoryError> {
        // A uid repeated within the batch is inserted once (its first
        // occurrence) and the rest are judged against that one.
        let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(orders.len());
        let mut columns = Columns::default();
        for (i, order) in orders.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                first_of.entry(order.order_uid.as_str())
            {
                slot.insert(i);
                columns.push(order);
            }
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(INSERT_ORDERS)
            .await
            .map_err(from_pg)?;
        let inserted: HashSet<String> = client
            .query(&statement, &columns.params())
            .await
            .map_err(from_pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);

        // Orders stored before this batch, read once per uid that needs it.
        let mut before: HashMap<&str, Order> = HashMap::new();
        let mut outcomes = Vec::with_capacity(orders.len());
        for (i, order) in orders.iter().enumerate() {
            let uid = order.order_uid.as_str();
            let first = first_of.get(uid).copied().unwrap_or(i);
            let stored = if inserted.contains(uid) {
                if first == i {
                    outcomes.push(SaveOutcome::Stored);
                    continue;
                }
                &orders[first]
            } else {
                if !before.contains_key(uid) {
                    // The uid was taken before: the same order again, or another?
                    let Some(found) = self.find(&order.order_uid).await? else {
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
        let client = self.client().await?;
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
            .map(|r| item_from_row(r).map(|(_, item)| item))
            .collect::<Result<Vec<_>, _>>()?;
        order_from_row(&row, items).map(Some)
    }

    /// Read by a task of its own, so the caller serializes one chunk while
    /// the next is read.
    fn load_recent(&self, limit: usize) -> OrderChunks {
        let pool = self.pool.clone();
        let (mut sender, receiver) = futures::channel::mpsc::channel(LOAD_CHUNKS_AHEAD);
        tokio::spawn(async move {
            if let Err(err) = stream_recent(&pool, limit, &mut sender).await {
                let _ = sender.send(Err(err)).await;
            }
        });
        receiver.boxed()
    }

    async fn list_recent(
        &self,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<Vec<OrderSummary>, RepositoryError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(LIST_RECENT).await.map_err(from_pg)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let micros = before.as_ref().map(|c| c.created_micros);
        let uid = before.as_ref().map(|c| c.order_uid.as_str());
        let rows = client
            .query(&statement, &[&micros, &uid, &limit])
            .await
            .map_err(from_pg)?;
        rows.iter().map(summary_from_row).collect()
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
}

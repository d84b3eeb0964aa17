//! Databases and streams for the bench, and orders to put in them.

use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use orders_domain::Order;
use orders_publisher::SplitMix64;
use orders_testkit::{TestDb, TestStream};

/// A fresh database of the bench's own, migrated as the service would.
/// Dropped with the value.
pub async fn migrated_db() -> anyhow::Result<TestDb> {
    let db = TestDb::not_yet_created();
    orders_postgres::ensure_database(&db.url).await?;
    orders_postgres::migrate(&db.url).await?;
    Ok(db)
}

/// `count` orders of the sample's shape, one item each, uids
/// `b0000000000`, `b0000000001`, ... (so a regex can draw them), inserted
/// by PostgreSQL itself in four statements: the fastest way to fill a
/// database for the lookup and warm-up measures.
pub async fn seed(db: &TestDb, count: u64) -> anyhow::Result<()> {
    let client = db.client().await;
    let last = i64::try_from(count).context("count")? - 1;
    client
        .execute(
            "INSERT INTO order_info SELECT 'b' || lpad(g::text, 10, '0'), 'WBILMTESTTRACK', \
             'WBIL', 'en', '', 'test', 'meest', '9', 99, \
             to_char(timestamp '2021-11-26 06:22:19' + g * interval '1 second', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             timestamp '2021-11-26 06:22:19' + g * interval '1 second', '1' \
             FROM generate_series(0, $1::bigint) g",
            &[&last],
        )
        .await
        .map_err(pg_error)
        .context("seeding order_info")?;
    client
        .batch_execute(
            "INSERT INTO delivery SELECT order_uid, 'Test Testov', '+9720000000', '2639809', \
                 'Kiryat Mozkin', 'Ploshad Mira 15', 'Kraiot', 'test@gmail.com' FROM order_info;
             INSERT INTO payment SELECT order_uid, order_uid, '', 'USD', 'wbpay', 1817, \
                 1637907727, 'alpha', 1500, 317, 0 FROM order_info;
             INSERT INTO items SELECT order_uid, 0, 9934930, 'WBILMTESTTRACK', 453, \
                 'ab4219087a764ae0btest', 'Mascaras', 30, '0', 317, 2389212, 'Vivienne Sabo', 202 \
                 FROM order_info;",
        )
        .await
        .map_err(pg_error)
        .context("seeding delivery, payment and items")?;
    // On its own: VACUUM cannot run in the implicit transaction of a batch.
    client
        .batch_execute("VACUUM ANALYZE")
        .await
        .map_err(pg_error)
        .context("VACUUM ANALYZE")?;
    Ok(())
}

/// PostgreSQL's own message, which `tokio_postgres::Error`'s Display hides.
fn pg_error(err: tokio_postgres::Error) -> anyhow::Error {
    match err.as_db_error() {
        Some(db) => anyhow::anyhow!("{}: {}", db.code().code(), db.message()),
        None => err.into(),
    }
}

/// The uid of seeded order `n`.
pub fn seeded_uid(n: u64) -> String {
    format!("b{n:010}")
}

/// `count` realistic generated orders (1-5 items), as the publisher makes them.
pub fn generate(seed: u64, count: u64) -> Vec<serde_json::Value> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|i| orders_publisher::order(&mut rng, i))
        .collect()
}

/// A stream of the bench's own (deleted with the value), holding `orders`.
pub async fn stream_with(
    orders: &[serde_json::Value],
) -> anyhow::Result<(TestStream, jetstream::Context)> {
    let stream = TestStream::new();
    let js = stream.create().await;
    for chunk in orders.chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for order in chunk {
            let body = serde_json::to_vec(order)?;
            acks.push(js.publish(stream.subject.clone(), body.into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok((stream, js))
}

/// Inserts `orders` with COPY into the four tables, split evenly over
/// `connections` connections, each in one transaction: PostgreSQL alone,
/// the fastest way it takes rows (one connection uses one core). Returns
/// orders/s and the CPU spent meanwhile (taken while the connections'
/// backends live: an exited process takes its CPU time with it).
pub async fn copy_in(
    db: &TestDb,
    orders: &[serde_json::Value],
    connections: usize,
) -> anyhow::Result<(f64, String)> {
    let parsed = parse_all(orders)?;
    let per_connection = parsed.len().div_ceil(connections.max(1)).max(1);
    let texts: Vec<[String; 4]> = parsed.chunks(per_connection).map(copy_text).collect();
    let mut clients = Vec::new();
    for _ in &texts {
        clients.push(db.client().await);
    }
    let cpu = crate::probe::Cpu::now();
    let started = Instant::now();
    futures::future::try_join_all(
        clients
            .iter_mut()
            .zip(texts)
            .map(|(client, text)| copy_one(client, text)),
    )
    .await?;
    let rate = parsed.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, crate::probe::Cpu::now().since(&cpu)))
}

/// The four tables' rows in COPY's text format, in the order of
/// [`COPY_TABLES`].
fn copy_text(parsed: &[Order]) -> [String; 4] {
    let (mut info, mut delivery, mut payment, mut items) =
        (String::new(), String::new(), String::new(), String::new());
    for o in parsed {
        let uid = o.order_uid.as_str();
        row(
            &mut info,
            &[
                uid,
                &o.track_number,
                &o.entry,
                &o.locale,
                &o.internal_signature,
                &o.customer_id,
                &o.delivery_service,
                &o.shardkey,
                &o.sm_id.to_string(),
                o.date_created.as_str(),
                o.date_created.as_str(),
                &o.oof_shard,
            ],
        );
        let d = &o.delivery;
        row(
            &mut delivery,
            &[
                uid, &d.name, &d.phone, &d.zip, &d.city, &d.address, &d.region, &d.email,
            ],
        );
        let p = &o.payment;
        row(
            &mut payment,
            &[
                uid,
                &p.transaction,
                &p.request_id,
                &p.currency,
                &p.provider,
                &p.amount.to_string(),
                &p.payment_dt.to_string(),
                &p.bank,
                &p.delivery_cost.to_string(),
                &p.goods_total.to_string(),
                &p.custom_fee.to_string(),
            ],
        );
        for (position, i) in o.items.iter().enumerate() {
            row(
                &mut items,
                &[
                    uid,
                    &position.to_string(),
                    &i.chrt_id.to_string(),
                    &i.track_number,
                    &i.price.to_string(),
                    &i.rid,
                    &i.name,
                    &i.sale.to_string(),
                    &i.size,
                    &i.total_price.to_string(),
                    &i.nm_id.to_string(),
                    &i.brand,
                    &i.status.to_string(),
                ],
            );
        }
    }
    [info, delivery, payment, items]
}

/// The tables COPY fills, parents first, with their columns.
const COPY_TABLES: [(&str, &str); 4] = [
    (
        "order_info",
        "order_uid, track_number, entry, locale, internal_signature, customer_id, \
         delivery_service, shardkey, sm_id, date_created, created_at, oof_shard",
    ),
    (
        "delivery",
        "order_uid, name, phone, zip, city, address, region, email",
    ),
    (
        "payment",
        "order_uid, transaction, request_id, currency, provider, amount, payment_dt, bank, \
         delivery_cost, goods_total, custom_fee",
    ),
    (
        "items",
        "order_uid, position, chrt_id, track_number, price, rid, name, sale, size, \
         total_price, nm_id, brand, status",
    ),
];

/// One connection's share: the four COPYs in one transaction.
async fn copy_one(client: &mut tokio_postgres::Client, text: [String; 4]) -> anyhow::Result<()> {
    use futures::SinkExt as _;

    let tx = client.transaction().await?;
    for ((table, columns), data) in COPY_TABLES.into_iter().zip(text) {
        let sink = tx
            .copy_in(&format!("COPY {table} ({columns}) FROM STDIN"))
            .await
            .map_err(pg_error)?;
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(data)).await?;
        sink.finish().await.map_err(pg_error).context(table)?;
    }
    tx.commit().await?;
    Ok(())
}

/// `orders` as the service parses them.
fn parse_all(orders: &[serde_json::Value]) -> anyhow::Result<Vec<Order>> {
    orders
        .iter()
        .map(|o| Order::parse(&serde_json::to_vec(o)?).map_err(anyhow::Error::from))
        .collect()
}

/// The service's own statement without the service or the broker:
/// `PgOrderRepository::save_batch` over `orders` in batches of `batch`,
/// `in_flight` batches at a time (1: one after another, as the ingest loop
/// does). Returns orders/s and the CPU spent meanwhile.
pub async fn repository_alone(
    db: &TestDb,
    orders: &[serde_json::Value],
    batch: usize,
    in_flight: usize,
) -> anyhow::Result<(f64, String)> {
    use futures::StreamExt as _;
    use orders_domain::OrderRepository as _;

    let parsed = parse_all(orders)?;
    let pool = orders_postgres::connect_pool(&db.url, orders_postgres::PoolSettings::default())?;
    let repository = orders_postgres::PgOrderRepository::new(pool);
    repository.ping().await?;
    let cpu = crate::probe::Cpu::now();
    let started = Instant::now();
    let mut saves = futures::stream::iter(parsed.chunks(batch))
        .map(|chunk| repository.save_batch(chunk))
        .buffer_unordered(in_flight);
    while let Some(saved) = saves.next().await {
        saved?;
    }
    let rate = parsed.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, crate::probe::Cpu::now().since(&cpu)))
}

/// One line of COPY's text format.
fn row(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        for c in field.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_rows_escape_what_copy_reads_specially() {
        let mut out = String::new();
        super::row(&mut out, &["a\tb", "c\\d", "e\nf"]);
        assert_eq!(out, "a\\tb\tc\\\\d\te\\nf\n");
    }
}

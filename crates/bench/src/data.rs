//! Databases and streams for the bench, and orders to put in them.

use std::time::Instant;

use crate::copy::CopyData;
use anyhow::Context as _;
use async_nats::jetstream;
use orders_domain::{NewOrder, Order};
use orders_publisher::SplitMix64;
use orders_testkit::{TestDb, TestStream};

/// A fresh database of the bench's own, migrated as the service would.
/// Dropped with the value.
pub async fn migrated_db() -> anyhow::Result<TestDb> {
    let db = crate::new_db();
    orders_postgres::ensure_database(&db.url).await?;
    orders_postgres::migrate(&db.url).await?;
    Ok(db)
}

/// `count` orders of the sample's shape, one item each, uids
/// `b0000000000`, `b0000000001`, ... (so a regex can draw them), track
/// numbers `WB0000000000`, ... ([`seeded_track`]), one second apart: the sample stored once by the service's own repository, then
/// copied by PostgreSQL itself, table by table, with the columns of
/// `orders_postgres::schema`: the fastest way to fill a database for the
/// lookup and warm-up measures.
pub async fn seed(db: &TestDb, count: u64) -> anyhow::Result<()> {
    use orders_domain::OrderStore as _;
    use orders_postgres::schema::{Source, TABLES};

    let mut template: serde_json::Value = orders_testkit::sample_value();
    template["order_uid"] = serde_json::Value::from(seeded_uid(0));
    template["track_number"] = serde_json::Value::from(seeded_track(0));
    template["items"][0]["track_number"] = serde_json::Value::from(seeded_track(0));
    template["date_created"] = serde_json::Value::from("2021-11-26T06:22:19Z");
    let template = Order::parse(&serde_json::to_vec(&template)?)?;
    let pool = orders_postgres::connect_pool(&db.url, orders_postgres::PoolSettings::default())?;
    orders_postgres::PgOrderRepository::new(pool)
        .save(&[NewOrder::new(template, None)])
        .await?;

    let client = db.client().await;
    let last = i64::try_from(count).context("count")? - 1;
    // The copies' uid, track number and time, as SQL over `g`.
    let uid = "'b' || lpad(g::text, 10, '0')";
    let track = "'WB' || lpad(g::text, 10, '0')";
    let date = "to_char(timestamp '2021-11-26 06:22:19' + g * interval '1 second', \
                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
    for table in TABLES {
        // Each copy differs from the template in its uid and its time.
        let values: Vec<String> = table
            .columns
            .iter()
            .map(|c| match (c.name, c.source) {
                ("order_uid", _) => uid.to_owned(),
                // The order's and its item's, as in the sample.
                ("track_number", _) => track.to_owned(),
                (_, Source::CreatedAt) => format!("{} + g * interval '1 second'", c.name),
                ("date_created", _) => date.to_owned(),
                // The template's JSON with the same three values replaced
                // (each occurs in it only where it is that value).
                (_, Source::Document) => format!(
                    "convert_to(replace(replace(replace(convert_from({doc}, 'UTF8'), \
                     '{t_uid}', {uid}), '{t_track}', {track}), '{t_date}', {date}), 'UTF8')",
                    doc = c.name,
                    t_uid = seeded_uid(0),
                    t_track = seeded_track(0),
                    t_date = "2021-11-26T06:22:19Z",
                ),
                (name, _) => name.to_owned(),
            })
            .collect();
        let sql = format!(
            "INSERT INTO {name} ({columns}) SELECT {values} FROM {name}, \
             generate_series(1, $1::bigint) g WHERE order_uid = '{uid}'",
            name = table.name,
            columns = table.column_list(),
            values = values.join(", "),
            uid = seeded_uid(0),
        );
        client
            .execute(&sql, &[&last])
            .await
            .map_err(pg_error)
            .with_context(|| format!("seeding {}", table.name))?;
    }
    // The last copy reads back as the order its document says.
    if last > 0 {
        let repo = orders_postgres::PgOrderRepository::new(orders_postgres::connect_pool(
            &db.url,
            orders_postgres::PoolSettings::default(),
        )?);
        let uid = orders_domain::OrderUid::try_from(seeded_uid(last as u64))?;
        let order = repo.find(&uid).await?.context("the last seeded order")?;
        let document: Vec<u8> = client
            .query_one(
                "SELECT document FROM order_info WHERE order_uid = $1",
                &[&uid.as_str()],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        anyhow::ensure!(
            document == order.to_json(),
            "a seeded document is not its order's JSON:\n{}\n{}",
            String::from_utf8_lossy(&document),
            String::from_utf8_lossy(&order.to_json())
        );
    }
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

/// The track number of seeded order `n`.
pub fn seeded_track(n: u64) -> String {
    format!("WB{n:010}")
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
    let stream = crate::new_stream();
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

/// Inserts `orders` with binary COPY into the four tables, split evenly
/// over `connections` connections, each in one transaction: PostgreSQL
/// alone, the fastest way it takes rows (one connection uses one core).
/// Returns orders/s and the CPU spent meanwhile (taken while the
/// connections' backends live: an exited process takes its CPU time with it).
pub async fn copy_in(
    db: &TestDb,
    orders: &[serde_json::Value],
    connections: usize,
) -> anyhow::Result<(f64, String)> {
    let parsed = parse_all(orders)?;
    let per_connection = parsed.len().div_ceil(connections.max(1)).max(1);
    let data: Vec<CopyData> = parsed
        .chunks(per_connection)
        .map(CopyData::of)
        .collect::<Result<_, _>>()?;
    let mut clients = Vec::new();
    for _ in &data {
        clients.push(db.client().await);
    }
    let cpu = crate::probe::Cpu::now();
    let started = Instant::now();
    futures::future::try_join_all(
        clients
            .iter_mut()
            .zip(data)
            .map(|(client, data)| copy_one(client, data)),
    )
    .await?;
    let rate = parsed.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, crate::probe::Cpu::now().since(&cpu)))
}

/// One connection's share: the four COPYs in one transaction.
async fn copy_one(client: &mut tokio_postgres::Client, data: CopyData) -> anyhow::Result<()> {
    use futures::SinkExt as _;

    /// PostgreSQL takes at most 1 GB in one message, and a million orders'
    /// `order_info` with their documents is more than that.
    const CHUNK: usize = 1 << 20;

    let tx = client.transaction().await?;
    for (table, statement, mut bytes) in data.into_parts() {
        let sink = tx.copy_in(&statement).await.map_err(pg_error)?;
        futures::pin_mut!(sink);
        while !bytes.is_empty() {
            let chunk = bytes.split_to(bytes.len().min(CHUNK));
            sink.feed(chunk).await?;
        }
        sink.finish().await.map_err(pg_error).context(table.name)?;
    }
    tx.commit().await?;
    Ok(())
}

/// `orders` as the service parses them, each with its JSON (its document).
fn parse_all(orders: &[serde_json::Value]) -> anyhow::Result<Vec<NewOrder>> {
    orders
        .iter()
        .map(|o| {
            let order = Order::parse(&serde_json::to_vec(o)?)?;
            Ok(NewOrder::new(order, None))
        })
        .collect()
}

/// How a batch's rows reach the tables, for the comparison row.
///
/// With two batches in flight (the service's default) COPY into staging
/// was 1.25x, 1.08x, 1.06x, 0.88x and 1.07x UNNEST in five runs on
/// 2026-11-26 (median 1.07x); since each order also stores its document,
/// staging copies every document twice (into the staging table, then into
/// `order_info`), and UNNEST was ahead in four runs of four: 1.22x, 1.07x,
/// 1.07x, 1.28x. The service inserts by UNNEST; staging lives here only for
/// that comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMethod {
    /// The service's own `OrderStore::save`: every column as an array,
    /// `UNNEST`ed into the four tables in one statement.
    Unnest,
    /// Binary COPY into staging tables, then one `INSERT ... SELECT ... ON
    /// CONFLICT` from them, in one transaction.
    CopyStaging,
}

/// The staging tables binary COPY fills, one per table, private to the
/// connection and emptied at each commit. They hold the columns COPY
/// writes and nothing else (not `order_info.event_id`, which the insert
/// from them takes from its sequence).
fn create_staging() -> String {
    orders_postgres::schema::TABLES
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
}

/// The service's four-table insert, from the staging tables.
fn insert_staged() -> String {
    orders_postgres::sql::insert_all(|table| {
        let select = table
            .columns
            .iter()
            .map(|c| format!("s.{}", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        (select, format!("stage_{} s", table.name))
    })
}

/// One batch by binary COPY into staging, then the insert from it, in one
/// transaction on `client`.
async fn save_staged(
    client: &mut tokio_postgres::Client,
    batch: &[NewOrder],
    create: &str,
    insert: &str,
) -> anyhow::Result<()> {
    use futures::SinkExt as _;

    let tx = client.transaction().await?;
    tx.batch_execute(create).await.map_err(pg_error)?;
    for (table, _, bytes) in CopyData::of(batch)?.into_parts() {
        let statement = format!(
            "COPY stage_{} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            table.column_list()
        );
        let sink = tx.copy_in(&statement).await.map_err(pg_error)?;
        futures::pin_mut!(sink);
        sink.send(bytes).await?;
        sink.finish().await.map_err(pg_error)?;
    }
    tx.execute(insert, &[]).await.map_err(pg_error)?;
    tx.commit().await?;
    Ok(())
}

/// The service's own statement without the service or the broker:
/// `PgOrderRepository::save` over `orders` in batches of `batch`,
/// `in_flight` batches at a time (1: one after another, as the ingest loop
/// does). Returns orders/s and the CPU spent meanwhile.
pub async fn repository_alone(
    db: &TestDb,
    orders: &[serde_json::Value],
    batch: usize,
    in_flight: usize,
    method: InsertMethod,
) -> anyhow::Result<(f64, String)> {
    use futures::StreamExt as _;
    use orders_domain::{DatabaseProbe as _, OrderStore as _};

    let parsed = parse_all(orders)?;
    let pool = orders_postgres::connect_pool(&db.url, orders_postgres::PoolSettings::default())?;
    let repository = orders_postgres::PgOrderRepository::new(pool);
    repository.ping().await?;
    let (create, insert) = (create_staging(), insert_staged());
    let mut clients = Vec::new();
    if method == InsertMethod::CopyStaging {
        for _ in 0..in_flight {
            clients.push(db.client().await);
        }
    }
    let cpu = crate::probe::Cpu::now();
    let started = Instant::now();
    match method {
        InsertMethod::Unnest => {
            let mut saves = futures::stream::iter(parsed.chunks(batch))
                .map(|chunk| repository.save(chunk))
                .buffer_unordered(in_flight);
            while let Some(saved) = saves.next().await {
                saved?;
            }
        }
        InsertMethod::CopyStaging => {
            // Each connection takes every `in_flight`-th batch.
            let lanes = clients.iter_mut().enumerate().map(|(lane, client)| {
                let (create, insert) = (&create, &insert);
                let batches: Vec<&[NewOrder]> = parsed
                    .chunks(batch)
                    .skip(lane)
                    .step_by(in_flight.max(1))
                    .collect();
                async move {
                    for chunk in batches {
                        save_staged(client, chunk, create, insert).await?;
                    }
                    anyhow::Ok(())
                }
            });
            futures::future::try_join_all(lanes).await?;
        }
    }
    let rate = parsed.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, crate::probe::Cpu::now().since(&cpu)))
}

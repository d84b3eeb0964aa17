//! PgAuditLog against a real PostgreSQL: reads stored a batch per
//! statement, and found by order or by customer on the uids' index.

use orders_domain::{AuditLog, Order, OrderRead, OrderStore, OrderUid, ReadsOf};
use orders_postgres::audit::{READS_OF_CUSTOMER, READS_OF_ORDERS};
use orders_postgres::{PgAuditLog, PgOrderRepository, PoolSettings, connect_pool, migrate};
use orders_testkit::{TestDb, order_value};
use serde_json::Value;
use time::OffsetDateTime;

async fn migrated() -> (TestDb, PgAuditLog) {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
    (db, PgAuditLog::new(pool))
}

/// A read `minutes` minutes ago.
fn read(minutes: i64, who: &str, route: &'static str, uids: &[&str]) -> OrderRead {
    OrderRead {
        who: who.to_owned(),
        at: OffsetDateTime::now_utc() - time::Duration::minutes(minutes),
        route,
        order_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
    }
}

fn uid(raw: &str) -> OrderUid {
    OrderUid::parse(raw).expect("uid")
}

#[tokio::test]
async fn a_batch_is_stored_whole_and_each_order_finds_the_reads_that_gave_it_out() {
    // setup: one batch with reads of none, one and several uids
    let (db, log) = migrated().await;
    let batch = [
        read(5, "desk", "/orders", &["a", "b", "c"]),
        read(4, "127.0.0.1", "/orders/events", &[]),
        read(3, "desk", "/order", &["b"]),
        read(2, "ops", "/rejected", &["z", "b"]),
        read(1, "ops", "/rejected/{id}", &["c"]),
    ];

    // exec
    log.append(&batch).await.expect("append");

    // check: every read, and each with its own uids (none for the stream)
    assert_eq!(db.count("SELECT count(*) FROM order_reads").await, 5);
    assert_eq!(
        db.count("SELECT count(*) FROM order_reads WHERE order_uids = '{}'")
            .await,
        1
    );
    let b = log
        .reads_of(&ReadsOf::Order(uid("b")))
        .await
        .expect("reads");
    let seen: Vec<(&str, &str, Vec<String>)> = b
        .iter()
        .map(|r| (r.who.as_str(), r.route.as_str(), r.order_uids.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("desk", "/orders", vec!["b".to_owned()]),
            ("desk", "/order", vec!["b".to_owned()]),
            ("ops", "/rejected", vec!["b".to_owned()]),
        ],
        "oldest first, each with only the uid asked about"
    );
    assert!(b.windows(2).all(|w| w[0].at <= w[1].at));
    let at = |r: &orders_domain::ReadRecord| r.at.unix_timestamp_nanos() / 1_000;
    assert_eq!(at(&b[1]), batch[2].at.unix_timestamp_nanos() / 1_000);
    assert!(
        log.reads_of(&ReadsOf::Order(uid("nobody")))
            .await
            .expect("reads")
            .is_empty()
    );
}

#[tokio::test]
async fn a_customer_finds_the_reads_of_every_order_of_theirs() {
    // setup: ann has two orders, bob one
    let (db, log) = migrated().await;
    let repo =
        PgOrderRepository::new(connect_pool(&db.url, PoolSettings::default()).expect("pool"));
    let order = |uid: &str, n: u64, customer: &str| {
        let mut value = order_value(uid, n);
        value["customer_id"] = Value::from(customer);
        Order::parse(&serde_json::to_vec(&value).expect("json")).expect("an order")
    };
    repo.save(&orders_testkit::new_orders(&[
        order("ann1", 1, "ann"),
        order("ann2", 2, "ann"),
        order("bob1", 3, "bob"),
    ]))
    .await
    .expect("save");
    log.append(&[
        read(3, "desk", "/orders", &["ann1", "bob1", "ann2"]),
        read(2, "desk", "/order", &["bob1"]),
        read(1, "ops", "/order", &["ann2"]),
    ])
    .await
    .expect("append");

    // exec
    let ann = log
        .reads_of(&ReadsOf::Customer("ann".to_owned()))
        .await
        .expect("reads");

    // check: bob's own read is not ann's; the page names only ann's orders
    let seen: Vec<(&str, Vec<String>)> = ann
        .iter()
        .map(|r| (r.who.as_str(), r.order_uids.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("desk", vec!["ann1".to_owned(), "ann2".to_owned()]),
            ("ops", vec!["ann2".to_owned()]),
        ]
    );
    assert!(
        log.reads_of(&ReadsOf::Customer("nobody".to_owned()))
            .await
            .expect("reads")
            .is_empty()
    );
}

/// Whether an EXPLAIN (FORMAT JSON) plan reads `index`, and no sequential
/// scan of `table`.
fn reads_index(plan: &Value, table: &str, index: &str) -> bool {
    fn walk(plan: &Value, table: &str, index: &str, seq: &mut bool, used: &mut bool) {
        if plan["Node Type"] == "Seq Scan" && plan["Relation Name"] == table {
            *seq = true;
        }
        if plan["Index Name"] == index {
            *used = true;
        }
        for child in plan["Plans"].as_array().into_iter().flatten() {
            walk(child, table, index, seq, used);
        }
    }
    let (mut seq, mut used) = (false, false);
    walk(&plan[0]["Plan"], table, index, &mut seq, &mut used);
    used && !seq
}

#[tokio::test]
async fn the_audit_reads_the_uids_index_on_100000_reads() {
    // setup: 100,000 reads of two uids each, 2,000 orders of 50 customers;
    // vacuumed, as autovacuum keeps a table that grows: GIN's pending list
    // (up to 4MB of entries not yet in the index proper) is flushed, as it
    // is in the steady state, or the planner counts scanning it
    let (db, _log) = migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO order_reads (at, who, route, order_uids)
             SELECT now() - g * interval '1 second', 'desk', '/orders',
                    ARRAY['o' || g % 100000, 'o' || (g + 1) % 100000]
             FROM generate_series(1, 100000) g;
             INSERT INTO order_info (order_uid, track_number, entry, locale, internal_signature,
                 customer_id, delivery_service, shardkey, sm_id, date_created, created_at, oof_shard)
             SELECT 'o' || g, 'WB' || g, 'WBIL', 'en', '', 'customer-' || g % 50, 'meest', '9', 99,
                 '2021-01-01T00:00:00Z', timestamptz '2021-01-01 00:00:00Z', '1'
             FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("seed");
    client
        .batch_execute("VACUUM ANALYZE order_reads")
        .await
        .expect("vacuum");
    client
        .batch_execute("ANALYZE order_info")
        .await
        .expect("analyze");

    // exec
    let explain = |sql: &'static str| {
        let client = &client;
        async move {
            let row = match sql {
                READS_OF_ORDERS => {
                    let uids = vec!["o777".to_owned()];
                    client
                        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[&uids])
                        .await
                }
                _ => {
                    client
                        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[&"customer-7"])
                        .await
                }
            };
            let plan: Value = row.expect("explain").get(0);
            plan
        }
    };
    let by_order = explain(READS_OF_ORDERS).await;
    let by_customer = explain(READS_OF_CUSTOMER).await;

    // check
    assert!(
        reads_index(&by_order, "order_reads", "order_reads_uids"),
        "{by_order:#}"
    );
    assert!(
        reads_index(&by_customer, "order_reads", "order_reads_uids"),
        "{by_customer:#}"
    );
    assert!(
        reads_index(&by_customer, "order_info", "order_info_customer_id"),
        "{by_customer:#}"
    );
}

//! PgPurger against a real PostgreSQL: which rows a batch deletes, how
//! many, and one pass at a time across replicas.

use std::time::Duration;

use orders_domain::{AuditLog, OrderRead, PurgeTarget, Purger};
use orders_postgres::retention::delete_statement;
use orders_postgres::{PgAuditLog, PgPurger, PoolSettings, connect_pool, migrate};
use orders_testkit::{TestDb, eventually};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

async fn migrated() -> TestDb {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    db
}

fn purger(db: &TestDb) -> PgPurger {
    PgPurger::new(connect_pool(&db.url, PoolSettings::default()).expect("pool"))
}

/// `count` rejected messages received `days_ago` days ago (plus `i`
/// seconds each, so they have an order), marked `tag` in their detail.
async fn rejected_rows(db: &TestDb, count: i64, days_ago: i64, tag: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO rejected_messages (received_at, reason, detail, subject, stream, payload) \
             SELECT now() - make_interval(days => $1::int) + g * interval '1 second', \
                    'invalid_json', $3, 'orders', 'ORDERS', '{}'::bytea \
             FROM generate_series(1, $2::int) g",
            &[&(days_ago as i32), &(count as i32), &tag],
        )
        .await
        .expect("insert rejected rows");
}

/// The tags of the rejected messages left, oldest first.
async fn tags_left(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT detail FROM rejected_messages ORDER BY received_at",
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_batch_deletes_at_most_its_limit_of_the_oldest_rows_and_never_a_younger_one() {
    // setup: 25 rows past 30 days (the first 10 oldest), 5 just inside, 3 new
    let db = migrated().await;
    rejected_rows(&db, 10, 40, "oldest").await;
    rejected_rows(&db, 15, 31, "old").await;
    rejected_rows(&db, 5, 29, "inside").await;
    rejected_rows(&db, 3, 0, "new").await;
    let mut pass = purger(&db)
        .begin()
        .await
        .expect("begin")
        .expect("the lock is free");

    // exec: one batch of 10
    let first = pass
        .delete_older(PurgeTarget::RejectedMessages, 30 * DAY, 10)
        .await
        .expect("a batch");

    // check: exactly the 10 oldest went
    assert_eq!(first, 10);
    let left = tags_left(&db).await;
    assert_eq!(left.len(), 23);
    assert!(!left.contains(&"oldest".to_owned()), "{left:?}");

    // exec: the rest, batch by batch
    let mut batches = Vec::new();
    loop {
        let n = pass
            .delete_older(PurgeTarget::RejectedMessages, 30 * DAY, 10)
            .await
            .expect("a batch");
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    pass.finish().await.expect("finish");

    // check: no batch over its limit, and only rows past 30 days deleted
    assert_eq!(batches, [10, 5]);
    let left = tags_left(&db).await;
    assert_eq!(
        left,
        [vec!["inside"; 5], vec!["new"; 3]].concat(),
        "only the rows older than 30 days are gone"
    );
}

#[tokio::test]
async fn old_reads_are_purged_the_same_way() {
    // setup: 3 reads 400 days old, 2 of yesterday
    let db = migrated().await;
    let log = PgAuditLog::new(connect_pool(&db.url, PoolSettings::default()).expect("pool"));
    let read = |days: i64, who: &str| OrderRead {
        who: who.to_owned(),
        at: time::OffsetDateTime::now_utc() - time::Duration::days(days),
        route: "/order",
        order_uids: vec!["u1".to_owned()],
    };
    log.append(&[read(400, "old"), read(400, "old"), read(401, "old")])
        .await
        .expect("append");
    log.append(&[read(1, "recent"), read(1, "recent")])
        .await
        .expect("append");
    let mut pass = purger(&db).begin().await.expect("begin").expect("free");

    // exec
    let first = pass
        .delete_older(PurgeTarget::OrderReads, 365 * DAY, 2)
        .await
        .expect("batch");
    let second = pass
        .delete_older(PurgeTarget::OrderReads, 365 * DAY, 2)
        .await
        .expect("batch");
    pass.finish().await.expect("finish");

    // check
    assert_eq!((first, second), (2, 1));
    assert_eq!(
        db.count("SELECT count(*) FROM order_reads WHERE who = 'recent'")
            .await,
        2
    );
    assert_eq!(db.count("SELECT count(*) FROM order_reads").await, 2);
}

#[tokio::test]
async fn a_row_another_transaction_holds_is_skipped_not_waited_for() {
    // setup: 3 old rows, one of them locked by an open transaction (as a
    // replay marking it would)
    let db = migrated().await;
    rejected_rows(&db, 3, 40, "old").await;
    let holder = db.client().await;
    holder
        .batch_execute(
            "BEGIN; SELECT id FROM rejected_messages ORDER BY received_at LIMIT 1 FOR UPDATE",
        )
        .await
        .expect("lock one row");
    let mut pass = purger(&db).begin().await.expect("begin").expect("free");

    // exec: a wait would last as long as the holder's transaction
    let deleted = tokio::time::timeout(
        Duration::from_secs(30),
        pass.delete_older(PurgeTarget::RejectedMessages, 30 * DAY, 10),
    )
    .await
    .expect("the batch does not wait for the locked row")
    .expect("a batch");
    pass.finish().await.expect("finish");

    // check: the other two went; the locked one stays for the next pass
    assert_eq!(deleted, 2);
    holder.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(db.count("SELECT count(*) FROM rejected_messages").await, 1);
}

#[tokio::test]
async fn one_replica_at_a_time_holds_the_purge_pass() {
    // setup: two replicas, each with a pool of its own
    let db = migrated().await;
    let (a, b) = (purger(&db), purger(&db));

    // exec and check: while a's pass runs, b's is skipped
    let mut first = a.begin().await.expect("begin").expect("a takes the lock");
    assert!(b.begin().await.expect("begin").is_none(), "b skips");
    assert!(
        a.begin().await.expect("begin").is_none(),
        "a second pass of a's own skips too"
    );

    // once a's pass is finished, b's runs
    first.finish().await.expect("finish");
    let mut second = b.begin().await.expect("begin").expect("b takes it");
    assert!(a.begin().await.expect("begin").is_none());
    second.finish().await.expect("finish");

    // a pass dropped unfinished (a shutdown mid-batch) lets go of the lock
    // too: its connection is closed, not handed back with the lock held
    let dropped = a.begin().await.expect("begin").expect("a takes it again");
    drop(dropped);
    eventually(
        "the dropped pass's lock released",
        Duration::from_secs(10),
        || async { b.begin().await.ok().flatten().is_some() },
    )
    .await;
}

/// Every sequential scan and sort in an EXPLAIN (FORMAT JSON) plan.
fn scans(plan: &Value, found: &mut Vec<String>) {
    let kind = plan["Node Type"].as_str().unwrap_or_default();
    if kind == "Seq Scan" || kind == "Sort" {
        found.push(format!(
            "{kind} {}",
            plan["Relation Name"].as_str().unwrap_or_default()
        ));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans(child, found);
    }
}

#[tokio::test]
async fn a_batch_reads_the_time_index_not_the_table() {
    // setup: 100,000 rejected messages and as many reads over 100 days
    let db = migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO rejected_messages (received_at, reason, detail, subject, stream, payload)
             SELECT now() - g * interval '86 seconds', 'invalid_json', 'seeded', 'orders',
                    'ORDERS', '{}'::bytea
             FROM generate_series(1, 100000) g;
             INSERT INTO order_reads (at, who, route, order_uids)
             SELECT now() - g * interval '86 seconds', '127.0.0.1', '/order', ARRAY['o' || g]
             FROM generate_series(1, 100000) g;
             ANALYZE;",
        )
        .await
        .expect("seed");

    for target in PurgeTarget::ALL {
        // exec
        let row = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) {}", delete_statement(target)),
                &[&(30.0 * 86_400.0_f64), &1_000_i64],
            )
            .await
            .expect("explain");
        let plan: Value = row.get(0);
        let mut found = Vec::new();
        scans(&plan[0]["Plan"], &mut found);

        // check
        assert!(found.is_empty(), "{target:?}: {found:?} in {plan:#}");
        let text = plan.to_string();
        let index = match target {
            PurgeTarget::RejectedMessages => "rejected_messages_received",
            PurgeTarget::OrderReads => "order_reads_at",
        };
        assert!(text.contains(index), "{target:?} reads {index}: {plan:#}");
    }
}

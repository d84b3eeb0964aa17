//! PgOrderEvents and `stored_since` against a real PostgreSQL: what the
//! trigger announces, what the listener hears, and how it recovers.

use std::time::Duration;

use orders_domain::{EventId, Notice, Order, OrderEvents, OrderReads, OrderStore, SaveOutcome};
use orders_postgres::{PgOrderEvents, PgOrderRepository, PoolSettings, connect_pool_as, migrate};
use orders_testkit::{TestDb, order_json};

const WAIT: Duration = Duration::from_secs(10);

fn orders(prefix: &str, count: u64) -> Vec<Order> {
    (0..count)
        .map(|n| Order::parse(&order_json(&format!("{prefix}-{n}"), n)).expect("valid"))
        .collect()
}

async fn next(events: &mut PgOrderEvents) -> Notice {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("a notice in time")
        .expect("never closed")
}

/// A listener that listens already: it connects on its first `next`, so
/// orders are saved until one is heard; then whatever else was announced
/// meanwhile is drained.
async fn listening(db: &TestDb, repo: &PgOrderRepository, name: &str) -> PgOrderEvents {
    let mut events = PgOrderEvents::new(&db.url, name).expect("url");
    let saving = async {
        for n in 0.. {
            repo.save(&orders_testkit::new_orders(&orders(&format!("warm{n}"), 1)))
                .await
                .expect("save");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        notice = next(&mut events) => assert!(matches!(notice, Notice::Stored { .. })),
        () = saving => unreachable!(),
    }
    while tokio::time::timeout(Duration::from_millis(300), events.next())
        .await
        .is_ok()
    {}
    events
}

/// `orders` as `stored_since` should read them: each its summary and its
/// JSON, with the ids `read` has.
fn stored_as(
    orders: &[Order],
    read: &[orders_domain::StoredOrder],
) -> Vec<orders_domain::StoredOrder> {
    orders
        .iter()
        .zip(read)
        .map(|(order, r)| orders_domain::StoredOrder::of(r.id, order))
        .collect()
}

#[tokio::test]
async fn each_committed_batch_is_announced_once_with_its_ids_and_read_back_as_stored() {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = |name| connect_pool_as(&db.url, PoolSettings::default(), name).expect("pool");
    let unnest = PgOrderRepository::new(pool("replica-a"));
    let copy = PgOrderRepository::new(pool("replica-b"));
    let mut events = listening(&db, &unnest, "replica-a").await;
    let warm_ids = unnest
        .stored_since(EventId::START, None, 100)
        .await
        .expect("read");
    let after_warm = warm_ids.last().expect("the warm-up orders").id;

    let batch = orders("a", 3);
    assert_eq!(
        unnest
            .save(&orders_testkit::new_orders(&batch))
            .await
            .expect("save"),
        vec![SaveOutcome::Stored; 3]
    );
    let Notice::Stored { first, last, own } = next(&mut events).await else {
        panic!("a stored notice")
    };
    assert!(own, "announced as this replica's own");
    let read = unnest
        .stored_since(EventId::new(first.get() - 1), Some(last), 100)
        .await
        .expect("read");
    assert_eq!(read, stored_as(&batch, &read));
    assert!(read.iter().all(|s| s.id > after_warm));

    // The same uids again: nothing new, nothing announced; then another
    // replica's batch.
    assert_eq!(
        unnest
            .save(&orders_testkit::new_orders(&batch))
            .await
            .expect("save"),
        vec![SaveOutcome::Duplicate; 3]
    );
    let other = orders("b", 2);
    copy.save(&orders_testkit::new_orders(&other))
        .await
        .expect("save");
    let Notice::Stored { first, last, own } = next(&mut events).await else {
        panic!("a stored notice")
    };
    assert!(!own, "another replica's");
    let read = copy
        .stored_since(EventId::new(first.get() - 1), Some(last), 100)
        .await
        .expect("read");
    assert_eq!(read, stored_as(&other, &read));

    // A transaction that rolls back announces nothing.
    let columns = orders_postgres::schema::ORDER_INFO.column_list();
    let copied = columns.replacen("order_uid", "'rolled-back'", 1);
    db.client()
        .await
        .batch_execute(&format!(
            "BEGIN; INSERT INTO order_info ({columns}) SELECT {copied} FROM order_info LIMIT 1; \
             ROLLBACK"
        ))
        .await
        .expect("inserted, then rolled back");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "nothing announced"
    );
}

#[tokio::test]
async fn a_lost_listening_connection_comes_back_and_says_so() {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let repo = PgOrderRepository::new(
        connect_pool_as(&db.url, PoolSettings::default(), "replica-a").expect("pool"),
    );
    let mut events = listening(&db, &repo, "replica-a").await;

    db.client()
        .await
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'replica-a listener' AND datname = current_database()",
        )
        .await
        .expect("terminate the listener's session");

    assert_eq!(next(&mut events).await, Notice::Reconnected);
    repo.save(&orders_testkit::new_orders(&orders("after", 1)))
        .await
        .expect("save");
    assert!(matches!(next(&mut events).await, Notice::Stored { .. }));
}

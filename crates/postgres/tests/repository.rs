//! PgOrderRepository against a real PostgreSQL: each test in its own database.

use orders_domain::{
    Order, OrderRepository, OrderUid, RejectReason, Rejection, RepositoryError, SaveOutcome,
};
use orders_postgres::{PgOrderRepository, PoolSettings, connect_pool, ensure_database, migrate};
use orders_testkit::{SAMPLE, TestDb, order_json, order_value};

async fn repository() -> (TestDb, PgOrderRepository) {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
    (db, PgOrderRepository::new(pool))
}

/// Every order `load_recent` yields, in order.
async fn load(repo: &PgOrderRepository, limit: usize) -> Vec<Order> {
    use futures::TryStreamExt;
    repo.load_recent(limit)
        .try_concat()
        .await
        .expect("load_recent")
}

fn sample() -> Order {
    Order::parse(SAMPLE).expect("sample is valid")
}

async fn rows_per_table(db: &TestDb, uid: &str) -> [i64; 4] {
    let mut counts = [0; 4];
    for (i, table) in ["order_info", "delivery", "payment", "items"]
        .iter()
        .enumerate()
    {
        counts[i] = db
            .count(&format!(
                "SELECT count(*) FROM {table} WHERE order_uid = '{uid}'"
            ))
            .await;
    }
    counts
}

#[tokio::test]
async fn sample_order_round_trips_through_the_four_tables() {
    let (db, repo) = repository().await;

    let outcome = repo.save(&sample()).await.expect("save");

    assert_eq!(outcome, SaveOutcome::Stored);
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [1, 1, 1, 1]
    );
    let found = repo
        .find(&sample().order_uid)
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found, sample());
    let json: serde_json::Value = serde_json::from_slice(&found.to_json()).expect("json");
    assert_eq!(
        json,
        serde_json::from_slice::<serde_json::Value>(SAMPLE).expect("json")
    );
}

#[tokio::test]
async fn items_keep_their_order_and_every_field() {
    let (_db, repo) = repository().await;
    let mut value = order_value("many-items", 1);
    let first = value["items"][0].clone();
    let items: Vec<_> = (0..5)
        .map(|i| {
            let mut item = first.clone();
            item["chrt_id"] = serde_json::Value::from(100 - i);
            item["name"] = serde_json::Value::from(format!("item {i} <b>&'\""));
            item
        })
        .collect();
    value["items"] = serde_json::Value::from(items);
    let order = Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid");

    repo.save(&order).await.expect("save");

    let found = repo
        .find(&order.order_uid)
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found, order);
}

#[tokio::test]
async fn same_order_again_is_a_duplicate_and_changes_nothing() {
    let (db, repo) = repository().await;
    repo.save(&sample()).await.expect("first save");

    let outcome = repo.save(&sample()).await.expect("second save");

    assert_eq!(outcome, SaveOutcome::Duplicate);
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [1, 1, 1, 1]
    );
}

#[tokio::test]
async fn same_uid_with_other_content_is_a_conflict_and_the_first_stays() {
    let (db, repo) = repository().await;
    repo.save(&sample()).await.expect("first save");
    let mut other = sample();
    other.payment.amount += 1;
    other.items.push(other.items[0].clone());

    let outcome = repo.save(&other).await.expect("second save");

    assert_eq!(outcome, SaveOutcome::Conflict);
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [1, 1, 1, 1]
    );
    let stored = repo.find(&sample().order_uid).await.expect("find");
    assert_eq!(stored, Some(sample()));
}

#[tokio::test]
async fn a_failure_in_the_items_insert_leaves_no_row_anywhere() {
    let (db, repo) = repository().await;
    // Past the domain's validation, only the items table's CHECK refuses it.
    let mut order = sample();
    order.items.push(order.items[0].clone());
    order.items[1].sale = 500;

    let result = repo.save(&order).await;

    match result {
        Err(RepositoryError::Refused(why)) => assert!(why.contains("23514"), "{why}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [0, 0, 0, 0]
    );
}

#[tokio::test]
async fn a_date_postgres_cannot_hold_is_refused_not_retried() {
    let (db, repo) = repository().await;
    let mut value = order_value("year-zero", 1);
    value["date_created"] = serde_json::Value::from("0000-01-01T00:00:00Z");
    let order = Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid RFC 3339");

    let result = repo.save(&order).await;

    assert!(
        matches!(result, Err(RepositoryError::Refused(_))),
        "{result:?}"
    );
    assert_eq!(rows_per_table(&db, "year-zero").await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn concurrent_saves_of_one_order_store_it_once() {
    let (db, repo) = repository().await;
    let order = sample();

    let outcomes = futures_join_all(
        (0..8)
            .map(|_| {
                let repo = repo.clone();
                let order = order.clone();
                tokio::spawn(async move { repo.save(&order).await.expect("save") })
            })
            .collect(),
    )
    .await;

    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == SaveOutcome::Stored)
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == SaveOutcome::Duplicate)
            .count(),
        7
    );
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [1, 1, 1, 1]
    );
}

async fn futures_join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn warm_up_loads_the_newest_orders_with_their_items() {
    let (_db, repo) = repository().await;
    let total = 3_000u64;
    for n in 0..total {
        let order = Order::parse(&order_json(&format!("order-{n}"), n)).expect("valid");
        repo.save(&order).await.expect("save");
    }

    let all = load(&repo, 10_000).await;
    let newest = load(&repo, 1_000).await;

    assert_eq!(all.len(), total as usize);
    assert_eq!(newest.len(), 1_000);
    // Newest first: order n was created at 1_600_000_000 + n.
    let uids: Vec<_> = newest.iter().map(|o| o.order_uid.to_string()).collect();
    let expected: Vec<_> = (total - 1_000..total)
        .rev()
        .map(|n| format!("order-{n}"))
        .collect();
    assert_eq!(uids, expected);
    for order in &newest {
        let n: u64 = order.order_uid.as_str()["order-".len()..]
            .parse()
            .expect("n");
        let want = Order::parse(&order_json(order.order_uid.as_str(), n)).expect("valid");
        assert_eq!(*order, want);
    }
}

#[tokio::test]
async fn find_of_an_unknown_uid_is_none() {
    let (_db, repo) = repository().await;
    let found = repo
        .find(&OrderUid::parse("missing").expect("uid"))
        .await
        .expect("find");
    assert_eq!(found, None);
}

#[tokio::test]
async fn a_rejection_is_recorded_once_per_stream_sequence() {
    let (db, repo) = repository().await;
    let rejection = Rejection {
        reason: RejectReason::InvalidJson,
        detail: "invalid JSON: EOF".to_owned(),
        order_uid: None,
        subject: "orders".to_owned(),
        stream: "ORDERS".to_owned(),
        stream_sequence: Some(42),
        payload: bytes::Bytes::from_static(b"{\"trunc\0\xff"),
    };

    repo.record_rejection(&rejection).await.expect("first");
    repo.record_rejection(&rejection)
        .await
        .expect("redelivered");

    assert_eq!(db.count("SELECT count(*) FROM rejected_messages").await, 1);
    let row = db
        .client()
        .await
        .query_one("SELECT reason, detail, payload FROM rejected_messages", &[])
        .await
        .expect("row");
    assert_eq!(row.get::<_, &str>(0), "invalid_json");
    assert_eq!(row.get::<_, &str>(1), "invalid JSON: EOF");
    assert_eq!(row.get::<_, &[u8]>(2), b"{\"trunc\0\xff");
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_refused() {
    // Port 1 on loopback: nothing listens there.
    let pool = connect_pool(
        "postgres://postgres@127.0.0.1:1/orders",
        PoolSettings::default(),
    )
    .expect("pool");
    let repo = PgOrderRepository::new(pool);

    assert!(matches!(
        repo.ping().await,
        Err(RepositoryError::Unavailable(_))
    ));
    assert!(matches!(
        repo.save(&sample()).await,
        Err(RepositoryError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_missing_database_is_created_and_migrations_run_once_from_many_replicas() {
    let db = TestDb::not_yet_created();

    assert!(ensure_database(&db.url).await.expect("create"));
    assert!(!ensure_database(&db.url).await.expect("exists"));
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { migrate(&url).await })
        })
        .collect();
    for run in runs {
        run.await.expect("task").expect("migrate");
    }

    assert_eq!(
        db.count("SELECT count(*) FROM refinery_schema_history")
            .await,
        1
    );
}

#[tokio::test]
async fn the_list_pages_newest_first_without_gaps_or_repeats() {
    let (_db, repo) = repository().await;
    // 25 orders, with two pairs sharing a creation time to test the tie-breaker.
    for n in 0..25u64 {
        let mut value = order_value(&format!("list-{n:02}"), n);
        if n == 10 || n == 11 {
            value["date_created"] = serde_json::Value::from("2020-09-13T12:26:50.123456Z");
        }
        let order = Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid");
        repo.save(&order).await.expect("save");
    }

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = repo.list_recent(7, before.clone()).await.expect("page");
        seen.extend(page.iter().map(|s| s.order_uid.to_string()));
        match page.last() {
            Some(last) if page.len() == 7 => before = Some(last.cursor.clone()),
            _ => break,
        }
    }

    assert_eq!(seen.len(), 25, "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "repeats in {seen:?}");
    assert_eq!(seen[0], "list-24");
    let first = &repo.list_recent(1, None).await.expect("page")[0];
    assert_eq!(first.amount, 1500 + 24);
    assert_eq!(first.currency, "USD");
}

fn numbered(uid: &str, n: u64) -> Order {
    Order::parse(&order_json(uid, n)).expect("valid")
}

#[tokio::test]
async fn a_batch_stores_the_new_orders_and_reports_each_outcome() {
    let (db, repo) = repository().await;
    repo.save(&numbered("a", 1)).await.expect("stored before");
    let batch = [
        numbered("b", 2),
        numbered("a", 1),  // already stored, equal
        numbered("a", 99), // already stored, different
        numbered("c", 3),
        numbered("b", 2),  // repeated in the batch, equal
        numbered("c", 42), // repeated in the batch, different
    ];

    let outcomes = repo.save_batch(&batch).await.expect("batch");

    use SaveOutcome::*;
    assert_eq!(
        outcomes,
        [Stored, Duplicate, Conflict, Stored, Duplicate, Conflict]
    );
    for uid in ["a", "b", "c"] {
        assert_eq!(rows_per_table(&db, uid).await, [1, 1, 1, 1], "{uid}");
    }
    assert_eq!(
        repo.find(&numbered("c", 3).order_uid).await.expect("find"),
        Some(numbered("c", 3))
    );
}

#[tokio::test]
async fn an_order_the_database_refuses_fails_the_whole_batch_and_stores_nothing() {
    let (db, repo) = repository().await;
    let mut value = order_value("year-zero", 1);
    value["date_created"] = serde_json::Value::from("0000-01-01T00:00:00Z");
    let refused = Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid");

    let result = repo.save_batch(&[numbered("fine", 1), refused]).await;

    assert!(
        matches!(result, Err(RepositoryError::Refused(_))),
        "{result:?}"
    );
    assert_eq!(rows_per_table(&db, "fine").await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn a_large_batch_keeps_every_order_whole() {
    let (db, repo) = repository().await;
    let batch: Vec<Order> = (0..1_000)
        .map(|n| numbered(&format!("big-{n}"), n))
        .collect();

    let outcomes = repo.save_batch(&batch).await.expect("batch");

    assert!(outcomes.iter().all(|o| *o == SaveOutcome::Stored));
    assert_eq!(db.count("SELECT count(*) FROM items").await, 1_000);
    for order in batch.iter().step_by(97) {
        assert_eq!(
            repo.find(&order.order_uid).await.expect("find").as_ref(),
            Some(order)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_while_orders_are_committed_never_sees_an_order_without_its_items() {
    // Found by the cluster test: a replica warming up while the other
    // committed batches cached orders with `items: []`, because the items
    // and the orders were read in two snapshots.
    let (_db, repo) = repository().await;
    let repo = std::sync::Arc::new(repo);
    let writer = {
        let repo = std::sync::Arc::clone(&repo);
        tokio::spawn(async move {
            for batch in 0..200u64 {
                let orders: Vec<Order> = (0..10)
                    .map(|i| {
                        let n = batch * 10 + i;
                        Order::parse(&order_json(&format!("race-{n}"), n)).expect("valid")
                    })
                    .collect();
                repo.save_batch(&orders).await.expect("save");
            }
        })
    };
    let mut loads = 0;
    while !writer.is_finished() {
        // A limit below the count, so the newest set also moves.
        for order in load(&repo, 500).await {
            assert!(
                !order.items.is_empty(),
                "{} loaded without its items",
                order.order_uid
            );
        }
        loads += 1;
    }
    writer.await.expect("writer");
    assert!(loads > 1, "the writer finished before a second load");
}

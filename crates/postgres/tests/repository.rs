//! PgOrderRepository against a real PostgreSQL: each test in its own database.

use orders_domain::{
    DatabaseProbe, Order, OrderQuery, OrderReads, OrderStore, OrderUid, RejectReason, Rejection,
    RepositoryError, SaveOutcome,
};
use orders_postgres::{PgOrderRepository, PoolSettings, connect_pool, ensure_database, migrate};
use orders_testkit::{SAMPLE, TestDb, order_json, order_value};

async fn repository() -> (TestDb, PgOrderRepository) {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
    (db, PgOrderRepository::new(pool))
}

/// Every order `load_recent` yields, as it yields them.
async fn load(repo: &PgOrderRepository, limit: usize) -> Vec<Order> {
    orders_testkit::load_documents(repo.load_recent(limit)).await
}

fn sample() -> Order {
    Order::parse(SAMPLE).expect("sample is valid")
}

/// Saves one order: a batch of one.
async fn save_one(repo: &PgOrderRepository, order: &Order) -> SaveOutcome {
    let mut outcomes = repo
        .save(&orders_testkit::new_orders(std::slice::from_ref(order)))
        .await
        .expect("save");
    assert_eq!(outcomes.len(), 1, "one outcome per order");
    outcomes.remove(0)
}

/// Makes the database refuse items named `name`, as a constraint the
/// domain's validation does not know would.
async fn refuse_items_named(db: &TestDb, name: &str) {
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE items ADD CONSTRAINT test_refuses CHECK (name <> '{name}')"
        ))
        .await
        .expect("constraint");
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

    let outcome = save_one(&repo, &sample()).await;

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

    save_one(&repo, &order).await;

    let found = repo
        .find(&order.order_uid)
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found, order);
    assert_eq!(
        load(&repo, 10).await,
        [order],
        "the warm-up reads them in order too"
    );
}

#[tokio::test]
async fn same_order_again_is_a_duplicate_and_changes_nothing() {
    let (db, repo) = repository().await;
    save_one(&repo, &sample()).await;

    let outcome = save_one(&repo, &sample()).await;

    assert_eq!(outcome, SaveOutcome::Duplicate);
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [1, 1, 1, 1]
    );
}

#[tokio::test]
async fn same_uid_with_other_content_is_a_conflict_and_the_first_stays() {
    let (db, repo) = repository().await;
    save_one(&repo, &sample()).await;
    let mut other = sample();
    other.payment.amount += 1;
    other.items.push(other.items[0].clone());

    let outcome = save_one(&repo, &other).await;

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
    refuse_items_named(&db, "forbidden").await;
    let mut order = sample();
    order.items.push(order.items[0].clone());
    order.items[1].name = "forbidden".into();

    let outcome = save_one(&repo, &order).await;

    match outcome {
        SaveOutcome::Refused(why) => assert!(why.contains("23514"), "{why}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(
        rows_per_table(&db, "b563feb7b2b84b6test").await,
        [0, 0, 0, 0]
    );
}

#[tokio::test]
async fn the_instant_is_computed_in_rust_and_the_text_kept() {
    let (db, repo) = repository().await;
    let mut value = order_value("far-east", 1);
    // RFC 3339 allows +23:00; PostgreSQL would refuse to parse it.
    value["date_created"] = serde_json::Value::from("2021-11-26T23:22:19.5+23:00");
    let order = Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid");

    assert_eq!(save_one(&repo, &order).await, SaveOutcome::Stored);

    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT date_created, created_at = '2021-11-26T00:22:19.5Z'::timestamptz \
             FROM order_info WHERE order_uid = 'far-east'",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, &str>(0), "2021-11-26T23:22:19.5+23:00");
    assert!(row.get::<_, bool>(1), "created_at is the same instant");
    assert_eq!(
        repo.find(&order.order_uid).await.expect("find"),
        Some(order)
    );
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
                tokio::spawn(async move { save_one(&repo, &order).await })
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
        save_one(&repo, &order).await;
    }

    let all = load(&repo, 10_000).await;
    let newest = load(&repo, 1_000).await;

    assert_eq!(all.len(), total as usize);
    assert_eq!(newest.len(), 1_000);
    // The newest: order n was created at 1_600_000_000 + n.
    let mut uids: Vec<_> = newest.iter().map(|o| o.order_uid.to_string()).collect();
    uids.sort();
    let mut expected: Vec<_> = (total - 1_000..total)
        .map(|n| format!("order-{n}"))
        .collect();
    expected.sort();
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
        headers: Some("NATS/1.0 408 Request Timeout\nNats-Msg-Id: x".to_owned()),
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
        .query_one(
            "SELECT reason, detail, payload, headers, replayed_at IS NULL FROM rejected_messages",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, &str>(0), "invalid_json");
    assert_eq!(row.get::<_, &str>(1), "invalid JSON: EOF");
    assert_eq!(row.get::<_, &[u8]>(2), b"{\"trunc\0\xff");
    assert_eq!(
        row.get::<_, &str>(3),
        "NATS/1.0 408 Request Timeout\nNats-Msg-Id: x"
    );
    assert!(row.get::<_, bool>(4), "not replayed");
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
        repo.save(&orders_testkit::new_orders(&[sample()])).await,
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

    // One row per migration file, each applied once.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .expect("migrations/")
        .count() as i64;
    assert_eq!(
        db.count("SELECT count(*) FROM refinery_schema_history")
            .await,
        migrations
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
        save_one(&repo, &order).await;
    }

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = repo
            .list_recent(&OrderQuery::all(), 7, before.clone())
            .await
            .expect("page");
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
    let first = &repo
        .list_recent(&OrderQuery::all(), 1, None)
        .await
        .expect("page")[0];
    assert_eq!(first.amount, 1500 + 24);
    assert_eq!(first.currency, "USD");
}

fn numbered(uid: &str, n: u64) -> Order {
    Order::parse(&order_json(uid, n)).expect("valid")
}

#[tokio::test]
async fn a_batch_stores_the_new_orders_and_reports_each_outcome() {
    let (db, repo) = repository().await;
    save_one(&repo, &numbered("a", 1)).await;
    let batch = [
        numbered("b", 2),
        numbered("a", 1),  // already stored, equal
        numbered("a", 99), // already stored, different
        numbered("c", 3),
        numbered("b", 2),  // repeated in the batch, equal
        numbered("c", 42), // repeated in the batch, different
    ];

    let outcomes = repo
        .save(&orders_testkit::new_orders(&batch))
        .await
        .expect("batch");

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
async fn orders_the_database_refuses_are_refused_alone_and_the_rest_stored() {
    let (db, repo) = repository().await;
    refuse_items_named(&db, "forbidden").await;
    let batch: Vec<Order> = (0..100)
        .map(|n| {
            let mut order = numbered(&format!("o{n}"), n);
            if n == 3 || n == 70 || n == 71 {
                order.items[0].name = "forbidden".into();
            }
            order
        })
        .collect();

    let outcomes = repo
        .save(&orders_testkit::new_orders(&batch))
        .await
        .expect("batch");

    for (n, outcome) in outcomes.iter().enumerate() {
        let uid = format!("o{n}");
        if n == 3 || n == 70 || n == 71 {
            assert!(
                matches!(outcome, SaveOutcome::Refused(why) if why.contains("test_refuses")),
                "{uid}: {outcome:?}"
            );
            assert_eq!(rows_per_table(&db, &uid).await, [0, 0, 0, 0], "{uid}");
        } else {
            assert_eq!(*outcome, SaveOutcome::Stored, "{uid}");
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM order_info").await, 97);
    assert_eq!(db.count("SELECT count(*) FROM items").await, 97);
}

#[tokio::test]
async fn a_large_batch_keeps_every_order_whole() {
    let (db, repo) = repository().await;
    let batch: Vec<Order> = (0..1_000)
        .map(|n| numbered(&format!("big-{n}"), n))
        .collect();

    let outcomes = repo
        .save(&orders_testkit::new_orders(&batch))
        .await
        .expect("batch");

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
                repo.save(&orders_testkit::new_orders(&orders))
                    .await
                    .expect("save");
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

#[tokio::test]
async fn a_batch_is_stored_judged_and_refused_in_one_pass_each_with_its_document() {
    {
        let db = TestDb::new().await;
        migrate(&db.url).await.expect("migrations");
        let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
        let repo = PgOrderRepository::new(pool);
        refuse_items_named(&db, "forbidden").await;
        save_one(&repo, &numbered("a", 1)).await;
        let mut refused = numbered("r", 7);
        refused.items[0].name = "forbidden".into();
        let mut two_items = numbered("two", 8);
        two_items.items.push(two_items.items[0].clone());
        let batch = [
            numbered("b", 2),
            numbered("a", 1),
            numbered("a", 99),
            refused,
            two_items.clone(),
            numbered("b", 2),
        ];

        let outcomes = repo
            .save(&orders_testkit::new_orders(&batch))
            .await
            .expect("batch");

        use SaveOutcome::*;
        assert_eq!(outcomes[..3], [Stored, Duplicate, Conflict]);
        assert!(matches!(outcomes[3], Refused(_)), "{:?}", outcomes[3]);
        assert_eq!(outcomes[4..], [Stored, Duplicate]);
        assert_eq!(rows_per_table(&db, "r").await, [0, 0, 0, 0]);
        assert_eq!(
            repo.find(&two_items.order_uid).await.expect("find"),
            Some(two_items.clone())
        );
        assert_eq!(save_one(&repo, &numbered("c", 3)).await, Stored);
        assert_eq!(db.count("SELECT count(*) FROM order_info").await, 4);
        // Each stored order's document is its JSON (`load` checks the bytes).
        let mut loaded = load(&repo, 10).await;
        loaded.sort_by(|a, b| a.order_uid.as_str().cmp(b.order_uid.as_str()));
        let want = [
            numbered("a", 1),
            numbered("b", 2),
            numbered("c", 3),
            two_items,
        ];
        assert_eq!(loaded, want);
    }
}

#[tokio::test]
async fn orders_stored_before_documents_are_warmed_from_their_rows_and_given_theirs() {
    let (db, repo) = repository().await;
    let orders: Vec<Order> = (0..5).map(|n| numbered(&format!("old-{n}"), n)).collect();
    repo.save(&orders_testkit::new_orders(&orders))
        .await
        .expect("save");
    // As an upgrade from V4 leaves them: no documents, but for one order.
    db.client()
        .await
        .batch_execute("UPDATE order_info SET document = NULL WHERE order_uid <> 'old-4'")
        .await
        .expect("forget the documents");
    let sorted = |mut orders: Vec<Order>| {
        orders.sort_by(|a, b| a.order_uid.as_str().cmp(b.order_uid.as_str()));
        orders
    };

    for order in &orders {
        assert_eq!(
            repo.find_json(&order.order_uid).await.expect("find_json"),
            Some(order.to_json().into()),
            "{}",
            order.order_uid
        );
    }
    assert_eq!(
        repo.find_json(&OrderUid::parse("missing").expect("uid"))
            .await
            .expect("find_json"),
        None
    );
    assert_eq!(
        sorted(load(&repo, 10).await),
        orders,
        "read from their rows"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM order_info WHERE document IS NULL")
            .await,
        0,
        "the warm-up wrote the missing documents"
    );
    assert_eq!(
        sorted(load(&repo, 10).await),
        orders,
        "read from the documents"
    );
    // The newest three only: the cutoff holds for orders without documents too.
    db.client()
        .await
        .batch_execute("UPDATE order_info SET document = NULL")
        .await
        .expect("forget the documents");
    assert_eq!(sorted(load(&repo, 3).await), orders[2..]);
}

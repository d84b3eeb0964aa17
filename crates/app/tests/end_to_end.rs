//! The wired app against real PostgreSQL and NATS.

mod support;

use std::time::Duration;

use orders_testkit::{SAMPLE, TestDb, TestStream, eventually, get, http, order_json, sample_value};
use serde_json::Value;
use support::{spawn_app, spawn_with};

const SAMPLE_UID: &str = "b563feb7b2b84b6test";

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test]
async fn published_order_is_stored_and_answered_with_equal_json() {
    let app = spawn_app().await;

    app.publish(SAMPLE.to_vec(), Some(SAMPLE_UID)).await;

    let addr = app.addr;
    eventually(
        "the order answers 200",
        Duration::from_secs(5),
        || async move { get(addr, &format!("/order?order_uid={SAMPLE_UID}")).await.0 == 200 },
    )
    .await;
    let (status, head, body) = http(addr, "GET", &format!("/order?order_uid={SAMPLE_UID}")).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(json(&body), sample_value());
    for table in ["order_info", "delivery", "payment", "items"] {
        assert_eq!(
            app.db.count(&format!("SELECT count(*) FROM {table}")).await,
            1,
            "{table}"
        );
    }
    let (_, _, stopped) = app.stop().await;
    stopped.expect("clean stop");
}

#[tokio::test]
async fn unknown_and_malformed_uids_get_json_errors() {
    let app = spawn_app().await;

    let (status, body) = get(app.addr, "/order?order_uid=nobody").await;
    assert_eq!(status, 404);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "order not found", "order_uid": "nobody"})
    );

    let (status, body) = get(app.addr, "/order?order_uid=%3Cscript%3E").await;
    assert_eq!(status, 400);
    assert!(json(&body)["error"].as_str().is_some());

    let (status, head, _) = http(app.addr, "DELETE", "/order?order_uid=x").await;
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn invalid_messages_are_rejected_and_every_valid_one_is_stored() {
    let app = spawn_app().await;
    let invalid: Vec<(&[u8], &str)> = vec![
        (b"{\"order_uid\": \"trunc", "invalid_json"),
        (b"null", "not_an_object"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"{\"order_uid\": \"no-fields\"}", "invalid_field"),
    ];
    let mut valid = 0;
    for (i, (bad, _)) in invalid.iter().enumerate() {
        for n in 0..4u64 {
            let n = i as u64 * 4 + n;
            app.publish(order_json(&format!("valid-{n}"), n), None)
                .await;
            valid += 1;
        }
        app.publish(bad.to_vec(), None).await;
    }

    app.wait_stored(valid).await;
    let db = &app.db;
    let expected = invalid.len() as i64;
    eventually(
        "every rejection recorded",
        Duration::from_secs(10),
        || async move { db.count("SELECT count(*) FROM rejected_messages").await == expected },
    )
    .await;

    let rows = db
        .client()
        .await
        .query(
            "SELECT reason, payload FROM rejected_messages ORDER BY stream_sequence",
            &[],
        )
        .await
        .expect("rows");
    for (row, (bad, reason)) in rows.iter().zip(&invalid) {
        assert_eq!(row.get::<_, &str>(0), *reason);
        assert_eq!(row.get::<_, &[u8]>(1), *bad);
    }
    assert_eq!(db.count("SELECT count(*) FROM order_info").await, valid);
    for n in 0..valid as u64 {
        let (status, body) = get(app.addr, &format!("/order?order_uid=valid-{n}")).await;
        assert_eq!(status, 200);
        assert_eq!(json(&body), json(&order_json(&format!("valid-{n}"), n)));
    }
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn duplicate_delivery_is_acked_and_stored_once_and_a_conflict_is_rejected() {
    let app = spawn_app().await;

    // No Nats-Msg-Id, so the broker keeps both copies and the service sees both.
    app.publish(SAMPLE.to_vec(), None).await;
    app.publish(SAMPLE.to_vec(), None).await;
    let mut conflicting = sample_value();
    conflicting["payment"]["amount"] = Value::from(1);
    app.publish(serde_json::to_vec(&conflicting).expect("json"), None)
        .await;

    let db = &app.db;
    eventually(
        "the conflict recorded",
        Duration::from_secs(10),
        || async move {
            db.count("SELECT count(*) FROM rejected_messages WHERE reason = 'conflict'")
                .await
                == 1
        },
    )
    .await;
    assert_eq!(db.count("SELECT count(*) FROM order_info").await, 1);
    let (_, body) = get(app.addr, &format!("/order?order_uid={SAMPLE_UID}")).await;
    assert_eq!(
        json(&body),
        sample_value(),
        "the first order stays, in the cache too"
    );
    let nats = app.stream.client().await;
    let js = async_nats::jetstream::new(nats);
    let stream = js.get_stream(&app.stream.stream).await.expect("stream");
    let stream_ref = &stream;
    let durable = app.stream.durable.clone();
    eventually("nothing left unacked", Duration::from_secs(10), || {
        let durable = durable.clone();
        async move {
            let info = stream_ref.consumer_info(&durable).await.expect("info");
            info.num_pending == 0 && info.num_ack_pending == 0
        }
    })
    .await;
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn after_a_restart_orders_are_answered_from_the_cache_warmed_at_start() {
    let app = spawn_app().await;
    for n in 0..50 {
        app.publish(order_json(&format!("warm-{n}"), n), None).await;
    }
    app.wait_stored(50).await;
    let (db, stream, stopped) = app.stop().await;
    stopped.expect("clean stop");

    let app = spawn_with(db, stream, |c| c).await;
    // Ready means warm. Remove the rows behind the service's back: answers
    // can now only come from the cache that was filled before /readyz said 200.
    app.db
        .client()
        .await
        .batch_execute("DELETE FROM order_info")
        .await
        .expect("delete");
    for n in 0..50 {
        let (status, body) = get(app.addr, &format!("/order?order_uid=warm-{n}")).await;
        assert_eq!(status, 200, "warm-{n}");
        assert_eq!(json(&body), json(&order_json(&format!("warm-{n}"), n)));
    }
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_rejected_unparsed() {
    let app = spawn_with(
        orders_testkit::TestDb::not_yet_created(),
        orders_testkit::TestStream::new(),
        |c| orders_app::Config {
            max_order_bytes: 1000,
            ..c
        },
    )
    .await;
    let mut big = sample_value();
    big["order_uid"] = Value::from("too-big");
    big["internal_signature"] = Value::from("x".repeat(2000));

    app.publish(serde_json::to_vec(&big).expect("json"), None)
        .await;
    app.publish(order_json("small", 1), None).await;

    app.wait_stored(1).await;
    let db = &app.db;
    eventually(
        "the big one rejected",
        Duration::from_secs(10),
        || async move {
            db.count("SELECT count(*) FROM rejected_messages WHERE reason = 'too_large'")
                .await
                == 1
        },
    )
    .await;
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.publish(order_json(&format!("m-{n}"), n), None).await;
    }
    app.publish(order_json("m-0", 0), None).await; // a duplicate
    app.publish(b"not json".to_vec(), None).await;
    app.wait_stored(5).await;
    get(app.addr, "/order?order_uid=m-1").await;
    get(app.addr, "/order?order_uid=nobody").await;

    let addr = app.addr;
    let scrape = || async move { String::from_utf8(get(addr, "/metrics").await.1).expect("utf8") };
    eventually("counters settled", Duration::from_secs(10), || async move {
        let text = scrape().await;
        text.contains("orders_messages_received_total 7") && text.contains("orders_cache_entries 5")
    })
    .await;
    let text = scrape().await;

    for line in [
        "orders_messages_stored_total 5",
        "orders_messages_duplicate_total 1",
        "orders_messages_rejected_total{reason=\"invalid_json\"} 1",
        "orders_cache_hits_total 1",
        "orders_cache_misses_total 1",
        "orders_http_requests_total{route=\"/order\",status=\"200\"} 1",
        "orders_http_requests_total{route=\"/order\",status=\"404\"} 1",
        "orders_ingest_latency_seconds_count 7",
        // The lag is measured for the five orders that became visible.
        "orders_ingest_lag_seconds_count 5",
        "orders_ingest_oldest_unsettled_seconds 0",
        "orders_panics_total{stage=\"ingest\"} 0",
        "orders_consumer_pending 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("orders_db_pool_connections "), "{text}");
    app.stop().await.2.expect("clean stop");
}

#[tokio::test]
async fn a_wildcard_subject_takes_orders_from_every_subject_it_matches() {
    // Producers split by region: the service listens on `<base>.>`.
    let base = TestStream::new();
    let mut stream = base.clone();
    stream.subject = format!("{}.>", base.subject);
    let app = spawn_with(TestDb::not_yet_created(), stream, |c| c).await;

    for (region, n) in [("eu", 1), ("us.west", 2)] {
        app.js
            .publish(
                format!("{}.{region}", base.subject),
                order_json(&format!("from-{}", region.replace('.', "-")), n).into(),
            )
            .await
            .expect("publish")
            .await
            .expect("broker ack");
    }
    app.wait_stored(2).await;

    for uid in ["from-eu", "from-us-west"] {
        assert_eq!(
            get(app.addr, &format!("/order?order_uid={uid}")).await.0,
            200
        );
    }
    let row = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM rejected_messages", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 0);
    drop(base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_chosen_rejections_again_and_marks_them_never_deleting() {
    use orders_publisher::replay::{ReplayArgs, run};

    let app = spawn_app().await;
    // Rows as an older version left them: the sample as a Go producer
    // sends it (rejected then, an order now), and garbage (still rejected).
    let mut go = sample_value();
    go["payment"]
        .as_object_mut()
        .expect("object")
        .remove("request_id");
    let go = serde_json::to_vec(&go).expect("JSON");
    let client = app.db.client().await;
    for (sequence, payload) in [(9_001i64, go.as_slice()), (9_002, b"{garbage".as_slice())] {
        client
            .execute(
                "INSERT INTO rejected_messages (reason, detail, subject, stream, stream_sequence, payload) \
                 VALUES ('invalid_field', 'payment.request_id: missing', $1, 'OLD', $2, $3)",
                &[&app.stream.subject, &sequence, &payload],
            )
            .await
            .expect("old rows");
    }
    let args = ReplayArgs {
        ids: Vec::new(),
        reason: Some(orders_domain::RejectReason::InvalidField),
        since: None,
        until: None,
        again: false,
        dry_run: true,
        database_url: app.db.url.clone(),
    };

    // A dry run publishes and marks nothing.
    run(&args, &app.stream.url, &app.stream.subject)
        .await
        .expect("dry run");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.db.count("SELECT count(*) FROM order_info").await, 0);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM rejected_messages WHERE replayed_at IS NOT NULL")
            .await,
        0
    );

    // The replay: the Go order is stored, the garbage rejected again (a new
    // row), both old rows marked, none deleted.
    run(
        &ReplayArgs {
            dry_run: false,
            ..args.clone()
        },
        &app.stream.url,
        &app.stream.subject,
    )
    .await
    .expect("replay");
    app.wait_stored(1).await;
    let db = &app.db;
    eventually(
        "the garbage rejected again",
        Duration::from_secs(10),
        || async move { db.count("SELECT count(*) FROM rejected_messages").await == 3 },
    )
    .await;
    assert_eq!(
        get(app.addr, &format!("/order?order_uid={SAMPLE_UID}"))
            .await
            .0,
        200
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM rejected_messages WHERE stream = 'OLD' AND replayed_at IS NOT NULL")
            .await,
        2
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM rejected_messages WHERE stream <> 'OLD' AND reason = 'invalid_json'")
            .await,
        1
    );

    // Replayed rows are left out next time, unless asked for again.
    let again = |again| ReplayArgs {
        dry_run: false,
        again,
        reason: None,
        ids: vec![1, 2],
        ..args.clone()
    };
    run(&again(false), &app.stream.url, &app.stream.subject)
        .await
        .expect("nothing left");
    run(&again(true), &app.stream.url, &app.stream.subject)
        .await
        .expect("again");
    eventually(
        "the garbage rejected a third time",
        Duration::from_secs(10),
        || async move { db.count("SELECT count(*) FROM rejected_messages").await == 4 },
    )
    .await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM order_info").await,
        1,
        "a duplicate, not a copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_ready_with_the_newest_and_answers_every_stored_order_meanwhile() {
    use orders_domain::OrderStore as _;

    // More orders than the service loads before it says ready (10,000).
    let db = TestDb::new().await;
    orders_postgres::migrate(&db.url).await.expect("migrate");
    let pool = orders_postgres::connect_pool(&db.url, orders_postgres::PoolSettings::default())
        .expect("pool");
    let repo = orders_postgres::PgOrderRepository::new(pool);
    let total = 25_000u64;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1_000) {
        let orders: Vec<orders_domain::Order> = chunk
            .iter()
            .map(|n| {
                orders_domain::Order::parse(&order_json(&format!("r-{n}"), *n)).expect("valid")
            })
            .collect();
        repo.save(&orders_testkit::new_orders(&orders))
            .await
            .expect("stored");
    }

    let app = spawn_with(db, TestStream::new(), |c| c).await;

    // Ready: the oldest orders (outside the newest 10,000) may not be in
    // memory yet, and are answered all the same, by reading through.
    for n in (0..total).step_by(997) {
        let (status, body) = get(app.addr, &format!("/order?order_uid=r-{n}")).await;
        assert_eq!(status, 200, "r-{n}");
        assert_eq!(json(&body), json(&order_json(&format!("r-{n}"), n)));
    }
    let addr = app.addr;
    eventually(
        "every order in memory",
        Duration::from_secs(60),
        || async move {
            let metrics = String::from_utf8(get(addr, "/metrics").await.1).unwrap_or_default();
            metrics.lines().any(|l| {
                l.strip_prefix("orders_cache_entries ")
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= total as f64 * 0.95)
            })
        },
    )
    .await;
    app.stop().await.2.expect("clean stop");
}

//! Personal data's lifecycle in the running app: the read audit
//! (`AUDIT_READS`) and the background purge (`REJECTED_RETENTION`,
//! `AUDIT_RETENTION`).

mod support;

use std::time::Duration;

use orders_app::config::TokensFile;
use orders_domain::Retention;
use orders_testkit::sse::open_events;
use orders_testkit::{SAMPLE, TestDb, TestStream, eventually, get, http_with};
use serde_json::Value;
use support::{TestApp, TokensOnDisk, spawn_with};

const SAMPLE_UID: &str = "b563feb7b2b84b6test";

/// The app with the read audit on.
async fn audited(adjust: impl FnOnce(orders_app::Config) -> orders_app::Config) -> TestApp {
    spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| {
        adjust(orders_app::Config {
            audit_reads: true,
            ..c
        })
    })
    .await
}

/// Every row of order_reads, oldest first: (who, route, uids).
async fn reads(app: &TestApp) -> Vec<(String, String, Vec<String>)> {
    app.db
        .client()
        .await
        .query(
            "SELECT who, route, order_uids FROM order_reads ORDER BY at, id",
            &[],
        )
        .await
        .expect("order_reads")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn with_audit_reads_each_2xx_answer_for_orders_is_recorded_by_route_and_a_404_is_not() {
    // setup: the sample stored, and three rejected messages, one of them
    // (a conflict) naming the uid `taken`
    let app = audited(|c| c).await;
    app.publish(SAMPLE.to_vec(), None).await;
    app.publish_rejections(b"not json").await;
    let conflict: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT id FROM rejected_messages WHERE reason = 'conflict'",
            &[],
        )
        .await
        .expect("the conflict's row")
        .get(0);

    // exec: each route once answered, and some refused
    let mut statuses = Vec::new();
    for path in [
        format!("/order?order_uid={SAMPLE_UID}"),
        "/order?order_uid=nobody".to_owned(),
        "/order?order_uid=not%20a%20uid".to_owned(),
        "/orders?limit=100".to_owned(),
        "/orders?email=test%40gmail.com".to_owned(),
        "/rejected?reason=conflict".to_owned(),
        format!("/rejected/{conflict}"),
        "/rejected/999999".to_owned(),
        "/healthz".to_owned(),
    ] {
        statuses.push(get(app.addr, &path).await.0);
    }
    let stream = open_events(app.addr, "/orders/events", None).await;
    statuses.push(stream.status);
    drop(stream);

    // check: one row per 2xx answer for orders, the event stream's opening
    // included, none for the 404s, the 400 or /healthz
    assert_eq!(statuses, [200, 404, 400, 200, 200, 200, 200, 404, 200, 200]);
    eventually("six reads stored", Duration::from_secs(10), || async {
        app.db.count("SELECT count(*) FROM order_reads").await >= 6
    })
    .await;
    let sample = || vec![SAMPLE_UID.to_owned()];
    let taken = || vec!["taken".to_owned()];
    // a page lists the newest first, whichever of the two that is; both
    // orders have the sample's email
    let both = || vec![SAMPLE_UID.to_owned(), "taken".to_owned()];
    let mut rows = reads(&app).await;
    for (_, _, uids) in &mut rows {
        uids.sort();
    }
    let me = "127.0.0.1".to_owned();
    assert_eq!(
        rows,
        [
            (me.clone(), "/order".to_owned(), sample()),
            (me.clone(), "/orders".to_owned(), both()),
            (me.clone(), "/orders".to_owned(), both()),
            (me.clone(), "/rejected".to_owned(), taken()),
            (me.clone(), "/rejected/{id}".to_owned(), taken()),
            (me, "/orders/events".to_owned(), Vec::new()),
        ]
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM order_reads WHERE route ~ '[?@=]' OR who ~ '@'")
            .await,
        0,
        "never a query string"
    );
}

#[tokio::test]
async fn with_tokens_the_audit_names_the_caller_by_its_token() {
    // setup
    let file = TokensOnDisk::new("desk:desk-0123456789abcdef\n");
    let path = file.0.clone();
    let app = audited(move |c| orders_app::Config {
        api_tokens_file: TokensFile(Some(path)),
        ..c
    })
    .await;
    app.publish(SAMPLE.to_vec(), None).await;
    app.wait_stored(1).await;

    // exec
    let (status, _, _) = http_with(
        app.addr,
        "GET",
        &format!("/order?order_uid={SAMPLE_UID}"),
        &[("Authorization", "Bearer desk-0123456789abcdef")],
    )
    .await;

    // check
    assert_eq!(status, 200);
    app.wait_rows("order_reads", 1).await;
    assert_eq!(
        reads(&app).await,
        [(
            "desk".to_owned(),
            "/order".to_owned(),
            vec![SAMPLE_UID.to_owned()]
        )]
    );
    // the writer ends with the HTTP server at shutdown
    let (_db, _stream, stopped) = app.stop().await;
    stopped.expect("a clean stop");
}

/// Whether the writer's INSERT is waiting for the lock the test holds.
async fn writer_waits(app: &TestApp) -> bool {
    app.db
        .count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO order_reads%'",
        )
        .await
        > 0
}

#[tokio::test]
async fn while_the_audit_cannot_write_lookups_still_answer_and_each_read_dropped_is_counted() {
    // setup: a queue of 8; the sample cached (the first read stored)
    let app = audited(|c| orders_app::Config {
        audit_queue: 8,
        rate_limit: 0,
        ..c
    })
    .await;
    app.publish(SAMPLE.to_vec(), None).await;
    app.wait_stored(1).await;
    let lookup = format!("/order?order_uid={SAMPLE_UID}");
    assert_eq!(get(app.addr, &lookup).await.0, 200);
    app.wait_rows("order_reads", 1).await;
    // the database stalls the writer: its next INSERT waits for this lock
    let holder = app.db.client().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE order_reads IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock order_reads");

    // exec: 50 lookups while the writer is stuck
    let mut answered = 0;
    for _ in 0..50 {
        if get(app.addr, &lookup).await.0 == 200 {
            answered += 1;
        }
        if answered == 1 {
            eventually(
                "the writer stuck on the lock",
                Duration::from_secs(10),
                || writer_waits(&app),
            )
            .await;
        }
    }
    let dropped_while_stalled = app.metric("orders_audit_dropped_total").await;
    let still_stuck = writer_waits(&app).await;
    holder.batch_execute("COMMIT").await.expect("unlock");

    // check: every lookup answered while the writer was stuck; the reads
    // the queue could not hold were dropped and counted, the rest stored
    assert_eq!(answered, 50);
    assert!(still_stuck, "the lookups did not wait for the writer");
    assert!(
        dropped_while_stalled >= 50 - 8 - 1,
        "at most the queue and the batch in hand were kept: {dropped_while_stalled} dropped"
    );
    let kept = 1 + 50 - dropped_while_stalled as i64;
    app.wait_rows("order_reads", kept).await;
    assert_eq!(
        app.metric("orders_audit_dropped_total").await,
        dropped_while_stalled
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM order_reads").await,
        kept,
        "each read is stored or counted as dropped"
    );
}

#[tokio::test]
async fn old_rejected_messages_and_reads_are_purged_in_the_background_and_counted() {
    // setup: a day's retention for both, a pass every 100 ms; rows of two
    // days ago and of now
    let day = Retention::parse("1d").expect("1d");
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| {
        orders_app::Config {
            rejected_retention: day,
            audit_retention: day,
            purge_every: Duration::from_millis(100),
            ..c
        }
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "INSERT INTO rejected_messages (received_at, reason, detail, subject, stream, payload)
             SELECT now() - g * interval '2 days', 'invalid_json', 'x', 'orders', 'ORDERS', ''
             FROM generate_series(0, 3) g;
             INSERT INTO order_reads (at, who, route, order_uids)
             SELECT now() - g * interval '2 days', '127.0.0.1', '/order', '{}'
             FROM generate_series(0, 2) g;",
        )
        .await
        .expect("rows old and new");

    // exec: the background task does the work
    eventually("old rows purged", Duration::from_secs(30), || async {
        app.db.count("SELECT count(*) FROM rejected_messages").await == 1
            && app.db.count("SELECT count(*) FROM order_reads").await == 1
    })
    .await;

    // check: counted by table; and /rejected says how long rows stay
    assert_eq!(
        app.metric("orders_purged_total{table=\"rejected_messages\"}")
            .await,
        3
    );
    assert_eq!(
        app.metric("orders_purged_total{table=\"order_reads\"}")
            .await,
        2
    );
    let (_, body) = get(app.addr, "/rejected").await;
    let page: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(page["retention"], "1d");
}

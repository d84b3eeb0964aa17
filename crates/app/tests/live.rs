//! `GET /orders/events`: orders appear on every replica's event stream as
//! they are stored, a reconnecting client resumes with `Last-Event-ID`,
//! and slow, vanished or surplus clients hold nothing.

mod support;

use std::time::Duration;

use orders_app::Config;
use orders_testkit::sse::{Event, open_events};
use orders_testkit::{TestDb, TestStream, get, order_json};
use serde_json::Value;
use support::{TestApp, spawn_app, spawn_with};

const EVENTS: &str = "/orders/events";
const WAIT: Duration = Duration::from_secs(10);

fn uid_of(event: &Event) -> String {
    let summary: Value = serde_json::from_str(&event.data).expect("JSON data");
    summary["order_uid"].as_str().expect("order_uid").to_owned()
}

/// A counter or gauge from the app's `/metrics`.
async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = String::from_utf8(get(app.addr, "/metrics").await.1).expect("UTF-8");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Publishes `count` orders `{prefix}-{n}`, waiting for the broker's acks
/// a thousand at a time (the client holds only so many unacked).
async fn publish_many(app: &TestApp, prefix: &str, count: u64) {
    let mut acks = Vec::with_capacity(1_000);
    for n in 0..count {
        let body = order_json(&format!("{prefix}-{n}"), n);
        acks.push(
            app.js
                .publish(app.stream.subject.clone(), body.into())
                .await
                .expect("publish"),
        );
        if acks.len() == 1_000 || n + 1 == count {
            for ack in acks.drain(..) {
                ack.await.expect("broker ack");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_stored_by_one_replica_streams_on_another_and_is_a_cache_hit_there() {
    // Two replicas on one database, each with a consumer of its own: the
    // order is published where only A takes it.
    let a = spawn_app().await;
    let db_url = a.db.url.clone();
    let b = spawn_with(TestDb::not_yet_created(), TestStream::new(), move |c| {
        Config {
            database_url: db_url,
            ..c
        }
    })
    .await;
    let mut on_b = open_events(b.addr, EVENTS, None).await;
    assert_eq!(on_b.status, 200, "{}", on_b.head);
    assert!(
        on_b.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        on_b.head
    );
    let misses_before = metric(&b, "orders_cache_misses_total").await;

    a.publish(order_json("from-a", 1), None).await;

    let event = on_b.next_event(WAIT).await.expect("an event on B");
    assert_eq!(event.event, "order");
    assert_eq!(uid_of(&event), "from-a");
    let summary: Value = serde_json::from_str(&event.data).expect("JSON");
    assert!(summary["amount"].is_i64() && summary["currency"].is_string());
    assert!(summary["date_created"].is_string());
    let id: i64 = event
        .id
        .as_deref()
        .expect("an id")
        .parse()
        .expect("numeric id");
    let stored_id =
        a.db.count("SELECT event_id FROM order_info WHERE order_uid = 'from-a'")
            .await;
    assert_eq!(id, stored_id, "the id is the database's");
    let (status, body) = get(b.addr, "/order?order_uid=from-a").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["order_uid"],
        "from-a"
    );
    assert_eq!(
        metric(&b, "orders_cache_misses_total").await,
        misses_before,
        "B's first lookup of A's order was answered from its cache"
    );
    // The gauge is refreshed every second, not when /metrics is read.
    orders_testkit::eventually("B's gauge counts its one stream", WAIT, || async {
        metric(&b, "orders_event_streams").await == 1
    })
    .await;

    // Shutdown ends the open stream promptly.
    let stopped = tokio::time::timeout(Duration::from_secs(5), b.stop())
        .await
        .expect("B stopped within 5 s with a stream open");
    stopped.2.expect("a clean stop");
    assert!(on_b.closed_within(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_with_last_event_id_gets_what_it_missed_once() {
    let app = spawn_app().await;
    let mut stream = open_events(app.addr, EVENTS, None).await;
    app.publish(order_json("seen", 1), None).await;
    let seen = stream.next_event(WAIT).await.expect("an event");
    assert_eq!(uid_of(&seen), "seen");
    drop(stream);

    // Stored while the client is away.
    app.publish(order_json("missed-1", 2), None).await;
    app.publish(order_json("missed-2", 3), None).await;
    app.wait_stored(3).await;
    let mut resumed = open_events(app.addr, EVENTS, seen.id.as_deref()).await;
    assert_eq!(resumed.status, 200);
    let replayed = resumed.events(2, WAIT).await;
    app.publish(order_json("live", 4), None).await;
    let live = resumed.next_event(WAIT).await.expect("the live order");

    let uids: Vec<String> = replayed.iter().map(uid_of).collect();
    assert_eq!(uids, ["missed-1", "missed-2"]);
    assert_eq!(uid_of(&live), "live", "and nothing sent twice in between");
    let ids: Vec<i64> = replayed
        .iter()
        .chain([&live])
        .map(|e| e.id.as_deref().expect("id").parse().expect("numeric"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let bad = open_events(app.addr, EVENTS, Some("not-a-number")).await;
    assert_eq!(bad.status, 400, "{}", bad.head);
    app.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_streams_over_the_cap_get_503() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        sse_max_clients: 2,
        http_write_timeout: Duration::from_secs(1),
        ..c
    })
    .await;
    // A client with a tiny receive window that never reads a byte.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("small buffer");
    let mut stalled = socket.connect(app.addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        format!("GET {EVENTS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let mut reader = open_events(app.addr, EVENTS, None).await;
    assert_eq!(reader.status, 200);
    orders_testkit::eventually("two streams open", WAIT, || async {
        metric(&app, "orders_event_streams").await == 2
    })
    .await;

    let refused = open_events(app.addr, EVENTS, None).await;
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(
        refused.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        refused.head
    );

    // Far more than the stalled client's socket buffers hold (the
    // kernel takes about 2 MB of small writes on loopback).
    const ORDERS: u64 = 25_000;
    let (got, ()) = tokio::join!(
        reader.events(ORDERS as usize, WAIT),
        publish_many(&app, "burst", ORDERS)
    );

    assert_eq!(
        got.len(),
        ORDERS as usize,
        "the reading client got them all"
    );
    // Bounded: the stalled client held a place in the shared fan-out and
    // its socket's buffers, until the write timeout cut it off.
    assert!(got.iter().all(|e| e.event == "order"));
    orders_testkit::eventually("the stalled stream closed", WAIT, || async {
        metric(&app, "orders_event_streams").await == 1
    })
    .await;
    let again = open_events(app.addr, EVENTS, None).await;
    assert_eq!(again.status, 200, "its place is free again");
    drop(stalled);
    app.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_outlives_the_idle_timeout() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        http_idle_timeout: Duration::from_secs(1),
        ..c
    })
    .await;
    let mut stream = open_events(app.addr, EVENTS, None).await;

    // Three idle periods with nothing to send but keep-alive comments.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.publish(order_json("after-quiet", 1), None).await;

    let event = stream.next_event(WAIT).await.expect("still open");
    assert_eq!(uid_of(&event), "after-quiet");
    app.shutdown.cancel();
}

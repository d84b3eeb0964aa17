//! Fault injection: each promise of design.md's "Semantics that must hold"
//! proved with the real `order-service` binary, a stream of 5,000 distinct
//! generated orders, and servers the test stops, kills and restarts.
//!
//! Tests that stop PostgreSQL or NATS run throwaway servers of their own
//! (`orders_testkit::servers`); the others use a database and a stream of
//! their own on the machine's servers. Afterwards "exactly once" is checked
//! in PostgreSQL (rows per uid in each table) and over HTTP (every uid
//! answers 200 with JSON equal to what was published).
//!
//! The moments of the faults are random; a failing run prints its seed, and
//! `FAULT_SEED=<seed>` repeats it.

mod support;

use std::time::{Duration, Instant};

use orders_publisher::SplitMix64;
use orders_testkit::servers::{NatsServer, PgServer};
use orders_testkit::{TestDb, TestStream, eventually, get};
use serde_json::Value;
use support::fleet::*;

/// Distinct orders per test.
const ORDERS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_three_times_mid_stream_stores_every_order_once() {
    let mut rng = SplitMix64::new(seed());
    let db = TestDb::not_yet_created();
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc = service(&db.url, &names.url, &names);
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;

    // 5,000 orders over about 2.5 s, faster than a debug build stores
    // them, so the service is always mid-batch; three kills at random
    // points of the stream, each as soon as the stored count passes it.
    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 2_000, true);
    let mut points: Vec<u64> = (0..3).map(|_| rng.range(200, 4_000)).collect();
    points.sort_unstable();
    for (kill, point) in points.into_iter().enumerate() {
        let url = db.url.as_str();
        eventually(
            &format!("{point} orders stored"),
            Duration::from_secs(60),
            || async move { stored(url).await >= point as i64 },
        )
        .await;
        svc.kill();
        let before = stored(&db.url).await;
        eprintln!("kill {} past {point}: {before} orders stored", kill + 1);
        assert!(
            (before as usize) < ORDERS,
            "kill {} came after the stream was stored; it proves nothing",
            kill + 1
        );
        svc.start();
        wait_ready(&svc, Duration::from_secs(60)).await;
    }
    publisher.await.expect("publisher");

    wait_all_stored(&db.url, ORDERS, Duration::from_secs(60)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&db.url, &orders, &svc).await;
    assert_eq!(svc.starts(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_5_s_mid_stream_heals_without_a_restart() {
    let mut rng = SplitMix64::new(seed());
    let pg = PgServer::start();
    let database_url = pg.url("orders");
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc = service(&database_url, &names.url, &names);
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;

    // 5,000 orders over about 10 s; the database goes away in the middle.
    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 500, true);
    let url = database_url.as_str();
    eventually(
        "1,000 orders stored",
        Duration::from_secs(30),
        || async move { stored(url).await >= 1_000 },
    )
    .await;
    let down = Instant::now();
    pg.stop();
    eprintln!("PostgreSQL stopped");
    let svc_ref = &svc;
    eventually(
        "/readyz 503 while PostgreSQL is down",
        Duration::from_secs(5),
        || async move { readyz(svc_ref).await == Some(503) },
    )
    .await;
    let readyz_body = get(svc.addr(), "/readyz").await.1;
    let report: Value = serde_json::from_slice(&readyz_body).expect("JSON");
    assert_eq!(report["database"], false, "{report}");
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    pg.start_again();
    eprintln!("PostgreSQL started after {:?}", down.elapsed());
    wait_ready(&svc, Duration::from_secs(30)).await;
    assert!(
        stored(&database_url).await < ORDERS as i64,
        "the stream was stored before the outage ended; it proves nothing"
    );
    publisher.await.expect("publisher");

    wait_all_stored(&database_url, ORDERS, Duration::from_secs(90)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&database_url, &orders, &svc).await;
    assert!(svc.is_running(), "the service exited");
    assert_eq!(svc.starts(), 1, "the service needed a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_resumes_by_itself() {
    let mut rng = SplitMix64::new(seed());
    let nats = NatsServer::start();
    let db = TestDb::not_yet_created();
    let names = TestStream::on(&nats.url());
    let js = jetstream_on(&nats.url(), &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc = service(&db.url, &nats.url(), &names);
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;

    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 500, true);
    let db_ref = &db;
    eventually(
        "1,000 orders stored",
        Duration::from_secs(30),
        || async move { stored(&db_ref.url).await >= 1_000 },
    )
    .await;
    nats.stop();
    eprintln!("nats-server stopped");
    tokio::time::sleep(Duration::from_millis(rng.range(500, 2_000))).await;
    nats.start_again();
    eprintln!("nats-server started again");
    assert!(
        stored(&db.url).await < ORDERS as i64,
        "the stream was stored before the restart; it proves nothing"
    );
    publisher.await.expect("publisher");

    wait_all_stored(&db.url, ORDERS, Duration::from_secs(90)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&db.url, &orders, &svc).await;
    assert!(svc.is_running(), "the service exited");
    assert_eq!(svc.starts(), 1, "the service needed a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_1000_orders_twice_leave_one_copy_each() {
    let mut rng = SplitMix64::new(seed());
    let db = TestDb::not_yet_created();
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc = service(&db.url, &names.url, &names);
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;

    // Every order once with its Nats-Msg-Id; then 1,000 of them again with
    // the id (the broker drops those) and the same 1,000 again without one
    // (the service finds them stored and acks them as duplicates).
    publish_paced(js.clone(), names.subject.clone(), &orders, 5_000, true)
        .await
        .expect("publisher");
    let again = &orders[..1_000];
    publish_paced(js.clone(), names.subject.clone(), again, 5_000, true)
        .await
        .expect("publisher");
    publish_paced(js.clone(), names.subject.clone(), again, 5_000, false)
        .await
        .expect("publisher");

    let mut stream = js.get_stream(&names.stream).await.expect("stream");
    let messages = stream.info().await.expect("stream info").state.messages;
    assert_eq!(
        messages,
        (ORDERS + 1_000) as u64,
        "the broker should drop repeats of a Nats-Msg-Id"
    );
    wait_all_stored(&db.url, ORDERS, Duration::from_secs(60)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&db.url, &orders, &svc).await;
    // The 1,000 sent again without an id were acked as duplicates. A
    // message whose ack wait ran out on a busy machine was delivered again
    // and counted as a duplicate too: those are the only extra ones.
    let metrics = String::from_utf8(get(svc.addr(), "/metrics").await.1).expect("UTF-8");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    let duplicates = counter("orders_messages_duplicate_total");
    let redelivered = counter("orders_messages_redelivered_total");
    assert!(
        duplicates >= 1_000 && duplicates - 1_000 <= redelivered,
        "1,000 duplicates should be counted (plus at most the {redelivered} redelivered):\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("orders_messages"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_and_the_rest_is_redelivered() {
    let db = TestDb::not_yet_created();
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(seed(), ORDERS);
    publish_paced(js.clone(), names.subject.clone(), &orders, 20_000, true)
        .await
        .expect("publisher");
    // Small batches, so the signal surely lands mid-stream.
    let mut svc = service(&db.url, &names.url, &names).with_env("INGEST_BATCH_SIZE", "20");
    svc.start();
    let db_ref = &db;
    eventually(
        "some orders stored",
        Duration::from_secs(60),
        || async move { stored(&db_ref.url).await >= 100 },
    )
    .await;

    let signalled = Instant::now();
    let status = svc.terminate(Duration::from_secs(5));
    let took = signalled.elapsed();
    let status = status.expect("no exit within SHUTDOWN_TIMEOUT (5 s)");
    assert_eq!(status.code(), Some(0), "exit code");
    eprintln!("exited 0 in {took:?}");

    // Every acked message is committed: the ack floor is the last stream
    // sequence below which every message was acked, and at least that many
    // orders are in the database.
    let stored_at_stop = stored(&db.url).await;
    let stream = js.get_stream(&names.stream).await.expect("stream");
    let info = stream
        .consumer_info(&names.durable)
        .await
        .expect("consumer");
    let acked = info.ack_floor.stream_sequence as i64;
    assert!(
        acked <= stored_at_stop,
        "{acked} acked but only {stored_at_stop} committed"
    );
    assert!(
        stored_at_stop < ORDERS as i64,
        "the stream was stored before the signal; it proves nothing"
    );

    // The rest is delivered on the next start, each order exactly once.
    svc.start();
    wait_all_stored(&db.url, ORDERS, Duration::from_secs(60)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&db.url, &orders, &svc).await;
    let status = svc.terminate(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

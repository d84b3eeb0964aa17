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
//! The primary-loss tests kill a PostgreSQL primary with a standby beside
//! it: a pg_auto_failover formation whose monitor promotes the synchronous
//! standby, and a primary with an asynchronous standby promoted by hand, to
//! show what that loses and that `REQUIRE_SYNC_STANDBY` prevents it.
//!
//! The moments of the faults are random; a failing run prints its seed, and
//! `FAULT_SEED=<seed>` repeats it.

mod support;

use std::time::{Duration, Instant};

use orders_publisher::SplitMix64;
use orders_testkit::servers::{AutoFailover, NatsServer, PgServer};
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

// ------------------------------------------------------------ primary loss

/// The orders a primary's pool has committed and not told its client about
/// yet: backends waiting for a synchronous standby to confirm a commit.
async fn commits_waiting_for_a_standby(primary_url: &str) -> i64 {
    count(
        primary_url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
    )
    .await
    .unwrap_or(0)
}

/// Whether every standby of the primary at `url` has flushed all the WAL
/// the primary wrote.
async fn standbys_flushed_everything(url: &str) -> bool {
    count(
        url,
        "SELECT count(*) FROM pg_stat_replication WHERE flush_lsn < pg_current_wal_lsn()",
    )
    .await
        == Some(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_sigkilled_mid_stream_fails_over_to_its_sync_standby_and_loses_nothing() {
    let mut rng = SplitMix64::new(seed());
    // pg_auto_failover: a monitor, node1 the primary, node2 its
    // synchronous standby; the monitor promotes node2 when node1 is lost.
    let formation = AutoFailover::start().await;
    let database_url = formation.url("orders");
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc = service(&database_url, &names.url, &names)
        .with_env("DATABASE_READ_URL", &formation.hosts_url(&[1, 0], "orders"));
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;
    let svc_ref = &svc;
    eventually(
        "/readyz to report the synchronous standby",
        Duration::from_secs(10),
        || async move {
            readyz_body(svc_ref)
                .await
                .is_some_and(|r| r["sync_standby"] == true)
        },
    )
    .await;
    eventually(
        "orders_db_sync_standby 1",
        Duration::from_secs(5),
        || async move { metric(svc_ref, "orders_db_sync_standby").await == 1 },
    )
    .await;
    let readyz_log = ReadyzLog::start(&svc);

    // 5,000 orders over about 10 s; node1 dies in the middle.
    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 500, true);
    let point = rng.range(500, 2_500) as i64;
    let url = database_url.as_str();
    eventually(
        &format!("{point} orders stored"),
        Duration::from_secs(60),
        || async move { stored(url).await >= point },
    )
    .await;
    // Make the next commit's outcome unknown to the service: node2 takes
    // its WAL but delays applying it, and node1 waits for it to apply
    // (remote_apply), so the commit is on both disks and the service has
    // not heard of it when node1 dies. (Promotion applies what is delayed.)
    formation.set(1, "recovery_min_apply_delay", "1h").await;
    formation.set(0, "synchronous_commit", "remote_apply").await;
    let node1 = formation.node_url(0, "orders");
    let node1 = node1.as_str();
    eventually(
        "a commit waiting for node2, its WAL flushed there",
        Duration::from_secs(30),
        || async move {
            commits_waiting_for_a_standby(node1).await > 0
                && standbys_flushed_everything(node1).await
        },
    )
    .await;
    let stored_at_kill = stored(node1).await;
    let killed = Instant::now();
    formation.kill_node(0);
    eprintln!("node1 killed with {stored_at_kill} orders committed and one batch in doubt");

    formation.wait_for_primary(1, Duration::from_secs(90)).await;
    eprintln!("node2 promoted {:?} after the kill", killed.elapsed());
    wait_ready(&svc, Duration::from_secs(90)).await;
    eprintln!("/readyz 200 again {:?} after the kill", killed.elapsed());
    assert!(
        stored_at_kill < ORDERS as i64,
        "the stream was stored before the kill; it proves nothing"
    );
    publisher.await.expect("publisher");

    wait_all_stored(&database_url, ORDERS, Duration::from_secs(120)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(&database_url, &orders, &svc).await;
    assert!(svc.is_running(), "the service exited");
    assert_eq!(svc.starts(), 1, "the service needed a restart");
    let changes = readyz_log.changes_since(killed);
    eprintln!("/readyz after the kill: {changes:?}");
    assert!(
        changes.iter().any(|&(_, status)| status == 503),
        "/readyz never said 503 while no primary took writes: {changes:?}"
    );
    assert_eq!(changes.last().map(|&(_, s)| s), Some(200), "{changes:?}");
    // Every order is stored once, yet the service saw fewer than all of
    // them stored: the batch in doubt, whose commit it never heard of, was
    // redelivered, found stored on node2 and acked as duplicates.
    let first_stored = metric(&svc, "orders_messages_stored_total").await;
    let in_doubt = ORDERS as u64 - first_stored;
    let duplicates = metric(&svc, "orders_messages_duplicate_total").await;
    let retried = metric(&svc, "orders_messages_retried_total").await;
    eprintln!(
        "{in_doubt} orders of the batch in doubt found stored after the fail-over; \
         {retried} messages nak'ed, {duplicates} acked as duplicates in all"
    );
    assert!(
        in_doubt > 0,
        "no commit was in doubt at the kill; it proves less"
    );
    // node2 has no standby now: reported, and not required.
    let report = readyz_body(&svc).await.expect("/readyz");
    assert_eq!(report["sync_standby"], false, "{report}");
    eprintln!("--- monitor events ---\n{}", formation.events().await);
}

/// A primary and an asynchronous standby of it (throwaway clusters), and
/// the URL naming both that the service is given.
async fn primary_with_async_standby() -> (PgServer, PgServer, String) {
    let primary = PgServer::start();
    let standby = PgServer::standby_of(&primary, "standby1");
    primary.wait_for_standby("standby1", false).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/orders?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    (primary, standby, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_lost_with_an_async_standby_loses_the_orders_acked_since_it_fell_behind() {
    let mut rng = SplitMix64::new(seed());
    let (primary, standby, database_url) = primary_with_async_standby().await;
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    // No second delivery by an expired ack wait: it would store an acked
    // order again on the new primary, and hide its loss.
    let mut svc = service(&database_url, &names.url, &names).with_env("NATS_ACK_WAIT", "60s");
    svc.start();
    wait_ready(&svc, Duration::from_secs(60)).await;
    let report = readyz_body(&svc).await.expect("/readyz");
    assert_eq!(report["sync_standby"], false, "{report}");

    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 500, true);
    let on_primary = primary.url("orders");
    let on_primary = on_primary.as_str();
    eventually(
        "1,000 orders stored",
        Duration::from_secs(60),
        || async move { stored(on_primary).await >= 1_000 },
    )
    .await;
    // The standby falls behind, as an asynchronous one may (a slow
    // network, a busy disk): it receives nothing more.
    standby.stop();
    let behind_from = stored(on_primary).await;
    eventually(
        "1,000 more orders stored on the primary alone",
        Duration::from_secs(60),
        || async move { stored(on_primary).await >= behind_from + 1_000 },
    )
    .await;
    let at_kill = stored(on_primary).await;
    primary.kill();
    standby.start_again();
    standby.promote();
    eprintln!(
        "standby stopped at {behind_from} orders, primary killed at {at_kill}, standby promoted"
    );
    wait_ready(&svc, Duration::from_secs(60)).await;
    publisher.await.expect("publisher");

    // Every message was settled; those the old primary acked are not
    // delivered again, and the new primary never had them.
    assert_consumer_drained_within(&js, &names, Duration::from_secs(120)).await;
    let on_new = stored(&standby.url("orders")).await;
    let lost = ORDERS as i64 - on_new;
    eprintln!("lost {lost} acked orders of {ORDERS}");
    assert!(
        lost >= at_kill - behind_from,
        "{lost} lost, yet {} were acked after the standby stopped",
        at_kill - behind_from
    );
    let client = connect(&standby.url("orders")).await;
    assert_none_rejected(&client).await;
    assert_eq!(svc.starts(), 1, "the service needed a restart");
    // The cache cannot know: the lost orders it took after their commit
    // are still answered, until the service restarts.
    let kept: std::collections::HashSet<String> = client
        .query("SELECT order_uid FROM order_info", &[])
        .await
        .expect("uids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut answered = 0;
    for order in orders.iter().filter(|o| !kept.contains(uid(o))) {
        if get(svc.addr(), &format!("/order?order_uid={}", uid(order)))
            .await
            .0
            == 200
        {
            answered += 1;
        }
    }
    eprintln!("{answered} of the {lost} lost orders are still answered from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_lost_with_an_async_standby_and_sync_required_loses_nothing() {
    let mut rng = SplitMix64::new(seed());
    let (primary, standby, database_url) = primary_with_async_standby().await;
    let names = TestStream::new();
    let js = jetstream_on(&names.url, &names).await;
    let orders = generate(rng.next_u64(), ORDERS);
    let mut svc =
        service(&database_url, &names.url, &names).with_env("REQUIRE_SYNC_STANDBY", "true");
    svc.start();
    let svc_ref = &svc;
    eventually(
        "/readyz 503 for want of a synchronous standby alone",
        Duration::from_secs(60),
        || async move {
            readyz_body(svc_ref).await.is_some_and(|r| {
                r["cache_warm"] == true
                    && r["database"] == true
                    && r["broker"] == true
                    && r["sync_standby"] == false
                    && r["sync_standby_required"] == true
                    && r["ready"] == false
            })
        },
    )
    .await;
    assert_eq!(readyz(&svc).await, Some(503));

    publish_paced(js.clone(), names.subject.clone(), &orders, 5_000, true)
        .await
        .expect("publisher");
    // Time to ingest, and nothing taken: the messages wait in the stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stored(&primary.url("orders")).await,
        0,
        "acked without a standby"
    );
    let stream = js.get_stream(&names.stream).await.expect("stream");
    let info = stream
        .consumer_info(&names.durable)
        .await
        .expect("consumer");
    assert_eq!(info.num_ack_pending, 0, "messages were pulled");
    assert_eq!(info.num_pending, ORDERS as u64);

    // The same loss as without the requirement: nothing to lose.
    standby.stop();
    primary.kill();
    standby.start_again();
    standby.promote();
    let on_new = standby.url("orders");
    let on_new = on_new.as_str();
    eventually(
        "the service on the new primary, still waiting",
        Duration::from_secs(60),
        || async move {
            readyz_body(svc_ref)
                .await
                .is_some_and(|r| r["database"] == true && r["sync_standby"] == false)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored(on_new).await, 0, "acked without a standby");

    // A synchronous standby for the new primary: ingest resumes by itself.
    let _standby2 = PgServer::standby_of(&standby, "standby2");
    standby.set("synchronous_standby_names", "standby2").await;
    standby.wait_for_standby("standby2", true).await;
    wait_ready(&svc, Duration::from_secs(60)).await;
    wait_all_stored(on_new, ORDERS, Duration::from_secs(120)).await;
    assert_consumer_drained(&js, &names).await;
    assert_exactly_once(on_new, &orders, &svc).await;
    eprintln!("lost 0 orders of {ORDERS}: nothing was acked without a synchronous standby");
    assert_eq!(svc.starts(), 1, "the service needed a restart");
}

//! Past one machine: two replicas of `order-service` sharing one durable
//! consumer on a three-node JetStream cluster (stream replicas 3), all child
//! processes on loopback ports, while 10,000 distinct orders are published
//! and, in turn,
//!
//! 1. one service replica is SIGKILLed and later restarted,
//! 2. one NATS node is SIGKILLed and later restarted,
//! 3. both at once.
//!
//! Afterwards every order is stored exactly once (per table, in
//! PostgreSQL), every replica answers every uid with equal JSON (from its
//! cache, or read through), the consumer has nothing pending, and each
//! replica stored a share.

mod support;

use std::time::Duration;

use orders_publisher::SplitMix64;
use orders_testkit::check::{assert_answers_equal, assert_stored_exactly_once};
use orders_testkit::servers::{NatsServer, ServiceProcess, free_port};
use orders_testkit::{TestDb, TestStream, get, unique_name};
use support::fleet::*;

const ORDERS: usize = 10_000;

/// Three `nats-server -js` routed to each other.
fn cluster() -> Vec<NatsServer> {
    let name = unique_name("orders");
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let routes: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route_ports[j]))
                .collect();
            NatsServer::start_with(
                client_ports[i],
                vec![
                    "--server_name".to_owned(),
                    format!("n{i}"),
                    "--cluster_name".to_owned(),
                    name.clone(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", route_ports[i]),
                    "--routes".to_owned(),
                    routes.join(","),
                ],
            )
        })
        .collect()
}

/// The orders a replica has stored since it last started, from its metrics.
async fn stored_by(service: &ServiceProcess) -> u64 {
    let (status, body) = get(service.addr(), "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("orders_messages_stored_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_three_node_cluster_lose_and_double_nothing() {
    let mut rng = SplitMix64::new(seed());
    let nodes = cluster();
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let urls = urls.join(",");
    let db = TestDb::not_yet_created();
    let names = TestStream::on(&urls);
    let js = jetstream_with_replicas(&urls, &names, 3).await;
    let orders = generate(rng.next_u64(), ORDERS);

    // Both replicas start at the same moment: they race on creating the
    // database, migrating, and creating the consumer.
    let mut replicas: Vec<ServiceProcess> = (0..2)
        .map(|_| {
            service(&db.url, &urls, &names)
                .with_env("NATS_STREAM_REPLICAS", "3")
                .with_env("RUST_LOG", "info")
        })
        .collect();
    for replica in &mut replicas {
        replica.start();
    }
    for replica in &replicas {
        wait_ready(replica, Duration::from_secs(60)).await;
    }

    // 10,000 orders over about 14 s, the faults in turn.
    let publisher = publish_paced(js.clone(), names.subject.clone(), &orders, 700, true);
    let mut shares = [0u64; 2];
    let pause = |rng: &mut SplitMix64| Duration::from_millis(rng.range(1_000, 2_000));

    tokio::time::sleep(pause(&mut rng)).await;
    let victim = rng.range(0, 1) as usize;
    shares[victim] += stored_by(&replicas[victim]).await;
    replicas[victim].kill();
    eprintln!("1. replica {victim} killed");
    tokio::time::sleep(pause(&mut rng)).await;
    replicas[victim].start();
    wait_ready(&replicas[victim], Duration::from_secs(60)).await;

    tokio::time::sleep(pause(&mut rng)).await;
    let node = rng.range(0, 2) as usize;
    nodes[node].kill();
    eprintln!("2. NATS node {node} killed");
    tokio::time::sleep(pause(&mut rng)).await;
    nodes[node].start_again();

    tokio::time::sleep(pause(&mut rng)).await;
    let victim = rng.range(0, 1) as usize;
    let node = rng.range(0, 2) as usize;
    shares[victim] += stored_by(&replicas[victim]).await;
    replicas[victim].kill();
    nodes[node].kill();
    eprintln!("3. replica {victim} and NATS node {node} killed");
    assert!(
        (stored(&db.url).await as usize) < ORDERS,
        "the stream was stored before the last fault; it proves nothing"
    );
    tokio::time::sleep(pause(&mut rng)).await;
    nodes[node].start_again();
    replicas[victim].start();
    wait_ready(&replicas[victim], Duration::from_secs(60)).await;
    publisher.await.expect("publisher");

    wait_all_stored(&db.url, ORDERS, Duration::from_secs(120)).await;
    assert_consumer_drained(&js, &names).await;
    let client = connect(&db.url).await;
    assert_stored_exactly_once(&client, &orders).await;
    for replica in &replicas {
        assert_answers_equal(replica.addr(), &orders).await;
    }
    for (i, replica) in replicas.iter().enumerate() {
        shares[i] += stored_by(replica).await;
    }
    eprintln!(
        "orders stored by replica 0: {}, by replica 1: {}",
        shares[0], shares[1]
    );
    assert!(
        shares.iter().all(|s| *s > 0),
        "JetStream did not spread the messages: {shares:?}"
    );
}

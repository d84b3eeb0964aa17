//! The service as users run it, for tests that kill it: the binary as a
//! child process, generated orders published at a steady pace through
//! broker faults, and the checks that every order was stored exactly once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use orders_publisher::SplitMix64;
use orders_testkit::check::{assert_answers_equal, assert_stored_exactly_once};
use orders_testkit::servers::ServiceProcess;
use orders_testkit::{TestStream, eventually, get};
use serde_json::Value;
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_order-service");

/// How long the broker waits for an ack before redelivering, for these
/// tests: a killed service's unacked messages move on after this.
pub const ACK_WAIT: &str = "2s";

/// A seed for this run's random moments: `FAULT_SEED`, else the clock.
pub fn seed() -> u64 {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("fault seed: {seed} (FAULT_SEED={seed} repeats this run)");
    seed
}

/// `count` distinct valid orders (1-5 items, totals that add up).
pub fn generate(seed: u64, count: usize) -> Vec<Value> {
    let mut rng = SplitMix64::new(seed);
    (0..count as u64)
        .map(|i| orders_publisher::order(&mut rng, i))
        .collect()
}

pub fn uid(order: &Value) -> &str {
    order["order_uid"].as_str().expect("an order_uid")
}

/// The service binary against `database_url` and the stream named by `names`
/// on `nats_url`.
pub fn service(database_url: &str, nats_url: &str, names: &TestStream) -> ServiceProcess {
    ServiceProcess::new(
        BIN,
        &[
            ("DATABASE_URL", database_url.to_owned()),
            ("NATS_URL", nats_url.to_owned()),
            ("NATS_SUBJECT", names.subject.clone()),
            ("NATS_STREAM", names.stream.clone()),
            ("NATS_DURABLE", names.durable.clone()),
            ("NATS_ACK_WAIT", ACK_WAIT.to_owned()),
            ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
            ("RUST_LOG", "warn,orders_app=info".to_owned()),
        ],
    )
}

pub async fn wait_ready(service: &ServiceProcess, timeout: Duration) {
    let addr = service.addr();
    eventually("/readyz 200", timeout, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/readyz").await.0 == 200
    })
    .await;
}

pub async fn readyz(service: &ServiceProcess) -> Option<u16> {
    let addr = service.addr();
    tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(get(addr, "/readyz").await.0)
}

/// `/readyz`'s body, while the service answers.
pub async fn readyz_body(service: &ServiceProcess) -> Option<Value> {
    let addr = service.addr();
    tokio::net::TcpStream::connect(addr).await.ok()?;
    serde_json::from_slice(&get(addr, "/readyz").await.1).ok()
}

/// A counter or gauge from `/metrics` (a `_total` suffix for counters).
pub async fn metric(service: &ServiceProcess, name: &str) -> u64 {
    let text = String::from_utf8(get(service.addr(), "/metrics").await.1).expect("UTF-8");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// What `/readyz` answered, asked every 100 ms in the background until
/// dropped.
pub struct ReadyzLog {
    seen: Arc<Mutex<Vec<(Instant, u16)>>>,
    task: JoinHandle<()>,
}

impl ReadyzLog {
    pub fn start(service: &ServiceProcess) -> Self {
        let addr = service.addr();
        let seen: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    let status = get(addr, "/readyz").await.0;
                    log.lock().expect("lock").push((Instant::now(), status));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { seen, task }
    }

    /// Each status seen since `from` and when it began, one entry per change.
    pub fn changes_since(&self, from: Instant) -> Vec<(Duration, u16)> {
        let seen = self.seen.lock().expect("lock");
        let mut changes: Vec<(Duration, u16)> = Vec::new();
        for &(at, status) in seen.iter().filter(|(at, _)| *at >= from) {
            if changes.last().is_none_or(|&(_, last)| last != status) {
                changes.push((at - from, status));
            }
        }
        changes
    }
}

impl Drop for ReadyzLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A count from the database at `url`, or `None` while it cannot be reached.
pub async fn count(url: &str, sql: &str) -> Option<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.ok().map(|row| row.get(0))
}

pub async fn stored(url: &str) -> i64 {
    count(url, "SELECT count(*) FROM order_info")
        .await
        .unwrap_or(0)
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Publishes one message and waits for the broker's ack, retrying through
/// a broker restart (the `Nats-Msg-Id`, when given, keeps a retried publish
/// from storing the message twice).
pub async fn publish_until_acked(
    js: &jetstream::Context,
    subject: &str,
    body: bytes::Bytes,
    msg_id: Option<&str>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let error = match js
            .publish_with_headers(subject.to_owned(), headers, body.clone())
            .await
        {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no broker ack for 60 s; last error: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `orders` in the background at `per_second`, each with its uid
/// as `Nats-Msg-Id` when `with_id`.
pub fn publish_paced(
    js: jetstream::Context,
    subject: String,
    orders: &[Value],
    per_second: u32,
    with_id: bool,
) -> JoinHandle<()> {
    let messages: Vec<(String, bytes::Bytes)> = orders
        .iter()
        .map(|o| {
            let body = serde_json::to_vec(o).expect("serializable");
            (uid(o).to_owned(), body.into())
        })
        .collect();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        for (i, (id, body)) in messages.into_iter().enumerate() {
            let due = started + Duration::from_secs(1) * i as u32 / per_second;
            tokio::time::sleep_until(due).await;
            publish_until_acked(&js, &subject, body, with_id.then_some(id.as_str())).await;
        }
    })
}

/// A context on `url` with the stream of `names` created.
pub async fn jetstream_on(url: &str, names: &TestStream) -> jetstream::Context {
    jetstream_with_replicas(url, names, 1).await
}

/// A context on the server(s) at `urls` (comma-separated) with the stream
/// of `names` created with `replicas`; retried for a while, as a new
/// cluster first elects its leaders.
pub async fn jetstream_with_replicas(
    urls: &str,
    names: &TestStream,
    replicas: usize,
) -> jetstream::Context {
    let servers: Vec<&str> = urls.split(',').collect();
    let client = async_nats::connect(servers)
        .await
        .unwrap_or_else(|e| panic!("connecting to NATS at {urls}: {e}"));
    let js = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = js
            .get_or_create_stream(jetstream::stream::Config {
                name: names.stream.clone(),
                subjects: vec![names.subject.clone()],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => return js,
            Err(e) if Instant::now() < deadline => {
                eprintln!("creating stream {} (retrying): {e}", names.stream);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("creating stream {}: {e}", names.stream),
        }
    }
}

pub async fn wait_all_stored(url: &str, total: usize, timeout: Duration) {
    eventually(&format!("{total} orders stored"), timeout, || async move {
        stored(url).await >= total as i64
    })
    .await;
}

/// Fails unless the consumer has nothing left: nothing pending delivery,
/// nothing delivered and unacked.
pub async fn assert_consumer_drained(js: &jetstream::Context, names: &TestStream) {
    assert_consumer_drained_within(js, names, Duration::from_secs(30)).await;
}

/// The same, waiting up to `timeout`.
pub async fn assert_consumer_drained_within(
    js: &jetstream::Context,
    names: &TestStream,
    timeout: Duration,
) {
    eventually(
        "the consumer to have nothing pending",
        timeout,
        || async move {
            let Ok(stream) = js.get_stream(&names.stream).await else {
                return false;
            };
            stream
                .consumer_info(&names.durable)
                .await
                .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
        },
    )
    .await;
}

/// Fails if any message was recorded as rejected: all the fleet sends is valid.
pub async fn assert_none_rejected(client: &tokio_postgres::Client) {
    let rejected: i64 = client
        .query_one("SELECT count(*) FROM rejected_messages", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rejected, 0, "valid orders were rejected");
}

/// Everything "exactly once" means, for `orders` and the service at `addr`.
pub async fn assert_exactly_once(database_url: &str, orders: &[Value], service: &ServiceProcess) {
    let client = connect(database_url).await;
    assert_stored_exactly_once(&client, orders).await;
    assert_none_rejected(&client).await;
    assert_answers_equal(service.addr(), orders).await;
}

//! Test support shared by the adapter and end-to-end tests.
//!
//! Each test gets its own database ([`TestDb`]) and its own stream, subject
//! and consumer ([`TestStream`]) on the machine's PostgreSQL and NATS, so the
//! suite runs in parallel; both are removed when the test ends, also when it
//! fails. A service that cannot be reached fails the test with a message
//! saying what to start; nothing is skipped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod check;
pub mod otlp;
pub mod servers;
pub mod sse;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sample order (uid `b563feb7b2b84b6test`), as shipped in `fixtures/`.
pub const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

/// The sample order as JSON.
pub fn sample_value() -> Value {
    serde_json::from_slice(SAMPLE).expect("fixtures/model.json is JSON")
}

/// A valid order like the sample, with its own uid and `n` folded into a
/// few fields so orders differ in content, not only in uid.
pub fn order_value(uid: &str, n: u64) -> Value {
    let mut order = sample_value();
    order["order_uid"] = Value::from(uid);
    order["payment"]["transaction"] = Value::from(uid);
    order["payment"]["amount"] = Value::from(1500 + n);
    order["items"][0]["chrt_id"] = Value::from(n);
    // Distinct creation times, one second apart, for ordering.
    let created = 1_600_000_000 + n as i64;
    order["date_created"] = Value::from(rfc3339(created));
    order
}

/// [`order_value`] as bytes.
pub fn order_json(uid: &str, n: u64) -> Vec<u8> {
    serde_json::to_vec(&order_value(uid, n)).expect("serializable")
}

/// Every order of a repository's `load_recent`, as it yields them: each
/// document read back as the order it is, after checking that it is keyed
/// by that order's uid and is byte for byte what `to_json` makes of it.
pub async fn load_documents(mut chunks: orders_domain::OrderChunks) -> Vec<orders_domain::Order> {
    let mut orders = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        for document in chunk.expect("load_recent") {
            let order =
                orders_domain::Order::parse(&document.json).expect("a document is an order");
            assert_eq!(order.order_uid, document.uid, "keyed by its own uid");
            assert_eq!(order.to_json(), document.json, "as to_json writes it");
            orders.push(order);
        }
    }
    orders
}

/// Orders as ingest hands them to `OrderStore::save`: each with its JSON,
/// from no stream.
pub fn new_orders(orders: &[orders_domain::Order]) -> Vec<orders_domain::NewOrder> {
    orders
        .iter()
        .map(|o| orders_domain::NewOrder::new(o.clone(), None))
        .collect()
}

/// `unix` seconds as an RFC 3339 time in UTC (`2021-11-26T06:22:19Z`).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .expect("a time of the years 1970-9999")
}

/// A name no other test (in this or another process) uses: lowercase
/// letters, digits and `_`, valid as a database, stream or consumer name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server tests use: `TEST_DATABASE_URL` (a URL whose
/// database tests may connect to for admin work), else the machine's.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The NATS server tests use: `TEST_NATS_URL`, else the machine's.
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub(crate) async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url}: {e}. Start it (`just services` does) \
                 or point TEST_DATABASE_URL at one"
            )
        });
    tokio::spawn(connection);
    client
}

/// A database of this test's own, dropped when the value is.
#[derive(Debug)]
pub struct TestDb {
    /// The URL of the new, empty database (no migrations run).
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let admin_url = admin_database_url();
        let name = unique_name("orders_test");
        admin_client(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Self {
            url,
            name,
            admin_url,
        }
    }

    /// A database name that does not exist (for "creates it if missing"),
    /// still dropped when the value is.
    pub fn not_yet_created() -> Self {
        Self::not_yet_created_on(&admin_database_url())
    }

    /// As [`TestDb::not_yet_created`], on the server of `admin_url`.
    pub fn not_yet_created_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = unique_name("orders_test");
        Self {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// A plain connection to this test's database.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }

    /// The number of rows `sql` (a `SELECT count(*) ...`) counts.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let url = self.admin_url.clone();
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

fn with_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((server, db)) if !server.ends_with('/') => {
            let query = db
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{server}/{name}{query}")
        }
        _ => format!("{url}/{name}"),
    }
}

/// A stream, subject and durable consumer name of this test's own; the
/// stream (with its consumers) is deleted when the value is dropped.
#[derive(Debug, Clone)]
pub struct TestStream {
    pub url: String,
    pub stream: String,
    pub subject: String,
    pub durable: String,
}

impl TestStream {
    /// Names on the machine's NATS.
    pub fn new() -> Self {
        Self::on(&nats_url())
    }

    /// Names on the NATS server at `url` (a throwaway one, say).
    pub fn on(url: &str) -> Self {
        let suffix = unique_name("t");
        Self {
            url: url.to_owned(),
            stream: format!("ORDERS_{suffix}"),
            subject: format!("test.{suffix}.orders"),
            durable: format!("svc_{suffix}"),
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach NATS at {}: {e}. Start nats-server -js (`just services` does) \
                 or point TEST_NATS_URL at one",
                self.url
            )
        })
    }

    /// Creates the stream (as the service would) so messages can be
    /// published before the service starts.
    pub async fn create(&self) -> async_nats::jetstream::Context {
        let js = async_nats::jetstream::new(self.client().await);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating stream {}: {e}", self.stream));
        js
    }

    /// Publishes `body`, with `Nats-Msg-Id` when given, and waits for the ack.
    pub async fn publish(
        &self,
        js: &async_nats::jetstream::Context,
        body: Vec<u8>,
        msg_id: Option<&str>,
    ) {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        js.publish_with_headers(self.subject.clone(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("broker ack");
    }
}

impl TestStream {
    /// Publishes `payload` with the header block `headers` (without its
    /// closing blank line; `NATS/1.0 408 Request Timeout`, say) written by
    /// hand on a raw TCP connection, as any client allowed to publish on
    /// the subject can: no client library stands between the test and the
    /// server. Returns once the server has read it (a PONG).
    pub async fn publish_raw(&self, headers: &str, payload: &[u8]) {
        let address = self
            .url
            .trim_start_matches("nats://")
            .split(',')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut socket = tokio::net::TcpStream::connect(&address)
            .await
            .unwrap_or_else(|e| panic!("cannot reach NATS at {address}: {e}"));
        let mut info = vec![0u8; 4096];
        let _ = socket.read(&mut info).await.expect("INFO");
        let head = format!("{headers}\r\n\r\n");
        let mut frame = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true}}\r\n\
             HPUB {} {} {}\r\n{head}",
            self.subject,
            head.len(),
            head.len() + payload.len()
        )
        .into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\nPING\r\n");
        socket.write_all(&frame).await.expect("HPUB");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("PONG") {
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                .await
                .expect("the server answers within 5 s")
                .expect("read");
            assert!(
                n > 0,
                "the server closed the connection: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.contains("-ERR"),
            "the server refused the HPUB: {answer}"
        );
    }
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let url = self.url.clone();
        let stream = self.stream.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let client = async_nats::connect(&url).await.ok()?;
                let js = async_nats::jetstream::new(client);
                // The service's streams of max-deliveries advisories, if it
                // made any (`<stream>_UNDELIVERABLE` of earlier versions,
                // `<stream>_<durable>_UNDELIVERABLE`).
                let prefix = format!("{stream}_");
                let mut names = js.stream_names();
                let mut advisories = Vec::new();
                while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
                    if name.starts_with(&prefix) && name.ends_with("_UNDELIVERABLE") {
                        advisories.push(name);
                    }
                }
                for name in advisories {
                    let _ = js.delete_stream(name).await;
                }
                js.delete_stream(&stream).await.ok()
            })
        })
        .join();
    }
}

/// One plain HTTP/1.1 GET (or other method), `Connection: close`: status
/// code, headers as text, body. Enough for tests, without a client crate.
///
/// Fails the test if the server has not answered within 10 s.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    http_with(addr, method, path, &[]).await
}

/// [`http`] with more request headers (`("Authorization", "Bearer ...")`).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    http_from(None, addr, method, path, headers).await
}

/// [`http_with`] from a local address of the test's choosing (another
/// loopback address, `127.0.0.2`, say), so that the server sees the
/// request come from that peer; `None`: wherever the system picks.
pub async fn http_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    tokio::time::timeout(
        Duration::from_secs(10),
        exchange(from, addr, method, path, headers),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} on {addr}: no answer within 10 s"))
}

/// `GET path` over HTTP/1.0 → (status, body): a server that streams its
/// answers (Go's net/http, as Prometheus's) then sends the body whole
/// instead of chunked. Fails the test after 10 s without an answer.
pub async fn get_http10(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(10),
        exchange_as(None, addr, "HTTP/1.0", "GET", path, &[]),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {path} on {addr}: no answer within 10 s"));
    (status, body)
}

async fn exchange(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    exchange_as(from, addr, "HTTP/1.1", method, path, headers).await
}

async fn exchange_as(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    version: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let connected = match from {
        None => tokio::net::TcpStream::connect(addr).await,
        Some(local) => {
            let socket = match local {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .expect("a socket");
            socket
                .bind(SocketAddr::new(local, 0))
                .unwrap_or_else(|e| panic!("binding {local}: {e}"));
            socket.connect(addr).await
        }
    };
    let mut stream = connected.unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request =
        format!("{method} {path} {version}\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, body)
}

/// `GET path` → (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http(addr, "GET", path).await;
    (status, body)
}

/// Polls `check` every 50 ms until it returns true, failing with `what`
/// after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_637_907_739), "2021-11-26T06:22:19Z");
    }

    #[test]
    fn database_urls_keep_their_options() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

//! `spawn_app()`: the real app, wired as `main` wires it, on port 0 with a
//! database and a stream of the test's own.

#![allow(dead_code)]

pub mod fleet;
pub mod monitoring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orders_app::{App, Config};
use orders_testkit::{TestDb, TestStream, eventually, get};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub stream: TestStream,
    pub js: async_nats::jetstream::Context,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

pub fn config(db: &TestDb, stream: &TestStream) -> Config {
    Config {
        database_url: db.url.clone(),
        nats_url: stream.url.clone(),
        nats_subject: stream.subject.clone(),
        nats_stream: stream.stream.clone(),
        nats_durable: stream.durable.clone(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::defaults()
    }
}

/// Starts the app on a fresh database (created by the app itself) and
/// stream, and waits until `/readyz` says ready.
pub async fn spawn_app() -> TestApp {
    let db = TestDb::not_yet_created();
    let stream = TestStream::new();
    spawn_with(db, stream, |c| c).await
}

/// Another replica on `app`'s database, with a stream and a consumer of
/// its own: it takes none of `app`'s messages, and learns of `app`'s
/// orders as a replica does, from the database's announcements.
pub async fn spawn_beside(app: &TestApp) -> TestApp {
    let database_url = app.db.url.clone();
    spawn_with(TestDb::not_yet_created(), TestStream::new(), move |c| {
        Config { database_url, ..c }
    })
    .await
}

pub async fn spawn_with(
    db: TestDb,
    stream: TestStream,
    adjust: impl FnOnce(Config) -> Config,
) -> TestApp {
    let js = stream.create().await;
    let shutdown = CancellationToken::new();
    let app = App::build(adjust(config(&db, &stream)), shutdown.clone())
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let task = tokio::spawn(app.run_until_stopped());
    let test_app = TestApp {
        addr,
        db,
        stream,
        js,
        shutdown,
        task,
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    pub async fn wait_ready(&self) {
        let addr = self.addr;
        eventually("/readyz 200", Duration::from_secs(15), || async move {
            get(addr, "/readyz").await.0 == 200
        })
        .await;
    }

    pub async fn publish(&self, body: Vec<u8>, msg_id: Option<&str>) {
        self.stream.publish(&self.js, body, msg_id).await;
    }

    /// Stops the app as a signal would and returns what `run_until_stopped` did.
    pub async fn stop(self) -> (TestDb, TestStream, anyhow::Result<()>) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped within 10 s")
            .expect("task did not panic");
        (self.db, self.stream, result)
    }

    pub async fn wait_stored(&self, count: i64) {
        self.wait_rows("order_info", count).await;
    }

    /// Makes three rejected messages, newest last: `first` (which is no
    /// order; its row then marked replayed, as `order-publisher replay`
    /// does), bytes that are not UTF-8 (`ff fe` then `binary`), and a
    /// conflict with the stored order `taken`.
    pub async fn publish_rejections(&self, first: &[u8]) {
        self.publish(first.to_vec(), None).await;
        self.publish(b"\xff\xfebinary".to_vec(), None).await;
        let taken = |n| serde_json::to_vec(&orders_testkit::order_value("taken", n)).expect("json");
        self.publish(taken(1), None).await;
        self.wait_stored(1).await;
        self.publish(taken(2), None).await;
        self.wait_rows("rejected_messages", 3).await;
        self.db
            .client()
            .await
            .execute(
                "UPDATE rejected_messages SET replayed_at = now() WHERE payload = $1",
                &[&first],
            )
            .await
            .expect("mark the first replayed");
    }

    /// A counter or gauge from `/metrics` (`name` with its labels, if any).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = String::from_utf8(get(self.addr, "/metrics").await.1).expect("UTF-8");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    /// Waits until `table` holds at least `count` rows.
    pub async fn wait_rows(&self, table: &str, count: i64) {
        let db = &self.db;
        let sql = format!("SELECT count(*) FROM {table}");
        let sql = sql.as_str();
        eventually(
            &format!("{count} rows in {table}"),
            Duration::from_secs(30),
            || async move { db.count(sql).await >= count },
        )
        .await;
    }
}

/// A tokens file of this test's own, removed when the value is dropped.
pub struct TokensOnDisk(pub PathBuf);

impl TokensOnDisk {
    pub fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(orders_testkit::unique_name("tokens"));
        std::fs::write(&path, text).expect("write the tokens file");
        Self(path)
    }

    pub fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("rewrite the tokens file");
    }
}

impl Drop for TokensOnDisk {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

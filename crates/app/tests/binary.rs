//! The real `order-service` binary: flags, config errors, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orders_testkit::{TestDb, TestStream, eventually, get, order_json};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn service(db: &TestDb, stream: &TestStream, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .env("NATS_DURABLE", &stream.durable)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SHUTDOWN_TIMEOUT", "5s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

#[test]
fn help_and_version_describe_the_service() {
    let help = Command::new(BIN).arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "HTTP_ADDR",
        "CACHE_CAPACITY",
        "SHUTDOWN_TIMEOUT",
    ] {
        assert!(text.contains(var), "--help lacks {var}");
    }
    let version = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_variable_is_named_and_the_service_does_not_start() {
    let out = Command::new(BIN)
        .env("HTTP_ADDR", "x")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP_ADDR") || err.contains("--http-addr"),
        "{err}"
    );
    assert!(err.contains("invalid socket address \"x\""), "{err}");
}

#[tokio::test]
async fn sigterm_mid_stream_exits_0_and_loses_nothing() {
    let db = TestDb::not_yet_created();
    let stream = TestStream::new();
    let js = stream.create().await;
    let total = 5_000u64;
    for n in 0..total {
        stream
            .publish(&js, order_json(&format!("term-{n}"), n), None)
            .await;
    }
    let port = free_port();
    // One order per transaction, so the signal surely lands mid-stream: a
    // batched ingest could finish the whole stream before it.
    let mut child = service(&db, &stream, port)
        .env("INGEST_BATCH_SIZE", "1")
        .spawn()
        .expect("starts");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually("ready", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/readyz").await.0 == 200
    })
    .await;
    let db_ref = &db;
    eventually(
        "some orders stored",
        Duration::from_secs(30),
        || async move { db_ref.count("SELECT count(*) FROM order_info").await >= 100 },
    )
    .await;

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(6),
            "no exit within SHUTDOWN_TIMEOUT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "exit code");

    // Every acked message is committed: the consumer's ack floor counts
    // acked messages, and at least that many orders are in the database.
    let stored_at_stop = db.count("SELECT count(*) FROM order_info").await;
    let stream_handle = js.get_stream(&stream.stream).await.expect("stream");
    let info = stream_handle
        .consumer_info(&stream.durable)
        .await
        .expect("consumer");
    let acked = info.ack_floor.stream_sequence as i64;
    assert!(
        acked <= stored_at_stop,
        "{acked} acked but only {stored_at_stop} committed"
    );
    assert!(
        stored_at_stop < total as i64,
        "the stream finished before the signal; test proves nothing"
    );

    // The rest is delivered on the next start, each order exactly once.
    let mut child = service(&db, &stream, port).spawn().expect("restarts");
    let db_ref = &db;
    eventually(
        "every order stored",
        Duration::from_secs(60),
        || async move { db_ref.count("SELECT count(*) FROM order_info").await == total as i64 },
    )
    .await;
    for table in ["order_info", "delivery", "payment", "items"] {
        let dupes = db
            .count(&format!(
                "SELECT count(*) FROM (SELECT order_uid FROM {table} GROUP BY order_uid HAVING count(*) > 1) d"
            ))
            .await;
        assert_eq!(dupes, 0, "{table} has doubled orders");
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            total as i64
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM rejected_messages").await, 0);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_retried_and_logged_as_json() {
    let stream = TestStream::new();
    let port = free_port();
    let child = Command::new(BIN)
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/orders")
        .env("NATS_URL", &stream.url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");

    // Liveness answers while the database is being retried; readiness does not.
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually("/healthz", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/healthz").await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("exits");

    assert_eq!(
        out.status.code(),
        Some(0),
        "a signal during start-up is a clean stop"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let retries = lines
        .iter()
        .filter(|l| l["message"] == "cannot create the database" && l["level"] == "WARN")
        .count();
    assert!(retries >= 2, "expected retries with backoff in\n{log}");
}

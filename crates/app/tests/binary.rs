//! The real `order-service` binary: flags, config errors, start-up
//! retries. (SIGTERM mid-stream is in `faults.rs`.)

use std::process::{Command, Stdio};
use std::time::Duration;

use orders_testkit::servers::free_port;
use orders_testkit::{TestStream, eventually, get};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

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

#[tokio::test]
async fn a_stream_that_does_not_capture_the_subject_stops_the_start_with_the_reason() {
    // A stream named like ours exists, but captures another subject: a
    // configuration error that retrying cannot fix.
    let stream = TestStream::new();
    let mut other = stream.clone();
    other.subject = format!("{}.elsewhere", stream.subject);
    other.create().await;
    let db = orders_testkit::TestDb::not_yet_created();
    let mut child = tokio::process::Command::new(BIN)
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .env("NATS_DURABLE", &stream.durable)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits on its own within 30 s")
        .expect("exit status");
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err)
        .await
        .expect("stderr");

    assert!(!status.success(), "must exit non-zero");
    assert!(err.contains("captures"), "{err}");
    assert!(err.contains("NATS_SUBJECT"), "{err}");
    drop(other);
}

//! The real `order-service` binary: flags, config errors, start-up
//! retries. (SIGTERM mid-stream is in `faults.rs`.)

use std::process::{Command, Stdio};
use std::time::Duration;

use orders_testkit::servers::free_port;
use orders_testkit::{TestStream, eventually, get};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

/// The service on `db` and `stream`, listening on `port`, its log piped.
fn service_on(db: &orders_testkit::TestDb, stream: &TestStream, port: u16) -> Command {
    let mut service = Command::new(BIN);
    service
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .env("NATS_DURABLE", &stream.durable)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    service
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
        "REJECTED_RETENTION",
        "NATS_STREAM_MAX_AGE",
        "AUDIT_READS",
        "AUDIT_RETENTION",
    ] {
        assert!(text.contains(var), "--help lacks {var}");
    }
    assert!(
        text.contains("audit"),
        "--help lacks the audit subcommand:\n{text}"
    );
    let audit = Command::new(BIN)
        .args(["audit", "--help"])
        .output()
        .expect("runs");
    assert!(audit.status.success());
    let text = String::from_utf8_lossy(&audit.stdout);
    for flag in ["--order-uid", "--customer-id", "--json", "DATABASE_URL"] {
        assert!(text.contains(flag), "audit --help lacks {flag}:\n{text}");
    }
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("erase"),
        "--help lacks the erase subcommand"
    );
    let erase = Command::new(BIN)
        .args(["erase", "--help"])
        .output()
        .expect("runs");
    assert!(erase.status.success());
    let text = String::from_utf8_lossy(&erase.stdout);
    for flag in [
        "--order-uid",
        "--customer-id",
        "--email",
        "--phone",
        "--reason",
        "--dry-run",
        "DATABASE_URL",
        "NATS_URL",
        "NATS_STREAM",
    ] {
        assert!(text.contains(flag), "erase --help lacks {flag}:\n{text}");
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

#[test]
fn a_bad_retention_is_named_and_the_service_does_not_start() {
    for (var, value, says) in [
        ("REJECTED_RETENTION", "500ms", "shorter than 1s"),
        ("REJECTED_RETENTION", "-1", "invalid duration"),
        ("AUDIT_RETENTION", "x", "invalid duration"),
        ("NATS_STREAM_MAX_AGE", "500ms", "shorter than 1s"),
    ] {
        let out = Command::new(BIN).env(var, value).output().expect("runs");

        assert!(!out.status.success(), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}={value}: {err}");
        assert!(err.contains(says), "{var}={value}: {err}");
    }
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
    let mut child = tokio::process::Command::from(service_on(&db, &stream, free_port()))
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

#[tokio::test]
async fn a_stream_that_keeps_messages_forever_is_warned_about_once_at_start() {
    // setup: the stream exists already, without a max age
    let stream = TestStream::new();
    stream.create().await;
    let db = orders_testkit::TestDb::not_yet_created();
    let port = free_port();
    let child = service_on(&db, &stream, port)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .spawn()
        .expect("starts");

    // exec: it starts (the stream is used as it is), then stops
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually("/readyz 200", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/readyz").await.0 == 200
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("exits");

    // check: one warning, and the stream unchanged
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keeps every message forever"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("\"WARN\""), "{}", warnings[0]);
    assert!(
        warnings[0].contains("NATS_STREAM_MAX_AGE (7d)"),
        "{}",
        warnings[0]
    );
    let js = async_nats::jetstream::new(stream.client().await);
    let mut found = js.get_stream(&stream.stream).await.expect("stream");
    assert_eq!(
        found.info().await.expect("info").config.max_age,
        Duration::ZERO
    );
}

/// Reads of two orders of customer `ann` and one of `bob`, stored as the
/// service stores them.
async fn audited_reads(db: &orders_testkit::TestDb) {
    use orders_domain::{AuditLog, Order, OrderRead, OrderStore};
    use orders_postgres::{PgAuditLog, PgOrderRepository, PoolSettings};

    orders_postgres::migrate(&db.url).await.expect("migrate");
    let pool = orders_postgres::connect_pool(&db.url, PoolSettings::default()).expect("pool");
    let order = |uid: &str, n: u64, customer: &str| {
        let mut value = orders_testkit::order_value(uid, n);
        value["customer_id"] = serde_json::Value::from(customer);
        Order::parse(&serde_json::to_vec(&value).expect("json")).expect("order")
    };
    PgOrderRepository::new(pool.clone())
        .save(&orders_testkit::new_orders(&[
            order("ann1", 1, "ann"),
            order("ann2", 2, "ann"),
            order("bob1", 3, "bob"),
        ]))
        .await
        .expect("save");
    let at = |unix: i64| time::OffsetDateTime::from_unix_timestamp(unix).expect("time");
    let read = |unix, who: &str, route, uids: &[&str]| OrderRead {
        who: who.to_owned(),
        at: at(unix),
        route,
        order_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
    };
    // stored newest first, to show the report sorts them
    PgAuditLog::new(pool)
        .append(&[
            read(1_700_000_120, "192.0.2.7", "/order", &["ann2"]),
            read(1_700_000_060, "desk", "/order", &["bob1"]),
            read(1_700_000_000, "desk", "/orders", &["bob1", "ann1", "ann2"]),
        ])
        .await
        .expect("append");
}

#[tokio::test]
async fn the_audit_subcommand_prints_who_read_an_order_or_a_customers_orders_oldest_first() {
    // setup
    let db = orders_testkit::TestDb::new().await;
    audited_reads(&db).await;
    // only DATABASE_URL is read: a malformed service variable is no matter
    let audit = |args: &[&str]| {
        Command::new(BIN)
            .arg("audit")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("HTTP_ADDR", "not an address")
            .stdin(Stdio::null())
            .output()
            .expect("runs")
    };

    // exec
    let by_order = audit(&["--order-uid", "bob1"]);
    let by_customer = audit(&["--customer-id", "ann", "--json"]);
    let nobody = audit(&["--order-uid", "nobody"]);
    let neither = audit(&[]);

    // check
    let text = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        text(&by_order),
        "2023-11-14T22:13:20Z\tdesk\t/orders\tbob1\n\
         2023-11-14T22:14:20Z\tdesk\t/order\tbob1\n"
    );
    let lines: Vec<serde_json::Value> = text(&by_customer)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"at": "2023-11-14T22:13:20Z", "who": "desk", "route": "/orders",
                               "order_uids": ["ann1", "ann2"]}),
            serde_json::json!({"at": "2023-11-14T22:15:20Z", "who": "192.0.2.7",
                               "route": "/order", "order_uids": ["ann2"]}),
        ]
    );
    assert_eq!(text(&nobody), "");
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no reads recorded of order nobody"));
    assert!(!neither.status.success());
    assert!(
        String::from_utf8_lossy(&neither.stderr).contains("--order-uid"),
        "{}",
        String::from_utf8_lossy(&neither.stderr)
    );
}

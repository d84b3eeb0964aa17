//! Who reads orders: bearer tokens from `API_TOKENS_FILE` (RFC 6750 answers,
//! names in metrics, re-read on SIGHUP) and the refusal to serve a
//! non-loopback address anonymously.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use orders_app::App;
use orders_app::config::TokensFile;
use orders_testkit::servers::free_port;
use orders_testkit::sse::open_events_with;
use orders_testkit::{TestDb, TestStream, eventually, http_with, order_json};
use support::{TokensOnDisk, spawn_with};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_order-service");
const DESK: &str = "desk-0123456789abcdef";
const AUDIT: &str = "audit-0123456789abcdef";
const EVENTS: &str = "/orders/events";

/// Status and head of `GET path`, with a bearer token if given.
async fn get_as(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    let (status, head, _) = http_with(addr, "GET", path, &headers).await;
    (status, head)
}

fn sha256_line(name: &str, token: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    let hex = String::from_utf8(out.stdout).expect("utf8");
    format!("{name}:sha256:{}", &hex[..64])
}

#[tokio::test]
async fn with_tokens_orders_need_one_and_health_and_the_page_do_not() {
    // A clear token and one given as its sha256sum, as an operator writes it.
    let file = TokensOnDisk::new(&format!(
        "# support desk and audit\ndesk:{DESK}\n{}\n",
        sha256_line("audit", AUDIT)
    ));
    let path = file.0.clone();
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), move |c| {
        orders_app::Config {
            api_tokens_file: TokensFile(Some(path)),
            ..c
        }
    })
    .await;
    app.publish(order_json("signed", 1), None).await;
    let uid = "/order?order_uid=signed";

    let (status, head) = get_as(app.addr, uid, None).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("www-authenticate: Bearer realm=\"orders\"\r"),
        "{head}"
    );
    assert_eq!(get_as(app.addr, "/orders", None).await.0, 401);
    let (status, head) = get_as(app.addr, uid, Some("desk-0123456789abcdeX")).await;
    assert_eq!(status, 401);
    assert!(head.contains("error=\"invalid_token\""), "{head}");

    let addr = app.addr;
    eventually(
        "the order, with the desk's token",
        Duration::from_secs(10),
        || async move { get_as(addr, uid, Some(DESK)).await.0 == 200 },
    )
    .await;
    assert_eq!(get_as(app.addr, uid, Some(AUDIT)).await.0, 200);
    assert_eq!(get_as(app.addr, "/orders", Some(AUDIT)).await.0, 200);
    for open in ["/healthz", "/readyz", "/", "/app.js", "/metrics"] {
        assert_eq!(get_as(app.addr, open, None).await.0, 200, "{open}");
    }

    let (_, body) = orders_testkit::get(app.addr, "/metrics").await;
    let metrics = String::from_utf8(body).expect("utf8");
    for line in [
        "orders_http_token_requests_total{token=\"desk\"}",
        "orders_http_token_requests_total{token=\"audit\"} 2",
        "orders_http_auth_denied_total{reason=\"missing\"} 2",
        "orders_http_auth_denied_total{reason=\"invalid_token\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(!metrics.contains(DESK) && !metrics.contains(AUDIT));
    let (_db, _stream, stopped) = app.stop().await;
    stopped.expect("clean stop");
}

#[tokio::test]
async fn a_public_address_without_tokens_is_refused_at_start_unless_allowed() {
    let db = TestDb::not_yet_created();
    let stream = TestStream::new();
    let public = |c: orders_app::Config| orders_app::Config {
        http_addr: "0.0.0.0:0".parse().expect("addr"),
        ..c
    };

    let refused = App::build(
        public(support::config(&db, &stream)),
        CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("API_TOKENS_FILE") && message.contains("ALLOW_ANONYMOUS=true"),
        "{message}"
    );

    let allowed = orders_app::Config {
        allow_anonymous: true,
        ..public(support::config(&db, &stream))
    };
    let app = App::build(allowed, CancellationToken::new()).await;
    assert!(app.is_ok(), "ALLOW_ANONYMOUS=true starts: {:?}", app.err());
}

#[test]
fn the_binary_says_how_to_set_tokens_and_exits_non_zero() {
    let out = Command::new(BIN)
        .env("HTTP_ADDR", format!("0.0.0.0:{}", free_port()))
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/orders")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is reachable from other machines"), "{err}");
    assert!(err.contains("API_TOKENS_FILE"), "{err}");
}

/// The service binary on a port of its own, reading `tokens`; stopped
/// with SIGTERM when dropped.
struct Service {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Service {
    async fn start(tokens: &TokensOnDisk, db: &TestDb, stream: &TestStream) -> Self {
        let port = free_port();
        let child = Command::new(BIN)
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &stream.url)
            .env("NATS_SUBJECT", &stream.subject)
            .env("NATS_STREAM", &stream.stream)
            .env("NATS_DURABLE", &stream.durable)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("API_TOKENS_FILE", &tokens.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        eventually("ready", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && orders_testkit::get(addr, "/readyz").await.0 == 200
        })
        .await;
        Self { child, addr }
    }

    fn signal(&self, name: &str) {
        Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    /// SIGTERM, and the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        self.child.wait().expect("exits").code()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn sighup_puts_a_rewritten_tokens_file_in_force_and_a_broken_one_changes_nothing() {
    let file = TokensOnDisk::new(&format!("desk:{DESK}\n"));
    let (db, stream) = (TestDb::not_yet_created(), TestStream::new());
    let mut service = Service::start(&file, &db, &stream).await;
    let addr = service.addr;
    let status_as =
        |token: &'static str| async move { get_as(addr, "/orders", Some(token)).await.0 };
    assert_eq!(status_as(DESK).await, 200);
    assert_eq!(status_as(AUDIT).await, 401);

    file.write(&format!("audit:{AUDIT}\n"));
    service.signal("-HUP");
    eventually(
        "the new file in force",
        Duration::from_secs(5),
        || async move { status_as(AUDIT).await == 200 },
    )
    .await;
    assert_eq!(status_as(DESK).await, 401, "the old token is gone");

    // A typo in the file: the tokens in force stay, nobody is locked out.
    file.write("audit:short\n");
    service.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_as(AUDIT).await, 200);
    assert!(
        service.child.try_wait().expect("status").is_none(),
        "still running"
    );

    assert_eq!(service.stop(), Some(0));
}

#[tokio::test]
async fn sighup_without_a_token_ends_its_event_streams_within_a_second_and_keeps_the_others() {
    let file = TokensOnDisk::new(&format!("desk:{DESK}\naudit:{AUDIT}\n"));
    let (db, stream) = (TestDb::not_yet_created(), TestStream::new());
    let js = stream.create().await;
    let service = Service::start(&file, &db, &stream).await;
    let open_as = async |token: &str| {
        let bearer = format!("Bearer {token}");
        let events = open_events_with(service.addr, EVENTS, &[("Authorization", &bearer)]).await;
        assert_eq!(events.status, 200, "{}", events.head);
        events
    };
    let mut desk = open_as(DESK).await;
    let mut audit = open_as(AUDIT).await;

    // The desk's line goes; the audit's stays as it was.
    file.write(&format!("audit:{AUDIT}\n"));
    service.signal("-HUP");

    assert!(
        desk.closed_within(Duration::from_secs(1)).await,
        "the desk's stream is still open a second after its token was revoked"
    );
    stream
        .publish(&js, order_json("after-revocation", 1), None)
        .await;
    let event = audit
        .next_event(Duration::from_secs(10))
        .await
        .expect("the audit's stream is still open");
    assert_eq!(event.event, "order");
    assert!(event.data.contains("after-revocation"), "{}", event.data);
    assert_eq!(service.stop(), Some(0));
}

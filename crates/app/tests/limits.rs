//! Limits against greedy and hostile clients, on the real server: a rate
//! per client, read-throughs that cannot take the database's pool, the
//! open-file limit, clients that stop reading, shutdown with half-sent
//! requests, cursors that would overflow the database, and metrics on an
//! address of their own.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orders_app::Config;
use orders_http::TrustedProxies;
use orders_testkit::servers::free_port;
use orders_testkit::{TestDb, TestStream, eventually, get, http, http_from};
use support::{TestApp, TokensOnDisk, spawn_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_health_stays_open() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        rate_limit: 5,
        ..c
    })
    .await;

    // A burst of twice the rate, then refused.
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(get(app.addr, "/order?order_uid=nobody").await.0);
    }
    let (status, head, body) = http(app.addr, "GET", "/orders").await;

    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(status, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains("too many requests"));
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(get(app.addr, path).await.0, 200, "{path} is not limited");
    }
}

/// The status of `GET /order?order_uid=nobody` sent from `peer` (a
/// loopback address this test binds) with these headers.
async fn order_from(app: &TestApp, peer: &str, headers: &[(&str, &str)]) -> u16 {
    let peer = peer.parse().expect("an address");
    http_from(
        Some(peer),
        app.addr,
        "GET",
        "/order?order_uid=nobody",
        headers,
    )
    .await
    .0
}

/// Asks from `peer` with these headers until refused (a burst of two at a
/// rate of one a second: the third, unless a second has passed), and
/// returns how many were let through.
async fn exhaust(app: &TestApp, peer: &str, headers: &[(&str, &str)]) -> usize {
    for let_through in 0..10 {
        if order_from(app, peer, headers).await == 429 {
            return let_through;
        }
    }
    panic!("{peer} {headers:?} never refused");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_a_bucket_and_from_others_the_header_is_ignored()
 {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        rate_limit: 1,
        trusted_proxies: TrustedProxies::parse("127.0.0.2/32").expect("valid"),
        ..c
    })
    .await;
    let (proxy, untrusted) = ("127.0.0.2", "127.0.0.3");
    let one = [("X-Forwarded-For", "198.51.100.1")];
    let two = [("X-Forwarded-For", "198.51.100.2")];

    // The proxy forwards one client until it is refused, then another.
    assert!(exhaust(&app, proxy, &one).await >= 2);
    let second_client = order_from(&app, proxy, &two).await;
    // The same headers from a peer not trusted: its own bucket, whatever
    // they say.
    exhaust(&app, untrusted, &one).await;
    let spoofed = order_from(&app, untrusted, &two).await;

    assert_eq!(
        second_client, 404,
        "the second client shares the first's bucket"
    );
    assert_eq!(spoofed, 429, "a peer not trusted chose its bucket");
}

#[tokio::test]
async fn a_listed_token_is_limited_as_its_caller_not_as_its_address() {
    let desk = "desk-0123456789abcdef";
    let audit = "audit-0123456789abcdef";
    let tokens = TokensOnDisk::new(&format!("desk:{desk}\naudit:{audit}\n"));
    let path = tokens.0.clone();
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), move |c| {
        Config {
            rate_limit: 1,
            api_tokens_file: orders_app::config::TokensFile(Some(path)),
            ..c
        }
    })
    .await;
    let desk = format!("Bearer {desk}");
    let audit = format!("Bearer {audit}");
    let desk = [("Authorization", desk.as_str())];
    let audit = [("Authorization", audit.as_str())];

    // Two callers at one address: the desk to its limit, then the audit.
    assert!(exhaust(&app, "127.0.0.1", &desk).await >= 2);
    let audit_at_once = order_from(&app, "127.0.0.1", &audit).await;
    let desk_elsewhere = order_from(&app, "127.0.0.4", &desk).await;
    let anonymous = order_from(&app, "127.0.0.1", &[]).await;

    assert_eq!(audit_at_once, 404, "the audit waits for the desk");
    assert_eq!(
        desk_elsewhere, 429,
        "the desk's bucket is its own, from any address"
    );
    assert_eq!(anonymous, 401, "the address's bucket is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_past_the_read_through_limit_get_503_at_once_and_never_queue_on_the_pool() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        read_through_limit: 2,
        rate_limit: 0,
        ..c
    })
    .await;
    // A lock that makes every read-through wait, as a slow database would.
    let mut locker = app.db.client().await;
    let lock = locker.transaction().await.expect("transaction");
    lock.batch_execute("LOCK TABLE order_info IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let addr = app.addr;
    let waiting: Vec<_> = (0..2)
        .map(|n| {
            tokio::spawn(async move { get(addr, &format!("/order?order_uid=slow{n}")).await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, head, _) = http(app.addr, "GET", "/order?order_uid=one-too-many").await;
    let answered_in = started.elapsed();
    lock.rollback().await.expect("unlock");
    let mut waited = Vec::new();
    for task in waiting {
        waited.push(task.await.expect("task"));
    }

    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(answered_in < Duration::from_millis(200), "{answered_in:?}");
    assert_eq!(waited, [404, 404], "the two that waited are answered");
    // The same unknown uid again costs nothing: answered from memory.
    let started = Instant::now();
    assert_eq!(get(app.addr, "/order?order_uid=slow0").await.0, 404);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn cursors_the_database_cannot_hold_are_400_not_503() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| c).await;

    for cursor in [
        "9223372036854775807.zzz",
        "-9223372036854775808.zzz",
        "253402300800000000.zzz",
    ] {
        let (status, body) = get(app.addr, &format!("/orders?before={cursor}")).await;
        assert_eq!(status, 400, "{cursor}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        get(app.addr, "/orders?before=253402300799999999.zzz")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn metrics_on_their_own_address_are_not_on_the_public_one() {
    let metrics_port = free_port();
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        metrics_addr: orders_app::config::MetricsAddr(Some(
            format!("127.0.0.1:{metrics_port}").parse().expect("addr"),
        )),
        ..c
    })
    .await;
    let internal = format!("127.0.0.1:{metrics_port}").parse().expect("addr");

    let (status, body) = get(internal, "/metrics").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("orders_messages_received_total"));
    assert_eq!(get(app.addr, "/metrics").await.0, 404);
    assert_eq!(get(internal, "/order?order_uid=x").await.0, 404);
    assert_eq!(get(internal, "/").await.0, 404);
    assert_eq!(get(app.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        http_write_timeout: Duration::from_secs(1),
        rate_limit: 0,
        ..c
    })
    .await;
    // Many pipelined requests for the page's script, never reading the
    // answers: the server's writes fill the socket buffers and stall.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut client = socket.connect(app.addr).await.expect("connect");
    let request = b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n";
    let requests = 20_000;
    let writer = async {
        for _ in 0..requests {
            if client.write_all(request).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), writer).await;
    // Still not reading, for longer than the write timeout. (An earlier
    // version read at once: the answers then flowed, never stalled, and
    // the test passed only because of the header-read timeout.)
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The server has given up on the connection: reading now finds its
    // end after what the buffers held, far short of every answer.
    let mut sink = vec![0u8; 1 << 16];
    let mut read = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled connection is still open ({read} bytes read)"
    );
    let (_, script) = get(app.addr, "/app.js").await;
    assert!(
        read < script.len() * requests / 10,
        "{read} bytes read: the server answered on"
    );
    assert_eq!(get(app.addr, "/healthz").await.0, 200);
}

/// The binary, run by `program` with `args` before it (`prlimit`, say) or
/// alone, with the environment tests usually give it.
fn service(db: &TestDb, stream: &TestStream, port: u16, wrapper: &[&str]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    cmd.env("DATABASE_URL", &db.url)
        .env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .env("NATS_DURABLE", &stream.durable)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

async fn wait_healthz(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    eventually("/healthz", Duration::from_secs(15), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/healthz").await.0 == 200
    })
    .await;
}

fn stop(child: std::process::Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("exits");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_so_a_thousand_idle_clients_do_not_block_health() {
    let (db, stream, port) = (TestDb::not_yet_created(), TestStream::new(), free_port());
    let child = service(&db, &stream, port, &["prlimit", "--nofile=1024:4096", "--"])
        .spawn()
        .expect("prlimit (util-linux) runs the service");
    wait_healthz(port).await;

    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let health = get(addr, "/healthz").await.0;
    let took = started.elapsed();
    drop(idle);
    let log = stop(child);

    assert_eq!(health, 200);
    assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
    assert!(log.contains("raised the open-file limit"), "{log}");
}

#[tokio::test]
async fn max_connections_beyond_the_open_file_limit_is_lowered_with_a_warning() {
    let (db, stream, port) = (TestDb::not_yet_created(), TestStream::new(), free_port());
    let child = service(&db, &stream, port, &["prlimit", "--nofile=512:512", "--"])
        .env("MAX_CONNECTIONS", "10000")
        .spawn()
        .expect("prlimit runs the service");
    wait_healthz(port).await;

    let log = stop(child);

    assert!(
        log.contains("MAX_CONNECTIONS=10000 does not fit the open-file limit of 512"),
        "{log}"
    );
    assert!(log.contains("serving at most 384 connections"), "{log}");
}

#[tokio::test]
async fn sigterm_does_not_wait_for_half_sent_requests() {
    let (db, stream, port) = (TestDb::not_yet_created(), TestStream::new(), free_port());
    let child = service(&db, &stream, port, &[])
        .env("SHUTDOWN_TIMEOUT", "10s")
        .spawn()
        .expect("starts");
    wait_healthz(port).await;
    let mut half_sent = Vec::new();
    for n in 0..5 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        c.write_all(format!("GET /order?order_uid=h{n} HTTP/1.1\r\nHost: x\r\n").as_bytes())
            .await
            .expect("half a head");
        half_sent.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("exits");
    let took = started.elapsed();

    assert_eq!(out.status.code(), Some(0));
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} of a 10 s timeout"
    );
    drop(half_sent);
}

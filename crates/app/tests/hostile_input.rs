//! Hostile input, on the real app with real PostgreSQL and NATS: malformed
//! messages of every kind a careless or hostile publisher could send, mixed
//! with valid orders, and HTTP requests meant to break the server. Each bad
//! message must land in `rejected_messages` with a reason that names the
//! problem, each valid one must be stored, and neither the ingest loop nor
//! the HTTP server may stop or answer 500.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use orders_app::Config;
use orders_testkit::{TestDb, TestStream, eventually, get, order_json, order_value};
use serde_json::{Value, json};
use support::spawn_with;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The message size limit in these tests (`MAX_ORDER_BYTES`; 1 MiB by default).
const LIMIT: usize = 64 * 1024;

/// A valid order with one field replaced (a `/`-separated path).
fn with(uid: &str, path: &str, value: Value) -> Vec<u8> {
    let mut order = order_value(uid, 1);
    let mut target = &mut order;
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        target = match part.parse::<usize>() {
            Ok(i) => &mut target[i],
            Err(_) => &mut target[*part],
        };
    }
    let last = parts[parts.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => target[i] = value,
        Err(_) => target[last] = value,
    }
    serde_json::to_vec(&order).expect("serializable")
}

/// A valid order without one top-level field.
fn without(uid: &str, field: &str) -> Vec<u8> {
    let mut order = order_value(uid, 1);
    order.as_object_mut().expect("object").remove(field);
    serde_json::to_vec(&order).expect("serializable")
}

/// A case: what is sent, the reason kind expected in `rejected_messages`,
/// and a word its detail must contain (the field or the problem).
struct Case {
    name: &'static str,
    body: Vec<u8>,
    reason: &'static str,
    names: &'static str,
}

fn case(name: &'static str, body: Vec<u8>, reason: &'static str, names: &'static str) -> Case {
    Case {
        name,
        body,
        reason,
        names,
    }
}

fn corpus() -> Vec<Case> {
    let valid = order_json("hostile-base", 1);
    let mut invalid_utf8 = with("bad-utf8", "delivery/name", json!("XX"));
    let at = invalid_utf8
        .windows(4)
        .position(|w| w == b"\"XX\"")
        .expect("the placeholder");
    invalid_utf8[at + 1] = 0xff;
    invalid_utf8[at + 2] = 0xfe;
    let deep = format!(
        "{{\"order_uid\":\"deep\",\"x\":{}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let mut oversized = order_value("too-big", 1);
    oversized["padding"] = json!("x".repeat(LIMIT));
    let huge_float = String::from_utf8(with("huge-float", "payment/amount", json!(1)))
        .expect("UTF-8")
        .replace("\"amount\":1,", "\"amount\":1e400,");
    assert!(huge_float.contains("1e400"), "placeholder replaced");
    let huge_int = String::from_utf8(with("huge-int", "payment/amount", json!(1)))
        .expect("UTF-8")
        .replace("\"amount\":1,", "\"amount\":18446744073709551616,");
    assert!(huge_int.contains("18446744073709551616"));
    let text = |uid: &str| String::from_utf8(order_json(uid, 1)).expect("UTF-8");
    let twice_uid = text("dup-a").replacen('{', "{\"order_uid\":\"dup-b\",", 1);
    let twice_amount = text("dup-amount").replacen("\"amount\":", "\"amount\":5,\"amount\":", 1);
    let twice_sm_id = text("dup-sm").replacen("\"sm_id\":", "\"sm_id\":-5,\"sm_id\":", 1);
    let mut many = order_value("many-bad", 1);
    many.as_object_mut().expect("object").remove("date_created");
    many["payment"]["amount"] = json!(748.14);
    many["delivery"]["city"] = json!(42);

    vec![
        case(
            "order_uid twice",
            twice_uid.into_bytes(),
            "duplicate_key",
            "duplicate key \"order_uid\"",
        ),
        case(
            "payment.amount twice",
            twice_amount.into_bytes(),
            "duplicate_key",
            "payment: duplicate key \"amount\"",
        ),
        case(
            "sm_id twice, first negative",
            twice_sm_id.into_bytes(),
            "duplicate_key",
            "duplicate key \"sm_id\"",
        ),
        case(
            "several bad fields",
            serde_json::to_vec(&many).expect("JSON"),
            "invalid_field",
            "delivery.city: expected a string, got a number; \
             payment.amount: expected a whole number, got 748.14; date_created: missing",
        ),
        case(
            "a letter between date and time",
            with("dx", "date_created", json!("2021-11-26X06:22:19Z")),
            "invalid_field",
            "date_created: expected an RFC 3339 time",
        ),
        case(
            "year 0000",
            with("y0", "date_created", json!("0000-01-01T00:00:00Z")),
            "invalid_field",
            "date_created: year 0",
        ),
        case(
            "a leap second",
            with("ls", "date_created", json!("2016-12-31T23:59:60Z")),
            "invalid_field",
            "date_created: a leap second",
        ),
        case(
            "an offset of 24 hours",
            with("o24", "date_created", json!("2021-11-26T06:22:19+24:00")),
            "invalid_field",
            "date_created",
        ),
        case(
            "truncated JSON",
            valid[..valid.len() / 2].to_vec(),
            "invalid_json",
            "EOF",
        ),
        case("empty body", Vec::new(), "invalid_json", "EOF"),
        case(
            "whitespace only",
            b"  \n\t ".to_vec(),
            "invalid_json",
            "EOF",
        ),
        case("null", b"null".to_vec(), "not_an_object", "null"),
        case("an array", b"[1,2,3]".to_vec(), "not_an_object", "array"),
        case("a string", b"\"order\"".to_vec(), "not_an_object", "string"),
        case("a number", b"42".to_vec(), "not_an_object", "number"),
        case("invalid UTF-8", invalid_utf8, "invalid_json", "unicode"),
        case(
            "trailing garbage",
            [&valid[..], b"}}"].concat(),
            "invalid_json",
            "trailing",
        ),
        case(
            "order_uid a number",
            with("x", "order_uid", json!(7)),
            "invalid_field",
            "order_uid",
        ),
        case(
            "track_number a number",
            with("tn", "track_number", json!(1)),
            "invalid_field",
            "track_number",
        ),
        case(
            "sm_id a string",
            with("sm", "sm_id", json!("99")),
            "invalid_field",
            "sm_id",
        ),
        case(
            "date_created a number",
            with("dc", "date_created", json!(1)),
            "invalid_field",
            "date_created",
        ),
        case(
            "delivery a string",
            with("ds", "delivery", json!("home")),
            "invalid_field",
            "delivery",
        ),
        case(
            "payment an array",
            with("pa", "payment", json!([])),
            "invalid_field",
            "payment",
        ),
        case(
            "items an object",
            with("io", "items", json!({})),
            "invalid_field",
            "items",
        ),
        case(
            "an item a string",
            with("is", "items/0", json!("item")),
            "invalid_field",
            "items",
        ),
        case(
            "delivery.email a number",
            with("de", "delivery/email", json!(5)),
            "invalid_field",
            "delivery.email",
        ),
        case(
            "items[0].price a string",
            with("ip", "items/0/price", json!("453")),
            "invalid_field",
            "price",
        ),
        case(
            "items[0].chrt_id a fraction",
            with("ic", "items/0/chrt_id", json!(1.5)),
            "invalid_field",
            "chrt_id",
        ),
        case(
            "delivery missing",
            without("dm", "delivery"),
            "invalid_field",
            "delivery",
        ),
        case(
            "payment missing",
            without("pm", "payment"),
            "invalid_field",
            "payment",
        ),
        case(
            "items missing",
            without("im", "items"),
            "invalid_field",
            "items",
        ),
        case(
            "order_uid missing",
            without("um", "order_uid"),
            "invalid_field",
            "order_uid",
        ),
        case(
            "items empty",
            with("ie", "items", json!([])),
            "invalid_field",
            "items",
        ),
        case(
            "negative amount",
            with("na", "payment/amount", json!(-1)),
            "invalid_field",
            "payment.amount",
        ),
        case(
            "negative price",
            with("np", "items/0/price", json!(-5)),
            "invalid_field",
            "price",
        ),
        case(
            "negative delivery_cost",
            with("nd", "payment/delivery_cost", json!(-1500)),
            "invalid_field",
            "delivery_cost",
        ),
        case(
            "date not RFC 3339",
            with("dn", "date_created", json!("yesterday")),
            "invalid_field",
            "date_created",
        ),
        case(
            "date without a zone",
            with("dz", "date_created", json!("2021-11-26 06:22:19")),
            "invalid_field",
            "date_created",
        ),
        case(
            "empty order_uid",
            with("", "order_uid", json!("")),
            "invalid_field",
            "order_uid",
        ),
        case(
            "overlong order_uid",
            with("o", "order_uid", json!("a".repeat(65))),
            "invalid_field",
            "order_uid",
        ),
        case(
            "SQL in order_uid",
            with("s", "order_uid", json!("x'; DROP TABLE order_info;--")),
            "invalid_field",
            "order_uid",
        ),
        case(
            "body over the limit",
            serde_json::to_vec(&oversized).expect("JSON"),
            "too_large",
            "65536",
        ),
        case(
            "nesting 20,000 deep",
            deep.into_bytes(),
            "invalid_json",
            "recursion",
        ),
        case(
            "a number beyond f64",
            huge_float.into_bytes(),
            "invalid_json",
            "number",
        ),
        case(
            "an integer beyond u64",
            huge_int.into_bytes(),
            "invalid_field",
            "payment.amount",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_message_is_rejected_with_its_reason_and_every_valid_one_stored() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        max_order_bytes: LIMIT,
        ..c
    })
    .await;
    let cases = corpus();

    // Valid, bad, valid, bad, ...; the stream sequence of each bad one is
    // kept to find its row. Then the same uid as a valid order with other
    // content, right behind the original (likely in the same batch).
    let mut expected: Vec<(u64, &Case)> = Vec::new();
    let mut valid = 0;
    for (i, case) in cases.iter().enumerate() {
        publish(&app, order_json(&format!("fine-{i}"), i as u64)).await;
        valid += 1;
        let sequence = publish(&app, case.body.clone()).await;
        expected.push((sequence, case));
    }
    publish(&app, order_json("twice", 1)).await;
    valid += 1;
    // Stored before its conflict is sent: with two batches in flight, two
    // messages in different batches may commit in either order, and the
    // second to commit is the one rejected.
    app.wait_stored(valid).await;
    let conflict = case(
        "same uid, other content",
        order_json("twice", 2),
        "conflict",
        "twice",
    );
    let conflict_sequence = publish(&app, conflict.body.clone()).await;
    expected.push((conflict_sequence, &conflict));

    app.wait_stored(valid).await;
    let db = &app.db;
    let bad = expected.len() as i64;
    eventually(
        &format!("{bad} rejected messages"),
        Duration::from_secs(30),
        || async move { db.count("SELECT count(*) FROM rejected_messages").await >= bad },
    )
    .await;

    let client = app.db.client().await;
    let mut wrong = Vec::new();
    for (sequence, case) in &expected {
        let rows = client
            .query(
                "SELECT reason, detail, payload FROM rejected_messages WHERE stream_sequence = $1",
                &[&(*sequence as i64)],
            )
            .await
            .expect("query");
        let Some(row) = rows.first() else {
            wrong.push(format!("{}: not in rejected_messages", case.name));
            continue;
        };
        let (reason, detail, payload): (String, String, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2));
        if reason != case.reason || !detail.contains(case.names) || payload != case.body {
            wrong.push(format!(
                "{}: reason {reason:?} (want {:?}), detail {detail:?} (want it to name {:?}), \
                 payload kept whole: {}",
                case.name,
                case.reason,
                case.names,
                payload == case.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM rejected_messages").await,
        bad,
        "one row per bad message"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM order_info").await,
        valid,
        "every valid order stored, nothing else"
    );
    // The first "twice" stays.
    let (status, body) = get(app.addr, "/order?order_uid=twice").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        order_value("twice", 1)
    );
    assert!(!app.task.is_finished(), "the service stopped");
    assert_eq!(get(app.addr, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_beyond_the_years_in_utc_is_rejected_alone_and_refused_as_a_search_bound() {
    // setup: one batch waiting before the service starts: valid orders
    // around one whose date is 9999 as written and year 10000 in UTC (its
    // conversion to UTC panicked, and the batch was redelivered forever)
    let (db, stream) = (TestDb::not_yet_created(), TestStream::new());
    let js = stream.create().await;
    let bad = with(
        "year-10000",
        "date_created",
        json!("9999-12-31T23:00:00-05:00"),
    );
    for body in [
        order_json("before-year-10000", 1),
        bad.clone(),
        order_json("after-year-10000", 2),
    ] {
        stream.publish(&js, body, None).await;
    }

    // exec
    let app = spawn_with(db, stream, |c| c).await;
    app.wait_stored(2).await;
    app.wait_rows("rejected_messages", 1).await;

    // check: the valid ones stored, the bad one rejected naming its field
    let row = app
        .db
        .client()
        .await
        .query_one("SELECT reason, detail, payload FROM rejected_messages", &[])
        .await
        .expect("one row");
    assert_eq!(row.get::<_, &str>(0), "invalid_field");
    let detail: &str = row.get(1);
    assert!(
        detail.starts_with("date_created: in UTC it falls outside the years 0001-9999"),
        "{detail}"
    );
    assert_eq!(row.get::<_, &[u8]>(2), bad.as_slice());
    assert_eq!(
        app.db.count("SELECT count(*) FROM order_info").await,
        2,
        "the valid orders of its batch stored"
    );
    assert_eq!(get(app.addr, "/readyz").await.0, 200);

    // and as a bound of /orders: 400 naming the parameter, not a dropped connection
    for (name, value) in [
        ("from", "9999-12-31T23:00:00-05:00"),
        ("to", "9999-12-31T23:59:59.999-23:59"),
        ("from", "0001-01-01T00:00:00%2B00:01"),
    ] {
        let (status, text) = raw(app.addr, &get_request(&format!("/orders?{name}={value}"))).await;
        assert_eq!(status, Some(400), "{name}={value}: {text}");
        let body = &text[text.find("\r\n\r\n").expect("a head") + 4..];
        let error: Value = serde_json::from_str(body).expect("a JSON body");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("{name}: in UTC it falls outside"))),
            "{name}={value}: {body}"
        );
    }
    assert!(!app.task.is_finished(), "the service stopped");
}

#[tokio::test]
async fn a_go_producers_omitted_fields_are_defaulted_stored_served_and_counted() {
    let app = support::spawn_app().await;
    // The sample as Go's `omitempty` sends it: no "", no 0.
    let mut sent = orders_testkit::sample_value();
    sent["payment"]
        .as_object_mut()
        .expect("object")
        .remove("request_id");
    sent["payment"]
        .as_object_mut()
        .expect("object")
        .remove("custom_fee");
    sent.as_object_mut()
        .expect("object")
        .remove("internal_signature");

    publish(&app, serde_json::to_vec(&sent).expect("JSON")).await;
    app.wait_stored(1).await;

    let (status, body) = get(app.addr, "/order?order_uid=b563feb7b2b84b6test").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        orders_testkit::sample_value(),
        "served with the fields filled in"
    );
    let metrics = String::from_utf8(get(app.addr, "/metrics").await.1).expect("UTF-8");
    for field in [
        "payment.request_id",
        "payment.custom_fee",
        "internal_signature",
    ] {
        let line = format!("orders_fields_defaulted_total{{field=\"{field}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM rejected_messages").await,
        0
    );
}

/// Status lines a publisher can forge in a message's headers.
const FORGED: [&str; 10] = [
    "NATS/1.0 408 Request Timeout",
    "NATS/1.0 500 Internal Server Error",
    "NATS/1.0 409 Consumer Deleted",
    "NATS/1.0 404 No Messages",
    "NATS/1.0 100 Idle Heartbeat",
    "NATS/1.0 503",
    "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1000",
    "NATS/1.0 500",
    "NATS/1.0 409 Exceeded MaxWaiting",
    "NATS/1.0 409 Consumer is push based",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_status_lines_end_like_any_message_and_what_follows_is_stored_at_once() {
    let app = support::spawn_app().await;

    // Ten forged status lines, half on valid orders, half on garbage, then
    // a valid order behind them.
    for (n, forged) in FORGED.iter().enumerate() {
        let payload = if n % 2 == 0 {
            order_json(&format!("forged-{n}"), n as u64)
        } else {
            format!("forged-{n}").into_bytes()
        };
        app.stream.publish_raw(forged, &payload).await;
    }
    let published = Instant::now();
    publish(&app, order_json("behind-the-forged", 99)).await;

    let addr = app.addr;
    eventually(
        "the order behind them stored",
        Duration::from_secs(2),
        || async move { get(addr, "/order?order_uid=behind-the-forged").await.0 == 200 },
    )
    .await;
    let took = published.elapsed();
    app.wait_stored(6).await;
    let db = &app.db;
    eventually("5 rejected", Duration::from_secs(10), || async move {
        db.count("SELECT count(*) FROM rejected_messages").await == 5
    })
    .await;

    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT reason, headers FROM rejected_messages ORDER BY stream_sequence",
            &[],
        )
        .await
        .expect("rows");
    for (row, forged) in rows.iter().zip(FORGED.iter().skip(1).step_by(2)) {
        assert_eq!(row.get::<_, &str>(0), "invalid_json");
        let status_line = forged.lines().next().expect("a line");
        let headers: &str = row.get(1);
        assert!(
            headers.starts_with(status_line),
            "{headers:?} kept, not {status_line:?}"
        );
    }
    assert_eq!(get(app.addr, "/readyz").await.0, 200);
    let metrics = String::from_utf8(get(app.addr, "/metrics").await.1).expect("UTF-8");
    assert!(
        metrics.contains("orders_messages_received_total 11"),
        "{metrics}"
    );
    eprintln!(
        "the order behind ten forged status lines was stored {took:?} after it was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_client_cannot_read_ends_in_rejected_messages_as_undeliverable() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| Config {
        nats_max_deliver: 2,
        nats_ack_wait: Duration::from_secs(1),
        ..c
    })
    .await;
    let before = publish(&app, order_json("before-the-unreadable", 1)).await;
    // A status the client library cannot parse: it closes the connection
    // on every delivery, so no replica ever settles this message.
    let unreadable = order_json("unreadable", 2);
    app.stream.publish_raw("NATS/1.0 abc", &unreadable).await;
    let sequence = before + 1;
    publish(&app, order_json("after-the-unreadable", 3)).await;

    let db = &app.db;
    eventually(
        "the unreadable message recorded",
        Duration::from_secs(60),
        || async move {
            db.count("SELECT count(*) FROM rejected_messages WHERE reason = 'undeliverable'")
                .await
                == 1
        },
    )
    .await;
    app.wait_stored(2).await;

    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT stream_sequence, payload, headers, detail, order_uid FROM rejected_messages",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, i64>(0), sequence as i64);
    assert_eq!(
        row.get::<_, &[u8]>(1),
        unreadable.as_slice(),
        "the bytes as sent"
    );
    assert_eq!(row.get::<_, &str>(2), "NATS/1.0 abc");
    assert!(row.get::<_, &str>(3).contains("gave up after 2 deliveries"));
    assert_eq!(row.get::<_, &str>(4), "unreadable");
    // The message delivered behind it went down with the connection too,
    // but came back alone (pulled one at a time after a reconnect).
    for uid in ["before-the-unreadable", "after-the-unreadable"] {
        assert_eq!(
            get(app.addr, &format!("/order?order_uid={uid}")).await.0,
            200,
            "{uid}"
        );
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM rejected_messages").await,
        1,
        "only the unreadable message"
    );
    let metrics = String::from_utf8(get(app.addr, "/metrics").await.1).expect("UTF-8");
    assert!(
        metrics.contains("orders_messages_rejected_total{reason=\"undeliverable\"} 1"),
        "{metrics}"
    );
}

async fn publish(app: &support::TestApp, body: Vec<u8>) -> u64 {
    app.js
        .publish(app.stream.subject.clone(), body.into())
        .await
        .expect("publish")
        .await
        .expect("broker ack")
        .sequence
}

/// Sends raw bytes and returns the status code of the answer, if any came
/// within 5 s, and the answer as text.
async fn raw(addr: SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A server may refuse before reading everything; a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

fn get_request(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn bad_uids_get_400_with_a_json_error() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| c).await;
    let long = "a".repeat(65);
    for query in [
        "/order",
        "/order?",
        "/order?order_uid=",
        "/order?order_uid=a&order_uid=b",
        &format!("/order?order_uid={long}"),
        "/order?order_uid=%ZZ",
        "/order?order_uid=%FF%FE",
        "/order?order_uid=%00",
        "/order?order_uid=a%20b",
        "/order?uid=b563feb7b2b84b6test",
    ] {
        let (status, text) = raw(app.addr, &get_request(query)).await;
        assert_eq!(status, Some(400), "{query}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/json"),
            "{query}: {text}"
        );
        let body = &text[text.find("\r\n\r\n").expect("a head") + 4..];
        let error: Value = serde_json::from_str(body).expect("a JSON body");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn oversized_heads_are_refused_and_the_server_stays_up() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| c).await;
    let long_target = format!("/order?order_uid={}", "a".repeat(64 * 1024));
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\n{}Connection: close\r\n\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (what, request) in [
        ("a 64 KiB request line", get_request(&long_target)),
        ("a 64 KiB header", long_header.into_bytes()),
        ("500 headers", many_headers.into_bytes()),
    ] {
        let (status, text) = raw(app.addr, &request).await;
        assert!(
            status.is_none_or(|s| (400..500).contains(&s)),
            "{what}: {status:?} {}",
            text.lines().next().unwrap_or("")
        );
    }
    assert_eq!(get(app.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_is_cut_off() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| c).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    // Part of a head, then a header line every 2 s, never the blank line.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("write");
    let mut buffer = [0u8; 1024];
    let closed_after = loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break started.elapsed(),
                // An answer (408, say) before the close is fine.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break started.elapsed();
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still connected after 20 s"
        );
    };
    // The head must arrive within 10 s (HttpSettings::header_read_timeout).
    assert!(
        closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(15),
        "cut off after {closed_after:?}"
    );
    assert_eq!(get(app.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn no_path_leaves_static_and_no_request_gets_a_500() {
    let app = spawn_with(TestDb::not_yet_created(), TestStream::new(), |c| c).await;
    for target in [
        "/../Cargo.toml",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fCargo.toml",
        "/..%5c..%5cCargo.toml",
        "/....//....//etc/passwd",
        "/%252e%252e/Cargo.toml",
        "/app.js/../../Cargo.toml",
        "//etc/passwd",
    ] {
        let (status, text) = raw(app.addr, &get_request(target)).await;
        assert!(
            matches!(status, Some(400 | 404)),
            "{target}: {status:?} {}",
            text.lines().next().unwrap_or("")
        );
        assert!(
            !text.contains("[workspace]") && !text.contains("root:x:0"),
            "{target} served a file outside static/"
        );
    }

    let odd: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown method", b"BREW /order HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec()),
        ("DELETE", b"DELETE /order?order_uid=x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec()),
        ("a NUL in the path", b"GET /ord\0er HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec()),
        ("invalid UTF-8 in the path", b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec()),
        ("a huge Content-Length", b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n".to_vec()),
        ("a bad chunk", b"POST /order HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec()),
        ("HTTP/1.0 without Host", b"GET /healthz HTTP/1.0\r\n\r\n".to_vec()),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        ("a negative limit", get_request("/orders?limit=-1")),
        ("an enormous limit", get_request("/orders?limit=99999999999999999999999")),
        ("a garbage cursor", get_request("/orders?before=%00%FF..x")),
        ("a query of 2,000 parameters", get_request(&format!("/orders?{}", "a=1&".repeat(2_000)))),
    ];
    for (what, request) in odd {
        let (status, text) = raw(app.addr, &request).await;
        assert!(
            status.is_none_or(|s| s < 500),
            "{what}: {status:?} {}",
            text.lines().next().unwrap_or("")
        );
    }
    assert_eq!(get(app.addr, "/healthz").await.0, 200);
    assert!(!app.task.is_finished(), "the service stopped");
}

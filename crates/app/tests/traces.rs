//! Traces, on the real binary, exported to a real OTLP/HTTP receiver in
//! this process (orders-testkit's `OtlpReceiver`, which decodes the
//! protobuf with the protocol's own types): a message's trace continued
//! from its producer through ingest, a lookup's from its caller, the log
//! lines that name them, and a collector in trouble that ingest never waits
//! for.

use std::time::Duration;

use async_nats::HeaderMap;
use orders_testkit::otlp::{Answer, OtlpReceiver, ReceivedSpan};
use orders_testkit::servers::ServiceProcess;
use orders_testkit::{TestDb, TestStream, eventually, get, http_with, order_json};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

/// Generous for a busy 2-core machine: the export runs every 100 ms here.
const PATIENCE: Duration = Duration::from_secs(30);

/// The producer's span the test plays: its trace and span id.
const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const PRODUCER: u64 = 0x00f0_67aa_0ba9_02b7;

fn traceparent(trace: u128, span: u64) -> String {
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The service on `db` and `stream`, exporting to `receiver` every 100 ms
/// (so a test waits little), logging JSON; `extra` on top.
async fn service(
    db: &TestDb,
    stream: &TestStream,
    receiver: &OtlpReceiver,
    extra: &[(&str, &str)],
) -> ServiceProcess {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", stream.url.clone()),
        ("NATS_SUBJECT", stream.subject.clone()),
        ("NATS_STREAM", stream.stream.clone()),
        ("NATS_DURABLE", stream.durable.clone()),
        ("LOG_FORMAT", "json".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_SERVICE_NAME", "orders-under-test".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".to_owned(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut service = ServiceProcess::new(BIN, &env);
    service.start();
    let addr = service.addr();
    eventually("the service is ready", PATIENCE, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/readyz").await.0 == 200
    })
    .await;
    service
}

/// Publishes `body` with these headers and waits for the broker's ack.
async fn publish(stream: &TestStream, headers: &[(&str, &str)], body: Vec<u8>) {
    let js = async_nats::jetstream::new(stream.client().await);
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    js.publish_with_headers(stream.subject.clone(), map, body.into())
        .await
        .expect("publish")
        .await
        .expect("broker ack");
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    found: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let mut matching = spans.iter().filter(|s| found(s));
    let first = matching
        .next()
        .unwrap_or_else(|| panic!("no {what} among {spans:#?}"));
    assert!(matching.next().is_none(), "more than one {what}");
    first
}

fn children_of<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == Some(parent.span_id))
        .collect()
}

#[tokio::test]
async fn an_order_is_traced_from_its_producer_through_ingest_and_a_lookup_from_its_caller() {
    // setup
    let (db, stream, receiver) = (
        TestDb::new().await,
        TestStream::new(),
        OtlpReceiver::start().await,
    );
    let service = service(&db, &stream, &receiver, &[]).await;
    let uid = "traced_order_1";
    let producer = traceparent(TRACE, PRODUCER);

    // exec: a message from a producer that traced its send
    publish(
        &stream,
        &[
            ("traceparent", &producer),
            ("tracestate", "vendor=1"),
            ("Nats-Msg-Id", uid),
        ],
        order_json(uid, 1),
    )
    .await;
    let in_trace = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .any(|s| s.trace_id == TRACE && s.name == "save")
            && spans.iter().any(|s| s.name == "INSERT order_info")
    };
    let spans = receiver
        .wait_for("the message's spans", PATIENCE, in_trace)
        .await;

    // check: the process span continues the producer's trace
    let process = one(&spans, "process span", |s| {
        s.trace_id == TRACE && s.kind == "CONSUMER"
    });
    assert_eq!(process.name, format!("process {}", stream.subject));
    assert_eq!(process.parent_span_id, Some(PRODUCER));
    assert_eq!(process.service, "orders-under-test");
    assert_eq!(
        process
            .resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    for (key, value) in [
        ("messaging.system", "nats"),
        ("messaging.operation.name", "process"),
        ("messaging.destination.name", stream.subject.as_str()),
        ("messaging.consumer.group.name", stream.durable.as_str()),
        ("messaging.message.id", "1"),
        ("order_uid", uid),
        ("orders.outcome", "stored"),
    ] {
        assert_eq!(process.attribute(key), Some(value), "{key} of {process:#?}");
    }
    assert_eq!(process.events, ["cache insert", "ack"], "{process:#?}");
    let children = children_of(&spans, process);
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"decode") && names.contains(&"save"),
        "{names:?}"
    );
    // The batch: one message, linked to its producer's span; its statement
    // is the database span, with no value of the order in it.
    let batch = one(&spans, "batch span", |s| s.name == "process batch");
    assert_eq!(batch.kind, "CONSUMER");
    assert_eq!(batch.attribute("messaging.batch.message_count"), Some("1"));
    assert_eq!(batch.links, [(TRACE, PRODUCER)]);
    let insert = one(&spans, "insert span", |s| s.name == "INSERT order_info");
    assert_eq!(insert.kind, "CLIENT");
    assert_eq!(insert.parent_span_id, Some(batch.span_id));
    assert_eq!(insert.attribute("db.system.name"), Some("postgresql"));
    assert_eq!(insert.attribute("db.operation.name"), Some("INSERT"));
    assert!(!format!("{insert:?}").contains(uid), "{insert:#?}");

    // exec: lookups from a caller that traced its request
    let caller: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;
    let (hit, miss) = (0xb7ad_6b71_6920_3331, 0xb7ad_6b71_6920_3332);
    let path = format!("/order?order_uid={uid}");
    let header = traceparent(caller, hit);
    let (status, _, _) = http_with(service.addr(), "GET", &path, &[("traceparent", &header)]).await;
    assert_eq!(status, 200);
    let header = traceparent(caller, miss);
    let missing = "/order?order_uid=nobody_has_it";
    let (status, _, _) =
        http_with(service.addr(), "GET", missing, &[("traceparent", &header)]).await;
    assert_eq!(status, 404);
    let spans = receiver
        .wait_for("the lookups' spans", PATIENCE, |spans| {
            spans
                .iter()
                .filter(|s| s.trace_id == caller && s.kind == "SERVER")
                .count()
                == 2
                && spans
                    .iter()
                    .any(|s| s.trace_id == caller && s.kind == "CLIENT")
        })
        .await;

    // check: each request is a server span in the caller's trace; the miss
    // read through, in a database span of its own; no query string
    let served = one(&spans, "the hit's server span", |s| {
        s.parent_span_id == Some(hit)
    });
    assert_eq!(served.trace_id, caller);
    assert_eq!(served.name, "GET /order");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/order"),
        ("url.path", "/order"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(served.attribute(key), Some(value), "{key} of {served:#?}");
    }
    assert!(
        children_of(&spans, served).is_empty(),
        "a cache hit reads nothing"
    );
    let missed = one(&spans, "the miss's server span", |s| {
        s.parent_span_id == Some(miss)
    });
    assert_eq!(missed.attribute("http.response.status_code"), Some("404"));
    let read = children_of(&spans, missed);
    assert_eq!(read.len(), 1, "{read:#?}");
    assert_eq!(read[0].name, "SELECT order_info");
    assert_eq!(read[0].attribute("db.system.name"), Some("postgresql"));
    assert_eq!(read[0].attribute("db.operation.name"), Some("SELECT"));
    let all = format!("{spans:?}");
    assert!(!all.contains("order_uid="), "a query string was exported");
}

#[tokio::test]
async fn a_rejected_message_keeps_its_trace_in_its_row_its_span_and_its_log_line() {
    // setup
    let (db, stream, receiver) = (
        TestDb::new().await,
        TestStream::new(),
        OtlpReceiver::start().await,
    );
    let service = service(&db, &stream, &receiver, &[]).await;
    let producer = traceparent(TRACE, PRODUCER);

    // exec
    publish(
        &stream,
        &[("traceparent", &producer)],
        b"{not json".to_vec(),
    )
    .await;
    let spans = receiver
        .wait_for("the rejected message's span", PATIENCE, |spans| {
            spans
                .iter()
                .any(|s| s.trace_id == TRACE && s.kind == "CONSUMER")
        })
        .await;

    // check: the span says why; the row keeps the header for a replay; the
    // log line names the trace and the span
    let process = one(&spans, "process span", |s| {
        s.trace_id == TRACE && s.kind == "CONSUMER"
    });
    assert_eq!(process.attribute("orders.outcome"), Some("rejected"));
    assert_eq!(
        process.attribute("orders.rejected.reason"),
        Some("invalid_json")
    );
    assert_eq!(process.events.last().map(String::as_str), Some("term"));
    let row = db
        .client()
        .await
        .query_one("SELECT headers FROM rejected_messages", &[])
        .await
        .expect("the rejected row");
    let headers: Option<String> = row.get(0);
    assert!(
        headers
            .as_deref()
            .is_some_and(|h| h.contains(&format!("traceparent: {producer}"))),
        "{headers:?}"
    );
    let line = service
        .log()
        .lines()
        .find(|l| l.contains("message rejected"))
        .map(str::to_owned)
        .expect("a log line for the rejection");
    let line: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(line["trace_id"], format!("{TRACE:032x}"), "{line}");
    assert_eq!(
        line["span_id"],
        format!("{:016x}", process.span_id),
        "{line}"
    );
}

/// Publishes `count` orders, each with a producer's traceparent (so each
/// is sampled), and waits until all are stored; fails if that takes
/// longer than `PATIENCE`.
async fn ingest_orders(db: &TestDb, stream: &TestStream, count: u64) {
    let js = async_nats::jetstream::new(stream.client().await);
    let mut acks = Vec::new();
    for n in 0..count {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            traceparent(TRACE + u128::from(n), PRODUCER).as_str(),
        );
        acks.push(
            js.publish_with_headers(
                stream.subject.clone(),
                headers,
                order_json(&format!("o{n}"), n).into(),
            )
            .await
            .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("broker ack");
    }
    eventually("every order stored", PATIENCE, || async {
        db.count("SELECT count(*) FROM order_info").await == count as i64
    })
    .await;
}

/// A counter from `/metrics`.
async fn metric(service: &ServiceProcess, series: &str) -> u64 {
    let text = String::from_utf8(get(service.addr(), "/metrics").await.1).expect("UTF-8");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[tokio::test]
async fn a_collector_that_never_answers_holds_up_no_order_and_the_spans_it_costs_are_counted() {
    // setup: a receiver that takes each export and never answers, and a
    // small queue (64 spans) that the spans behind it overflow
    let (db, stream, receiver) = (
        TestDb::new().await,
        TestStream::new(),
        OtlpReceiver::start().await,
    );
    receiver.answer(Answer::Hang);
    let service = service(
        &db,
        &stream,
        &receiver,
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "64")],
    )
    .await;
    let dropped = "orders_trace_spans_dropped_total{reason=\"queue_full\"}";
    assert_eq!(
        metric(&service, dropped).await,
        0,
        "exported from the start"
    );

    // exec: 300 orders (about 1,200 spans) while the export hangs
    ingest_orders(&db, &stream, 300).await;

    // check: all stored while the receiver still holds an export unanswered
    // (it answers nothing until told), the spans that found the queue full
    // counted
    assert!(receiver.requests() >= 1, "the exporter never tried");
    assert!(receiver.spans().is_empty(), "the receiver answered");
    assert!(metric(&service, dropped).await > 0);
}

#[tokio::test]
async fn a_collector_answering_503_holds_up_no_order_and_its_refusals_are_counted() {
    // setup
    let (db, stream, receiver) = (
        TestDb::new().await,
        TestStream::new(),
        OtlpReceiver::start().await,
    );
    receiver.answer(Answer::Refuse);
    let service = service(&db, &stream, &receiver, &[]).await;

    // exec
    ingest_orders(&db, &stream, 300).await;

    // check: stored while refused; the refused batches counted, once the
    // exporter's retries give up on one
    let failed = "orders_trace_spans_dropped_total{reason=\"export_failed\"}";
    let addr = service.addr();
    eventually("a refused batch counted", PATIENCE, || async move {
        let text = String::from_utf8(get(addr, "/metrics").await.1).expect("UTF-8");
        text.lines()
            .find_map(|l| l.strip_prefix(failed)?.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
    .await;
    assert!(receiver.requests() >= 1);
    assert!(receiver.spans().is_empty());
}

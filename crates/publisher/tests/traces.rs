//! The real `order-publisher` binary's traces, exported to a real OTLP/HTTP
//! receiver in this process: a PRODUCER span per message whose context goes
//! into the message's `traceparent`, and a replay that continues the trace
//! of the message it sends again.

use std::process::Command;
use std::time::Duration;

use orders_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use orders_testkit::{TestDb, TestStream};

const BIN: &str = env!("CARGO_BIN_EXE_order-publisher");

/// Generous for a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn publisher(stream: &TestStream, receiver: &OtlpReceiver) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd
}

/// The `traceparent` of the stream's message `sequence`.
async fn traceparent_of(stream: &TestStream, sequence: u64) -> String {
    let js = async_nats::jetstream::new(stream.client().await);
    let handle = js.get_stream(&stream.stream).await.expect("stream");
    let message = handle.get_raw_message(sequence).await.expect("message");
    message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .expect("a traceparent header")
}

fn runs(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn the_send(receiver: &OtlpReceiver) -> ReceivedSpan {
    let spans = receiver
        .wait_for("a send span", PATIENCE, |spans| {
            spans.iter().any(|s| s.kind == "PRODUCER")
        })
        .await;
    let sends: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == "PRODUCER").collect();
    assert_eq!(sends.len(), 1, "{spans:#?}");
    sends[0].clone()
}

#[tokio::test]
async fn each_message_is_sent_in_a_producer_span_whose_context_it_carries() {
    // setup
    let (stream, receiver) = (TestStream::new(), OtlpReceiver::start().await);

    // exec
    let mut cmd = publisher(&stream, &receiver);
    let publishing = tokio::task::spawn_blocking(move || runs(&mut cmd));
    let send = the_send(&receiver).await;
    publishing.await.expect("the publisher ran");

    // check
    assert_eq!(send.name, format!("send {}", stream.subject));
    assert_eq!(send.parent_span_id, None);
    assert_eq!(send.service, "order-publisher");
    for (key, value) in [
        ("messaging.system", "nats"),
        ("messaging.operation.name", "send"),
        ("messaging.destination.name", stream.subject.as_str()),
        ("messaging.message.id", "b563feb7b2b84b6test"),
    ] {
        assert_eq!(send.attribute(key), Some(value), "{key} of {send:#?}");
    }
    assert_eq!(
        traceparent_of(&stream, 1).await,
        format!("00-{:032x}-{:016x}-01", send.trace_id, send.span_id)
    );
}

#[tokio::test]
async fn a_replay_continues_the_trace_of_the_message_it_sends_again() {
    // setup: a rejected row as the service keeps it, headers and all
    let (db, stream, receiver) = (
        TestDb::new().await,
        TestStream::new(),
        OtlpReceiver::start().await,
    );
    orders_postgres::migrate(&db.url).await.expect("migrated");
    stream.create().await;
    let (trace, first_send) = (
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128,
        0x00f0_67aa_0ba9_02b7_u64,
    );
    let headers =
        format!("NATS/1.0\nNats-Msg-Id: x\ntraceparent: 00-{trace:032x}-{first_send:016x}-01");
    let id: i64 = db
        .client()
        .await
        .query_one(
            "INSERT INTO rejected_messages (reason, detail, subject, stream, stream_sequence, payload, headers) \
             VALUES ('invalid_json', 'test', $1, 'ORDERS', 1, '{', $2) RETURNING id",
            &[&stream.subject, &headers],
        )
        .await
        .expect("a rejected row")
        .get(0);

    // exec
    let mut cmd = publisher(&stream, &receiver);
    cmd.env("DATABASE_URL", &db.url)
        .args(["replay", "--id", &id.to_string()]);
    let replaying = tokio::task::spawn_blocking(move || runs(&mut cmd));
    let send = the_send(&receiver).await;
    replaying.await.expect("the replay ran");

    // check: the replay's send is the first send's child, and the message
    // carries the replay's context on
    assert_eq!(send.trace_id, trace);
    assert_eq!(send.parent_span_id, Some(first_send));
    assert_eq!(
        traceparent_of(&stream, 1).await,
        format!("00-{trace:032x}-{:016x}-01", send.span_id)
    );
}

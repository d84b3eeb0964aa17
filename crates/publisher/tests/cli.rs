//! The real `order-publisher` binary against a real NATS server.

use std::process::Command;

use orders_testkit::TestStream;

const BIN: &str = env!("CARGO_BIN_EXE_order-publisher");

fn publisher(stream: &TestStream) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("NATS_URL", &stream.url)
        .env("NATS_SUBJECT", &stream.subject)
        .env("NATS_STREAM", &stream.stream)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd
}

async fn messages_in(stream: &TestStream) -> u64 {
    let js = async_nats::jetstream::new(stream.client().await);
    let mut handle = js.get_stream(&stream.stream).await.expect("stream");
    handle.info().await.expect("info").state.messages
}

#[tokio::test]
async fn the_sample_file_is_published_once_even_when_sent_twice() {
    let stream = TestStream::new();

    let first = publisher(&stream).output().expect("runs");
    let second = publisher(&stream).output().expect("runs");

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.contains("published order b563feb7b2b84b6test"), "{out}");
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("duplicate"), "{out}");
    assert_eq!(messages_in(&stream).await, 1);
}

#[tokio::test]
async fn generated_orders_are_counted_in_the_summary() {
    let stream = TestStream::new();

    let out = publisher(&stream)
        .args([
            "--count",
            "300",
            "--seed",
            "9",
            "--invalid-ratio",
            "0.1",
            "--quiet",
        ])
        .output()
        .expect("runs");

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("published 300, acked by the broker 300, duplicates 0, failed 0"),
        "{text}"
    );
    assert_eq!(messages_in(&stream).await, 300);
}

#[tokio::test]
async fn an_invalid_file_is_refused_unless_allowed() {
    let stream = TestStream::new();
    let dir = std::env::temp_dir().join(orders_testkit::unique_name("pub"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.json");
    std::fs::write(&file, b"{\"order_uid\": 1}").expect("write");

    let refused = publisher(&stream)
        .arg("--file")
        .arg(&file)
        .output()
        .expect("runs");
    let allowed = publisher(&stream)
        .arg("--file")
        .arg(&file)
        .arg("--allow-invalid")
        .output()
        .expect("runs");

    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("order_uid: expected a string"));
    assert!(allowed.status.success());
    assert_eq!(messages_in(&stream).await, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replay_refuses_to_choose_everything_and_names_the_reasons() {
    let stream = TestStream::new();

    let nothing_chosen = publisher(&stream).arg("replay").output().expect("runs");
    let bad_reason = publisher(&stream)
        .args(["replay", "--reason", "nope"])
        .output()
        .expect("runs");
    let help = publisher(&stream)
        .args(["replay", "--help"])
        .output()
        .expect("runs");

    assert!(!nothing_chosen.status.success());
    assert!(
        String::from_utf8_lossy(&nothing_chosen.stderr).contains("say which rows to replay"),
        "{}",
        String::from_utf8_lossy(&nothing_chosen.stderr)
    );
    assert!(!bad_reason.status.success());
    assert!(String::from_utf8_lossy(&bad_reason.stderr).contains("undeliverable"));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--id",
        "--reason",
        "--since",
        "--until",
        "--again",
        "--dry-run",
        "DATABASE_URL",
    ] {
        assert!(help.contains(flag), "replay --help lacks {flag}");
    }
}

#[test]
fn a_wildcard_subject_is_refused_for_publishing() {
    let stream = TestStream::new();

    let out = publisher(&stream)
        .env("NATS_SUBJECT", "orders.>")
        .output()
        .expect("runs");

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a wildcard"));
}

#[tokio::test]
async fn the_stream_it_creates_keeps_messages_for_nats_stream_max_age_as_the_service_would() {
    // setup: no stream yet
    let stream = TestStream::new();

    // exec: a bad value first, then a good one
    let bad = publisher(&stream)
        .env("NATS_STREAM_MAX_AGE", "500ms")
        .output()
        .expect("runs");
    let good = publisher(&stream)
        .env("NATS_STREAM_MAX_AGE", "2d")
        .output()
        .expect("runs");

    // check
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--nats-stream-max-age") && err.contains("shorter than 1s"),
        "{err}"
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let js = async_nats::jetstream::new(stream.client().await);
    let mut handle = js.get_stream(&stream.stream).await.expect("stream");
    assert_eq!(
        handle.info().await.expect("info").config.max_age,
        std::time::Duration::from_secs(2 * 86_400)
    );
}

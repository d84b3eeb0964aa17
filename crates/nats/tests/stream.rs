//! How long the stream keeps messages (`NATS_STREAM_MAX_AGE`), against a
//! real NATS server: each test with its own stream.

use std::time::Duration;

use orders_nats::{DEFAULT_MAX_AGE, StreamSettings, age_warning, ensure_stream};
use orders_testkit::TestStream;

const HOUR: Duration = Duration::from_secs(3_600);

/// The stream's max age as the server keeps it.
async fn max_age_on_server(t: &TestStream) -> Duration {
    let js = async_nats::jetstream::new(t.client().await);
    let mut stream = js.get_stream(&t.stream).await.expect("stream");
    stream.info().await.expect("info").config.max_age
}

#[tokio::test]
async fn a_stream_created_here_keeps_messages_for_its_max_age() {
    // setup: no stream yet
    let t = TestStream::new();
    let js = async_nats::jetstream::new(t.client().await);
    let settings = StreamSettings {
        max_age: Some(36 * HOUR),
        ..StreamSettings::new(&t.subject, &t.stream)
    };

    // exec
    let stream = ensure_stream(&js, &settings).await.expect("created");

    // check: on the server, and nothing to warn about
    assert_eq!(max_age_on_server(&t).await, 36 * HOUR);
    assert_eq!(age_warning(&stream.cached_info().config, &settings), None);
}

#[tokio::test]
async fn by_default_a_stream_created_here_keeps_messages_for_a_week() {
    let t = TestStream::new();
    let js = async_nats::jetstream::new(t.client().await);

    ensure_stream(&js, &StreamSettings::new(&t.subject, &t.stream))
        .await
        .expect("created");

    assert_eq!(DEFAULT_MAX_AGE, 7 * 24 * HOUR);
    assert_eq!(max_age_on_server(&t).await, DEFAULT_MAX_AGE);
}

#[tokio::test]
async fn a_max_age_of_zero_creates_a_stream_without_a_limit() {
    let t = TestStream::new();
    let js = async_nats::jetstream::new(t.client().await);
    let settings = StreamSettings {
        max_age: None,
        ..StreamSettings::new(&t.subject, &t.stream)
    };

    let stream = ensure_stream(&js, &settings).await.expect("created");

    assert_eq!(max_age_on_server(&t).await, Duration::ZERO);
    assert_eq!(
        age_warning(&stream.cached_info().config, &settings),
        None,
        "no limit was asked for"
    );
}

#[tokio::test]
async fn an_existing_stream_without_a_limit_is_left_as_it_is_and_warned_about() {
    // setup: a stream made before NATS_STREAM_MAX_AGE (no max age)
    let t = TestStream::new();
    let js = t.create().await;

    // exec
    let stream = ensure_stream(&js, &StreamSettings::new(&t.subject, &t.stream))
        .await
        .expect("found");

    // check: unchanged on the server, and the warning says how to fix it
    assert_eq!(max_age_on_server(&t).await, Duration::ZERO);
    let warning = age_warning(
        &stream.cached_info().config,
        &StreamSettings::new(&t.subject, &t.stream),
    )
    .expect("a warning");
    assert!(
        warning.contains(&format!(
            "stream {:?} keeps every message forever",
            t.stream
        )),
        "{warning}"
    );
    assert!(warning.contains("nats stream edit"), "{warning}");
}

//! The subscriber `main` installs, without an OTLP endpoint: the spans
//! meant for export are off for good, whatever `RUST_LOG` lets through,
//! so their macros on ingest's and lookups' paths cost a check and build
//! nothing. (Its own test binary: it installs the process's subscriber.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orders_app::config::LogFormat;
use orders_domain::trace::SPANS;
use orders_metrics::Metrics;
use tracing::Level;

static BUILT: AtomicUsize = AtomicUsize::new(0);

/// An attribute value that counts how often it is built.
fn built() -> &'static str {
    BUILT.fetch_add(1, Ordering::Relaxed);
    "value"
}

#[test]
fn without_an_endpoint_exported_spans_are_off_and_their_values_never_built() {
    // setup: the service's subscriber, logging everything (RUST_LOG=trace)
    for variable in orders_telemetry::ENDPOINT_VARIABLES {
        assert!(
            std::env::var_os(variable).is_none(),
            "{variable} is set here"
        );
    }
    let telemetry = orders_app::telemetry::init("trace", LogFormat::Json, Arc::new(Metrics::new()))
        .expect("installed");

    // exec: a span and an event of the exported target, as ingest makes them
    let span = tracing::info_span!(target: SPANS, "process", attribute = built());
    tracing::info!(target: SPANS, parent: &span, attribute = built(), "ack");

    // check: nothing made, no value built; the logs' own targets still on
    assert!(span.is_disabled());
    assert_eq!(BUILT.load(Ordering::Relaxed), 0);
    assert!(!tracing::enabled!(target: SPANS, Level::ERROR));
    assert!(tracing::enabled!(target: "orders_domain::ingest", Level::TRACE));
    drop(telemetry);
}

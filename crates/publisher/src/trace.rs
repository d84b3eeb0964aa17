//! The publisher's spans: a PRODUCER `send` span per message, by the
//! messaging conventions, whose W3C trace context goes into the message's
//! NATS headers (`traceparent`, `tracestate`) for the service to continue.
//! Only with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set:
//! without it nothing is made and no header added.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use orders_domain::trace::{TRACEPARENT, TRACESTATE, TraceParent};
use orders_telemetry::{Exporting, SdkSpan, SdkTracer};

/// The publisher's name in its traces unless `OTEL_SERVICE_NAME` says
/// otherwise.
pub const SERVICE_NAME: &str = "order-publisher";

/// How long the spans still queued at exit get to reach the collector.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// Makes the `send` spans, while export is on.
#[derive(Debug)]
pub struct Producer {
    exporting: Exporting,
    tracer: SdkTracer,
    /// Spans lost on the way (a collector that is down): said at exit.
    dropped: Arc<AtomicU64>,
}

impl Producer {
    /// The producer, if an OTLP endpoint is set.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let dropped = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&dropped);
        let exporting = Exporting::from_env(
            SERVICE_NAME,
            Arc::new(move |_, spans| {
                count.fetch_add(spans, Ordering::Relaxed);
            }),
        )?;
        Ok(exporting.map(|exporting| Self {
            tracer: exporting.tracer(SERVICE_NAME),
            exporting,
            dropped,
        }))
    }

    /// Starts the `send` span of a message to `subject` (with the broker's
    /// de-duplication id, if any), a child of `parent` when it continues a
    /// trace (a replay), and writes its context into `headers`. The span
    /// ends when dropped: after the publish.
    pub fn send(
        &self,
        subject: &str,
        message_id: Option<&str>,
        parent: Option<&TraceParent>,
        headers: &mut HeaderMap,
    ) -> Sent {
        let mut attributes = vec![
            KeyValue::new("messaging.system", orders_nats::MESSAGING_SYSTEM),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
        ];
        if let Some(id) = message_id {
            attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
        }
        let context = match parent {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(parent.span_context())
            }
            None => opentelemetry::Context::new(),
        };
        let span = self
            .tracer
            .span_builder(format!("send {subject}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &context);
        if let Some(own) = TraceParent::of_context(span.span_context()) {
            headers.insert(TRACEPARENT, own.traceparent().as_str());
            if let Some(state) = own.tracestate() {
                headers.insert(TRACESTATE, state);
            }
        }
        Sent(span)
    }

    /// Sends what is queued (at most a few seconds) and says how many
    /// spans were lost, if any.
    pub async fn finish(self) {
        let exporting = self.exporting;
        let stopped = tokio::task::spawn_blocking(move || exporting.shutdown(FLUSH_AT_EXIT)).await;
        if stopped.is_err() {
            eprintln!("warning: stopping the trace export failed");
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!("warning: {dropped} spans were not exported (is the collector up?)");
        }
    }
}

/// A `send` span, ended when dropped.
#[derive(Debug)]
pub struct Sent(SdkSpan);

impl Sent {
    /// Marks the send failed (the broker did not take it).
    pub fn failed(&mut self, why: &str) {
        self.0
            .set_attribute(KeyValue::new("error.type", "publish_failed"));
        self.0.set_status(Status::error(why.to_owned()));
    }
}

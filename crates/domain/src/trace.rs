//! Traces: the spans a collector gets, named and attributed by the
//! OpenTelemetry semantic conventions, and the W3C trace context that ties
//! them to the producer's and the caller's spans.
//!
//! Every span meant for export is made on the target [`SPANS`], which only
//! the OpenTelemetry layer enables (the logs' filter leaves it out). With no
//! exporter configured no layer wants that target, so each of these span
//! macros is one check of its callsite's cached interest and builds
//! nothing: attribute values (strings included) are written inside the
//! macros, so they are not even computed. The helpers here are what the use
//! cases call, once per place, so tracing stays out of their way.

use std::sync::Arc;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::ingest::IngestOutcome;
use crate::ports::MessageMeta;

/// The tracing target of the spans (and span events) that are exported,
/// and of nothing else: only the OpenTelemetry layer enables it.
pub const SPANS: &str = "otel";

/// What the messages' spans say of where they come from, by the messaging
/// conventions: the broker (`messaging.system`) and the consumer group
/// (`messaging.consumer.group.name`: the durable consumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub system: &'static str,
    pub group: Arc<str>,
}

impl Default for Consumer {
    fn default() -> Self {
        Self {
            system: "unknown",
            group: Arc::from(""),
        }
    }
}

/// A W3C trace context: the `traceparent` of a message or a request (and
/// its `tracestate`), read once at the edge. Only valid ones exist: a
/// malformed header is no parent at all, as the W3C recommendation asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
    /// The vendors' `tracestate`, passed on as it came.
    state: Option<String>,
}

/// The header names, as W3C Trace Context spells them.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

impl TraceParent {
    /// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`) and
    /// the `tracestate` that came with it. `None` for anything else: a
    /// version `ff`, all-zero ids, upper-case hex, wrong lengths. A later
    /// version may add fields after a `-`; its first four are read.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let value = traceparent.trim_matches([' ', '\t']);
        let head = value.get(..55)?;
        let rest = &value[55..];
        let mut parts = head.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let version = hex::<u8>(version, 2)?;
        let valid_tail = match version {
            0xff => false,
            0 => rest.is_empty(),
            _ => rest.is_empty() || rest.starts_with('-'),
        };
        if !valid_tail {
            return None;
        }
        let trace_id = hex::<u128>(trace, 32).filter(|t| *t != 0)?;
        let span_id = hex::<u64>(span, 16).filter(|s| *s != 0)?;
        let flags = hex::<u8>(flags, 2)?;
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Some(Self {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The trace context of a message whose NATS headers are `text` (as
    /// [`MessageMeta::headers`] keeps them: `Name: value` lines after the
    /// version line). Header names are matched case-insensitively.
    pub fn from_headers(text: &str) -> Option<Self> {
        let mut parent = None;
        let mut state = None;
        for line in text.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case(TRACEPARENT) {
                parent.get_or_insert(value);
            } else if name.eq_ignore_ascii_case(TRACESTATE) {
                state.get_or_insert(value);
            }
        }
        Self::parse(parent?, state)
    }

    /// The context of `span` to send on (the span itself as the parent),
    /// when it is recorded by OpenTelemetry: `None` without an exporter.
    pub fn of(span: &Span) -> Option<Self> {
        if span.is_disabled() {
            return None;
        }
        Self::of_context(span.context().span().span_context())
    }

    /// The same, of an OpenTelemetry span context.
    pub fn of_context(context: &SpanContext) -> Option<Self> {
        if !context.is_valid() {
            return None;
        }
        let state = context.trace_state().header();
        Some(Self {
            trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(context.span_id().to_bytes()),
            flags: context.trace_flags().to_u8(),
            state: (!state.is_empty()).then_some(state),
        })
    }

    /// The `traceparent` header's value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The `tracestate` header's value, if there is one.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Whether the caller sampled its span (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// As a remote OpenTelemetry span context.
    pub fn span_context(&self) -> SpanContext {
        let state = self
            .state
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            TraceFlags::new(self.flags),
            true,
            state,
        )
    }

    /// Makes `span` a child of this (remote) span. Call it right after
    /// making `span`, before it is entered: an OpenTelemetry span's parent
    /// is fixed once it starts.
    pub fn adopt(&self, span: &Span) {
        let parent = opentelemetry::Context::new().with_remote_span_context(self.span_context());
        // Fails only without the OpenTelemetry layer (nothing to do) or
        // once started (a caller's bug the tests would show).
        let _ = span.set_parent(parent);
    }
}

/// A fixed-length run of lower-case hex digits as a number.
fn hex<T: TryFrom<u128>>(digits: &str, len: usize) -> Option<T> {
    if digits.len() != len
        || !digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    u128::from_str_radix(digits, 16)
        .ok()
        .and_then(|n| T::try_from(n).ok())
}

/// One message's spans: its CONSUMER `process` span, which continues the
/// producer's trace when the message carries a `traceparent`. Without an
/// exporter, a disabled span and nothing else.
pub(crate) struct MessageTrace {
    process: Span,
    /// The producer's span, when the message named one and spans are
    /// recorded: the batch span links to it.
    producer: Option<SpanContext>,
}

impl MessageTrace {
    /// Starts the message's `process` span (a root, or the producer's
    /// child): one check when spans are not exported.
    pub(crate) fn start(meta: &MessageMeta, consumer: &Consumer) -> Self {
        let process = tracing::info_span!(
            target: SPANS,
            parent: None,
            "process",
            otel.name = %format_args!("process {}", meta.subject),
            otel.kind = "consumer",
            otel.status_code = Empty,
            messaging.system = consumer.system,
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            messaging.destination.name = meta.subject.as_str(),
            messaging.consumer.group.name = &*consumer.group,
            messaging.message.id = %meta.stream_sequence,
            messaging.message.delivery_count = meta.delivered,
            order_uid = Empty,
            orders.outcome = Empty,
            orders.rejected.reason = Empty,
            error.type = Empty,
        );
        if process.is_disabled() {
            return Self {
                process,
                producer: None,
            };
        }
        let parent = meta.headers.as_deref().and_then(TraceParent::from_headers);
        if let Some(parent) = &parent {
            parent.adopt(&process);
        }
        Self {
            process,
            producer: parent.map(|p| p.span_context()),
        }
    }

    /// The message's `process` span: log lines written in it carry its
    /// trace id.
    pub(crate) fn span(&self) -> &Span {
        &self.process
    }

    /// Notes the order's uid, once read.
    pub(crate) fn read(&self, order_uid: &str) {
        self.process.record("order_uid", order_uid);
    }

    /// Runs `decode` in a `decode` span.
    pub(crate) fn decoding<T>(&self, decode: impl FnOnce() -> T) -> T {
        tracing::info_span!(target: SPANS, parent: &self.process, "decode").in_scope(decode)
    }

    /// Notes the cache insert of the stored order, as a span event.
    pub(crate) fn cached(&self) {
        tracing::info!(target: SPANS, parent: &self.process, "cache insert");
    }

    /// Notes the message's outcome and how the broker was told (an `ack`,
    /// `term` or `nak` event), after it was settled.
    pub(crate) fn settled(&self, outcome: IngestOutcome) {
        if self.process.is_disabled() {
            return;
        }
        let span = &self.process;
        match outcome {
            IngestOutcome::Stored => {
                span.record("orders.outcome", "stored");
                tracing::info!(target: SPANS, parent: span, "ack");
            }
            IngestOutcome::Duplicate => {
                span.record("orders.outcome", "duplicate");
                tracing::info!(target: SPANS, parent: span, "ack");
            }
            IngestOutcome::Rejected(reason) => {
                span.record("orders.outcome", "rejected");
                span.record("orders.rejected.reason", reason.as_str());
                span.record("error.type", reason.as_str());
                tracing::info!(target: SPANS, parent: span, "term");
            }
            IngestOutcome::Retry(delay) => {
                span.record("orders.outcome", "retry");
                span.record("error.type", "unavailable");
                span.record("otel.status_code", "error");
                tracing::info!(target: SPANS, parent: span, delay_ms = delay.as_millis() as u64, "nak");
            }
        }
    }
}

/// One `save` span per message (a child of its `process` span), all
/// covering the batch's one save: made before it, ended when dropped
/// after it. Empty, and nothing allocated, without an exporter.
pub(crate) fn saving<'a>(messages: impl Iterator<Item = &'a MessageTrace>) -> Vec<Span> {
    messages
        .filter(|m| !m.process.is_disabled())
        .map(|m| tracing::info_span!(target: SPANS, parent: &m.process, "save"))
        .collect()
}

/// The batch's CONSUMER `process` span: `messaging.batch.message_count`,
/// and a link to each message's context (the producer's span, or the
/// message's own `process` span when it named none), so the batch's
/// database span (its child) is found from every message.
pub(crate) fn batch<'a>(
    messages: impl ExactSizeIterator<Item = (&'a MessageTrace, &'a MessageMeta)>,
    consumer: &Consumer,
) -> Span {
    let count = messages.len();
    let span = tracing::info_span!(
        target: SPANS,
        parent: None,
        "process batch",
        otel.kind = "consumer",
        messaging.system = consumer.system,
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.consumer.group.name = &*consumer.group,
        messaging.batch.message_count = count,
        messaging.destination.name = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let mut subject: Option<&str> = None;
    let mut one_subject = true;
    for (trace, meta) in messages {
        let context = match &trace.producer {
            Some(producer) => producer.clone(),
            None => trace.process.context().span().span_context().clone(),
        };
        span.add_link(context);
        one_subject &= *subject.get_or_insert(&meta.subject) == meta.subject;
    }
    if let (Some(subject), true) = (subject, one_subject) {
        span.record("messaging.destination.name", subject);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_is_read_and_written_back_alike() {
        let parent = TraceParent::parse(VALID, Some("congo=t61rcWkgMzE")).expect("valid");

        assert_eq!(parent.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.span_id(), 0x00f067aa0ba902b7);
        assert!(parent.sampled());
        assert_eq!(parent.traceparent(), VALID);
        assert_eq!(parent.tracestate(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn malformed_traceparents_are_no_parent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(TraceParent::parse(bad, None), None, "{bad:?}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceParent::parse(later, None).is_some());
    }

    #[test]
    fn the_trace_context_is_found_among_a_messages_headers() {
        let text = format!("NATS/1.0\nNats-Msg-Id: a\nTraceparent: {VALID}\ntracestate: k=v");

        let parent = TraceParent::from_headers(&text).expect("found");

        assert_eq!(parent.traceparent(), VALID);
        assert_eq!(parent.tracestate(), Some("k=v"));
        assert_eq!(TraceParent::from_headers("NATS/1.0\nNats-Msg-Id: a"), None);
    }

    #[test]
    fn a_span_context_round_trips() {
        let parent = TraceParent::parse(VALID, Some("k=v")).expect("valid");

        let back = TraceParent::of_context(&parent.span_context()).expect("valid");

        assert_eq!(back, parent);
    }

    #[test]
    fn without_an_exporter_no_span_is_made_and_none_propagated() {
        let meta = MessageMeta {
            headers: Some(format!("NATS/1.0\ntraceparent: {VALID}")),
            ..MessageMeta::default()
        };

        let trace = MessageTrace::start(&meta, &Consumer::default());

        assert!(trace.span().is_disabled());
        assert!(trace.producer.is_none());
        assert_eq!(TraceParent::of(trace.span()), None);
        assert!(saving(std::iter::once(&trace)).is_empty());
    }
}

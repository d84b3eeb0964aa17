//! Logs and traces: tracing, with two layers that each see their own part.
//!
//! - Logs: every target RUST_LOG lets through except
//!   [`SPANS`](orders_domain::trace::SPANS), pretty for people or JSON for
//!   machines; a JSON line written inside an exported span carries its
//!   `trace_id` and `span_id`.
//! - Traces: only the target `SPANS`, exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//!   set (orders-telemetry). Without it there is no such layer, so no layer
//!   wants a span of that target: each callsite's interest is "never", and
//!   the span macros on ingest's and lookups' paths build nothing.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use orders_domain::trace::SPANS;
use orders_metrics::Metrics;
use orders_telemetry::{Exporting, OnDropped};
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

use crate::config::LogFormat;

/// The service's name in its traces unless `OTEL_SERVICE_NAME` (or
/// `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
pub const SERVICE_NAME: &str = "order-service";

/// How long the spans still queued at exit get to reach the collector: a
/// collector that does not answer holds the exit no longer than this.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

/// What [`init`] started, to stop at exit.
#[derive(Debug)]
pub struct Telemetry {
    exporting: Option<Exporting>,
}

impl Telemetry {
    /// Exports the spans still queued (at most [`FLUSH_AT_EXIT`]) and stops.
    pub async fn shutdown(self) {
        if let Some(exporting) = self.exporting {
            // The SDK's shutdown blocks its thread while it waits.
            let stopped = tokio::task::spawn_blocking(move || exporting.shutdown(FLUSH_AT_EXIT));
            if let Err(err) = stopped.await {
                tracing::warn!(error = %err, "stopping the trace export");
            }
        }
    }
}

/// Installs the global subscriber; with an OTLP endpoint set, starts the
/// export, counting the spans it loses in `metrics`. Call once, in `main`.
pub fn init(filter: &str, format: LogFormat, metrics: Arc<Metrics>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("RUST_LOG: invalid filter {filter:?}: {e}"))?;
    let logs_filter = filter.and(filter_fn(|meta| meta.target() != SPANS));
    let on_dropped: OnDropped =
        Arc::new(move |why, spans| metrics.record_spans_dropped(why.as_str(), spans));
    let exporting = Exporting::from_env(SERVICE_NAME, on_dropped)?;
    // Colours only for a person at a terminal, not in a log file.
    let logs = || {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    };
    // Each combination spelled out: an absent layer must not be an
    // `Option::None` layer, which tracing-subscriber counts as wanting
    // every callsite (the spans of `SPANS` would then be made, for no one).
    let json = || {
        logs()
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
    };
    let registry = Registry::default();
    let installed = match (format, &exporting) {
        (LogFormat::Pretty, None) => registry.with(logs().with_filter(logs_filter)).try_init(),
        (LogFormat::Pretty, Some(exporting)) => registry
            .with(logs().with_filter(logs_filter))
            .with(traces(exporting))
            .try_init(),
        (LogFormat::Json, None) => registry.with(json().with_filter(logs_filter)).try_init(),
        (LogFormat::Json, Some(exporting)) => registry
            .with(json().with_filter(logs_filter))
            .with(traces(exporting))
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    if exporting.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { exporting })
}

/// The OpenTelemetry layer, seeing the target [`SPANS`] alone, when
/// exporting.
fn traces<S>(exporting: &Exporting) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(exporting.tracer(SERVICE_NAME))
        .with_filter(
            filter_fn(|meta| meta.target() == SPANS)
                // Our spans are at INFO: the global level hint stays where
                // RUST_LOG puts it, not at TRACE.
                .with_max_level_hint(LevelFilter::INFO),
        )
}

/// A JSON line with the exported span it was written in: `trace_id` and
/// `span_id` (hex, as collectors and log stores join them) after the
/// event's own fields. Outside such a span, the line as it was.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // The OpenTelemetry layer makes the span entered the current
        // context; without the layer there is none.
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        if let Some(end) = line.rfind('}') {
            line.insert_str(
                end,
                &format!(
                    ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                    ids.trace_id(),
                    ids.span_id()
                ),
            );
        }
        writer.write_str(&line)
    }
}

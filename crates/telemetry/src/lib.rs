//! Traces out: an OpenTelemetry tracer provider that exports OTLP over
//! HTTP/protobuf, made only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The service and
//! `order-publisher` both start theirs here.
//!
//! The OpenTelemetry SDK reads the standard variables itself:
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the resource),
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the sampler, e.g.
//! `parentbased_traceidratio` with `0.1`), `OTEL_EXPORTER_OTLP_*` (endpoint,
//! headers, timeout), `OTEL_BSP_SCHEDULE_DELAY` and
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (batching).
//!
//! Ended spans wait in a bounded queue for the SDK's batch processor, which
//! exports them from a thread of its own. A collector that is down, slow or
//! answering errors costs the spans, never the caller: a span that finds
//! the queue full is dropped at once, and every span lost (queue full, or
//! its batch refused or never answered) is reported to [`OnDropped`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};

/// The SDK's tracer and span, for a program that makes spans with the
/// OpenTelemetry API itself (`order-publisher`).
pub use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};

/// The variables that turn export on (either one).
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// Most ended spans waiting for export, unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// says otherwise. At full speed with every message
/// sampled, ingest ends about three spans per order: 8,192 hold a few
/// tenths of a second of it, enough to ride over one slow export, in about
/// 8 MB (a span with its attributes is under 1 KB). Four times the SDK's
/// default, which a bench run at ratio 1.0 overflowed.
pub const QUEUE: usize = 8_192;

/// Why spans were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// The queue was full (the collector is slower than the spans come).
    QueueFull,
    /// The collector refused the batch, or did not answer in time
    /// (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s), retries included.
    ExportFailed,
}

impl Dropped {
    pub const ALL: [Dropped; 2] = [Dropped::QueueFull, Dropped::ExportFailed];

    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::ExportFailed => "export_failed",
        }
    }
}

/// Told of each loss: why, and how many spans. Called on the thread that
/// ended the span or on the exporter's: it MUST NOT block.
pub type OnDropped = Arc<dyn Fn(Dropped, u64) + Send + Sync>;

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT: cannot export to it: {0}")]
    Exporter(String),
}

/// A tracer provider exporting to the configured collector.
#[derive(Debug)]
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Exporting {
    /// The provider, if an endpoint variable is set (and not empty); the
    /// service is named `default_service` unless `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` name it. Must run inside a Tokio runtime
    /// or not, either works: the exporter's HTTP client lives on threads
    /// of its own.
    pub fn from_env(
        default_service: &'static str,
        on_dropped: OnDropped,
    ) -> Result<Option<Self>, TelemetryError> {
        let configured = ENDPOINT_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()));
        if !configured {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(Some(Self::with_exporter(
            exporter,
            default_service,
            on_dropped,
        )))
    }

    /// The provider around `exporter` (the OTLP one in the service; tests
    /// may hand another).
    pub fn with_exporter(
        exporter: impl SpanExporter + 'static,
        default_service: &'static str,
        on_dropped: OnDropped,
    ) -> Self {
        let capacity = queue_size();
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Counted {
            inner: exporter,
            queued: Arc::clone(&queued),
            on_dropped: Arc::clone(&on_dropped),
        };
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(capacity)
                    .build(),
            )
            .build();
        let processor = Bounded {
            inner: batches,
            capacity,
            queued,
            on_dropped,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(default_service))
            .build();
        Self { provider }
    }

    /// A tracer of this provider, named after the code that makes spans.
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        self.provider.tracer(scope)
    }

    /// Exports what is queued and stops, waiting at most `timeout` (a
    /// collector that does not answer is not waited for longer). Blocks
    /// the thread: from async code, call it in `spawn_blocking`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %err, "stopping the trace export");
        }
    }
}

/// `OTEL_BSP_MAX_QUEUE_SIZE` if it is a count, else [`QUEUE`].
fn queue_size() -> usize {
    let Ok(raw) = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE") else {
        return QUEUE;
    };
    match raw.trim().parse::<usize>() {
        Ok(size) if size > 0 => size,
        _ => {
            tracing::warn!(value = %raw, default = QUEUE, "OTEL_BSP_MAX_QUEUE_SIZE is no count of spans; using the default");
            QUEUE
        }
    }
}

/// The resource from the environment, named `default_service` when the
/// environment does not name the service.
fn resource(default_service: &'static str) -> Resource {
    let from_env = Resource::builder().build();
    let named = from_env
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        from_env
    } else {
        Resource::builder()
            .with_service_name(default_service)
            .build()
    }
}

/// The SDK's batch processor behind a queue count of our own: a span goes
/// on only while fewer than `capacity` are queued, so the processor's
/// channel (as long) never fills and every span lost is one we counted.
/// The count includes the batch being exported, so it errs towards
/// dropping early, never towards losing a span uncounted.
struct Bounded {
    inner: BatchSpanProcessor,
    capacity: usize,
    queued: Arc<AtomicUsize>,
    on_dropped: OnDropped,
}

impl std::fmt::Debug for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if taken.is_ok() {
            self.inner.on_end(span);
        } else {
            (self.on_dropped)(Dropped::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting each batch out of the queue as it is taken and
/// each batch that fails as lost.
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    on_dropped: OnDropped,
}

impl<E> std::fmt::Debug for Counted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        // Out of the queue only once exported: while an export hangs, the
        // spans behind it fill the queue and are dropped, not piled up.
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        if result.is_err() {
            (self.on_dropped)(Dropped::ExportFailed, spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

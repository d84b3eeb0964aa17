//! The service's metrics: what is counted and measured, in one place.
//! Encoded by `prometheus-client` (the Prometheus project's own Rust
//! client) in the text format; the app serves that text at `GET /metrics`
//! through the HTTP adapter, whose requests it records here too, as do the
//! ingest loop, the purge, the read audit and the gauges' refresh.

use std::time::Duration;

use orders_domain::{IngestOutcome, Ingested, PurgeTarget, ReadinessReport, RejectReason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabel {
    /// From the order's own field names (`payment.request_id`), never
    /// from a message.
    field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabel {
    /// A name from `API_TOKENS_FILE`, never from a request.
    token: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    /// A table the purge deletes from ([`PurgeTarget::table`]).
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    /// `ingest` or `http`: where a panic was caught.
    stage: &'static str,
}

/// Why exported spans were lost, as [`Metrics::record_spans_dropped`]
/// labels it (orders-telemetry's `Dropped` names them so): the export
/// queue was full, or the collector refused a batch or did not answer.
pub const SPAN_DROP_REASONS: [&str; 2] = ["queue_full", "export_failed"];

/// Where a caught panic happened, as [`Metrics::record_panic`] labels it.
pub const PANIC_STAGES: [&str; 2] = ["ingest", "http"];

/// Ingest lag buckets, in seconds: fine below a second (the usual lag),
/// then the service-level objective's 5 s, then an outage's minutes.
const LAG_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    /// A part of readiness by `/readyz`'s own name for it
    /// ([`ReadinessReport::dependencies`]).
    dependency: &'static str,
}

/// Latency buckets from 100 µs to about 13 s, doubling: fine enough for a
/// cache hit, wide enough for a commit during a database hiccup.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Every metric the service exports. Cheap to share (`Arc`); recording is
/// lock-free apart from the first use of a label set.
pub struct Metrics {
    registry: Registry,
    received: Counter,
    stored: Counter,
    duplicates: Counter,
    rejected: Family<ReasonLabel, Counter>,
    retried: Counter,
    redelivered: Counter,
    defaulted: Family<FieldLabel, Counter>,
    unknown_fields: Counter,
    ingest_latency: Histogram,
    ingest_lag: Histogram,
    oldest_unsettled: Gauge<f64, std::sync::atomic::AtomicU64>,
    panics: Family<StageLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    callers: Family<CallerLabel, Counter>,
    denied: Family<ReasonLabel, Counter>,
    cache_entries: Gauge,
    event_streams: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
    sync_standby: Gauge,
    ready: Gauge,
    dependency_up: Family<DependencyLabel, Gauge>,
    consumer_pending: Gauge,
    consumer_ack_pending: Gauge,
    purged: Family<TableLabel, Counter>,
    audit_recorded: Counter,
    audit_dropped: Counter,
    spans_dropped: Family<ReasonLabel, Counter>,
    /// The counters of `spans_dropped`, by [`SPAN_DROP_REASONS`], held so
    /// recording takes no lock.
    spans_dropped_by: [Counter; SPAN_DROP_REASONS.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One route's request metrics, from [`Metrics::route_recorder`]: handles
/// on the same series the text shows.
#[derive(Clone, Debug)]
pub struct RouteRecorder {
    route: &'static str,
    ok: Counter,
    latency: Histogram,
}

/// What the health watcher reads off the pool and the consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub cache_entries: usize,
    /// Open event streams.
    pub event_streams: usize,
    pub pool_size: usize,
    pub pool_available: usize,
    pub pool_waiting: usize,
    /// What `/readyz` says: ready, and each dependency (the synchronous
    /// standby among them).
    pub readiness: ReadinessReport,
    /// `None` when the broker could not be asked.
    pub consumer_pending: Option<u64>,
    pub consumer_ack_pending: Option<u64>,
}

fn to_i64<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orders");
        let m = Self {
            received: Counter::default(),
            stored: Counter::default(),
            duplicates: Counter::default(),
            rejected: Family::default(),
            retried: Counter::default(),
            redelivered: Counter::default(),
            defaulted: Family::default(),
            unknown_fields: Counter::default(),
            ingest_latency: latency_histogram(),
            ingest_lag: Histogram::new(LAG_BUCKETS),
            oldest_unsettled: Gauge::default(),
            panics: Family::default(),
            requests: Family::default(),
            request_latency: Family::new_with_constructor(latency_histogram),
            callers: Family::default(),
            denied: Family::default(),
            cache_entries: Gauge::default(),
            event_streams: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            pool_size: Gauge::default(),
            pool_available: Gauge::default(),
            pool_waiting: Gauge::default(),
            sync_standby: Gauge::default(),
            ready: Gauge::default(),
            dependency_up: Family::default(),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            purged: Family::default(),
            audit_recorded: Counter::default(),
            audit_dropped: Counter::default(),
            spans_dropped: Family::default(),
            spans_dropped_by: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages_received",
            "Messages taken from the broker",
            m.received.clone(),
        );
        registry.register(
            "messages_stored",
            "Orders committed for the first time",
            m.stored.clone(),
        );
        registry.register(
            "messages_duplicate",
            "Messages whose order was already stored with equal content (acked)",
            m.duplicates.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages recorded in rejected_messages and terminated, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "messages_retried",
            "Messages nak'ed with a delay after a transient fault",
            m.retried.clone(),
        );
        registry.register(
            "messages_redelivered",
            "Messages the broker delivered more than once",
            m.redelivered.clone(),
        );
        registry.register(
            "fields_defaulted",
            "Fields a message left out that were filled with \"\" or 0, by field",
            m.defaulted.clone(),
        );
        registry.register(
            "fields_unknown",
            "Fields of messages that the order does not know (ignored)",
            m.unknown_fields.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "From taking a message to settling it (commit included)",
            m.ingest_latency.clone(),
        );
        registry.register(
            "ingest_lag_seconds",
            "From the broker's timestamp of a message to the commit of its order: how long a new order took to become visible",
            m.ingest_lag.clone(),
        );
        registry.register(
            "ingest_oldest_unsettled_seconds",
            "Age (since the broker stored it) of the oldest message pulled and not yet settled; 0 when none",
            m.oldest_unsettled.clone(),
        );
        registry.register(
            "panics",
            "Panics caught and kept to one message (stage ingest: rejected as internal) or one request (stage http: answered 500)",
            m.panics.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_latency.clone(),
        );
        registry.register(
            "http_token_requests",
            "Requests let in by a bearer token, by the token's name in API_TOKENS_FILE",
            m.callers.clone(),
        );
        registry.register(
            "http_auth_denied",
            "Requests for orders turned away: missing, invalid_request or invalid_token",
            m.denied.clone(),
        );
        registry.register(
            "cache_entries",
            "Orders held in memory",
            m.cache_entries.clone(),
        );
        registry.register(
            "event_streams",
            "Open event streams (GET /orders/events), at most SSE_MAX_CLIENTS",
            m.event_streams.clone(),
        );
        registry.register(
            "cache_hits",
            "Lookups answered from memory",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Lookups that read through to PostgreSQL",
            m.cache_misses.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Connections in the PostgreSQL pool",
            m.pool_size.clone(),
        );
        registry.register(
            "db_pool_available",
            "Idle connections in the PostgreSQL pool",
            m.pool_available.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection",
            m.pool_waiting.clone(),
        );
        registry.register(
            "db_sync_standby",
            "1 while PostgreSQL has a synchronous standby (a commit is held by two servers), else 0",
            m.sync_standby.clone(),
        );
        registry.register(
            "ready",
            "1 while the service is ready (GET /readyz answers 200), else 0",
            m.ready.clone(),
        );
        registry.register(
            "dependency_up",
            "1 while a dependency of readiness is there (as GET /readyz names it), else 0",
            m.dependency_up.clone(),
        );
        registry.register(
            "consumer_pending",
            "Messages in the stream not yet delivered to the consumer",
            m.consumer_pending.clone(),
        );
        registry.register(
            "consumer_ack_pending",
            "Messages delivered and not yet acked",
            m.consumer_ack_pending.clone(),
        );
        registry.register(
            "purged",
            "Rows deleted for being older than their retention, by table \
             (REJECTED_RETENTION, AUDIT_RETENTION)",
            m.purged.clone(),
        );
        registry.register(
            "audit_recorded",
            "Reads of orders stored in order_reads (AUDIT_READS)",
            m.audit_recorded.clone(),
        );
        registry.register(
            "audit_dropped",
            "Reads of orders not stored in order_reads: the queue was full, or the database \
             failed the batch",
            m.audit_dropped.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans never exported to the collector (OTEL_EXPORTER_OTLP_ENDPOINT), by reason: \
             the export queue was full, or the collector refused or did not answer a batch",
            m.spans_dropped.clone(),
        );
        // Every reason and table from zero, so a dashboard's rate() sees
        // the first one.
        let spans_dropped_by = SPAN_DROP_REASONS.map(|reason| {
            m.spans_dropped
                .get_or_create(&ReasonLabel { reason })
                .clone()
        });
        for reason in RejectReason::ALL {
            drop(m.rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        for stage in PANIC_STAGES {
            drop(m.panics.get_or_create(&StageLabel { stage }));
        }
        // Every dependency from the start, down until the first report: an
        // alert on `== 0` then sees a replica that never became ready.
        for (dependency, _) in ReadinessReport::default().dependencies() {
            drop(
                m.dependency_up
                    .get_or_create(&DependencyLabel { dependency }),
            );
        }
        for target in PurgeTarget::ALL {
            drop(m.purged.get_or_create(&TableLabel {
                table: target.table(),
            }));
        }
        Self {
            registry,
            spans_dropped_by,
            ..m
        }
    }

    /// One message taken from the broker and settled; `elapsed` is the
    /// time its batch took.
    pub fn record_ingest(&self, ingested: &Ingested, elapsed: Duration) {
        self.received.inc();
        if ingested.delivered > 1 {
            self.redelivered.inc();
        }
        match ingested.outcome {
            IngestOutcome::Stored => {
                self.stored.inc();
            }
            IngestOutcome::Duplicate => {
                self.duplicates.inc();
            }
            IngestOutcome::Rejected(reason) => {
                self.rejected
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
            IngestOutcome::Retry(_) => {
                self.retried.inc();
            }
        }
        for field in &ingested.defaulted {
            self.defaulted.get_or_create(&FieldLabel { field }).inc();
        }
        self.unknown_fields.inc_by(ingested.unknown_fields as u64);
        self.ingest_latency.observe(elapsed.as_secs_f64());
        if let Some(lag) = ingested.lag {
            self.ingest_lag.observe(lag.as_secs_f64());
        }
        if ingested.panicked {
            self.record_panic("ingest");
        }
    }

    /// A panic caught at `stage` (one of [`PANIC_STAGES`]).
    pub fn record_panic(&self, stage: &'static str) {
        self.panics.get_or_create(&StageLabel { stage }).inc();
    }

    /// The age of the oldest message pulled and not yet settled (zero
    /// when none is).
    pub fn set_oldest_unsettled(&self, age: Duration) {
        self.oldest_unsettled.set(age.as_secs_f64());
    }

    /// One order lookup, answered from memory or not.
    pub fn record_lookup(&self, from_cache: bool) {
        if from_cache {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// The metrics of requests to `route`, resolved now so that recording
    /// an answered request ([`Metrics::record_on`]) takes no lock and
    /// hashes no labels, as a `Family` lookup does on every call.
    pub fn route_recorder(&self, route: &'static str) -> RouteRecorder {
        RouteRecorder {
            route,
            ok: self
                .requests
                .get_or_create(&RequestLabels { route, status: 200 })
                .clone(),
            latency: self
                .request_latency
                .get_or_create(&RouteLabel { route })
                .clone(),
        }
    }

    /// One HTTP request to the route of `recorder`.
    pub fn record_on(&self, recorder: &RouteRecorder, status: u16, elapsed: Duration) {
        if status == 200 {
            recorder.ok.inc();
        } else {
            self.requests
                .get_or_create(&RequestLabels {
                    route: recorder.route,
                    status,
                })
                .inc();
        }
        recorder.latency.observe(elapsed.as_secs_f64());
    }

    /// One request let in by the token named `token` in the tokens file.
    pub fn record_caller(&self, token: &str) {
        self.callers
            .get_or_create(&CallerLabel {
                token: token.to_owned(),
            })
            .inc();
    }

    /// `rows` deleted from `target` by the purge.
    pub fn record_purged(&self, target: PurgeTarget, rows: u64) {
        self.purged
            .get_or_create(&TableLabel {
                table: target.table(),
            })
            .inc_by(rows);
    }

    /// `reads` stored in the read audit.
    pub fn record_audit_stored(&self, reads: u64) {
        self.audit_recorded.inc_by(reads);
    }

    /// `reads` the read audit could not keep. Lock-free: it runs on the
    /// request path.
    pub fn record_audit_dropped(&self, reads: u64) {
        self.audit_dropped.inc_by(reads);
    }

    /// `spans` lost on their way to the collector, and why (one of
    /// [`SPAN_DROP_REASONS`]; another is not counted). Lock-free: it runs
    /// where spans end, ingest and lookups included.
    pub fn record_spans_dropped(&self, reason: &str, spans: u64) {
        if let Some(i) = SPAN_DROP_REASONS.iter().position(|r| *r == reason) {
            self.spans_dropped_by[i].inc_by(spans);
        }
    }

    /// One request for orders turned away, and why (a fixed label).
    pub fn record_denied(&self, reason: &'static str) {
        self.denied.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Values read periodically rather than counted: the one place the
    /// gauges are set.
    pub fn set_gauges(&self, g: Gauges) {
        self.cache_entries.set(to_i64(g.cache_entries));
        self.event_streams.set(to_i64(g.event_streams));
        self.pool_size.set(to_i64(g.pool_size));
        self.pool_available.set(to_i64(g.pool_available));
        self.pool_waiting.set(to_i64(g.pool_waiting));
        self.sync_standby.set(i64::from(g.readiness.sync_standby));
        self.ready.set(i64::from(g.readiness.is_ready()));
        for (dependency, up) in g.readiness.dependencies() {
            self.dependency_up
                .get_or_create(&DependencyLabel { dependency })
                .set(i64::from(up));
        }
        if let Some(pending) = g.consumer_pending {
            self.consumer_pending.set(to_i64(pending));
        }
        if let Some(pending) = g.consumer_ack_pending {
            self.consumer_ack_pending.set(to_i64(pending));
        }
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingested(outcome: IngestOutcome, delivered: u64) -> Ingested {
        Ingested {
            outcome,
            delivered,
            defaulted: Vec::new(),
            unknown_fields: 0,
            lag: None,
            panicked: false,
        }
    }

    #[test]
    fn counters_move_with_what_they_count() {
        let m = Metrics::new();

        m.record_ingest(
            &Ingested {
                defaulted: vec!["payment.request_id", "items[].sale"],
                unknown_fields: 2,
                lag: Some(Duration::from_millis(700)),
                ..ingested(IngestOutcome::Stored, 1)
            },
            Duration::from_millis(2),
        );
        m.record_ingest(
            &Ingested {
                panicked: true,
                ..ingested(IngestOutcome::Rejected(RejectReason::Internal), 1)
            },
            Duration::from_millis(1),
        );
        m.record_panic("http");
        m.set_oldest_unsettled(Duration::from_millis(1500));
        m.record_ingest(
            &ingested(IngestOutcome::Duplicate, 2),
            Duration::from_millis(1),
        );
        m.record_ingest(
            &ingested(IngestOutcome::Rejected(RejectReason::InvalidJson), 1),
            Duration::from_millis(1),
        );
        m.record_ingest(
            &ingested(IngestOutcome::Retry(Duration::from_secs(1)), 1),
            Duration::ZERO,
        );
        m.record_lookup(true);
        m.record_lookup(false);
        let order = m.route_recorder("/order");
        m.record_on(&order, 200, Duration::from_micros(300));
        m.record_on(&order, 404, Duration::from_micros(200));
        // Another handle on the same series.
        m.record_on(&m.route_recorder("/order"), 200, Duration::from_micros(300));
        m.record_purged(PurgeTarget::RejectedMessages, 1_000);
        m.record_purged(PurgeTarget::RejectedMessages, 5);
        m.record_audit_stored(3);
        m.record_audit_dropped(2);
        m.record_spans_dropped("export_failed", 512);
        m.set_gauges(Gauges {
            cache_entries: 7,
            event_streams: 2,
            readiness: ReadinessReport {
                sync_standby: true,
                ..ReadinessReport::default()
            },
            consumer_pending: Some(3),
            ..Gauges::default()
        });
        let text = m.encode();

        for line in [
            "orders_messages_received_total 5",
            "orders_trace_spans_dropped_total{reason=\"queue_full\"} 0",
            "orders_trace_spans_dropped_total{reason=\"export_failed\"} 512",
            "orders_messages_rejected_total{reason=\"internal\"} 1",
            "orders_panics_total{stage=\"ingest\"} 1",
            "orders_panics_total{stage=\"http\"} 1",
            "orders_ingest_lag_seconds_count 1",
            "orders_ingest_lag_seconds_bucket{le=\"1.0\"} 1",
            "orders_ingest_lag_seconds_bucket{le=\"0.5\"} 0",
            "orders_ingest_oldest_unsettled_seconds 1.5",
            "orders_messages_stored_total 1",
            "orders_messages_duplicate_total 1",
            "orders_messages_redelivered_total 1",
            "orders_messages_retried_total 1",
            "orders_messages_rejected_total{reason=\"invalid_json\"} 1",
            "orders_messages_rejected_total{reason=\"conflict\"} 0",
            "orders_fields_defaulted_total{field=\"payment.request_id\"} 1",
            "orders_fields_defaulted_total{field=\"items[].sale\"} 1",
            "orders_fields_unknown_total 2",
            "orders_cache_hits_total 1",
            "orders_event_streams 2",
            "orders_cache_misses_total 1",
            "orders_cache_entries 7",
            "orders_consumer_pending 3",
            "orders_db_sync_standby 1",
            "orders_http_requests_total{route=\"/order\",status=\"200\"} 2",
            "orders_http_requests_total{route=\"/order\",status=\"404\"} 1",
            "orders_ingest_latency_seconds_count 5",
            "orders_http_request_duration_seconds_count{route=\"/order\"} 3",
            "orders_purged_total{table=\"rejected_messages\"} 1005",
            "orders_purged_total{table=\"order_reads\"} 0",
            "orders_audit_recorded_total 3",
            "orders_audit_dropped_total 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_purge_and_audit_counters_are_exported_from_the_start_at_zero() {
        let text = Metrics::new().encode();

        for line in [
            "orders_purged_total{table=\"rejected_messages\"} 0",
            "orders_purged_total{table=\"order_reads\"} 0",
            "orders_audit_recorded_total 0",
            "orders_audit_dropped_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn readiness_is_exported_from_the_start_as_not_ready() {
        let m = Metrics::new();

        let text = m.encode();

        for line in [
            "orders_ready 0",
            "orders_dependency_up{dependency=\"database\"} 0",
            "orders_dependency_up{dependency=\"broker\"} 0",
            "orders_dependency_up{dependency=\"cache_warm\"} 0",
            "orders_dependency_up{dependency=\"sync_standby\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn readiness_gauges_follow_the_report() {
        let m = Metrics::new();
        let ready = ReadinessReport {
            cache_warm: true,
            database: true,
            broker: true,
            sync_standby: false,
            sync_standby_required: false,
        };

        m.set_gauges(Gauges {
            readiness: ready,
            ..Gauges::default()
        });
        let up = m.encode();
        m.set_gauges(Gauges {
            readiness: ReadinessReport {
                database: false,
                ..ready
            },
            ..Gauges::default()
        });
        let database_down = m.encode();

        for line in [
            "orders_ready 1",
            "orders_dependency_up{dependency=\"database\"} 1",
            "orders_dependency_up{dependency=\"broker\"} 1",
            "orders_dependency_up{dependency=\"cache_warm\"} 1",
            "orders_dependency_up{dependency=\"sync_standby\"} 0",
            "orders_db_sync_standby 0",
        ] {
            assert!(up.contains(line), "missing {line:?} in\n{up}");
        }
        for line in [
            "orders_ready 0",
            "orders_dependency_up{dependency=\"database\"} 0",
            "orders_dependency_up{dependency=\"broker\"} 1",
        ] {
            assert!(
                database_down.contains(line),
                "missing {line:?} in\n{database_down}"
            );
        }
    }
}

//! The HTTP adapter's reports ([`RequestReport`]) counted in the service's
//! metrics, and `/metrics` answered with their text: the one place that
//! knows both.

use std::sync::Arc;
use std::time::Duration;

use orders_http::{RequestReport, RouteReport};
use orders_metrics::{Metrics, RouteRecorder};

/// The router's reports, kept in [`Metrics`].
#[derive(Debug, Clone)]
pub struct HttpMetrics(pub Arc<Metrics>);

/// One route's series, resolved once: recording a 200 takes no lock and
/// hashes no label.
struct RouteMetrics {
    metrics: Arc<Metrics>,
    recorder: RouteRecorder,
}

impl RouteReport for RouteMetrics {
    fn answered(&self, status: u16, elapsed: Duration) {
        self.metrics.record_on(&self.recorder, status, elapsed);
    }
}

impl RequestReport for HttpMetrics {
    fn route(&self, route: &'static str) -> Box<dyn RouteReport> {
        Box::new(RouteMetrics {
            metrics: Arc::clone(&self.0),
            recorder: self.0.route_recorder(route),
        })
    }

    fn caller(&self, name: &str) {
        self.0.record_caller(name);
    }

    fn denied(&self, reason: &'static str) {
        self.0.record_denied(reason);
    }

    fn lookup(&self, from_cache: bool) {
        self.0.record_lookup(from_cache);
    }

    fn panicked(&self) {
        self.0.record_panic("http");
    }

    fn exposition(&self) -> String {
        self.0.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_report_lands_in_the_series_the_metrics_text_shows() {
        let report = HttpMetrics(Arc::new(Metrics::new()));
        let order = report.route("/order");

        order.answered(200, Duration::from_micros(300));
        order.answered(404, Duration::from_micros(200));
        // A second handle on the same route counts into the same series.
        report
            .route("/order")
            .answered(200, Duration::from_micros(100));
        report.route("other").answered(404, Duration::ZERO);
        report.caller("desk");
        report.denied("missing");
        report.denied("missing");
        report.lookup(true);
        report.lookup(false);
        report.panicked();
        let text = report.exposition();

        for line in [
            r#"orders_http_requests_total{route="/order",status="200"} 2"#,
            r#"orders_http_requests_total{route="/order",status="404"} 1"#,
            r#"orders_http_requests_total{route="other",status="404"} 1"#,
            r#"orders_http_request_duration_seconds_count{route="/order"} 3"#,
            r#"orders_http_token_requests_total{token="desk"} 1"#,
            r#"orders_http_auth_denied_total{reason="missing"} 2"#,
            "orders_cache_hits_total 1",
            "orders_cache_misses_total 1",
            r#"orders_panics_total{stage="http"} 1"#,
            r#"orders_panics_total{stage="ingest"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}

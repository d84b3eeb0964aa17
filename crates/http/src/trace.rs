//! Each request's SERVER span, by the OpenTelemetry HTTP conventions,
//! continuing the caller's trace (`traceparent`). Exported only with an
//! exporter (see `orders_domain::trace`); otherwise the macro builds
//! nothing and the request pays one check.

use hyper::{HeaderMap, Request, StatusCode};
use orders_domain::trace::{SPANS, TRACEPARENT, TRACESTATE, TraceParent};
use tracing::Span;
use tracing::field::Empty;

/// The request's span: its method, its route (the fixed label the
/// metrics use; none for a path no route serves) and its path without the
/// query string (which carries uids, phones, emails: personal data).
pub(crate) fn server_span<B>(req: &Request<B>, route: Option<&'static str>) -> Span {
    let span = tracing::info_span!(
        target: SPANS,
        parent: None,
        "request",
        otel.name = %SpanName(req.method(), route),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %req.method(),
        http.route = route,
        url.path = req.uri().path(),
        url.scheme = "http",
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled()
        && let Some(parent) = caller(req.headers())
    {
        parent.adopt(&span);
    }
    span
}

/// `GET /order`, or the method alone for a path no route serves.
struct SpanName<'a>(&'a hyper::Method, Option<&'static str>);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(route) => write!(f, "{} {route}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The caller's trace context: one valid `traceparent` (two are none, as
/// W3C Trace Context says), with its `tracestate`.
fn caller(headers: &HeaderMap) -> Option<TraceParent> {
    let mut parents = headers.get_all(TRACEPARENT).iter();
    let parent = parents.next()?.to_str().ok()?;
    if parents.next().is_some() {
        return None;
    }
    let state = headers
        .get(TRACESTATE)
        .and_then(|value| value.to_str().ok());
    TraceParent::parse(parent, state)
}

/// Notes the answer's status; a 5xx is the span's error.
pub(crate) fn answered(span: &Span, status: StatusCode) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "error");
    }
}

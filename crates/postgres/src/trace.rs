//! The database's spans, by the OpenTelemetry database conventions: one
//! CLIENT span per statement the service waits on (`db.system.name`,
//! `db.operation.name`, `db.collection.name`), a child of whatever span
//! asked (a lookup's request, a batch). Never a statement's values: what
//! an order holds is personal data. Exported only with an exporter (see
//! `orders_domain::trace`); otherwise the macro builds nothing.

use orders_domain::trace::SPANS;
use tracing::Span;

/// A span for an `operation` (`SELECT`, `INSERT`) on `collection` (the
/// table it is about), named as the conventions name it
/// (`SELECT order_info`).
pub(crate) fn statement(operation: &'static str, collection: &'static str) -> Span {
    tracing::info_span!(
        target: SPANS,
        "statement",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = collection,
        db.operation.batch.size = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Notes how a statement ended: a failure's kind (`unavailable`,
/// `refused`), never its message (which may quote values).
pub(crate) fn ended<T>(span: &Span, result: &Result<T, orders_domain::RepositoryError>) {
    if let Err(err) = result {
        let kind = match err {
            orders_domain::RepositoryError::Unavailable(_) => "unavailable",
            orders_domain::RepositoryError::Refused(_) => "refused",
        };
        span.record("error.type", kind);
        span.record("otel.status_code", "error");
    }
}

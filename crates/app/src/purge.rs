//! The background purge: about once a minute, one pass over the tables
//! with a retention (`REJECTED_RETENTION`, `AUDIT_RETENTION`), by one
//! replica at a time, apart from ingest and the request path.

use std::sync::Arc;
use std::time::Duration;

use orders_domain::{
    PURGE_BATCH, PurgeOutcome, PurgeTarget, Purger, Retention, error_chain, purge_once,
};
use orders_metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// How often a replica tries a pass: often enough that a table holds
/// little more than its retention (a minute's rows), rarely enough that
/// replicas skipping a pass another holds cost nothing worth counting.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The tables with a limit, and their limits; empty when every table is
/// kept forever.
pub fn purge_targets(rejected: Retention, reads: Retention) -> Vec<(PurgeTarget, Duration)> {
    [
        (PurgeTarget::RejectedMessages, rejected),
        (PurgeTarget::OrderReads, reads),
    ]
    .into_iter()
    .filter_map(|(target, retention)| Some((target, retention.get()?)))
    .collect()
}

/// Runs a pass every `every` (the first one `every` after the start, when
/// the database is migrated) until shutdown, which also ends a pass
/// between two statements. A failed pass is logged; the next one starts
/// over.
pub async fn purge_periodically(
    purger: Arc<dyn Purger>,
    targets: Vec<(PurgeTarget, Duration)>,
    every: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let mut deleted = |target, rows| metrics.record_purged(target, rows);
        let pass = purge_once(&*purger, &targets, PURGE_BATCH, &mut deleted);
        let outcome = tokio::select! {
            outcome = pass => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(PurgeOutcome::Done { deleted: 0 }) => {}
            Ok(PurgeOutcome::Done { deleted }) => {
                tracing::info!(deleted, "purged rows older than their retention");
            }
            Ok(PurgeOutcome::Skipped) => {
                tracing::debug!("another replica is purging; this pass is skipped");
            }
            Err(err) => tracing::warn!(error = %error_chain(&err), "purging old rows failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_with_a_limit_are_purged() {
        let days = |n| Retention::parse(n).expect("retention");

        assert_eq!(
            purge_targets(days("30d"), days("365d")),
            [
                (
                    PurgeTarget::RejectedMessages,
                    Duration::from_secs(30 * 86_400)
                ),
                (PurgeTarget::OrderReads, Duration::from_secs(365 * 86_400)),
            ]
        );
        assert_eq!(
            purge_targets(Retention::FOREVER, days("1d")),
            [(PurgeTarget::OrderReads, Duration::from_secs(86_400))]
        );
        assert!(purge_targets(Retention::FOREVER, Retention::FOREVER).is_empty());
    }
}

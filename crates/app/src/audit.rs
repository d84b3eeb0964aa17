//! The read audit off the request path: the router hands each read to a
//! bounded queue ([`AuditQueue`], never waiting), and one writer task
//! ([`write_reads`]) stores them in batches. A read that finds the queue
//! full is dropped and counted (`orders_audit_dropped_total`): a lookup is
//! never held up by the audit's database.

use std::sync::Arc;
use std::time::Duration;

use orders_domain::{AuditLog, OrderRead, ReadAudit, error_chain};
use orders_metrics::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reads waiting to be written, at most: a second of lookups at 10,000 a
/// second (a few MB), so a batch that takes a while (a checkpoint, a busy
/// disk) loses nothing, while a database that stalls for longer costs
/// dropped reads, not memory without bound.
pub const AUDIT_QUEUE: usize = 10_000;

/// Reads written in one statement, at most: one round trip for a second's
/// worth at 1,000 lookups a second; at a few hundred bytes a read, the
/// statement's arrays stay well under a megabyte.
const AUDIT_BATCH: usize = 1_000;

/// After a failed batch the writer waits this long, so a database that is
/// down is not asked again at once; the queue fills (and drops) meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The router's side of the queue.
#[derive(Debug)]
pub struct AuditQueue {
    sender: mpsc::Sender<OrderRead>,
    metrics: Arc<Metrics>,
}

/// A queue of at most `capacity` reads, and its receiving end for
/// [`write_reads`].
pub fn audit_queue(
    capacity: usize,
    metrics: Arc<Metrics>,
) -> (AuditQueue, mpsc::Receiver<OrderRead>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (AuditQueue { sender, metrics }, receiver)
}

impl ReadAudit for AuditQueue {
    fn record(&self, read: OrderRead) {
        if self.sender.try_send(read).is_err() {
            self.metrics.record_audit_dropped(1);
        }
    }
}

/// Writes the queued reads to `log`, a batch per statement (whatever has
/// queued up while the last one was written, at most [`AUDIT_BATCH`]),
/// until every [`AuditQueue`] is gone: at shutdown, once the HTTP servers
/// have let their last requests finish, so the reads answered while they
/// drain are written too (the app's `SHUTDOWN_TIMEOUT` bounds the wait). A
/// batch the database fails is dropped and counted, and logged; the
/// writer then pauses, unless shutting down.
pub async fn write_reads(
    log: Arc<dyn AuditLog>,
    mut reads: mpsc::Receiver<OrderRead>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while reads.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        if !write(&*log, &mut batch, &metrics).await {
            tokio::select! {
                () = tokio::time::sleep(RETRY_AFTER) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
}

/// Writes and empties `batch`; whether the database took it.
async fn write(log: &dyn AuditLog, batch: &mut Vec<OrderRead>, metrics: &Metrics) -> bool {
    if batch.is_empty() {
        return true;
    }
    let count = batch.len() as u64;
    let written = log.append(batch).await;
    batch.clear();
    match written {
        Ok(()) => {
            metrics.record_audit_stored(count);
            true
        }
        Err(err) => {
            metrics.record_audit_dropped(count);
            tracing::warn!(error = %error_chain(&err), reads = count, "writing the read audit failed; these reads are dropped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use orders_domain::{MockAuditLog, RepositoryError};

    use super::*;

    fn read(n: usize) -> OrderRead {
        OrderRead {
            who: "127.0.0.1".into(),
            at: time::OffsetDateTime::UNIX_EPOCH,
            route: "/order",
            order_uids: vec![format!("uid{n}")],
        }
    }

    fn counted(metrics: &Metrics, name: &str) -> String {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn a_full_queue_drops_the_read_at_once_and_counts_it() {
        // setup: a queue of two, nobody writing
        let metrics = Arc::new(Metrics::new());
        let (queue, _receiver) = audit_queue(2, Arc::clone(&metrics));

        // exec: five reads; record never waits (this is no async context)
        for n in 0..5 {
            queue.record(read(n));
        }

        // check
        assert_eq!(
            counted(&metrics, "orders_audit_dropped_total"),
            "orders_audit_dropped_total 3"
        );
    }

    #[tokio::test]
    async fn queued_reads_are_written_in_batches_and_those_of_the_drain_too() {
        // setup: 2,500 reads queued before the writer starts
        let metrics = Arc::new(Metrics::new());
        let (queue, receiver) = audit_queue(5_000, Arc::clone(&metrics));
        for n in 0..2_500 {
            queue.record(read(n));
        }
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut log = MockAuditLog::new();
        let seen = Arc::clone(&batches);
        log.expect_append().returning(move |reads| {
            seen.lock().expect("lock").push(reads.len());
            Ok(())
        });
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(write_reads(
            Arc::new(log),
            receiver,
            Arc::clone(&metrics),
            shutdown.clone(),
        ));

        // exec: shutdown; one more read answered while the servers drain;
        // then they are gone
        while batches.lock().expect("lock").iter().sum::<usize>() < 2_500 {
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
        queue.record(read(2_500));
        drop(queue);
        writer.await.expect("writer");

        // check: at most a batch a statement, nothing lost
        let batches = batches.lock().expect("lock");
        assert!(batches.iter().all(|n| *n <= AUDIT_BATCH), "{batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), 2_501, "{batches:?}");
        assert_eq!(
            counted(&metrics, "orders_audit_recorded_total"),
            "orders_audit_recorded_total 2501"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_database_fails_is_dropped_counted_and_the_writer_goes_on() {
        // setup: the first append fails, the next succeeds
        let metrics = Arc::new(Metrics::new());
        let (queue, receiver) = audit_queue(100, Arc::clone(&metrics));
        let mut log = MockAuditLog::new();
        let mut seq = mockall::Sequence::new();
        log.expect_append()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(RepositoryError::Unavailable("down".into())));
        log.expect_append()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        let shutdown = CancellationToken::new();
        queue.record(read(0));
        queue.record(read(1));
        let writer = tokio::spawn(write_reads(
            Arc::new(log),
            receiver,
            Arc::clone(&metrics),
            shutdown.clone(),
        ));

        // exec: the failure, then (after the pause) one more read
        tokio::time::sleep(RETRY_AFTER / 2).await;
        queue.record(read(2));
        tokio::time::sleep(RETRY_AFTER).await;
        drop(queue);
        writer.await.expect("writer");

        // check
        assert_eq!(
            counted(&metrics, "orders_audit_dropped_total"),
            "orders_audit_dropped_total 2"
        );
        assert_eq!(
            counted(&metrics, "orders_audit_recorded_total"),
            "orders_audit_recorded_total 1"
        );
    }
}

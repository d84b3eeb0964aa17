//! The one owner of the database and broker flags of readiness. It pings
//! the database every second and reads the broker connection's state; the
//! ingest loop reports a fault it met through one call
//! ([`Health::database_failed`]) and waits for the watcher to see the
//! database answer again ([`Health::database_up`]) before it pulls more, so
//! an outage does not turn the pending messages into a storm of naks.

use std::sync::Arc;
use std::time::Duration;

use orders_domain::{OrderRepository, Readiness};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How often the dependencies are looked at while all is well, and the
/// longest a ping may take before the database counts as down.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// The first pause between pings while the database is down; it doubles up
/// to [`MOST_DOWN_PAUSE`], so a long outage costs few pings and a short one
/// is noticed soon.
const FIRST_DOWN_PAUSE: Duration = Duration::from_millis(100);
const MOST_DOWN_PAUSE: Duration = Duration::from_secs(2);

/// Readiness, and the watcher that keeps it true.
#[derive(Debug)]
pub struct Health {
    readiness: Arc<Readiness>,
    /// The database as the watcher last saw it.
    database: watch::Sender<bool>,
    /// Asks the watcher to look again soon.
    recheck: Notify,
}

impl Health {
    pub fn new() -> Self {
        Self {
            readiness: Arc::new(Readiness::default()),
            database: watch::Sender::new(false),
            recheck: Notify::new(),
        }
    }

    /// What `/readyz` reads.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The ingest loop met a transient database fault: the database counts
    /// as down until the watcher's next ping answers, which comes soon.
    pub fn database_failed(&self) {
        self.set_database(false);
        self.recheck.notify_one();
    }

    /// Waits until the watcher sees the database answer, or shutdown.
    pub async fn database_up(&self, shutdown: &CancellationToken) {
        let mut seen = self.database.subscribe();
        tokio::select! {
            () = shutdown.cancelled() => {}
            _ = seen.wait_for(|up| *up) => {}
        }
    }

    fn set_database(&self, up: bool) {
        self.readiness.set_database(up);
        self.database
            .send_if_modified(|old| std::mem::replace(old, up) != up);
    }

    /// Keeps the database and broker flags true until shutdown: a ping every
    /// [`INTERVAL`] while the database answers, backing off from 100 ms
    /// while it does not, and soon after the ingest loop reports a fault.
    pub async fn watch(
        &self,
        database: Arc<dyn OrderRepository>,
        broker_connected: impl Fn() -> bool,
        shutdown: CancellationToken,
    ) {
        let mut down_pause = FIRST_DOWN_PAUSE;
        loop {
            let up = matches!(
                tokio::time::timeout(INTERVAL, database.ping()).await,
                Ok(Ok(()))
            );
            if up && !*self.database.borrow() {
                tracing::info!("the database answers");
            }
            self.set_database(up);
            self.readiness.set_broker(broker_connected());
            let pause = if up {
                down_pause = FIRST_DOWN_PAUSE;
                INTERVAL
            } else {
                let pause = down_pause;
                down_pause = (down_pause * 2).min(MOST_DOWN_PAUSE);
                pause
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = self.recheck.notified() => {
                    // Not at once: a fault that keeps coming must not turn
                    // into a tight loop of pings and retries.
                    down_pause = FIRST_DOWN_PAUSE;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(FIRST_DOWN_PAUSE) => {}
                    }
                }
            }
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use orders_domain::{MockOrderRepository, RepositoryError};

    use super::*;

    /// A database that answers its `n`th ping and every one after.
    fn answering_from(n: usize, pings: Arc<AtomicUsize>) -> Arc<dyn OrderRepository> {
        let mut repo = MockOrderRepository::new();
        repo.expect_ping().returning(move || {
            if pings.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                Ok(())
            } else {
                Err(RepositoryError::Unavailable("down".into()))
            }
        });
        Arc::new(repo)
    }

    #[tokio::test(start_paused = true)]
    async fn flags_follow_the_pings_and_the_broker() {
        let health = Arc::new(Health::new());
        let pings = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let watcher = {
            let health = Arc::clone(&health);
            let db = answering_from(3, Arc::clone(&pings));
            let shutdown = shutdown.clone();
            tokio::spawn(async move { health.watch(db, || true, shutdown).await })
        };

        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = health.readiness().report();
        assert!(!report.database && report.broker);

        // Down pauses of 100 ms, then 200 ms: the third ping answers.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 3);
        assert!(health.readiness().report().database);

        // Up: one ping a second.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 6);

        shutdown.cancel();
        watcher.await.expect("the watcher stops");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_fault_turns_readiness_red_until_a_ping_answers() {
        let health = Arc::new(Health::new());
        let pings = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        {
            let health = Arc::clone(&health);
            let db = answering_from(1, Arc::clone(&pings));
            let shutdown = shutdown.clone();
            tokio::spawn(async move { health.watch(db, || true, shutdown).await });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(health.readiness().report().database);

        health.database_failed();
        assert!(!health.readiness().report().database, "red at once");
        let waited = tokio::time::Instant::now();
        health.database_up(&shutdown).await;

        // The next ping came 100 ms later, not a second later.
        assert_eq!(waited.elapsed(), FIRST_DOWN_PAUSE);
        assert!(health.readiness().report().database);
        assert_eq!(pings.load(Ordering::SeqCst), 2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn waiting_for_the_database_ends_at_shutdown() {
        let health = Health::new();
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        health.database_up(&shutdown).await;

        assert!(!health.readiness().report().database);
    }
}

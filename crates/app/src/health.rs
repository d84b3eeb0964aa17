//! The one owner of the database and broker flags of readiness. It pings
//! the database every second, asks it whether a synchronous standby holds
//! each commit, and reads the broker connection's state. The ingest loop
//! reports a fault it met through one call ([`Health::database_failed`])
//! and, before it pulls, waits for the watcher to see the database take
//! writes ([`Health::writable`]): it answers, and, with
//! `REQUIRE_SYNC_STANDBY`, has a synchronous standby. So an outage does not
//! turn the pending messages into a storm of naks, and an operator who
//! prefers stalling to risking loss gets no ack for a commit the primary
//! alone holds.

use std::sync::Arc;
use std::time::Duration;

use orders_domain::{DatabaseProbe, Readiness, error_chain};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How often the dependencies are looked at while all is well, and the
/// longest a ping (or the standby question) may take before the database
/// counts as down.
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
    /// Whether ingest may write: the database answers, with a synchronous
    /// standby when one is required. What the ingest loop waits for.
    writable: watch::Sender<bool>,
    /// `REQUIRE_SYNC_STANDBY`.
    require_sync_standby: bool,
    /// Asks the watcher to look again soon.
    recheck: Notify,
    /// The messages ingest has pulled and not yet settled: how long the
    /// oldest has waited says whether ingest is stuck.
    unsettled: crate::ingest::Unsettled,
}

impl Health {
    /// With `require_sync_standby`, writes wait (and readiness is 503)
    /// while the database has no synchronous standby.
    pub fn new(require_sync_standby: bool) -> Self {
        let readiness = Arc::new(Readiness::default());
        readiness.set_sync_standby_required(require_sync_standby);
        Self {
            readiness,
            writable: watch::Sender::new(false),
            require_sync_standby,
            recheck: Notify::new(),
            unsettled: crate::ingest::Unsettled::default(),
        }
    }

    /// The batches of orders pulled and not yet settled.
    pub fn unsettled(&self) -> &crate::ingest::Unsettled {
        &self.unsettled
    }

    /// What `/readyz` reads.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The ingest loop met a transient database fault: the database counts
    /// as down until the watcher's next ping answers, which comes soon.
    pub fn database_failed(&self) {
        self.observe(false, false);
        self.recheck.notify_one();
    }

    /// Whether ingest may write now.
    pub fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    /// Waits until the watcher sees the database take writes (it answers,
    /// and has a synchronous standby if one is required), or shutdown.
    pub async fn writable(&self, shutdown: &CancellationToken) {
        let mut seen = self.writable.subscribe();
        tokio::select! {
            () = shutdown.cancelled() => {}
            _ = seen.wait_for(|writable| *writable) => {}
        }
    }

    /// Records what the watcher (or the ingest loop) saw of the database.
    fn observe(&self, up: bool, sync_standby: bool) {
        self.readiness.set_database(up);
        self.readiness.set_sync_standby(sync_standby);
        let writable = up && (sync_standby || !self.require_sync_standby);
        self.writable
            .send_if_modified(|old| std::mem::replace(old, writable) != writable);
    }

    /// Keeps the flags true until shutdown: a look every [`INTERVAL`] while
    /// the database answers, backing off from 100 ms while it does not,
    /// and soon after the ingest loop reports a fault.
    pub async fn watch(
        &self,
        database: Arc<dyn DatabaseProbe>,
        broker_connected: impl Fn() -> bool,
        shutdown: CancellationToken,
    ) {
        let mut down_pause = FIRST_DOWN_PAUSE;
        // What the standby question last answered while the database was
        // up (`None` before the first answer), to log each change once.
        let mut last_sync: Option<bool> = None;
        loop {
            let up = matches!(
                tokio::time::timeout(INTERVAL, database.ping()).await,
                Ok(Ok(()))
            );
            if up && !self.readiness.report().database {
                tracing::info!("the database answers");
            }
            let sync_standby = up && self.ask_sync_standby(database.as_ref()).await;
            if up && last_sync != Some(sync_standby) {
                self.log_sync_change(sync_standby);
                last_sync = Some(sync_standby);
            }
            self.observe(up, sync_standby);
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

    /// Whether a synchronous standby holds each commit; a database that
    /// cannot say counts as having none.
    async fn ask_sync_standby(&self, database: &dyn DatabaseProbe) -> bool {
        match tokio::time::timeout(INTERVAL, database.has_sync_standby()).await {
            Ok(Ok(attached)) => attached,
            Ok(Err(err)) => {
                tracing::debug!(error = %error_chain(&err), "asking for a synchronous standby failed");
                false
            }
            Err(_) => false,
        }
    }

    fn log_sync_change(&self, sync_standby: bool) {
        if sync_standby {
            tracing::info!("a synchronous standby is attached: each commit is held by two servers");
        } else if self.require_sync_standby {
            tracing::warn!(
                "no synchronous standby: ingest waits until one attaches (REQUIRE_SYNC_STANDBY)"
            );
        } else {
            tracing::warn!(
                "no synchronous standby: a commit is held by the primary alone until one attaches"
            );
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new(false)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use orders_domain::{MockDatabaseProbe, RepositoryError};

    use super::*;

    /// A database that answers its `n`th ping and every one after, with a
    /// synchronous standby.
    fn answering_from(n: usize, pings: Arc<AtomicUsize>) -> Arc<dyn DatabaseProbe> {
        let mut repo = MockDatabaseProbe::new();
        repo.expect_ping().returning(move || {
            if pings.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                Ok(())
            } else {
                Err(RepositoryError::Unavailable("down".into()))
            }
        });
        repo.expect_has_sync_standby().returning(|| Ok(true));
        Arc::new(repo)
    }

    /// A database that always answers, and whose `n`th answer about a
    /// synchronous standby is `standby[n]` (the last one from then on).
    fn with_standby(standby: &'static [bool]) -> Arc<dyn DatabaseProbe> {
        let asked = AtomicUsize::new(0);
        let mut repo = MockDatabaseProbe::new();
        repo.expect_ping().returning(|| Ok(()));
        repo.expect_has_sync_standby().returning(move || {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            Ok(standby[n.min(standby.len() - 1)])
        });
        Arc::new(repo)
    }

    fn watching(health: &Arc<Health>, db: Arc<dyn DatabaseProbe>, shutdown: &CancellationToken) {
        let health = Arc::clone(health);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { health.watch(db, || true, shutdown).await });
    }

    #[tokio::test(start_paused = true)]
    async fn flags_follow_the_pings_and_the_broker() {
        let health = Arc::new(Health::new(false));
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
        let health = Arc::new(Health::new(false));
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
        assert!(!health.is_writable());
        let waited = tokio::time::Instant::now();
        health.writable(&shutdown).await;

        // The next ping came 100 ms later, not a second later.
        assert_eq!(waited.elapsed(), FIRST_DOWN_PAUSE);
        assert!(health.readiness().report().database);
        assert_eq!(pings.load(Ordering::SeqCst), 2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn waiting_for_the_database_ends_at_shutdown() {
        let health = Health::new(false);
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        health.writable(&shutdown).await;

        assert!(!health.readiness().report().database);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_required_sync_standby_writes_wait_until_one_is_back() {
        // Attached, lost at the third look (t = 2 s), back at the fifth.
        let health = Arc::new(Health::new(true));
        let shutdown = CancellationToken::new();
        watching(
            &health,
            with_standby(&[true, true, false, false, true]),
            &shutdown,
        );

        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(health.is_writable());
        assert!(health.readiness().report().sync_standby);
        tokio::time::sleep(INTERVAL * 2).await;
        let report = health.readiness().report();
        assert!(!health.is_writable(), "writes go on without the standby");
        assert!(report.database && !report.sync_standby && report.sync_standby_required);
        assert!(!report.is_ready());

        let waited = tokio::time::Instant::now();
        health.writable(&shutdown).await;

        assert_eq!(waited.elapsed(), INTERVAL * 2 - Duration::from_millis(10));
        assert!(health.readiness().report().sync_standby);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_sync_standby_is_reported_and_writes_go_on_unless_required() {
        let health = Arc::new(Health::new(false));
        let shutdown = CancellationToken::new();
        watching(&health, with_standby(&[false]), &shutdown);

        tokio::time::sleep(Duration::from_millis(10)).await;

        let report = health.readiness().report();
        assert!(report.database && !report.sync_standby && !report.sync_standby_required);
        assert!(health.is_writable());
        shutdown.cancel();
    }
}

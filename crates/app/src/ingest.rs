//! The ingest loop: pull a batch, hand it to the core, pull the next while
//! it is being stored (a few batches in flight, each acked after its own
//! commit); while the database cannot take writes (after a transient fault,
//! until the health watcher sees it answer again; with
//! `REQUIRE_SYNC_STANDBY`, while it has no synchronous standby), pull
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use orders_domain::{
    IngestOutcome, Ingested, Message, MessageSource, OrderService, error_chain, retry_delay,
};
use orders_metrics::Metrics;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Which messages a loop takes, and so which use case they go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Orders from the orders stream: [`OrderService::ingest`].
    Orders,
    /// Messages the broker gave up on: [`OrderService::undeliverable`].
    Undeliverable,
}

/// How the loop takes messages.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    /// Most messages stored in one transaction.
    pub batch_size: usize,
    /// Longest wait for more messages once one has arrived.
    pub linger: Duration,
    /// Most batches being stored at once. With one, the next pull waits for
    /// the last commit; with two, it overlaps it, and the database works
    /// while the service parses. Each batch is its own transaction and its
    /// messages are acked after its own commit, so order across batches
    /// does not matter: the unique index serializes two batches that hold
    /// the same uid.
    pub in_flight: usize,
}

/// The batches pulled and not yet settled, each with the broker's
/// timestamp of its oldest message: how long the oldest message in hand
/// has waited is a gauge (`orders_ingest_oldest_unsettled_seconds`). A
/// handful of entries (one per batch in flight), so a mutex held for a
/// push or a removal is all it needs.
#[derive(Debug, Default)]
pub struct Unsettled {
    batches: Mutex<Vec<(u64, SystemTime)>>,
    next_id: AtomicU64,
}

impl Unsettled {
    /// Notes a batch whose oldest message the broker stored at `oldest`.
    pub(crate) fn add(&self, oldest: SystemTime) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut batches) = self.batches.lock() {
            batches.push((id, oldest));
        }
        id
    }

    pub(crate) fn settled(&self, id: u64) {
        if let Ok(mut batches) = self.batches.lock() {
            batches.retain(|(each, _)| *each != id);
        }
    }

    /// How long ago the broker stored the oldest message in hand (zero
    /// when none is).
    pub fn oldest_age(&self) -> Duration {
        let oldest = self
            .batches
            .lock()
            .ok()
            .and_then(|b| b.iter().map(|(_, at)| *at).min());
        oldest
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default()
    }
}

/// Runs until `shutdown` is cancelled or the source closes. The token is
/// checked only between batches: batches in hand are always finished and
/// settled. (A batch still being gathered when shutdown comes is dropped
/// unacked, so the broker redelivers it: nothing is lost.)
pub async fn run_ingest(
    feed: Feed,
    service: Arc<OrderService>,
    mut source: Box<dyn MessageSource>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    settings: IngestSettings,
    shutdown: CancellationToken,
) {
    // Each batch counts itself in the metrics and reports a transient
    // fault to the health watcher as soon as it is settled.
    let mut storing: JoinSet<()> = JoinSet::new();
    loop {
        while let Some(done) = storing.try_join_next() {
            settled(done);
        }
        if storing.len() >= settings.in_flight.max(1)
            && let Some(done) = storing.join_next().await
        {
            settled(done);
        }
        if !health.is_writable() {
            // The messages wait in the stream, not in a storm of naks, and
            // nothing is acked that only the primary would hold. Batches
            // already in flight finish by themselves.
            health.writable(&shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            tracing::info!("the database takes writes again; resuming ingest");
        }
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = source.next_batch(settings.batch_size, settings.linger) => next,
        };
        match next {
            Ok(batch) if batch.is_empty() => {
                tracing::info!("message source closed");
                break;
            }
            Ok(batch) if !health.is_writable() => {
                // The watcher closed the gate while the pull waited (the
                // standby left while the stream was idle, say).
                give_back(batch, &metrics).await;
            }
            Ok(batch) => {
                let (service, health, metrics) = (
                    Arc::clone(&service),
                    Arc::clone(&health),
                    Arc::clone(&metrics),
                );
                let oldest = batch.iter().filter_map(|m| m.meta.published).min();
                let in_hand = oldest.map(|at| health.unsettled().add(at));
                storing.spawn(async move {
                    let started = Instant::now();
                    let ingested = match feed {
                        Feed::Orders => service.ingest(batch).await,
                        Feed::Undeliverable => service.undeliverable(batch).await,
                    };
                    let elapsed = started.elapsed();
                    if let Some(id) = in_hand {
                        health.unsettled().settled(id);
                    }
                    // Counted as soon as settled, not when the loop next looks.
                    for one in &ingested {
                        metrics.record_ingest(one, elapsed);
                    }
                    if ingested
                        .iter()
                        .any(|i| matches!(i.outcome, IngestOutcome::Retry(_)))
                    {
                        // The loop's next turn waits for the watcher.
                        health.database_failed();
                    }
                });
            }
            Err(err) => {
                // The source pauses and reconnects by itself.
                tracing::warn!(error = %error_chain(&err), "pulling messages failed");
            }
        }
    }
    while let Some(done) = storing.join_next().await {
        settled(done);
    }
    tracing::info!(?feed, "ingest stopped");
}

/// Logs a batch that did not finish (a panic): its messages are not
/// settled and come back after the ack wait.
fn settled(done: Result<(), JoinError>) {
    if let Err(err) = done {
        tracing::error!(error = %err, "storing a batch panicked");
    }
}

/// Naks each message of a batch with its retry delay, storing nothing: the
/// batch arrived after the database stopped taking writes.
async fn give_back(batch: Vec<Message>, metrics: &Metrics) {
    tracing::info!(
        messages = batch.len(),
        "the database does not take writes now; the batch goes back to the broker"
    );
    for message in batch {
        let delay = retry_delay(message.meta.delivered);
        if let Err(err) = message.acker.nak(delay).await {
            tracing::warn!(error = %error_chain(&err), "nak failed; the broker redelivers after the ack wait");
        }
        let ingested = Ingested {
            outcome: IngestOutcome::Retry(delay),
            delivered: message.meta.delivered,
            defaulted: Vec::new(),
            unknown_fields: 0,
            lag: None,
            panicked: false,
        };
        metrics.record_ingest(&ingested, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::INTERVAL;
    use bytes::Bytes;
    use orders_domain::{
        DatabaseProbe, Message, MessageMeta, MockAcker, MockDatabaseProbe, MockMessageSource,
        MockOrderCache, MockOrderStore, OrderStore, Ports, RepositoryError, SaveOutcome,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");
    const SETTINGS: IngestSettings = IngestSettings {
        batch_size: 100,
        linger: Duration::from_millis(1),
        in_flight: 2,
    };

    fn message(acker: MockAcker) -> Message {
        Message {
            payload: Bytes::from_static(SAMPLE),
            meta: MessageMeta {
                delivered: 1,
                ..MessageMeta::default()
            },
            acker: Box::new(acker),
        }
    }

    fn service(store: Arc<dyn OrderStore>) -> Arc<OrderService> {
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        Arc::new(OrderService::new(
            Ports {
                store,
                cache: Arc::new(cache),
                ..Ports::mocks()
            },
            1 << 20,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_transient_fault_no_message_is_pulled_until_the_database_answers() {
        let pings = Arc::new(AtomicUsize::new(0));
        let mut store = MockOrderStore::new();
        let mut saves = 0;
        store.expect_save().times(2).returning(move |_| {
            saves += 1;
            if saves == 1 {
                Err(RepositoryError::Unavailable("down".into()))
            } else {
                Ok(vec![SaveOutcome::Stored])
            }
        });
        let seen = Arc::clone(&pings);
        let mut probe = MockDatabaseProbe::new();
        probe.expect_ping().returning(move || {
            // Up at first; after the fault, down for two pings.
            match seen.fetch_add(1, Ordering::SeqCst) {
                1 | 2 => Err(RepositoryError::Unavailable("still down".into())),
                _ => Ok(()),
            }
        });
        probe.expect_has_sync_standby().returning(|| Ok(false));
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(false));
        watched(&health, Arc::new(probe), &shutdown);
        // The watcher's first ping: the database answers.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(health.readiness().report().database);
        let mut source = MockMessageSource::new();
        let mut pulls = 0;
        let checked = Arc::clone(&pings);
        let stop = shutdown.clone();
        source.expect_next_batch().returning(move |_, _| {
            pulls += 1;
            match pulls {
                1 => {
                    let mut acker = MockAcker::new();
                    acker.expect_nak().times(1).returning(|_| Ok(()));
                    acker.expect_ack().never();
                    Ok(vec![message(acker)])
                }
                2 => {
                    assert_eq!(
                        checked.load(Ordering::SeqCst),
                        4,
                        "pulled before the database answered"
                    );
                    let mut acker = MockAcker::new();
                    acker.expect_ack().times(1).returning(|| Ok(()));
                    Ok(vec![message(acker)])
                }
                _ => {
                    stop.cancel();
                    Ok(Vec::new())
                }
            }
        });

        let metrics = Arc::new(Metrics::new());
        run_ingest(
            Feed::Orders,
            service(Arc::new(store)),
            Box::new(source),
            Arc::clone(&health),
            Arc::clone(&metrics),
            // One batch at a time, so the next pull is the first after the
            // fault was seen (with more in flight, batches already pulled
            // finish by themselves; none starts before the database answers).
            IngestSettings {
                in_flight: 1,
                ..SETTINGS
            },
            shutdown,
        )
        .await;

        assert_eq!(pings.load(Ordering::SeqCst), 4);
        let text = metrics.encode();
        assert!(text.contains("orders_messages_retried_total 1"), "{text}");
        assert!(text.contains("orders_messages_stored_total 1"), "{text}");
    }

    /// A repository whose saves each wait until another has started:
    /// only batches stored at the same time get through. (mockall holds a
    /// lock while a mocked method runs, so two calls cannot overlap there.)
    struct Overlapping {
        both_saving: tokio::sync::Barrier,
        committed: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl OrderStore for Overlapping {
        async fn save(
            &self,
            orders: &[orders_domain::NewOrder],
        ) -> Result<Vec<SaveOutcome>, RepositoryError> {
            self.both_saving.wait().await;
            self.committed.fetch_add(1, Ordering::SeqCst);
            Ok(vec![SaveOutcome::Stored; orders.len()])
        }
        async fn record_rejection(
            &self,
            _: &orders_domain::Rejection,
        ) -> Result<orders_domain::Recorded, RepositoryError> {
            unreachable!("nothing rejected")
        }
    }

    #[tokio::test]
    async fn two_batches_are_stored_at_once_and_each_is_acked_after_its_own_commit() {
        let committed = Arc::new(AtomicUsize::new(0));
        let repo: Arc<dyn OrderStore> = Arc::new(Overlapping {
            both_saving: tokio::sync::Barrier::new(2),
            committed: Arc::clone(&committed),
        });
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(false));
        watched(&health, answering(&[false]), &shutdown);
        let mut source = MockMessageSource::new();
        let mut pulls = 0;
        let stop = shutdown.clone();
        source.expect_next_batch().returning(move |_, _| {
            pulls += 1;
            if pulls > 2 {
                stop.cancel();
                return Ok(Vec::new());
            }
            let mut acker = MockAcker::new();
            let seen = Arc::clone(&committed);
            acker.expect_ack().times(1).returning(move || {
                assert!(seen.load(Ordering::SeqCst) >= 1, "acked before a commit");
                Ok(())
            });
            Ok(vec![message(acker)])
        });

        let metrics = Arc::new(Metrics::new());
        tokio::time::timeout(
            Duration::from_secs(10),
            run_ingest(
                Feed::Orders,
                service(repo),
                Box::new(source),
                health,
                Arc::clone(&metrics),
                SETTINGS,
                shutdown,
            ),
        )
        .await
        .expect("both batches were stored at once");

        assert!(
            metrics.encode().contains("orders_messages_stored_total 2"),
            "{}",
            metrics.encode()
        );
    }

    /// One batch, then nothing ever again.
    struct OneBatch(Option<Vec<Message>>);

    #[async_trait::async_trait]
    impl MessageSource for OneBatch {
        async fn next_batch(
            &mut self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<Message>, orders_domain::SourceError> {
            match self.0.take() {
                Some(batch) => Ok(batch),
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test]
    async fn a_stored_batch_is_counted_while_the_loop_waits_for_the_next() {
        let mut store = MockOrderStore::new();
        store
            .expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let repo: Arc<dyn OrderStore> = Arc::new(store);
        let mut acker = MockAcker::new();
        acker.expect_ack().times(1).returning(|| Ok(()));
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(false));
        watched(&health, answering(&[false]), &shutdown);
        let running = tokio::spawn(run_ingest(
            Feed::Orders,
            service(repo),
            Box::new(OneBatch(Some(vec![message(acker)]))),
            health,
            Arc::clone(&metrics),
            SETTINGS,
            shutdown.clone(),
        ));

        let counted = tokio::time::timeout(Duration::from_secs(5), async {
            while !metrics.encode().contains("orders_messages_stored_total 1") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;

        shutdown.cancel();
        running.await.expect("stops");
        assert!(counted.is_ok(), "{}", metrics.encode());
    }

    /// A repository whose save waits until `release` is notified.
    struct HeldSave {
        release: Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl OrderStore for HeldSave {
        async fn save(
            &self,
            orders: &[orders_domain::NewOrder],
        ) -> Result<Vec<SaveOutcome>, RepositoryError> {
            self.release.notified().await;
            Ok(vec![SaveOutcome::Stored; orders.len()])
        }
        async fn record_rejection(
            &self,
            _: &orders_domain::Rejection,
        ) -> Result<orders_domain::Recorded, RepositoryError> {
            unreachable!("nothing rejected")
        }
    }

    #[tokio::test]
    async fn the_oldest_unsettled_message_ages_while_its_batch_is_stored() {
        let release = Arc::new(tokio::sync::Notify::new());
        let repo: Arc<dyn OrderStore> = Arc::new(HeldSave {
            release: Arc::clone(&release),
        });
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(false));
        watched(&health, answering(&[false]), &shutdown);
        let mut acker = MockAcker::new();
        acker.expect_ack().times(1).returning(|| Ok(()));
        let mut old = message(acker);
        old.meta.published = Some(SystemTime::now() - Duration::from_secs(40));
        let running = tokio::spawn(run_ingest(
            Feed::Orders,
            service(repo),
            Box::new(OneBatch(Some(vec![old]))),
            Arc::clone(&health),
            Arc::new(Metrics::new()),
            SETTINGS,
            shutdown.clone(),
        ));

        let held = tokio::time::timeout(Duration::from_secs(5), async {
            while health.unsettled().oldest_age() < Duration::from_secs(40) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        release.notify_one();
        let settled = tokio::time::timeout(Duration::from_secs(5), async {
            while health.unsettled().oldest_age() > Duration::ZERO {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;

        shutdown.cancel();
        running.await.expect("stops");
        assert!(held.is_ok(), "the batch in hand was not counted");
        assert!(settled.is_ok(), "the settled batch still counted");
    }

    #[tokio::test]
    async fn a_cancelled_token_stops_the_loop_before_pulling() {
        let mut source = MockMessageSource::new();
        source.expect_next_batch().never();
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        run_ingest(
            Feed::Orders,
            service(Arc::new(MockOrderStore::new())),
            Box::new(source),
            Arc::new(Health::new(false)),
            Arc::new(Metrics::new()),
            SETTINGS,
            shutdown,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn source_errors_are_survived() {
        let health = Arc::new(Health::new(false));
        watched(&health, answering(&[true]), &CancellationToken::new());
        let mut source = MockMessageSource::new();
        let mut calls = 0;
        source.expect_next_batch().returning(move |_, _| {
            calls += 1;
            if calls < 3 {
                Err(orders_domain::SourceError("broker restarting".into()))
            } else {
                Ok(Vec::new())
            }
        });

        run_ingest(
            Feed::Orders,
            service(Arc::new(MockOrderStore::new())),
            Box::new(source),
            health,
            Arc::new(Metrics::new()),
            SETTINGS,
            CancellationToken::new(),
        )
        .await;
    }

    /// A database that always answers, and whose `n`th answer about a
    /// synchronous standby is `standby[n]` (the last one from then on),
    /// counting the answers in `asked`.
    fn answering_counted(standby: &'static [bool], asked: Arc<AtomicUsize>) -> MockDatabaseProbe {
        let mut repo = MockDatabaseProbe::new();
        repo.expect_ping().returning(|| Ok(()));
        repo.expect_has_sync_standby().returning(move || {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            Ok(standby[n.min(standby.len() - 1)])
        });
        repo
    }

    fn answering(standby: &'static [bool]) -> Arc<dyn DatabaseProbe> {
        Arc::new(answering_counted(standby, Arc::default()))
    }

    /// The health watcher running on `db` until `shutdown`.
    fn watched(health: &Arc<Health>, db: Arc<dyn DatabaseProbe>, shutdown: &CancellationToken) {
        let health = Arc::clone(health);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { health.watch(db, || true, shutdown).await });
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_sync_standby_required_nothing_is_pulled_until_one_attaches() {
        // No synchronous standby at the first three looks (0, 1, 2 s).
        let asked = Arc::new(AtomicUsize::new(0));
        let probe = answering_counted(&[false, false, false, true], Arc::clone(&asked));
        let mut store = MockOrderStore::new();
        store
            .expect_save()
            .times(1)
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let repo: Arc<dyn OrderStore> = Arc::new(store);
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(true));
        watched(&health, Arc::new(probe), &shutdown);
        let mut source = MockMessageSource::new();
        let mut pulls = 0;
        let stop = shutdown.clone();
        let seen = Arc::clone(&asked);
        source.expect_next_batch().returning(move |_, _| {
            pulls += 1;
            if pulls == 1 {
                assert_eq!(seen.load(Ordering::SeqCst), 4, "pulled without a standby");
                let mut acker = MockAcker::new();
                acker.expect_ack().times(1).returning(|| Ok(()));
                Ok(vec![message(acker)])
            } else {
                stop.cancel();
                Ok(Vec::new())
            }
        });
        let started = tokio::time::Instant::now();

        run_ingest(
            Feed::Orders,
            service(repo),
            Box::new(source),
            health,
            Arc::new(Metrics::new()),
            SETTINGS,
            shutdown,
        )
        .await;

        assert!(started.elapsed() >= INTERVAL * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_arrives_after_writes_stopped_goes_back_unstored() {
        let mut store = MockOrderStore::new();
        store.expect_save().never();
        let repo: Arc<dyn OrderStore> = Arc::new(store);
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new(false));
        watched(&health, answering(&[true]), &shutdown);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut source = MockMessageSource::new();
        let mut pulls = 0;
        let stop = shutdown.clone();
        let gate = Arc::clone(&health);
        source.expect_next_batch().returning(move |_, _| {
            pulls += 1;
            if pulls == 1 {
                // While this pull waited, the database stopped taking writes.
                gate.database_failed();
                let mut acker = MockAcker::new();
                acker
                    .expect_nak()
                    .times(1)
                    .withf(|delay| *delay == retry_delay(1))
                    .returning(|_| Ok(()));
                acker.expect_ack().never();
                Ok(vec![message(acker)])
            } else {
                stop.cancel();
                Ok(Vec::new())
            }
        });
        let metrics = Arc::new(Metrics::new());

        run_ingest(
            Feed::Orders,
            service(repo),
            Box::new(source),
            health,
            Arc::clone(&metrics),
            SETTINGS,
            shutdown,
        )
        .await;

        let text = metrics.encode();
        assert!(text.contains("orders_messages_retried_total 1"), "{text}");
    }
}

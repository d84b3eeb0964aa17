//! The ingest loop: pull a batch, hand it to the core, repeat; after a
//! transient fault, stop pulling until the health watcher sees the database
//! answer again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_domain::{IngestOutcome, MessageSource, OrderService, error_chain};
use orders_metrics::Metrics;
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
}

/// Runs until `shutdown` is cancelled or the source closes. The token is
/// checked only between batches: messages in hand are always finished and
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
    loop {
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
            Ok(batch) => {
                let started = Instant::now();
                let ingested = match feed {
                    Feed::Orders => service.ingest(batch).await,
                    Feed::Undeliverable => service.undeliverable(batch).await,
                };
                let elapsed = started.elapsed();
                for one in &ingested {
                    metrics.record_ingest(one, elapsed);
                }
                if ingested
                    .iter()
                    .any(|i| matches!(i.outcome, IngestOutcome::Retry(_)))
                {
                    health.database_failed();
                    health.database_up(&shutdown).await;
                    if !shutdown.is_cancelled() {
                        tracing::info!("the database answers again; resuming ingest");
                    }
                }
            }
            Err(err) => {
                // The source pauses and reconnects by itself.
                tracing::warn!(error = %error_chain(&err), "pulling messages failed");
            }
        }
    }
    tracing::info!(?feed, "ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use orders_domain::{
        Message, MessageMeta, MockAcker, MockMessageSource, MockOrderCache, MockOrderRepository,
        OrderRepository, RepositoryError, SaveOutcome,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");
    const SETTINGS: IngestSettings = IngestSettings {
        batch_size: 100,
        linger: Duration::from_millis(1),
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

    fn service(repo: Arc<dyn OrderRepository>) -> Arc<OrderService> {
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        Arc::new(OrderService::new(repo, Arc::new(cache), 1 << 20))
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_transient_fault_no_message_is_pulled_until_the_database_answers() {
        let pings = Arc::new(AtomicUsize::new(0));
        let mut repo = MockOrderRepository::new();
        let mut saves = 0;
        repo.expect_save().times(2).returning(move |_| {
            saves += 1;
            if saves == 1 {
                Err(RepositoryError::Unavailable("down".into()))
            } else {
                Ok(vec![SaveOutcome::Stored])
            }
        });
        let seen = Arc::clone(&pings);
        repo.expect_ping().returning(move || {
            // Up at first; after the fault, down for two pings.
            match seen.fetch_add(1, Ordering::SeqCst) {
                1 | 2 => Err(RepositoryError::Unavailable("still down".into())),
                _ => Ok(()),
            }
        });
        let repo: Arc<dyn OrderRepository> = Arc::new(repo);
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::new());
        {
            let health = Arc::clone(&health);
            let repo = Arc::clone(&repo);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { health.watch(repo, || true, shutdown).await });
        }
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
            service(repo),
            Box::new(source),
            Arc::clone(&health),
            Arc::clone(&metrics),
            SETTINGS,
            shutdown,
        )
        .await;

        assert_eq!(pings.load(Ordering::SeqCst), 4);
        let text = metrics.encode();
        assert!(text.contains("orders_messages_retried_total 1"), "{text}");
        assert!(text.contains("orders_messages_stored_total 1"), "{text}");
    }

    #[tokio::test]
    async fn a_cancelled_token_stops_the_loop_before_pulling() {
        let mut source = MockMessageSource::new();
        source.expect_next_batch().never();
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        run_ingest(
            Feed::Orders,
            service(Arc::new(MockOrderRepository::new())),
            Box::new(source),
            Arc::new(Health::new()),
            Arc::new(Metrics::new()),
            SETTINGS,
            shutdown,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn source_errors_are_survived() {
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
            service(Arc::new(MockOrderRepository::new())),
            Box::new(source),
            Arc::new(Health::new()),
            Arc::new(Metrics::new()),
            SETTINGS,
            CancellationToken::new(),
        )
        .await;
    }
}

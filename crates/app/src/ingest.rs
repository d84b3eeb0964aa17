//! The ingest loop: pull a message, hand it to the core, repeat; after a
//! transient fault, stop pulling until the database answers again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orders_domain::{IngestOutcome, MessageSource, OrderService, error_chain};
use orders_http::Metrics;
use tokio_util::sync::CancellationToken;

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
    service: Arc<OrderService>,
    mut source: Box<dyn MessageSource>,
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
                let delivered: Vec<u64> = batch.iter().map(|d| d.meta.delivered).collect();
                let outcomes = if batch.len() == 1 {
                    let single = batch.into_iter().next().map(|d| service.ingest(d));
                    match single {
                        Some(ingest) => vec![ingest.await],
                        None => Vec::new(),
                    }
                } else {
                    service.ingest_batch(batch).await
                };
                let elapsed = started.elapsed();
                for (outcome, delivered) in outcomes.iter().zip(delivered) {
                    metrics.record_ingest(*outcome, delivered, elapsed);
                }
                if outcomes
                    .iter()
                    .any(|o| matches!(o, IngestOutcome::Retry(_)))
                {
                    wait_for_database(&service, &shutdown).await;
                }
            }
            Err(err) => {
                // The source pauses and reconnects by itself.
                tracing::warn!(error = %error_chain(&err), "pulling messages failed");
            }
        }
    }
    tracing::info!("ingest stopped");
}

/// Polls the database until it answers (or shutdown), so an outage does not
/// turn the pending messages into a storm of naks.
async fn wait_for_database(service: &OrderService, shutdown: &CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        if service.repository().ping().await.is_ok() {
            tracing::info!("database answers again; resuming ingest");
            service.readiness().set_database(true);
            return;
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use orders_domain::{
        Delivery, DeliveryMeta, MockAcker, MockMessageSource, MockOrderCache, MockOrderRepository,
        Readiness, RepositoryError,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");
    const SETTINGS: IngestSettings = IngestSettings {
        batch_size: 100,
        linger: Duration::from_millis(1),
    };

    fn delivery(acker: MockAcker) -> Delivery {
        Delivery {
            payload: Bytes::from_static(SAMPLE),
            meta: DeliveryMeta {
                delivered: 1,
                ..DeliveryMeta::default()
            },
            acker: Box::new(acker),
        }
    }

    fn service(repo: MockOrderRepository) -> Arc<OrderService> {
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        Arc::new(OrderService::new(
            Arc::new(repo),
            Arc::new(cache),
            Arc::new(Readiness::default()),
            1 << 20,
        ))
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
                Ok(orders_domain::SaveOutcome::Stored)
            }
        });
        let seen = Arc::clone(&pings);
        repo.expect_ping().returning(move || {
            // The database answers on the third ping.
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(RepositoryError::Unavailable("still down".into()))
            } else {
                Ok(())
            }
        });
        let shutdown = CancellationToken::new();
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
                    Ok(vec![delivery(acker)])
                }
                2 => {
                    assert_eq!(
                        checked.load(Ordering::SeqCst),
                        3,
                        "pulled before the database answered"
                    );
                    let mut acker = MockAcker::new();
                    acker.expect_ack().times(1).returning(|| Ok(()));
                    Ok(vec![delivery(acker)])
                }
                _ => {
                    stop.cancel();
                    Ok(Vec::new())
                }
            }
        });

        let metrics = Arc::new(Metrics::new());
        run_ingest(
            service(repo),
            Box::new(source),
            Arc::clone(&metrics),
            SETTINGS,
            shutdown,
        )
        .await;

        assert_eq!(pings.load(Ordering::SeqCst), 3);
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
            service(MockOrderRepository::new()),
            Box::new(source),
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
            service(MockOrderRepository::new()),
            Box::new(source),
            Arc::new(Metrics::new()),
            SETTINGS,
            CancellationToken::new(),
        )
        .await;
    }
}

//! The ingest use case: a batch of messages in, each one settled by its own
//! outcome. A batch of one is a batch; there is no other path.

use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument as _;

use crate::decode::Decoded;
use crate::order::Order;
use crate::ports::{Acker, Message, MessageMeta, Rejection, RepositoryError, SaveOutcome};
use crate::service::{OrderService, error_chain};
use crate::validation::{RejectReason, ValidationError};

/// What ingesting one message did, after the message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed, cached, acked.
    Stored,
    /// Already stored with equal content; acked.
    Duplicate,
    /// Recorded in `rejected_messages` and terminated on the broker.
    Rejected(RejectReason),
    /// A transient fault: nak'ed with this delay, to be redelivered.
    Retry(Duration),
}

/// One message's outcome, and what the metrics want to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub outcome: IngestOutcome,
    /// How many times the broker has delivered the message, this time included.
    pub delivered: u64,
    /// Fields the message left out that were filled with `""` or `0`, by
    /// the order's own field names (`payment.request_id`, `items[].sale`).
    pub defaulted: Vec<&'static str>,
    /// How many fields the message had that the order does not know.
    pub unknown_fields: usize,
}

/// The delay before a message that met a transient fault is redelivered:
/// 1 s, doubling with each delivery, at most 30 s. Growing delays keep a long
/// outage from turning into a storm of redeliveries.
pub fn retry_delay(delivered: u64) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const MOST: Duration = Duration::from_secs(30);
    let doublings = delivered.saturating_sub(1).min(5) as u32;
    (FIRST * 2u32.pow(doublings)).min(MOST)
}

/// One message of a batch on its way through.
struct InHand {
    payload: Bytes,
    meta: MessageMeta,
    acker: Box<dyn Acker>,
    /// Carries the message's stream sequence and, once read, its uid, so
    /// every log line about it says which message it is.
    span: tracing::Span,
    ingested: Ingested,
    /// The outcome, once known.
    settled: Option<IngestOutcome>,
}

impl OrderService {
    /// Stores a batch of messages' orders and settles each message: the
    /// valid orders in ONE transaction, each message acked, nak'ed or
    /// terminated by its own outcome, the acks sent only after the commit.
    /// An order the database refuses is rejected on its own; the rest of
    /// the batch is stored all the same.
    #[tracing::instrument(name = "ingest", skip_all, fields(size = batch.len()))]
    pub async fn ingest(&self, batch: Vec<Message>) -> Vec<Ingested> {
        let mut in_hand: Vec<InHand> = batch.into_iter().map(InHand::new).collect();

        let mut positions = Vec::with_capacity(in_hand.len());
        let mut orders = Vec::with_capacity(in_hand.len());
        for (i, m) in in_hand.iter_mut().enumerate() {
            match self.parse(&m.payload) {
                Ok(decoded) => {
                    m.read(&decoded);
                    positions.push(i);
                    orders.push(decoded.order);
                }
                Err(invalid) => {
                    let uid = match invalid {
                        ValidationError::TooLarge { .. } => None,
                        _ => uid_hint(&m.payload),
                    };
                    if let Some(uid) = &uid {
                        m.span.record("order_uid", uid.as_str());
                    }
                    let outcome = self
                        .reject(m, invalid.reason(), invalid.to_string(), uid)
                        .await;
                    m.settled = Some(outcome);
                }
            }
        }

        if !orders.is_empty() {
            match self.repo.save(&orders).await {
                Ok(results) if results.len() == orders.len() => {
                    for ((i, order), result) in positions.iter().zip(orders).zip(results) {
                        let m = &mut in_hand[*i];
                        m.settled = Some(self.saved(m, order, result).await);
                    }
                }
                Ok(results) => {
                    // A repository that breaks its contract: retry rather than guess.
                    tracing::error!(
                        orders = orders.len(),
                        results = results.len(),
                        "the repository returned the wrong number of outcomes; the batch will be retried"
                    );
                }
                Err(err) => {
                    tracing::warn!(
                        error = %error_chain(&err),
                        orders = orders.len(),
                        "storing the batch failed; its orders will be retried"
                    );
                }
            }
        }

        let settled = in_hand.into_iter().map(|m| async move {
            let outcome = m
                .settled
                .unwrap_or(IngestOutcome::Retry(retry_delay(m.meta.delivered)));
            settle(m.acker.as_ref(), outcome).instrument(m.span).await;
            Ingested {
                outcome,
                ..m.ingested
            }
        });
        futures::future::join_all(settled).await
    }

    /// Records messages the broker gave up on (delivered `max_deliver`
    /// times, never settled: a message the client could not even read, or
    /// one whose every delivery met a crash) in `rejected_messages` as
    /// `undeliverable`, so nothing disappears without a trace, and settles
    /// the broker's notice of each: ended once recorded, retried if the
    /// database is down.
    #[tracing::instrument(name = "undeliverable", skip_all, fields(size = batch.len()))]
    pub async fn undeliverable(&self, batch: Vec<Message>) -> Vec<Ingested> {
        let mut settled = Vec::with_capacity(batch.len());
        for message in batch {
            let m = InHand::new(message);
            let uid = uid_hint(&m.payload);
            if let Some(uid) = &uid {
                m.span.record("order_uid", uid.as_str());
            }
            let detail = format!(
                "the broker gave up after {} deliveries that no replica settled (NATS_MAX_DELIVER)",
                m.meta.delivered
            );
            let outcome = self
                .reject(&m, RejectReason::Undeliverable, detail, uid)
                .await;
            settle(m.acker.as_ref(), outcome).instrument(m.span).await;
            settled.push(Ingested {
                outcome,
                ..m.ingested
            });
        }
        settled
    }

    /// The message's order, or why it is not one. Larger than the limit:
    /// rejected without parsing.
    fn parse(&self, payload: &Bytes) -> Result<Decoded, ValidationError> {
        if payload.len() > self.max_order_bytes {
            return Err(ValidationError::TooLarge {
                size: payload.len(),
                limit: self.max_order_bytes,
            });
        }
        Order::decode(payload)
    }

    /// What a save's result means for the message: cache a new order,
    /// reject a conflict or refused data.
    async fn saved(&self, m: &InHand, order: Order, result: SaveOutcome) -> IngestOutcome {
        match result {
            SaveOutcome::Stored => {
                m.span.in_scope(|| tracing::debug!("stored"));
                self.misses.forget(&order.order_uid);
                let json = Bytes::from(order.to_json());
                self.cache.insert(order.order_uid, json);
                IngestOutcome::Stored
            }
            SaveOutcome::Duplicate => {
                m.span
                    .in_scope(|| tracing::info!("duplicate delivery, already stored"));
                IngestOutcome::Duplicate
            }
            SaveOutcome::Conflict => {
                let uid = order.order_uid.to_string();
                let detail = format!("order_uid {uid} is already stored with different content");
                self.reject(m, RejectReason::Conflict, detail, Some(uid))
                    .await
            }
            SaveOutcome::Refused(detail) => {
                let uid = Some(order.order_uid.to_string());
                self.reject(m, RejectReason::Refused, detail, uid).await
            }
        }
    }

    /// Records the message in `rejected_messages`; if that fails for a
    /// transient reason, the message is retried instead.
    async fn reject(
        &self,
        m: &InHand,
        reason: RejectReason,
        detail: String,
        order_uid: Option<String>,
    ) -> IngestOutcome {
        let span = m.span.clone();
        async {
            tracing::warn!(%reason, %detail, "message rejected");
            let rejection = Rejection {
                reason,
                detail,
                order_uid,
                subject: m.meta.subject.clone(),
                stream: m.meta.stream.clone(),
                stream_sequence: Some(m.meta.stream_sequence).filter(|s| *s > 0),
                headers: m.meta.headers.clone(),
                payload: m.payload.clone(),
            };
            match self.repo.record_rejection(&rejection).await {
                Ok(()) => IngestOutcome::Rejected(reason),
                Err(err @ RepositoryError::Unavailable(_)) => {
                    let delay = retry_delay(m.meta.delivered);
                    tracing::warn!(error = %error_chain(&err), ?delay, "recording the rejection failed; will retry");
                    IngestOutcome::Retry(delay)
                }
                Err(RepositoryError::Refused(why)) => {
                    // Cannot happen with the schema we ship (the table takes
                    // any bytes); if it does, keeping the message forever
                    // helps no one.
                    tracing::error!(%why, "could not record the rejection; terminating anyway");
                    IngestOutcome::Rejected(reason)
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl InHand {
    fn new(message: Message) -> Self {
        let Message {
            payload,
            meta,
            acker,
        } = message;
        let span = tracing::info_span!(
            "message",
            seq = meta.stream_sequence,
            delivered = meta.delivered,
            order_uid = tracing::field::Empty,
        );
        Self {
            ingested: Ingested {
                outcome: IngestOutcome::Retry(Duration::ZERO),
                delivered: meta.delivered,
                defaulted: Vec::new(),
                unknown_fields: 0,
            },
            payload,
            meta,
            acker,
            span,
            settled: None,
        }
    }

    /// Notes what decoding found: the uid in the span, defaulted and
    /// unknown fields for the metrics (and the unknown names in the log).
    fn read(&mut self, decoded: &Decoded) {
        self.span
            .record("order_uid", decoded.order.order_uid.as_str());
        if !decoded.unknown_fields.is_empty() {
            self.span.in_scope(|| {
                tracing::debug!(fields = ?decoded.unknown_fields, "fields the order does not know, ignored");
            });
        }
        self.ingested.defaulted.clone_from(&decoded.defaulted);
        self.ingested.unknown_fields = decoded.unknown_fields.len();
    }
}

async fn settle(acker: &dyn Acker, outcome: IngestOutcome) {
    let result = match outcome {
        IngestOutcome::Stored | IngestOutcome::Duplicate => acker.ack().await,
        IngestOutcome::Rejected(_) => acker.term().await,
        IngestOutcome::Retry(delay) => acker.nak(delay).await,
    };
    if let Err(err) = result {
        // The broker will redeliver; the next delivery is a duplicate.
        tracing::warn!(error = %error_chain(&err), ?outcome, "settling the message failed");
    }
}

/// The `order_uid` of a message that is not a valid order, when it has a
/// readable one: it helps whoever reads `rejected_messages`.
fn uid_hint(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        order_uid: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    match probe.order_uid? {
        serde_json::Value::String(s) => Some(s.chars().filter(|c| *c != '\0').take(128).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mockall::predicate::eq;

    use super::*;
    use crate::ports::{AckError, MockAcker, MockOrderCache, MockOrderRepository};
    use crate::service::testing::{
        SAMPLE, acker_expecting, message, order_bytes, sample, unavailable,
    };

    fn service(repo: MockOrderRepository, cache: MockOrderCache) -> OrderService {
        OrderService::new(Arc::new(repo), Arc::new(cache), 1024 * 1024)
    }

    fn outcomes(ingested: Vec<Ingested>) -> Vec<IngestOutcome> {
        ingested.into_iter().map(|i| i.outcome).collect()
    }

    fn uids(orders: &[Order]) -> Vec<&str> {
        orders.iter().map(|o| o.order_uid.as_str()).collect()
    }

    #[tokio::test]
    async fn new_order_is_committed_then_cached_then_acked() {
        let mut seq = mockall::Sequence::new();
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .withf(|orders| uids(orders) == ["b563feb7b2b84b6test"])
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(Bytes::from(sample().to_json())))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        let mut acker = MockAcker::new();
        acker
            .expect_ack()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker)])
            .await;

        assert_eq!(outcomes(ingested), [IngestOutcome::Stored]);
    }

    #[tokio::test]
    async fn duplicate_is_acked_and_does_not_touch_the_cache() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Duplicate]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker_expecting("ack"))])
            .await;

        assert_eq!(outcomes(ingested), [IngestOutcome::Duplicate]);
    }

    #[tokio::test]
    async fn conflict_is_recorded_and_terminated_and_the_first_order_stays_cached() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Conflict]));
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::Conflict
                    && r.order_uid.as_deref() == Some("b563feb7b2b84b6test")
                    && r.stream_sequence == Some(7)
                    && r.payload.as_ref() == SAMPLE
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker_expecting("term"))])
            .await;

        assert_eq!(
            outcomes(ingested),
            [IngestOutcome::Rejected(RejectReason::Conflict)]
        );
    }

    #[tokio::test]
    async fn invalid_messages_of_each_kind_are_recorded_and_terminated() {
        let cases: [(&[u8], RejectReason, &str); 6] = [
            (b"{not json", RejectReason::InvalidJson, "invalid JSON"),
            (b"null", RejectReason::NotAnObject, "expected a JSON object"),
            (b"\xff\xfe\xfd", RejectReason::InvalidJson, "invalid JSON"),
            (
                br#"{"order_uid": "abc"}"#,
                RejectReason::InvalidField,
                "date_created: missing",
            ),
            (
                br#"{"order_uid": "a b"}"#,
                RejectReason::InvalidField,
                "order_uid: may hold only",
            ),
            (
                br#"{"order_uid": "a", "order_uid": "b"}"#,
                RejectReason::DuplicateKey,
                "duplicate key \"order_uid\"",
            ),
        ];
        for (payload, reason, detail) in cases {
            let mut repo = MockOrderRepository::new();
            repo.expect_save().never();
            repo.expect_record_rejection()
                .withf(move |r| {
                    r.reason == reason && r.detail.contains(detail) && r.payload.as_ref() == payload
                })
                .times(1)
                .returning(|_| Ok(()));

            let ingested = service(repo, MockOrderCache::new())
                .ingest(vec![message(payload, acker_expecting("term"))])
                .await;

            assert_eq!(
                outcomes(ingested),
                [IngestOutcome::Rejected(reason)],
                "{payload:?}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_message_is_rejected_without_parsing() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().never();
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::TooLarge
                    && r.detail
                        == format!(
                            "message is {} bytes, over the limit of 100 bytes",
                            SAMPLE.len()
                        )
                    && r.order_uid.is_none()
            })
            .times(1)
            .returning(|_| Ok(()));
        let svc = OrderService::new(Arc::new(repo), Arc::new(MockOrderCache::new()), 100);

        let ingested = svc
            .ingest(vec![message(SAMPLE, acker_expecting("term"))])
            .await;

        assert_eq!(
            outcomes(ingested),
            [IngestOutcome::Rejected(RejectReason::TooLarge)]
        );
    }

    #[tokio::test]
    async fn transient_repository_failure_naks_with_a_delay_and_never_acks() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().returning(|_| Err(unavailable()));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();
        let mut acker = MockAcker::new();
        acker.expect_ack().never();
        acker.expect_term().never();
        acker
            .expect_nak()
            .with(eq(Duration::from_secs(1)))
            .times(1)
            .returning(|_| Ok(()));

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker)])
            .await;

        assert_eq!(
            outcomes(ingested),
            [IngestOutcome::Retry(Duration::from_secs(1))]
        );
    }

    #[tokio::test]
    async fn failing_to_record_a_rejection_is_transient_too() {
        let mut repo = MockOrderRepository::new();
        repo.expect_record_rejection()
            .returning(|_| Err(unavailable()));

        let ingested = service(repo, MockOrderCache::new())
            .ingest(vec![message(b"garbage", acker_expecting("nak"))])
            .await;

        assert!(matches!(ingested[0].outcome, IngestOutcome::Retry(_)));
    }

    #[tokio::test]
    async fn an_order_the_database_refuses_is_rejected_and_the_rest_stored() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().times(1).returning(|_| {
            Ok(vec![
                SaveOutcome::Stored,
                SaveOutcome::Refused("value too long (SQLSTATE 22001)".into()),
            ])
        });
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::Refused
                    && r.order_uid.as_deref() == Some("bad")
                    && r.detail.contains("22001")
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .withf(|uid, _| uid.as_str() == "good")
            .times(1)
            .return_const(());
        let batch = vec![
            message(&order_bytes("good"), acker_expecting("ack")),
            message(&order_bytes("bad"), acker_expecting("term")),
        ];

        let ingested = service(repo, cache).ingest(batch).await;

        assert_eq!(
            outcomes(ingested),
            [
                IngestOutcome::Stored,
                IngestOutcome::Rejected(RejectReason::Refused)
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_ack_does_not_change_the_outcome() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let mut acker = MockAcker::new();
        acker
            .expect_ack()
            .returning(|| Err(AckError("timed out".into())));

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker)])
            .await;

        assert_eq!(outcomes(ingested), [IngestOutcome::Stored]);
    }

    #[tokio::test]
    async fn a_batch_is_saved_once_and_each_message_settled_by_its_own_outcome() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .withf(|orders| uids(orders) == ["a", "b", "c"])
            .times(1)
            .returning(|_| {
                Ok(vec![
                    SaveOutcome::Stored,
                    SaveOutcome::Duplicate,
                    SaveOutcome::Conflict,
                ])
            });
        repo.expect_record_rejection()
            .withf(|r| r.reason == RejectReason::InvalidJson)
            .times(1)
            .returning(|_| Ok(()));
        repo.expect_record_rejection()
            .withf(|r| r.reason == RejectReason::Conflict && r.order_uid.as_deref() == Some("c"))
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .withf(|uid, _| uid.as_str() == "a")
            .times(1)
            .return_const(());
        let batch = vec![
            message(&order_bytes("a"), acker_expecting("ack")),
            message(b"{broken", acker_expecting("term")),
            message(&order_bytes("b"), acker_expecting("ack")),
            message(&order_bytes("c"), acker_expecting("term")),
        ];

        let ingested = service(repo, cache).ingest(batch).await;

        assert_eq!(
            outcomes(ingested),
            [
                IngestOutcome::Stored,
                IngestOutcome::Rejected(RejectReason::InvalidJson),
                IngestOutcome::Duplicate,
                IngestOutcome::Rejected(RejectReason::Conflict),
            ]
        );
    }

    #[tokio::test]
    async fn a_transient_fault_naks_every_valid_message_of_the_batch_and_acks_none() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().returning(|_| Err(unavailable()));
        repo.expect_record_rejection()
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();
        let batch = vec![
            message(&order_bytes("a"), acker_expecting("nak")),
            message(b"null", acker_expecting("term")),
            message(&order_bytes("b"), acker_expecting("nak")),
        ];

        let ingested = service(repo, cache).ingest(batch).await;

        assert_eq!(
            outcomes(ingested),
            [
                IngestOutcome::Retry(Duration::from_secs(1)),
                IngestOutcome::Rejected(RejectReason::NotAnObject),
                IngestOutcome::Retry(Duration::from_secs(1)),
            ]
        );
    }

    #[tokio::test]
    async fn acks_wait_for_the_commit() {
        let committed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut repo = MockOrderRepository::new();
        let flag = Arc::clone(&committed);
        repo.expect_save().returning(move |orders| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![SaveOutcome::Stored; orders.len()])
        });
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let batch = (0..3)
            .map(|n| {
                let seen = Arc::clone(&committed);
                let mut acker = MockAcker::new();
                acker.expect_ack().times(1).returning(move || {
                    assert!(
                        seen.load(std::sync::atomic::Ordering::SeqCst),
                        "acked before commit"
                    );
                    Ok(())
                });
                message(&order_bytes(&format!("o{n}")), acker)
            })
            .collect();

        let ingested = service(repo, cache).ingest(batch).await;

        assert_eq!(outcomes(ingested), vec![IngestOutcome::Stored; 3]);
    }

    #[tokio::test]
    async fn defaulted_and_unknown_fields_are_reported_with_the_outcome() {
        let mut value: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
        let payment = value["payment"].as_object_mut().expect("object");
        payment.remove("request_id");
        payment.remove("custom_fee");
        value["items"][0]
            .as_object_mut()
            .expect("object")
            .remove("sale");
        value["gift_wrap"] = serde_json::Value::from(true);
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let body = serde_json::to_vec(&value).expect("json");

        let ingested = service(repo, cache)
            .ingest(vec![message(&body, acker_expecting("ack"))])
            .await;

        assert_eq!(ingested[0].outcome, IngestOutcome::Stored);
        assert_eq!(
            ingested[0].defaulted,
            ["payment.request_id", "payment.custom_fee", "items[].sale"]
        );
        assert_eq!(ingested[0].unknown_fields, 1);
    }

    #[tokio::test]
    async fn an_undeliverable_message_is_recorded_with_its_bytes_then_its_notice_settled() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().never();
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::Undeliverable
                    && r.stream_sequence == Some(7)
                    && r.payload.as_ref() == SAMPLE
                    && r.order_uid.as_deref() == Some("b563feb7b2b84b6test")
                    && r.detail.contains("gave up after 1 deliveries")
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut failing = MockOrderRepository::new();
        failing
            .expect_record_rejection()
            .returning(|_| Err(unavailable()));

        let recorded = service(repo, MockOrderCache::new())
            .undeliverable(vec![message(SAMPLE, acker_expecting("term"))])
            .await;
        let retried = service(failing, MockOrderCache::new())
            .undeliverable(vec![message(SAMPLE, acker_expecting("nak"))])
            .await;

        assert_eq!(
            outcomes(recorded),
            [IngestOutcome::Rejected(RejectReason::Undeliverable)]
        );
        assert!(matches!(retried[0].outcome, IngestOutcome::Retry(_)));
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(6), Duration::from_secs(30));
        assert_eq!(retry_delay(u64::MAX), Duration::from_secs(30));
    }
}

//! The use cases: ingest a message, look an order up, warm the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::listing::{MAX_PAGE, OrderCursor, OrderPage};
use crate::order::Order;
use crate::ports::{
    Acker, Delivery, DeliveryMeta, OrderCache, OrderRepository, Rejection, RepositoryError,
    SaveOutcome,
};
use crate::uid::OrderUid;
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

/// An order's JSON, and whether memory answered (for the hit-rate metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub json: Bytes,
    pub from_cache: bool,
}

/// Why a lookup found no order.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("order not found")]
    NotFound,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
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

/// What `/readyz` reports: each dependency the service needs to do its job.
#[derive(Debug, Default)]
pub struct Readiness {
    cache_warm: AtomicBool,
    database: AtomicBool,
    broker: AtomicBool,
}

/// A snapshot of [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessReport {
    pub cache_warm: bool,
    pub database: bool,
    pub broker: bool,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.cache_warm && self.database && self.broker
    }
}

impl Readiness {
    pub fn set_cache_warm(&self, warm: bool) {
        self.cache_warm.store(warm, Ordering::Release);
    }
    pub fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Release);
    }
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Release);
    }
    pub fn report(&self) -> ReadinessReport {
        ReadinessReport {
            cache_warm: self.cache_warm.load(Ordering::Acquire),
            database: self.database.load(Ordering::Acquire),
            broker: self.broker.load(Ordering::Acquire),
        }
    }
}

/// The core. Inbound adapters (the ingest loop, HTTP) call it directly; it
/// reaches the outside only through the ports it holds.
pub struct OrderService {
    repo: Arc<dyn OrderRepository>,
    cache: Arc<dyn OrderCache>,
    readiness: Arc<Readiness>,
    /// Messages larger than this are rejected without being parsed.
    max_order_bytes: usize,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("max_order_bytes", &self.max_order_bytes)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    pub fn new(
        repo: Arc<dyn OrderRepository>,
        cache: Arc<dyn OrderCache>,
        readiness: Arc<Readiness>,
        max_order_bytes: usize,
    ) -> Self {
        Self {
            repo,
            cache,
            readiness,
            max_order_bytes,
        }
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    pub fn repository(&self) -> &Arc<dyn OrderRepository> {
        &self.repo
    }

    /// Stores one message's order and settles the message: ack only after
    /// the commit (or after the rejection is recorded), nak on a transient
    /// fault, term on a message known to be bad.
    #[tracing::instrument(
        name = "ingest",
        skip_all,
        fields(
            seq = delivery.meta.stream_sequence,
            delivered = delivery.meta.delivered,
            order_uid = tracing::field::Empty,
        )
    )]
    pub async fn ingest(&self, delivery: Delivery) -> IngestOutcome {
        let Delivery {
            payload,
            meta,
            acker,
        } = delivery;
        let outcome = self.store(&payload, &meta).await;
        settle(acker.as_ref(), outcome).await;
        outcome
    }

    /// Stores a batch of messages' orders and settles each message: the
    /// valid orders in ONE transaction, each message acked, nak'ed or
    /// terminated by its own outcome, the acks sent together after the
    /// commit. One bad order never fails the batch: if the database refuses
    /// the batch, its orders are stored one by one to find the bad one.
    #[tracing::instrument(name = "ingest_batch", skip_all, fields(size = deliveries.len()))]
    pub async fn ingest_batch(&self, deliveries: Vec<Delivery>) -> Vec<IngestOutcome> {
        let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; deliveries.len()];
        let mut positions = Vec::with_capacity(deliveries.len());
        let mut orders = Vec::with_capacity(deliveries.len());
        for (i, delivery) in deliveries.iter().enumerate() {
            match self.parse(&delivery.payload) {
                Ok(order) => {
                    positions.push(i);
                    orders.push(order);
                }
                Err(invalid) => {
                    outcomes[i] = Some(
                        self.rejected(&delivery.meta, &delivery.payload, &invalid)
                            .await,
                    );
                }
            }
        }
        if !orders.is_empty() {
            match self.repo.save_batch(&orders).await {
                Ok(results) if results.len() == orders.len() => {
                    for ((i, order), result) in positions.iter().zip(orders).zip(results) {
                        let d = &deliveries[*i];
                        outcomes[*i] =
                            Some(self.saved(&d.meta, &d.payload, order, Ok(result)).await);
                    }
                }
                Ok(results) => {
                    // A repository that breaks its contract: retry rather than guess.
                    tracing::error!(
                        orders = orders.len(),
                        results = results.len(),
                        "save_batch returned the wrong number of outcomes"
                    );
                    self.retry_all(&deliveries, &positions, &mut outcomes);
                }
                Err(RepositoryError::Refused(why)) => {
                    tracing::warn!(%why, "the database refused the batch; storing its orders one by one");
                    for (i, order) in positions.iter().zip(orders) {
                        let d = &deliveries[*i];
                        let result = self.repo.save(&order).await;
                        outcomes[*i] = Some(self.saved(&d.meta, &d.payload, order, result).await);
                    }
                }
                Err(err @ RepositoryError::Unavailable(_)) => {
                    self.readiness.set_database(false);
                    tracing::warn!(error = %error_chain(&err), orders = orders.len(), "transient fault, the batch will be retried");
                    self.retry_all(&deliveries, &positions, &mut outcomes);
                }
            }
        }
        let outcomes: Vec<IngestOutcome> = outcomes
            .into_iter()
            .zip(&deliveries)
            .map(|(o, d)| o.unwrap_or(IngestOutcome::Retry(retry_delay(d.meta.delivered))))
            .collect();
        futures::future::join_all(
            deliveries
                .iter()
                .zip(&outcomes)
                .map(|(d, o)| settle(d.acker.as_ref(), *o)),
        )
        .await;
        outcomes
    }

    fn retry_all(
        &self,
        deliveries: &[Delivery],
        positions: &[usize],
        outcomes: &mut [Option<IngestOutcome>],
    ) {
        for i in positions {
            outcomes[*i] = Some(IngestOutcome::Retry(retry_delay(
                deliveries[*i].meta.delivered,
            )));
        }
    }

    /// The message's order, or why it is not one. Larger than the limit:
    /// rejected without parsing.
    fn parse(&self, payload: &Bytes) -> Result<Order, ValidationError> {
        if payload.len() > self.max_order_bytes {
            return Err(ValidationError::TooLarge {
                size: payload.len(),
                limit: self.max_order_bytes,
            });
        }
        Order::parse(payload)
    }

    async fn rejected(
        &self,
        meta: &DeliveryMeta,
        payload: &Bytes,
        invalid: &ValidationError,
    ) -> IngestOutcome {
        let uid = match invalid {
            ValidationError::TooLarge { .. } => None,
            _ => uid_hint(payload),
        };
        self.reject(meta, payload, invalid.reason(), invalid.to_string(), uid)
            .await
    }

    async fn store(&self, payload: &Bytes, meta: &DeliveryMeta) -> IngestOutcome {
        let order = match self.parse(payload) {
            Ok(order) => order,
            Err(invalid) => return self.rejected(meta, payload, &invalid).await,
        };
        let result = self.repo.save(&order).await;
        self.saved(meta, payload, order, result).await
    }

    /// What a save's result means for the message: cache a new order,
    /// reject a conflict or refused data, retry a transient fault.
    async fn saved(
        &self,
        meta: &DeliveryMeta,
        payload: &Bytes,
        order: Order,
        result: Result<SaveOutcome, RepositoryError>,
    ) -> IngestOutcome {
        let uid = order.order_uid.as_str().to_owned();
        tracing::Span::current().record("order_uid", uid.as_str());
        match result {
            Ok(SaveOutcome::Stored) => {
                self.readiness.set_database(true);
                tracing::debug!(order_uid = %uid, "stored");
                let json = Bytes::from(order.to_json());
                self.cache.insert(order.order_uid, json);
                IngestOutcome::Stored
            }
            Ok(SaveOutcome::Duplicate) => {
                tracing::info!(order_uid = %uid, "duplicate delivery, already stored");
                IngestOutcome::Duplicate
            }
            Ok(SaveOutcome::Conflict) => {
                let detail = format!("order_uid {uid} is already stored with different content");
                self.reject(meta, payload, RejectReason::Conflict, detail, Some(uid))
                    .await
            }
            Err(RepositoryError::Refused(detail)) => {
                self.reject(meta, payload, RejectReason::Refused, detail, Some(uid))
                    .await
            }
            Err(err @ RepositoryError::Unavailable(_)) => self.transient(meta, &err),
        }
    }

    async fn reject(
        &self,
        meta: &DeliveryMeta,
        payload: &Bytes,
        reason: RejectReason,
        detail: String,
        order_uid: Option<String>,
    ) -> IngestOutcome {
        tracing::warn!(%reason, %detail, order_uid = order_uid.as_deref(), "message rejected");
        let rejection = Rejection {
            reason,
            detail,
            order_uid,
            subject: meta.subject.clone(),
            stream: meta.stream.clone(),
            stream_sequence: Some(meta.stream_sequence).filter(|s| *s > 0),
            payload: payload.clone(),
        };
        match self.repo.record_rejection(&rejection).await {
            Ok(()) => IngestOutcome::Rejected(reason),
            Err(err @ RepositoryError::Unavailable(_)) => self.transient(meta, &err),
            Err(RepositoryError::Refused(why)) => {
                // Cannot happen with the schema we ship (the table takes any
                // bytes); if it does, keeping the message forever helps no one.
                tracing::error!(%why, "could not record the rejection; terminating anyway");
                IngestOutcome::Rejected(reason)
            }
        }
    }

    fn transient(&self, meta: &DeliveryMeta, err: &RepositoryError) -> IngestOutcome {
        self.readiness.set_database(false);
        let delay = retry_delay(meta.delivered);
        tracing::warn!(error = %error_chain(err), ?delay, "transient fault, will retry");
        IngestOutcome::Retry(delay)
    }

    /// The order's JSON: from the cache, else read through to the database
    /// (and then cached), else [`LookupError::NotFound`].
    pub async fn lookup(&self, uid: &OrderUid) -> Result<Lookup, LookupError> {
        if let Some(json) = self.cache.get(uid) {
            return Ok(Lookup {
                json,
                from_cache: true,
            });
        }
        let order = self.repo.find(uid).await?.ok_or(LookupError::NotFound)?;
        let json = Bytes::from(order.to_json());
        self.cache.insert(order.order_uid, json.clone());
        Ok(Lookup {
            json,
            from_cache: false,
        })
    }

    /// How many orders the cache holds.
    pub fn cached_orders(&self) -> usize {
        self.cache.len()
    }

    /// One page of the newest orders, `limit` capped at [`MAX_PAGE`].
    pub async fn recent(
        &self,
        limit: usize,
        before: Option<OrderCursor>,
    ) -> Result<OrderPage, RepositoryError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let orders = self.repo.list_recent(limit, before).await?;
        Ok(OrderPage::new(orders, limit))
    }

    /// Fills the cache with the newest `capacity` orders from the database,
    /// then marks the cache warm. Returns how many orders were loaded.
    ///
    /// Each chunk is serialized and cached while the repository reads the
    /// next one, so a large warm-up uses two cores and never holds all the
    /// orders as structs at once.
    pub async fn warm_up(&self, capacity: usize) -> Result<usize, RepositoryError> {
        let mut chunks = self.repo.load_recent(capacity);
        let mut loaded = 0;
        while let Some(chunk) = chunks.next().await {
            for order in chunk? {
                let json = Bytes::from(order.to_json());
                self.cache.insert(order.order_uid, json);
                loaded += 1;
            }
        }
        self.readiness.set_database(true);
        self.readiness.set_cache_warm(true);
        Ok(loaded)
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

/// An error and its sources on one line, for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{AckError, MockAcker, MockOrderCache, MockOrderRepository, OrderChunks};
    use mockall::predicate::eq;

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn sample() -> Order {
        Order::parse(SAMPLE).expect("sample is valid")
    }

    fn delivery(payload: &[u8], acker: MockAcker) -> Delivery {
        Delivery {
            payload: Bytes::copy_from_slice(payload),
            meta: DeliveryMeta {
                subject: "orders".into(),
                stream: "ORDERS".into(),
                stream_sequence: 7,
                delivered: 1,
            },
            acker: Box::new(acker),
        }
    }

    fn acker_expecting(what: &'static str) -> MockAcker {
        let mut acker = MockAcker::new();
        match what {
            "ack" => {
                acker.expect_ack().times(1).returning(|| Ok(()));
            }
            "term" => {
                acker.expect_term().times(1).returning(|| Ok(()));
            }
            "nak" => {
                acker.expect_nak().times(1).returning(|_| Ok(()));
            }
            _ => unreachable!(),
        }
        acker
    }

    fn service(repo: MockOrderRepository, cache: MockOrderCache) -> OrderService {
        OrderService::new(
            Arc::new(repo),
            Arc::new(cache),
            Arc::new(Readiness::default()),
            1024 * 1024,
        )
    }

    fn unavailable() -> RepositoryError {
        RepositoryError::Unavailable("connection refused".into())
    }

    #[tokio::test]
    async fn new_order_is_committed_then_cached_then_acked() {
        let mut seq = mockall::Sequence::new();
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .withf(|o| o.order_uid.as_str() == "b563feb7b2b84b6test")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(SaveOutcome::Stored));
        let mut cache = MockOrderCache::new();
        let expected_json = Bytes::from(sample().to_json());
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(expected_json))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        let mut acker = MockAcker::new();
        acker
            .expect_ack()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));

        let outcome = service(repo, cache).ingest(delivery(SAMPLE, acker)).await;

        assert_eq!(outcome, IngestOutcome::Stored);
    }

    #[tokio::test]
    async fn duplicate_is_acked_and_does_not_touch_the_cache() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().returning(|_| Ok(SaveOutcome::Duplicate));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();

        let outcome = service(repo, cache)
            .ingest(delivery(SAMPLE, acker_expecting("ack")))
            .await;

        assert_eq!(outcome, IngestOutcome::Duplicate);
    }

    #[tokio::test]
    async fn conflict_is_recorded_and_terminated_and_the_first_order_stays_cached() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().returning(|_| Ok(SaveOutcome::Conflict));
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

        let outcome = service(repo, cache)
            .ingest(delivery(SAMPLE, acker_expecting("term")))
            .await;

        assert_eq!(outcome, IngestOutcome::Rejected(RejectReason::Conflict));
    }

    #[tokio::test]
    async fn invalid_messages_of_each_kind_are_recorded_and_terminated() {
        let cases: [(&[u8], RejectReason, &str); 5] = [
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
                "order_uid:",
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

            let outcome = service(repo, MockOrderCache::new())
                .ingest(delivery(payload, acker_expecting("term")))
                .await;

            assert_eq!(outcome, IngestOutcome::Rejected(reason), "{payload:?}");
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
        let svc = OrderService::new(
            Arc::new(repo),
            Arc::new(MockOrderCache::new()),
            Arc::new(Readiness::default()),
            100,
        );

        let outcome = svc.ingest(delivery(SAMPLE, acker_expecting("term"))).await;

        assert_eq!(outcome, IngestOutcome::Rejected(RejectReason::TooLarge));
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
        let svc = service(repo, cache);
        svc.readiness().set_database(true);

        let outcome = svc.ingest(delivery(SAMPLE, acker)).await;

        assert_eq!(outcome, IngestOutcome::Retry(Duration::from_secs(1)));
        assert!(
            !svc.readiness().report().database,
            "readiness must turn red"
        );
    }

    #[tokio::test]
    async fn failing_to_record_a_rejection_is_transient_too() {
        let mut repo = MockOrderRepository::new();
        repo.expect_record_rejection()
            .returning(|_| Err(unavailable()));

        let outcome = service(repo, MockOrderCache::new())
            .ingest(delivery(b"garbage", acker_expecting("nak")))
            .await;

        assert!(matches!(outcome, IngestOutcome::Retry(_)));
    }

    #[tokio::test]
    async fn data_the_database_refuses_is_rejected_not_retried() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save()
            .returning(|_| Err(RepositoryError::Refused("check constraint".into())));
        repo.expect_record_rejection()
            .withf(|r| r.reason == RejectReason::Refused)
            .times(1)
            .returning(|_| Ok(()));

        let outcome = service(repo, MockOrderCache::new())
            .ingest(delivery(SAMPLE, acker_expecting("term")))
            .await;

        assert_eq!(outcome, IngestOutcome::Rejected(RejectReason::Refused));
    }

    #[tokio::test]
    async fn a_failed_ack_does_not_change_the_outcome() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().returning(|_| Ok(SaveOutcome::Stored));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let mut acker = MockAcker::new();
        acker
            .expect_ack()
            .returning(|| Err(AckError("timed out".into())));

        let outcome = service(repo, cache).ingest(delivery(SAMPLE, acker)).await;

        assert_eq!(outcome, IngestOutcome::Stored);
    }

    fn order_bytes(uid: &str) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
        value["order_uid"] = serde_json::Value::from(uid);
        serde_json::to_vec(&value).expect("json")
    }

    fn uids(orders: &[Order]) -> Vec<&str> {
        orders.iter().map(|o| o.order_uid.as_str()).collect()
    }

    #[tokio::test]
    async fn a_batch_is_saved_once_and_each_message_settled_by_its_own_outcome() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save().never();
        repo.expect_save_batch()
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
            delivery(&order_bytes("a"), acker_expecting("ack")),
            delivery(b"{broken", acker_expecting("term")),
            delivery(&order_bytes("b"), acker_expecting("ack")),
            delivery(&order_bytes("c"), acker_expecting("term")),
        ];

        let outcomes = service(repo, cache).ingest_batch(batch).await;

        assert_eq!(
            outcomes,
            [
                IngestOutcome::Stored,
                IngestOutcome::Rejected(RejectReason::InvalidJson),
                IngestOutcome::Duplicate,
                IngestOutcome::Rejected(RejectReason::Conflict),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_batch_is_stored_one_by_one_so_only_the_bad_order_is_rejected() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save_batch()
            .returning(|_| Err(RepositoryError::Refused("date out of range".into())));
        repo.expect_save()
            .withf(|o| o.order_uid.as_str() == "good")
            .times(1)
            .returning(|_| Ok(SaveOutcome::Stored));
        repo.expect_save()
            .withf(|o| o.order_uid.as_str() == "bad")
            .times(1)
            .returning(|_| Err(RepositoryError::Refused("date out of range".into())));
        repo.expect_record_rejection()
            .withf(|r| r.reason == RejectReason::Refused && r.order_uid.as_deref() == Some("bad"))
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(1).return_const(());
        let batch = vec![
            delivery(&order_bytes("good"), acker_expecting("ack")),
            delivery(&order_bytes("bad"), acker_expecting("term")),
        ];

        let outcomes = service(repo, cache).ingest_batch(batch).await;

        assert_eq!(
            outcomes,
            [
                IngestOutcome::Stored,
                IngestOutcome::Rejected(RejectReason::Refused)
            ]
        );
    }

    #[tokio::test]
    async fn a_transient_fault_naks_every_valid_message_of_the_batch_and_acks_none() {
        let mut repo = MockOrderRepository::new();
        repo.expect_save_batch().returning(|_| Err(unavailable()));
        repo.expect_record_rejection()
            .times(1)
            .returning(|_| Ok(()));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();
        let batch = vec![
            delivery(&order_bytes("a"), acker_expecting("nak")),
            delivery(b"null", acker_expecting("term")),
            delivery(&order_bytes("b"), acker_expecting("nak")),
        ];
        let svc = service(repo, cache);
        svc.readiness().set_database(true);

        let outcomes = svc.ingest_batch(batch).await;

        assert_eq!(outcomes[0], IngestOutcome::Retry(Duration::from_secs(1)));
        assert_eq!(
            outcomes[1],
            IngestOutcome::Rejected(RejectReason::NotAnObject)
        );
        assert_eq!(outcomes[2], IngestOutcome::Retry(Duration::from_secs(1)));
        assert!(!svc.readiness().report().database);
    }

    #[tokio::test]
    async fn acks_wait_for_the_commit() {
        let committed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut repo = MockOrderRepository::new();
        let flag = Arc::clone(&committed);
        repo.expect_save_batch().returning(move |orders| {
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
                delivery(&order_bytes(&format!("o{n}")), acker)
            })
            .collect();

        let outcomes = service(repo, cache).ingest_batch(batch).await;

        assert_eq!(outcomes, vec![IngestOutcome::Stored; 3]);
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

    #[tokio::test]
    async fn lookup_hit_is_answered_from_the_cache_alone() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find().never();
        let mut cache = MockOrderCache::new();
        cache
            .expect_get()
            .returning(|_| Some(Bytes::from_static(b"{\"cached\":true}")));

        let found = service(repo, cache)
            .lookup(&sample().order_uid)
            .await
            .expect("hit");

        assert_eq!(found.json, Bytes::from_static(b"{\"cached\":true}"));
        assert!(found.from_cache);
    }

    #[tokio::test]
    async fn lookup_miss_reads_through_and_caches() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find()
            .with(eq(sample().order_uid))
            .times(1)
            .returning(|_| Ok(Some(sample())));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(Bytes::from(sample().to_json())))
            .times(1)
            .return_const(());

        let found = service(repo, cache)
            .lookup(&sample().order_uid)
            .await
            .expect("found");

        assert_eq!(found.json, Bytes::from(sample().to_json()));
        assert!(!found.from_cache);
    }

    #[tokio::test]
    async fn lookup_of_an_unknown_uid_is_not_found() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find().returning(|_| Ok(None));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_insert().never();

        let result = service(repo, cache)
            .lookup(&OrderUid::parse("nope").expect("uid"))
            .await;

        assert!(matches!(result, Err(LookupError::NotFound)));
    }

    #[tokio::test]
    async fn lookup_reports_a_database_fault() {
        let mut repo = MockOrderRepository::new();
        repo.expect_find().returning(|_| Err(unavailable()));
        let mut cache = MockOrderCache::new();
        cache.expect_get().returning(|_| None);

        let result = service(repo, cache).lookup(&sample().order_uid).await;

        assert!(matches!(result, Err(LookupError::Repository(_))));
    }

    #[tokio::test]
    async fn recent_caps_the_limit_and_offers_a_next_page_only_when_full() {
        let summary = |n: i64| crate::listing::OrderSummary {
            order_uid: OrderUid::parse(&format!("o{n}")).expect("uid"),
            date_created: "2021-11-26T06:22:19Z".into(),
            amount: n,
            currency: "USD".into(),
            cursor: OrderCursor {
                created_micros: n,
                order_uid: OrderUid::parse(&format!("o{n}")).expect("uid"),
            },
        };
        let mut repo = MockOrderRepository::new();
        repo.expect_list_recent()
            .withf(|limit, before| *limit == MAX_PAGE && before.is_none())
            .times(1)
            .returning(move |limit, _| Ok((0..limit as i64).map(summary).collect()));
        repo.expect_list_recent()
            .withf(|limit, before| *limit == 5 && before.is_some())
            .times(1)
            .returning(move |_, _| Ok(vec![summary(1)]));
        let svc = service(repo, MockOrderCache::new());

        let full = svc.recent(10_000, None).await.expect("page");
        assert_eq!(full.orders.len(), MAX_PAGE);
        assert_eq!(full.next.as_deref(), Some("99.o99"));

        let cursor = OrderCursor::parse("99.o99").expect("cursor");
        let last = svc.recent(5, Some(cursor)).await.expect("page");
        assert_eq!(last.next, None);
    }

    #[tokio::test]
    async fn warm_up_fills_the_cache_then_reports_ready() {
        let mut repo = MockOrderRepository::new();
        repo.expect_load_recent()
            .with(eq(500))
            .times(1)
            .returning(|_| chunks(vec![Ok(vec![sample()])]));
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .with(eq(sample().order_uid), eq(Bytes::from(sample().to_json())))
            .times(1)
            .return_const(());
        let svc = service(repo, cache);
        svc.readiness().set_broker(true);
        assert!(!svc.readiness().report().is_ready());

        let loaded = svc.warm_up(500).await.expect("warm-up");

        assert_eq!(loaded, 1);
        assert!(svc.readiness().report().is_ready());
    }

    #[tokio::test]
    async fn failed_warm_up_leaves_the_service_not_ready() {
        let mut repo = MockOrderRepository::new();
        repo.expect_load_recent()
            .returning(|_| chunks(vec![Err(unavailable())]));
        let svc = service(repo, MockOrderCache::new());

        assert!(svc.warm_up(10).await.is_err());
        assert!(!svc.readiness().report().cache_warm);
    }

    #[tokio::test]
    async fn warm_up_caches_every_chunk_and_fails_on_an_error_after_some() {
        let order = |uid: &str| Order {
            order_uid: OrderUid::try_from(uid.to_owned()).expect("uid"),
            ..sample()
        };
        let mut repo = MockOrderRepository::new();
        repo.expect_load_recent().times(1).returning(move |_| {
            chunks(vec![Ok(vec![order("a"), order("b")]), Ok(vec![order("c")])])
        });
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(3).return_const(());
        let svc = service(repo, cache);
        assert_eq!(svc.warm_up(10).await.expect("warm-up"), 3);

        let mut repo = MockOrderRepository::new();
        repo.expect_load_recent()
            .returning(move |_| chunks(vec![Ok(vec![order("a")]), Err(unavailable())]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().times(1).return_const(());
        let svc = service(repo, cache);
        assert!(svc.warm_up(10).await.is_err());
        assert!(!svc.readiness().report().cache_warm);
    }

    fn chunks(items: Vec<Result<Vec<Order>, RepositoryError>>) -> OrderChunks {
        futures::stream::iter(items).boxed()
    }
}

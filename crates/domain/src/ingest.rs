//! The ingest use case: a batch of messages in, each one settled by its own
//! outcome. A batch of one is a batch; there is no other path.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::Instrument as _;

use crate::decode::{Decoded, NotAnOrder};
use crate::erased::Epoch;
use crate::order::Order;
use crate::panics::{self, Panicked};
use crate::ports::{
    Acker, Message, MessageMeta, NewOrder, Recorded, Rejection, RepositoryError, SaveOutcome,
};
use crate::service::{OrderService, error_chain};
use crate::trace::{self, MessageTrace};
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
    /// For a stored order: from the broker's timestamp of the message to
    /// the commit (how long it took to become visible).
    pub lag: Option<Duration>,
    /// Whether a panic was caught while the message was handled (a bug,
    /// kept to this message).
    pub panicked: bool,
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

/// How often the messages of a batch still being stored are reported in
/// progress to the broker, by default: a third of the default ack wait
/// (30 s), so a slow commit never lets a delivery expire. The app sets it
/// from `NATS_ACK_WAIT`.
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// One message of a batch on its way through (its acker is kept apart,
/// so the batch can be reported in progress while it is worked on).
struct InHand {
    payload: Bytes,
    meta: MessageMeta,
    /// The uid a message that is no order held, once read: the lines
    /// logged about a message say its stream sequence and uid as fields
    /// (a span per message would cost every message; fields cost only the
    /// lines logged).
    uid: Option<String>,
    ingested: Ingested,
    /// The outcome, once known.
    settled: Option<IngestOutcome>,
    /// Its exported spans (none without an exporter).
    trace: MessageTrace,
}

/// What saving one order of a batch came to.
type Saved = Result<SaveOutcome, Panicked>;

impl OrderService {
    /// Stores a batch of messages' orders and settles each message: the
    /// valid orders in ONE transaction, each message acked, nak'ed or
    /// terminated by its own outcome, the acks sent only after the commit.
    /// An order the database refuses is rejected on its own; the rest of
    /// the batch is stored all the same. A panic while a message is decoded
    /// or stored is kept to that message (rejected as `internal`). While
    /// the batch is worked on, its messages are reported in progress to the
    /// broker, so a slow commit does not expire their deliveries.
    #[tracing::instrument(name = "ingest", skip_all, fields(size = batch.len()))]
    pub async fn ingest(&self, batch: Vec<Message>) -> Vec<Ingested> {
        let (mut in_hand, ackers): (Vec<InHand>, Vec<Box<dyn Acker>>) = batch
            .into_iter()
            .map(|m| InHand::new(m, &self.consumer))
            .unzip();
        let batch_span = trace::batch(in_hand.iter().map(|m| (&m.trace, &m.meta)), &self.consumer);
        {
            let work = std::pin::pin!(self.store(&mut in_hand).instrument(batch_span));
            let progress = std::pin::pin!(self.keep_in_progress(&ackers));
            futures::future::select(work, progress).await;
        }
        let settled = in_hand
            .into_iter()
            .zip(ackers)
            .map(|(m, acker)| async move {
                let outcome = m
                    .settled
                    .unwrap_or(IngestOutcome::Retry(retry_delay(m.meta.delivered)));
                settle(acker.as_ref(), outcome, m.meta.stream_sequence).await;
                m.trace.settled(outcome);
                Ingested {
                    outcome,
                    ..m.ingested
                }
            });
        futures::future::join_all(settled).await
    }

    /// Decodes each message, saves the valid orders, and notes each
    /// message's outcome (none: retry).
    async fn store(&self, in_hand: &mut [InHand]) {
        let mut positions = Vec::with_capacity(in_hand.len());
        let mut orders = Vec::with_capacity(in_hand.len());
        for (i, m) in in_hand.iter_mut().enumerate() {
            // The order and its JSON are made here, once: the JSON is the
            // stored document, the cached answer and the live event's source.
            let sequence = Some(m.meta.stream_sequence).filter(|s| *s > 0);
            let parsed = panics::catch(|| {
                self.parse(&m.payload, &m.trace).map(|decoded| {
                    let Decoded {
                        order,
                        defaulted,
                        unknown_fields,
                    } = decoded;
                    let new = NewOrder::sized(order, sequence, m.payload.len());
                    (new, defaulted, unknown_fields)
                })
            });
            match parsed {
                Ok(Ok((order, defaulted, unknown_fields))) => {
                    m.read(&order.order, defaulted, &unknown_fields);
                    positions.push(i);
                    orders.push(order);
                }
                Ok(Err(NotAnOrder { error, order_uid })) => {
                    if let Some(uid) = &order_uid {
                        m.trace.read(uid);
                    }
                    m.uid.clone_from(&order_uid);
                    let outcome = self
                        .reject(m, error.reason(), error.to_string(), order_uid)
                        .await;
                    m.settled = Some(outcome);
                }
                Err(panicked) => {
                    m.ingested.panicked = true;
                    let outcome = self.reject_panic(m, "decoding", &panicked, None).await;
                    m.settled = Some(outcome);
                }
            }
        }
        if orders.is_empty() {
            return;
        }
        let since = self.erased.epoch();
        let saving = trace::saving(positions.iter().map(|&i| &in_hand[i].trace));
        let saved = self.save_containing_panics(&orders).await;
        drop(saving);
        let saved = match saved {
            Ok(saved) => saved,
            Err(err) => {
                tracing::warn!(
                    error = %error_chain(&err),
                    orders = orders.len(),
                    "storing the batch failed; its orders will be retried"
                );
                return;
            }
        };
        let committed = SystemTime::now();
        for ((i, order), result) in positions.iter().zip(orders).zip(saved) {
            let m = &mut in_hand[*i];
            m.settled = match result {
                // A part of the batch met a transient fault: retried.
                None => None,
                Some(Ok(outcome)) => Some(self.saved(m, order, outcome, committed, since).await),
                Some(Err(panicked)) => {
                    m.ingested.panicked = true;
                    let uid = Some(order.order.order_uid.to_string());
                    Some(self.reject_panic(m, "storing", &panicked, uid).await)
                }
            };
        }
    }

    /// Saves `orders` in one call; if the call panics, saves the halves
    /// apart, and so on, until the orders it panics on stand alone. Each
    /// order's result, by its place (`None`: its part met a transient
    /// fault, to be retried). Only a panic splits the batch, so the usual
    /// batch is still one transaction; an order that panics costs about
    /// 2 log2(n) calls, not one per order.
    async fn save_containing_panics(
        &self,
        orders: &[NewOrder],
    ) -> Result<Vec<Option<Saved>>, RepositoryError> {
        match panics::catch_async(self.store.save(orders)).await {
            Ok(saved) => {
                return checked(saved?, orders.len())
                    .map(|s| s.into_iter().map(|o| Some(Ok(o))).collect());
            }
            Err(panicked) if orders.len() == 1 => return Ok(vec![Some(Err(panicked))]),
            Err(panicked) => {
                tracing::error!(%panicked, orders = orders.len(), "storing a batch panicked; storing its halves apart to find the order");
            }
        }
        let mut results: Vec<Option<Saved>> = vec![None; orders.len()];
        let half = orders.len() / 2;
        let mut pending = vec![(half, &orders[half..]), (0, &orders[..half])];
        while let Some((at, part)) = pending.pop() {
            match panics::catch_async(self.store.save(part)).await {
                Ok(Ok(saved)) => match checked(saved, part.len()) {
                    Ok(saved) => {
                        for (slot, outcome) in results[at..].iter_mut().zip(saved) {
                            *slot = Some(Ok(outcome));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "part of a batch will be retried")
                    }
                },
                Ok(Err(err)) => {
                    // The parts already stored stay stored; this one is retried.
                    tracing::warn!(error = %error_chain(&err), orders = part.len(), "storing part of a batch failed; it will be retried");
                }
                Err(panicked) if part.len() == 1 => results[at] = Some(Err(panicked)),
                Err(_) => {
                    let half = part.len() / 2;
                    pending.push((at + half, &part[half..]));
                    pending.push((at, &part[..half]));
                }
            }
        }
        Ok(results)
    }

    /// Reports every message of the batch in progress, every
    /// `progress_every`, for as long as it is worked on (never returns).
    async fn keep_in_progress(&self, ackers: &[Box<dyn Acker>]) {
        loop {
            tokio::time::sleep(self.progress_every).await;
            tracing::debug!(
                messages = ackers.len(),
                "batch still being stored; reporting it in progress"
            );
            for acker in ackers {
                if let Err(err) = acker.in_progress().await {
                    tracing::debug!(error = %error_chain(&err), "reporting progress failed");
                }
            }
        }
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
            let (mut m, acker) = InHand::new(message, &self.consumer);
            // The same reading of the uid as for any message: the order's,
            // or the one a message that is no order held.
            let uid = match Order::decode_message(&m.payload) {
                Ok(decoded) => Some(decoded.order.order_uid.to_string()),
                Err(not) => not.order_uid,
            };
            m.uid.clone_from(&uid);
            let detail = format!(
                "the broker gave up after {} deliveries that no replica settled (NATS_MAX_DELIVER)",
                m.meta.delivered
            );
            let outcome = self
                .reject(&m, RejectReason::Undeliverable, detail, uid)
                .await;
            settle(acker.as_ref(), outcome, m.meta.stream_sequence).await;
            m.trace.settled(outcome);
            settled.push(Ingested {
                outcome,
                ..m.ingested
            });
        }
        settled
    }

    /// The message's order, or why it is not one. Larger than the limit:
    /// rejected without parsing.
    fn parse(&self, payload: &Bytes, trace: &MessageTrace) -> Result<Decoded, NotAnOrder> {
        if payload.len() > self.max_order_bytes {
            return Err(NotAnOrder {
                error: ValidationError::TooLarge {
                    size: payload.len(),
                    limit: self.max_order_bytes,
                },
                order_uid: None,
            });
        }
        trace.decoding(|| Order::decode_message(payload))
    }

    /// What a save's result means for the message: cache a new order
    /// (unless erased since the save began), reject a conflict, refused
    /// data or an erased order.
    async fn saved(
        &self,
        m: &mut InHand,
        order: NewOrder,
        result: SaveOutcome,
        committed: SystemTime,
        since: Epoch,
    ) -> IngestOutcome {
        let NewOrder { order, json, .. } = order;
        match result {
            SaveOutcome::Stored => {
                tracing::debug!(seq = m.meta.stream_sequence, order_uid = %order.order_uid, "stored");
                m.ingested.lag = m
                    .meta
                    .published
                    .map(|at| committed.duration_since(at).unwrap_or_default());
                self.misses.forget(&order.order_uid);
                // Committed already: a panic in the cache loses only the
                // cached copy (a lookup reads it through), never the order.
                let cache = || self.cache_unless_erased(since, [(order.order_uid, json)]);
                if let Err(panicked) = panics::catch(cache) {
                    m.ingested.panicked = true;
                    tracing::error!(seq = m.meta.stream_sequence, %panicked, "caching a stored order panicked; lookups read it through");
                }
                m.trace.cached();
                IngestOutcome::Stored
            }
            SaveOutcome::Duplicate => {
                tracing::info!(seq = m.meta.stream_sequence, order_uid = %order.order_uid, "duplicate delivery, already stored");
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
            SaveOutcome::Erased => {
                // Keeping the bytes or the headers would store the erased
                // data again; settling deletes the message from the stream.
                m.payload = Bytes::new();
                m.meta.headers = None;
                let uid = order.order_uid.to_string();
                let detail = format!(
                    "order_uid {uid} was erased on request; nothing of this message is kept"
                );
                self.reject(m, RejectReason::Erased, detail, Some(uid))
                    .await
            }
        }
    }

    /// Rejects a message the service panicked on, as `internal`, saying
    /// while doing what and where.
    async fn reject_panic(
        &self,
        m: &InHand,
        doing: &str,
        panicked: &Panicked,
        order_uid: Option<String>,
    ) -> IngestOutcome {
        tracing::error!(seq = m.meta.stream_sequence, order_uid = ?order_uid, %panicked, "the service panicked while {doing} this message; rejecting it alone");
        let detail = format!("the service {panicked} while {doing} this message");
        self.reject(m, RejectReason::Internal, detail, order_uid)
            .await
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
        let seq = m.meta.stream_sequence;
        async {
            tracing::warn!(seq, order_uid = ?order_uid, %reason, %detail, "message rejected");
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
            match self.store.record_rejection(&rejection).await {
                Ok(Recorded::Kept) => IngestOutcome::Rejected(reason),
                Ok(Recorded::Erased) => {
                    // It named an erased order: kept without its bytes, and
                    // settling deletes it from the stream.
                    tracing::warn!(seq, "the rejected message names an order erased on request; recorded as erased, its bytes not kept");
                    IngestOutcome::Rejected(RejectReason::Erased)
                }
                Err(err @ RepositoryError::Unavailable(_)) => {
                    let delay = retry_delay(m.meta.delivered);
                    tracing::warn!(seq, error = %error_chain(&err), ?delay, "recording the rejection failed; will retry");
                    IngestOutcome::Retry(delay)
                }
                Err(RepositoryError::Refused(why)) => {
                    // Cannot happen with the schema we ship (the table takes
                    // any bytes); if it does, keeping the message forever
                    // helps no one.
                    tracing::error!(seq, %why, "could not record the rejection; terminating anyway");
                    IngestOutcome::Rejected(reason)
                }
            }
        }
        // Its log lines name the message's trace, when exported.
        .instrument(m.trace.span().clone())
        .await
    }
}

/// The outcomes of a save, if there is one per order; a repository that
/// breaks its contract is met with a retry rather than a guess.
fn checked(saved: Vec<SaveOutcome>, orders: usize) -> Result<Vec<SaveOutcome>, RepositoryError> {
    if saved.len() == orders {
        return Ok(saved);
    }
    tracing::error!(
        orders,
        results = saved.len(),
        "the repository returned the wrong number of outcomes; the batch will be retried"
    );
    Err(RepositoryError::Unavailable(
        "the repository returned the wrong number of outcomes".into(),
    ))
}

impl InHand {
    fn new(message: Message, consumer: &trace::Consumer) -> (Self, Box<dyn Acker>) {
        let Message {
            payload,
            meta,
            acker,
        } = message;
        let trace = MessageTrace::start(&meta, consumer);
        let m = Self {
            ingested: Ingested {
                outcome: IngestOutcome::Retry(Duration::ZERO),
                delivered: meta.delivered,
                defaulted: Vec::new(),
                unknown_fields: 0,
                lag: None,
                panicked: false,
            },
            payload,
            meta,
            uid: None,
            settled: None,
            trace,
        };
        (m, acker)
    }

    /// Notes what decoding found: defaulted and unknown fields for the
    /// metrics (and the unknown names in the log).
    fn read(&mut self, order: &Order, defaulted: Vec<&'static str>, unknown_fields: &[String]) {
        self.trace.read(order.order_uid.as_str());
        if !unknown_fields.is_empty() {
            tracing::debug!(seq = self.meta.stream_sequence, order_uid = %order.order_uid, fields = ?unknown_fields, "fields the order does not know, ignored");
        }
        self.ingested.defaulted = defaulted;
        self.ingested.unknown_fields = unknown_fields.len();
    }
}

async fn settle(acker: &dyn Acker, outcome: IngestOutcome, seq: u64) {
    let result = match outcome {
        IngestOutcome::Stored | IngestOutcome::Duplicate => acker.ack().await,
        IngestOutcome::Rejected(RejectReason::Erased) => match acker.term().await {
            Ok(()) => acker.delete_from_stream().await,
            Err(err) => Err(err),
        },
        IngestOutcome::Rejected(_) => acker.term().await,
        IngestOutcome::Retry(delay) => acker.nak(delay).await,
    };
    if let Err(err) = result {
        // The broker will redeliver; the next delivery is a duplicate.
        tracing::warn!(seq, error = %error_chain(&err), ?outcome, "settling the message failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mockall::predicate::eq;

    use super::*;
    use crate::ports::{AckError, MockAcker, MockOrderCache, MockOrderStore};
    use crate::service::testing::{
        SAMPLE, acker_expecting, message, order_bytes, sample, unavailable,
    };

    fn service(store: MockOrderStore, cache: MockOrderCache) -> OrderService {
        on(Arc::new(store), cache, 1024 * 1024)
    }

    /// The service with this store and cache (and no other port).
    fn on(
        store: Arc<dyn crate::ports::OrderStore>,
        cache: MockOrderCache,
        max: usize,
    ) -> OrderService {
        OrderService::new(
            crate::service::Ports {
                store,
                cache: Arc::new(cache),
                ..crate::service::Ports::mocks()
            },
            max,
        )
    }

    fn outcomes(ingested: Vec<Ingested>) -> Vec<IngestOutcome> {
        ingested.into_iter().map(|i| i.outcome).collect()
    }

    fn uids(orders: &[NewOrder]) -> Vec<&str> {
        orders.iter().map(|o| o.order.order_uid.as_str()).collect()
    }

    #[tokio::test]
    async fn new_order_is_committed_then_cached_then_acked() {
        let mut seq = mockall::Sequence::new();
        let mut repo = MockOrderStore::new();
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
        let mut repo = MockOrderStore::new();
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
        let mut repo = MockOrderStore::new();
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
            .returning(|_| Ok(Recorded::Kept));
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
            let mut repo = MockOrderStore::new();
            repo.expect_save().never();
            repo.expect_record_rejection()
                .withf(move |r| {
                    r.reason == reason && r.detail.contains(detail) && r.payload.as_ref() == payload
                })
                .times(1)
                .returning(|_| Ok(Recorded::Kept));

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
        let mut repo = MockOrderStore::new();
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
            .returning(|_| Ok(Recorded::Kept));
        let svc = on(Arc::new(repo), MockOrderCache::new(), 100);

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
        let mut repo = MockOrderStore::new();
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
        let mut repo = MockOrderStore::new();
        repo.expect_record_rejection()
            .returning(|_| Err(unavailable()));

        let ingested = service(repo, MockOrderCache::new())
            .ingest(vec![message(b"garbage", acker_expecting("nak"))])
            .await;

        assert!(matches!(ingested[0].outcome, IngestOutcome::Retry(_)));
    }

    #[tokio::test]
    async fn an_order_the_database_refuses_is_rejected_and_the_rest_stored() {
        let mut repo = MockOrderStore::new();
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
            .returning(|_| Ok(Recorded::Kept));
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
        let mut repo = MockOrderStore::new();
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
        let mut repo = MockOrderStore::new();
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
            .returning(|_| Ok(Recorded::Kept));
        repo.expect_record_rejection()
            .withf(|r| r.reason == RejectReason::Conflict && r.order_uid.as_deref() == Some("c"))
            .times(1)
            .returning(|_| Ok(Recorded::Kept));
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
        let mut repo = MockOrderStore::new();
        repo.expect_save().returning(|_| Err(unavailable()));
        repo.expect_record_rejection()
            .times(1)
            .returning(|_| Ok(Recorded::Kept));
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
        let mut repo = MockOrderStore::new();
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
        let mut repo = MockOrderStore::new();
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

    /// A repository whose save panics on any batch holding the uid
    /// `boom` and stores every other order (mockall's lock would be
    /// poisoned by a panic inside an expectation, so a plain fake).
    struct PanicsOnBoom {
        saves: std::sync::Mutex<Vec<Vec<String>>>,
        rejections: std::sync::Mutex<Vec<Rejection>>,
    }

    #[async_trait::async_trait]
    impl crate::ports::OrderStore for PanicsOnBoom {
        async fn save(&self, orders: &[NewOrder]) -> Result<Vec<SaveOutcome>, RepositoryError> {
            let uids: Vec<String> = uids(orders).into_iter().map(String::from).collect();
            self.saves.lock().expect("saves").push(uids.clone());
            tokio::task::yield_now().await;
            if uids.iter().any(|u| u == "boom") {
                panic!("a bug met order {}", uids.len());
            }
            Ok(vec![SaveOutcome::Stored; orders.len()])
        }
        async fn record_rejection(&self, r: &Rejection) -> Result<Recorded, RepositoryError> {
            self.rejections.lock().expect("rejections").push(r.clone());
            Ok(Recorded::Kept)
        }
    }

    #[tokio::test]
    async fn a_panic_while_storing_one_order_rejects_it_alone_and_the_rest_are_stored_and_acked() {
        let repo = Arc::new(PanicsOnBoom {
            saves: Default::default(),
            rejections: Default::default(),
        });
        let mut cache = MockOrderCache::new();
        cache
            .expect_insert()
            .withf(|uid, _| uid.as_str() != "boom")
            .times(7)
            .return_const(());
        let svc = on(repo.clone(), cache, 1 << 20);
        let uids = ["a", "b", "c", "boom", "d", "e", "f", "g"];
        let batch = uids
            .iter()
            .map(|uid| {
                let settled = if *uid == "boom" { "term" } else { "ack" };
                message(&order_bytes(uid), acker_expecting(settled))
            })
            .collect();

        let ingested = svc.ingest(batch).await;

        let expected: Vec<IngestOutcome> = uids
            .iter()
            .map(|uid| match *uid {
                "boom" => IngestOutcome::Rejected(RejectReason::Internal),
                _ => IngestOutcome::Stored,
            })
            .collect();
        assert_eq!(outcomes(ingested.clone()), expected);
        assert!(ingested[3].panicked);
        assert!(!ingested[0].panicked);
        let rejections = repo.rejections.lock().expect("rejections");
        assert_eq!(rejections.len(), 1);
        let rejected = &rejections[0];
        assert_eq!(rejected.reason, RejectReason::Internal);
        assert_eq!(rejected.order_uid.as_deref(), Some("boom"));
        assert!(
            rejected.detail.contains("a bug met order 1")
                && rejected.detail.contains("src/ingest.rs:")
                && rejected.detail.contains("while storing"),
            "{}",
            rejected.detail
        );
        // The whole batch first, then halves down to the order alone:
        // about 2 log2(8) saves, not one per order.
        let saves = repo.saves.lock().expect("saves");
        assert_eq!(saves[0].len(), 8);
        assert!(saves.len() <= 7, "{saves:?}");
    }

    #[tokio::test]
    async fn a_panic_in_the_cache_after_the_commit_still_acks_the_stored_order() {
        let mut repo = MockOrderStore::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        repo.expect_record_rejection().never();
        let mut cache = MockOrderCache::new();
        cache.expect_insert().returning(|_, _| panic!("cache bug"));

        let ingested = service(repo, cache)
            .ingest(vec![message(SAMPLE, acker_expecting("ack"))])
            .await;

        assert_eq!(ingested[0].outcome, IngestOutcome::Stored);
        assert!(ingested[0].panicked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stored_slowly_is_reported_in_progress_until_it_is_settled() {
        let mut repo = MockOrderStore::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let slow = Arc::new(SlowSave(repo));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let mut seq = mockall::Sequence::new();
        let mut acker = MockAcker::new();
        acker
            .expect_in_progress()
            .times(2)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));
        acker
            .expect_ack()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));
        let svc = on(slow, cache, 1 << 20).with_progress_every(Duration::from_secs(10));

        let ingested = svc.ingest(vec![message(SAMPLE, acker)]).await;

        assert_eq!(outcomes(ingested), [IngestOutcome::Stored]);
    }

    #[tokio::test]
    async fn a_quick_batch_sends_no_progress() {
        let mut repo = MockOrderStore::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let mut acker = MockAcker::new();
        acker.expect_in_progress().never();
        acker.expect_ack().times(1).returning(|| Ok(()));

        service(repo, cache)
            .ingest(vec![message(SAMPLE, acker)])
            .await;
    }

    #[tokio::test]
    async fn a_stored_order_reports_its_lag_from_the_broker_timestamp() {
        let mut repo = MockOrderStore::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Stored]));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().return_const(());
        let mut m = message(SAMPLE, acker_expecting("ack"));
        m.meta.published = Some(SystemTime::now() - Duration::from_secs(3));

        let ingested = service(repo, cache).ingest(vec![m]).await;

        let lag = ingested[0].lag.expect("a lag");
        assert!(
            lag >= Duration::from_secs(3) && lag < Duration::from_secs(60),
            "{lag:?}"
        );
    }

    /// A repository whose save takes 25 s of (paused) time, then asks the mock.
    struct SlowSave(MockOrderStore);

    #[async_trait::async_trait]
    impl crate::ports::OrderStore for SlowSave {
        async fn save(&self, orders: &[NewOrder]) -> Result<Vec<SaveOutcome>, RepositoryError> {
            tokio::time::sleep(Duration::from_secs(25)).await;
            self.0.save(orders).await
        }
        async fn record_rejection(&self, r: &Rejection) -> Result<Recorded, RepositoryError> {
            self.0.record_rejection(r).await
        }
    }

    #[tokio::test]
    async fn an_undeliverable_message_is_recorded_with_its_bytes_then_its_notice_settled() {
        let mut repo = MockOrderStore::new();
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
            .returning(|_| Ok(Recorded::Kept));
        let mut failing = MockOrderStore::new();
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

    /// An acker that expects the message to be terminated, then deleted
    /// from the stream (how an erased order's message ends), and nothing
    /// else.
    fn acker_terminating_then_deleting() -> MockAcker {
        let mut seq = mockall::Sequence::new();
        let mut acker = MockAcker::new();
        acker
            .expect_term()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));
        acker
            .expect_delete_from_stream()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));
        acker.expect_ack().never();
        acker
    }

    #[tokio::test]
    async fn a_malformed_message_naming_an_erased_order_ends_as_erased_and_leaves_the_stream() {
        // setup: the store recorded it as erased (its uid was erased)
        let mut repo = MockOrderStore::new();
        repo.expect_save().never();
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::InvalidField && r.order_uid.as_deref() == Some("gone")
            })
            .times(1)
            .returning(|_| Ok(Recorded::Erased));
        let acker = acker_terminating_then_deleting();

        // exec
        let ingested = service(repo, MockOrderCache::new())
            .ingest(vec![message(br#"{"order_uid": "gone"}"#, acker)])
            .await;

        // check
        assert_eq!(
            outcomes(ingested),
            [IngestOutcome::Rejected(RejectReason::Erased)]
        );
    }

    #[tokio::test]
    async fn a_message_for_an_erased_order_is_rejected_without_its_bytes_then_deleted_from_the_stream()
     {
        // setup: the uid was erased; the message carries headers
        let mut repo = MockOrderStore::new();
        repo.expect_save()
            .returning(|_| Ok(vec![SaveOutcome::Erased]));
        repo.expect_record_rejection()
            .withf(|r| {
                r.reason == RejectReason::Erased
                    && r.payload.is_empty()
                    && r.headers.is_none()
                    && r.order_uid.as_deref() == Some("b563feb7b2b84b6test")
                    && r.stream_sequence == Some(7)
            })
            .times(1)
            .returning(|_| Ok(Recorded::Kept));
        let mut cache = MockOrderCache::new();
        cache.expect_insert().never();
        let acker = acker_terminating_then_deleting();
        let mut m = message(SAMPLE, acker);
        m.meta.headers = Some("NATS/1.0\nNats-Msg-Id: b563feb7b2b84b6test".into());

        // exec
        let ingested = service(repo, cache).ingest(vec![m]).await;

        // check
        assert_eq!(
            outcomes(ingested),
            [IngestOutcome::Rejected(RejectReason::Erased)]
        );
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

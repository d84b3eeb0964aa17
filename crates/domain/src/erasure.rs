//! Erasure on a person's request (`order-service erase`): which fields are
//! personal ([`Order::erased`]), how the orders are chosen
//! ([`ErasureTarget`], matched as search matches), the ports it needs
//! ([`Erasures`] and [`ErasureBatch`] in the database, [`StreamMessages`]
//! in the broker), and [`erase`], the use case.

use std::collections::HashSet;

use async_trait::async_trait;
use bytes::Bytes;

use crate::order::Order;
use crate::ports::{OrderJson, RepositoryError};
use crate::rejected::RejectedId;
use crate::search::{InvalidSearch, SearchKey};
use crate::uid::{InvalidOrderUid, OrderUid};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an erased field holds instead, in the rows and in the document. It
/// has no digit and no `@`, so no search by phone or email can ask for it.
pub const ERASED: &str = "[erased]";

/// Orders erased in one transaction, at most. Each batch announces its
/// uids in one `NOTIFY` (at most 8000 bytes; 100 uids of at most 64
/// characters and a space take 6,500), and holds its orders' row locks
/// while the stream deletes their messages, a round trip or two each: a
/// hundred keeps that to a fraction of a second on a local broker.
pub const ERASE_BATCH: usize = 100;

impl Order {
    /// The order with its personal fields replaced by [`ERASED`]: the
    /// delivery's name, phone, zip, city, address, region and email; the
    /// customer id (the person's handle in the shop: it links their orders
    /// and finds them); the payment's transaction and the track numbers
    /// (the payment provider's and the delivery service's references,
    /// which their records tie to the card holder and the address). What
    /// the business keeps for its accounts stays: the uid, dates, amounts,
    /// currency, bank and provider, the items bought.
    pub fn erased(mut self) -> Order {
        let d = &mut self.delivery;
        for field in [
            &mut d.name,
            &mut d.phone,
            &mut d.zip,
            &mut d.city,
            &mut d.address,
            &mut d.region,
            &mut d.email,
            &mut self.customer_id,
            &mut self.payment.transaction,
            &mut self.track_number,
        ] {
            ERASED.clone_into(field);
        }
        for item in &mut self.items {
            ERASED.clone_into(&mut item.track_number);
        }
        self
    }
}

/// Which orders to erase: those one key matches, compared as search
/// compares it (a phone by [`normalize_phone`](crate::normalize_phone), an
/// email by [`normalize_email`](crate::normalize_email), the rest exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureTarget {
    OrderUid(OrderUid),
    CustomerId(String),
    /// Normalized as search normalizes it.
    Phone(String),
    /// Normalized as search normalizes it.
    Email(String),
}

/// Why a value cannot choose orders to erase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("order_uid: {0}")]
    OrderUid(#[from] InvalidOrderUid),
    #[error(transparent)]
    Search(#[from] InvalidSearch),
    #[error("{0}: erasure matches by order_uid, customer_id, email or phone")]
    Kind(String),
}

impl ErasureTarget {
    /// The key named `kind` (`order_uid`, `customer_id`, `email` or
    /// `phone`) with `value`, checked and normalized as a search's.
    pub fn parse(kind: &str, value: &str) -> Result<Self, InvalidTarget> {
        if kind == "order_uid" {
            return Ok(Self::OrderUid(OrderUid::parse(value)?));
        }
        match SearchKey::parse(kind, value) {
            Some(Ok(SearchKey::CustomerId(v))) => Ok(Self::CustomerId(v)),
            Some(Ok(SearchKey::Phone(v))) => Ok(Self::Phone(v)),
            Some(Ok(SearchKey::Email(v))) => Ok(Self::Email(v)),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(_)) | None => Err(InvalidTarget::Kind(kind.to_owned())),
        }
    }

    /// The kind of match, as the erasure record keeps it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OrderUid(_) => "order_uid",
            Self::CustomerId(_) => "customer_id",
            Self::Phone(_) => "phone",
            Self::Email(_) => "email",
        }
    }

    /// The value, as compared.
    pub fn value(&self) -> &str {
        match self {
            Self::OrderUid(uid) => uid.as_str(),
            Self::CustomerId(v) | Self::Phone(v) | Self::Email(v) => v,
        }
    }
}

/// A stored order an erasure matched, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub order: Order,
    /// The sequence of the message it came in, in the orders' stream.
    pub stream_sequence: Option<u64>,
}

/// A rejected message an erasure deletes, with what finds its message in
/// the stream and tells it is the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCopy {
    pub id: RejectedId,
    pub stream: String,
    pub stream_sequence: Option<u64>,
    pub payload: Bytes,
}

/// An erasure record's id (`erasures.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureId(pub i64);

/// The erasures in the database: the record of each run, and the batches.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Erasures: Send + Sync {
    /// MUST store a new erasure record (now, `reason`, `kind`, no orders
    /// yet) in a transaction of its own and return its id. MUST NOT store
    /// the value the orders were matched by.
    async fn open_record(
        &self,
        reason: &str,
        kind: &'static str,
    ) -> Result<ErasureId, RepositoryError>;

    /// MUST begin a transaction for one batch. Dropping the batch without
    /// [`ErasureBatch::commit`] MUST roll it back: nothing changes.
    async fn begin(&self) -> Result<Box<dyn ErasureBatch>, RepositoryError>;

    /// MUST mark the record finished.
    async fn close_record(&self, id: ErasureId) -> Result<(), RepositoryError>;
}

/// One batch of an erasure: a transaction.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ErasureBatch: Send {
    /// MUST return at most `limit` stored orders that `target` matches and
    /// that are not erased yet, whole, each locked until the batch ends. A
    /// phone or an email MUST match as [`OrderReads::list_recent`]'s
    /// search matches it, on the same index.
    ///
    /// [`OrderReads::list_recent`]: crate::OrderReads::list_recent
    async fn matching(
        &mut self,
        target: &ErasureTarget,
        limit: usize,
    ) -> Result<Vec<Matched>, RepositoryError>;

    /// MUST return every rejected message whose `order_uid` is one of
    /// `uids` or whose payload holds any of `needles` (their UTF-8 bytes,
    /// anywhere), each locked until the batch ends.
    async fn rejected(
        &mut self,
        uids: &[OrderUid],
        needles: &[String],
    ) -> Result<Vec<RejectedCopy>, RepositoryError>;

    /// MUST, in the batch's transaction, then commit it: write each of
    /// `erased` (an order as [`Order::erased`] made it) as its document
    /// and its rows (every field it replaced, replaced the same), mark
    /// those orders erased, delete the rejected messages `rejected`, add
    /// the orders' uids and the counts to the record, when given, and
    /// announce the uids to every replica ([`Notice::Erased`]) if it
    /// commits.
    ///
    /// [`Notice::Erased`]: crate::Notice::Erased
    async fn commit(
        &mut self,
        record: Option<ErasureId>,
        erased: &[OrderJson],
        rejected: &[RejectedId],
        stream_messages: u64,
    ) -> Result<(), RepositoryError>;
}

/// The broker did not answer.
#[derive(Debug, thiserror::Error)]
#[error("the stream did not answer")]
pub struct StreamError(#[source] pub BoxError);

/// The stream's messages, one at a time, by sequence.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait StreamMessages: Send + Sync {
    /// MUST return the payload of the message at `sequence` in `stream`,
    /// or `None` when the stream no longer holds one (deleted, aged out,
    /// or no such stream). [`StreamError`] only when the broker did not
    /// answer.
    async fn payload(&self, stream: &str, sequence: u64) -> Result<Option<Bytes>, StreamError>;

    /// MUST delete the message at `sequence` from `stream`, its bytes
    /// overwritten, and return whether the stream held it.
    async fn delete(&self, stream: &str, sequence: u64) -> Result<bool, StreamError>;
}

/// An erasure to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRequest {
    pub target: ErasureTarget,
    /// Why (a ticket, a request's reference), kept in the record.
    pub reason: String,
    /// Where the orders' messages are (`NATS_STREAM`).
    pub orders_stream: String,
    /// Find and list, change nothing.
    pub dry_run: bool,
}

/// What an erasure did, or (a dry run) would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureReport {
    /// The record of the run (none for a dry run).
    pub record: Option<ErasureId>,
    /// The orders erased, by uid.
    pub orders: Vec<OrderUid>,
    /// The rejected messages deleted.
    pub rejected: Vec<RejectedId>,
    /// The messages the stream held, and deleted (or would delete), by
    /// stream and sequence.
    pub stream_messages: Vec<(String, u64)>,
}

/// Why an erasure stopped. What it had done by then is in `done`: the
/// batches committed stay erased, the failed one changed nothing in the
/// database (running again finishes the job).
#[derive(Debug, thiserror::Error)]
#[error("erasure stopped after {} orders: {why}", done.orders.len())]
pub struct ErasureFailed {
    pub done: ErasureReport,
    pub why: ErasureError,
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Runs an erasure: batch by batch (at most [`ERASE_BATCH`] orders each,
/// one transaction each, until none match), finds the matching orders and
/// the rejected messages that are theirs or hold one of their emails or
/// phones as stored, deletes the messages the stream still holds of them
/// (inside the transaction, before it commits: a commit that fails leaves
/// the orders to the next run, never a message behind an erased order),
/// writes the erased orders and deletes the rejected rows. A dry run finds
/// and lists it all in one transaction it rolls back, and deletes nothing.
pub async fn erase(
    db: &dyn Erasures,
    stream: &dyn StreamMessages,
    request: &ErasureRequest,
) -> Result<ErasureReport, ErasureFailed> {
    let mut report = ErasureReport::default();
    match run(db, stream, request, &mut report).await {
        Ok(()) => Ok(report),
        Err(why) => Err(ErasureFailed { done: report, why }),
    }
}

async fn run(
    db: &dyn Erasures,
    stream: &dyn StreamMessages,
    request: &ErasureRequest,
    report: &mut ErasureReport,
) -> Result<(), ErasureError> {
    if request.dry_run {
        let mut batch = db.begin().await?;
        let limit = usize::MAX;
        let found = find(batch.as_mut(), stream, request, limit).await?;
        report.orders = found
            .orders
            .into_iter()
            .map(|m| m.order.order_uid)
            .collect();
        report.rejected = found.rejected.iter().map(|r| r.id).collect();
        report.stream_messages = found.held;
        return Ok(());
    }
    let record = db
        .open_record(&request.reason, request.target.kind())
        .await?;
    report.record = Some(record);
    let mut erased: HashSet<OrderUid> = HashSet::new();
    loop {
        let mut batch = db.begin().await?;
        let found = find(batch.as_mut(), stream, request, ERASE_BATCH).await?;
        if found.orders.is_empty() {
            break;
        }
        if let Some(again) = found
            .orders
            .iter()
            .find(|m| erased.contains(&m.order.order_uid))
        {
            // The adapter broke its contract; looping would never end.
            return Err(RepositoryError::Refused(format!(
                "order {} matched again after it was erased",
                again.order.order_uid
            ))
            .into());
        }
        let mut deleted = Vec::new();
        for (name, sequence) in found.held {
            if stream.delete(&name, sequence).await? {
                deleted.push((name, sequence));
            }
        }
        let documents: Vec<OrderJson> = found
            .orders
            .into_iter()
            .map(|m| OrderJson::of(&m.order.erased()))
            .collect();
        let rejected: Vec<RejectedId> = found.rejected.iter().map(|r| r.id).collect();
        batch
            .commit(Some(record), &documents, &rejected, deleted.len() as u64)
            .await?;
        for document in documents {
            erased.insert(document.uid.clone());
            report.orders.push(document.uid);
        }
        report.rejected.extend(rejected);
        report.stream_messages.extend(deleted);
    }
    db.close_record(record).await?;
    Ok(())
}

/// What one batch found: the orders, the rejected messages, and the
/// messages of either that the stream still holds.
struct Found {
    orders: Vec<Matched>,
    rejected: Vec<RejectedCopy>,
    held: Vec<(String, u64)>,
}

async fn find(
    batch: &mut dyn ErasureBatch,
    stream: &dyn StreamMessages,
    request: &ErasureRequest,
    limit: usize,
) -> Result<Found, ErasureError> {
    let orders = batch.matching(&request.target, limit).await?;
    if orders.is_empty() {
        return Ok(Found {
            orders,
            rejected: Vec::new(),
            held: Vec::new(),
        });
    }
    let uids: Vec<OrderUid> = orders.iter().map(|m| m.order.order_uid.clone()).collect();
    let rejected = batch.rejected(&uids, &needles(&orders)).await?;
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    for m in &orders {
        let Some(sequence) = m.stream_sequence else {
            continue;
        };
        let name = &request.orders_stream;
        if let Some(payload) = stream.payload(name, sequence).await?
            && message_uid(&payload).as_deref() == Some(m.order.order_uid.as_str())
            && seen.insert((name.clone(), sequence))
        {
            held.push((name.clone(), sequence));
        }
    }
    for r in &rejected {
        let Some(sequence) = r.stream_sequence else {
            continue;
        };
        // A row that kept no bytes (an `erased` rejection) cannot tell its
        // message from another: its message was deleted when it came.
        if r.payload.is_empty() {
            continue;
        }
        if let Some(payload) = stream.payload(&r.stream, sequence).await?
            && payload == r.payload
            && seen.insert((r.stream.clone(), sequence))
        {
            held.push((r.stream.clone(), sequence));
        }
    }
    Ok(Found {
        orders,
        rejected,
        held,
    })
}

/// The emails and phones of `orders` as stored (not normalized: a payload
/// holds them as they were sent), each once; never an empty one (every
/// payload holds that) nor the marker.
fn needles(orders: &[Matched]) -> Vec<String> {
    let mut needles: Vec<String> = Vec::new();
    for m in orders {
        for value in [&m.order.delivery.email, &m.order.delivery.phone] {
            if !value.is_empty() && value != ERASED && !needles.contains(value) {
                needles.push(value.clone());
            }
        }
    }
    needles
}

/// The `order_uid` a message holds, read as ingest reads it: the stream
/// may hold another message at an order's sequence (a stream made again),
/// which is then left alone.
fn message_uid(payload: &[u8]) -> Option<String> {
    match Order::decode_message(payload) {
        Ok(decoded) => Some(decoded.order.order_uid.to_string()),
        Err(not) => not.order_uid,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mockall::predicate::eq;

    use super::*;
    use crate::service::testing::{order_bytes, sample, unavailable};

    const STREAM: &str = "ORDERS";

    fn order(uid: &str, email: &str, phone: &str) -> Order {
        let mut order = Order::parse(&order_bytes(uid)).expect("valid order");
        order.delivery.email = email.to_owned();
        order.delivery.phone = phone.to_owned();
        order
    }

    fn matched(order: Order, sequence: u64) -> Matched {
        Matched {
            order,
            stream_sequence: Some(sequence),
        }
    }

    fn rejected_copy(id: i64, sequence: u64, payload: &'static [u8]) -> RejectedCopy {
        RejectedCopy {
            id: RejectedId::new(id).expect("id"),
            stream: STREAM.to_owned(),
            stream_sequence: Some(sequence),
            payload: Bytes::from_static(payload),
        }
    }

    fn request(target: ErasureTarget, dry_run: bool) -> ErasureRequest {
        ErasureRequest {
            target,
            reason: "ticket 42".into(),
            orders_stream: STREAM.into(),
            dry_run,
        }
    }

    fn by_email() -> ErasureTarget {
        ErasureTarget::parse("email", "Ann@Example.com").expect("target")
    }

    /// A database whose `begin` hands out `batches` in turn.
    fn database(batches: Vec<MockErasureBatch>) -> MockErasures {
        let batches = Mutex::new(batches.into_iter());
        let mut db = MockErasures::new();
        db.expect_begin().returning(move || {
            let next = batches.lock().expect("lock").next().expect("a batch");
            Ok(Box::new(next) as Box<dyn ErasureBatch>)
        });
        db
    }

    /// A stream holding `held` (sequence, payload).
    fn stream_holding(held: Vec<(u64, Vec<u8>)>) -> MockStreamMessages {
        let mut stream = MockStreamMessages::new();
        stream.expect_payload().returning(move |name, sequence| {
            assert_eq!(name, STREAM);
            Ok(held
                .iter()
                .find(|(s, _)| *s == sequence)
                .map(|(_, p)| Bytes::from(p.clone())))
        });
        stream
    }

    fn none_left() -> MockErasureBatch {
        let mut batch = MockErasureBatch::new();
        batch
            .expect_matching()
            .times(1)
            .returning(|_, _| Ok(vec![]));
        batch.expect_commit().never();
        batch
    }

    #[test]
    fn erasing_replaces_every_personal_field_and_keeps_the_accounts() {
        let order = sample();
        let json = String::from_utf8(order.clone().erased().to_json()).expect("UTF-8");

        for personal in [
            "Test Testov",
            "+9720000000",
            "2639809",
            "Kiryat Mozkin",
            "Ploshad Mira 15",
            "Kraiot",
            "test@gmail.com",
            "WBILMTESTTRACK",
            "\"test\"",
        ] {
            assert!(!json.contains(personal), "{personal} kept in {json}");
        }
        let erased = order.clone().erased();
        assert_eq!(erased.delivery.name, ERASED);
        assert_eq!(erased.payment.transaction, ERASED);
        assert_eq!(erased.customer_id, ERASED);
        assert_eq!(erased.items[0].track_number, ERASED);
        assert_eq!(erased.order_uid, order.order_uid);
        assert_eq!(erased.payment.amount, order.payment.amount);
        assert_eq!(erased.items[0].name, order.items[0].name);
        assert_eq!(erased.date_created, order.date_created);
        assert!(Order::parse(json.as_bytes()).is_ok(), "still an order");
    }

    #[test]
    fn a_target_is_matched_as_search_matches_and_anything_else_is_refused() {
        assert_eq!(
            ErasureTarget::parse("phone", "+7 (900) 1٢3-45-67"),
            Ok(ErasureTarget::Phone("+79001234567".into()))
        );
        assert_eq!(
            ErasureTarget::parse("email", "Ann@Example.COM"),
            Ok(ErasureTarget::Email("ann@example.com".into()))
        );
        assert_eq!(
            ErasureTarget::parse("customer_id", "ann").map(|t| t.kind()),
            Ok("customer_id")
        );
        let uid = ErasureTarget::parse("order_uid", "b563feb7b2b84b6test").expect("uid");
        assert_eq!(
            (uid.kind(), uid.value()),
            ("order_uid", "b563feb7b2b84b6test")
        );

        for (kind, value, says) in [
            ("email", "ann.example.com", "@"),
            ("phone", "call me", "no digits"),
            ("customer_id", "", "empty"),
            ("order_uid", "a b", "order_uid"),
            ("track_number", "WB1", "erasure matches by"),
        ] {
            let err = ErasureTarget::parse(kind, value).expect_err(kind);
            assert!(err.to_string().contains(says), "{kind}: {err}");
        }
        assert!(!ERASED.contains('@') && !ERASED.bytes().any(|b| b.is_ascii_digit()));
    }

    #[tokio::test]
    async fn an_erasure_goes_batch_by_batch_deleting_what_the_stream_holds_before_each_commit() {
        // setup: one batch of two orders and a rejected message holding
        // one's phone, then none left
        let ann = order("ann-1", "Ann@Example.com", "+7 900 000-00-01");
        let ann2 = order("ann-2", "ann@example.com", "");
        let mut first = MockErasureBatch::new();
        let (a, b) = (ann.clone(), ann2.clone());
        first
            .expect_matching()
            .with(eq(by_email()), eq(ERASE_BATCH))
            .times(1)
            .returning(move |_, _| Ok(vec![matched(a.clone(), 11), matched(b.clone(), 12)]));
        first
            .expect_rejected()
            .withf(|uids, needles| {
                uids.iter().map(OrderUid::as_str).eq(["ann-1", "ann-2"])
                    && needles == ["Ann@Example.com", "+7 900 000-00-01", "ann@example.com"]
            })
            .times(1)
            .returning(|_, _| {
                Ok(vec![rejected_copy(
                    5,
                    20,
                    b"{\"phone\":\"+7 900 000-00-01\"",
                )])
            });
        first
            .expect_commit()
            .withf(|record, erased, rejected, deleted| {
                *record == Some(ErasureId(9))
                    && erased.len() == 2
                    && erased.iter().all(|o| {
                        let order = Order::parse(&o.json).expect("an order");
                        order.delivery.email == ERASED && order.order_uid == o.uid
                    })
                    && rejected == [RejectedId::new(5).expect("id")]
                    && *deleted == 3
            })
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let mut db = database(vec![first, none_left()]);
        db.expect_open_record()
            .with(eq("ticket 42"), eq("email"))
            .times(1)
            .returning(|_, _| Ok(ErasureId(9)));
        db.expect_close_record()
            .with(eq(ErasureId(9)))
            .times(1)
            .returning(|_| Ok(()));
        let mut stream = stream_holding(vec![
            (11, order_bytes("ann-1")),
            (12, order_bytes("ann-2")),
            (20, b"{\"phone\":\"+7 900 000-00-01\"".to_vec()),
        ]);
        let deleted: std::sync::Arc<Mutex<Vec<u64>>> = Default::default();
        let log = std::sync::Arc::clone(&deleted);
        stream.expect_delete().returning(move |_, sequence| {
            log.lock().expect("lock").push(sequence);
            Ok(true)
        });

        // exec
        let report = erase(&db, &stream, &request(by_email(), false))
            .await
            .expect("erased");

        // check
        assert_eq!(report.record, Some(ErasureId(9)));
        assert_eq!(
            report
                .orders
                .iter()
                .map(OrderUid::as_str)
                .collect::<Vec<_>>(),
            ["ann-1", "ann-2"]
        );
        assert_eq!(report.rejected, [RejectedId::new(5).expect("id")]);
        assert_eq!(*deleted.lock().expect("lock"), [11, 12, 20]);
        assert_eq!(report.stream_messages.len(), 3);
    }

    #[tokio::test]
    async fn a_dry_run_lists_what_it_finds_and_changes_nothing() {
        let mut batch = MockErasureBatch::new();
        batch
            .expect_matching()
            .with(eq(by_email()), eq(usize::MAX))
            .times(1)
            .returning(|_, _| Ok(vec![matched(order("ann-1", "ann@example.com", ""), 11)]));
        batch
            .expect_rejected()
            .times(1)
            .returning(|_, _| Ok(vec![rejected_copy(5, 20, b"bytes")]));
        batch.expect_commit().never();
        let mut db = database(vec![batch]);
        db.expect_open_record().never();
        db.expect_close_record().never();
        let mut stream = stream_holding(vec![(11, order_bytes("ann-1"))]);
        stream.expect_delete().never();

        let report = erase(&db, &stream, &request(by_email(), true))
            .await
            .expect("listed");

        assert_eq!(report.record, None);
        assert_eq!(report.orders[0].as_str(), "ann-1");
        assert_eq!(report.rejected, [RejectedId::new(5).expect("id")]);
        assert_eq!(report.stream_messages, [(STREAM.to_owned(), 11)]);
    }

    #[tokio::test]
    async fn a_message_the_stream_holds_for_another_order_or_another_payload_is_left_alone() {
        let mut first = MockErasureBatch::new();
        first
            .expect_matching()
            .times(1)
            .returning(|_, _| Ok(vec![matched(order("ann-1", "ann@example.com", ""), 11)]));
        first.expect_rejected().returning(|_, _| {
            Ok(vec![
                rejected_copy(5, 20, b"what was rejected"),
                rejected_copy(6, 21, b""),
            ])
        });
        first
            .expect_commit()
            .withf(|_, _, rejected, deleted| rejected.len() == 2 && *deleted == 0)
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let mut db = database(vec![first, none_left()]);
        db.expect_open_record().returning(|_, _| Ok(ErasureId(1)));
        db.expect_close_record().returning(|_| Ok(()));
        // The stream was made again: other messages at those sequences.
        let mut stream = stream_holding(vec![
            (11, order_bytes("someone-else")),
            (20, b"another message".to_vec()),
            (21, b"and another".to_vec()),
        ]);
        stream.expect_delete().never();

        let report = erase(&db, &stream, &request(by_email(), false))
            .await
            .expect("erased");

        assert!(report.stream_messages.is_empty());
        assert_eq!(report.orders.len(), 1);
    }

    #[tokio::test]
    async fn a_stream_that_does_not_answer_stops_the_erasure_before_its_batch_commits() {
        let mut first = MockErasureBatch::new();
        first
            .expect_matching()
            .returning(|_, _| Ok(vec![matched(order("ann-1", "ann@example.com", ""), 11)]));
        first.expect_rejected().returning(|_, _| Ok(vec![]));
        first.expect_commit().never();
        let mut db = database(vec![first]);
        db.expect_open_record().returning(|_, _| Ok(ErasureId(1)));
        db.expect_close_record().never();
        let mut stream = stream_holding(vec![(11, order_bytes("ann-1"))]);
        stream
            .expect_delete()
            .returning(|_, _| Err(StreamError("timed out".into())));

        let failed = erase(&db, &stream, &request(by_email(), false))
            .await
            .expect_err("stopped");

        assert!(matches!(failed.why, ErasureError::Stream(_)));
        assert_eq!(failed.done.record, Some(ErasureId(1)));
        assert!(failed.done.orders.is_empty(), "the batch was not committed");
    }

    #[tokio::test]
    async fn an_order_matched_again_after_its_erasure_ends_the_run_instead_of_looping() {
        let again = || {
            let mut batch = MockErasureBatch::new();
            batch
                .expect_matching()
                .returning(|_, _| Ok(vec![matched(order("ann-1", "ann@example.com", ""), 11)]));
            batch.expect_rejected().returning(|_, _| Ok(vec![]));
            batch.expect_commit().returning(|_, _, _, _| Ok(()));
            batch
        };
        let mut db = database(vec![again(), again()]);
        db.expect_open_record().returning(|_, _| Ok(ErasureId(1)));
        let mut stream = stream_holding(vec![]);
        stream.expect_delete().never();

        let failed = erase(&db, &stream, &request(by_email(), false))
            .await
            .expect_err("stopped");

        assert!(
            failed.why.to_string().contains("matched again"),
            "{}",
            failed.why
        );
        assert_eq!(failed.done.orders.len(), 1);
    }

    #[tokio::test]
    async fn a_database_fault_while_finding_is_returned_with_what_was_done() {
        let mut first = MockErasureBatch::new();
        first.expect_matching().returning(|_, _| Err(unavailable()));
        let mut db = database(vec![first]);
        db.expect_open_record().returning(|_, _| Ok(ErasureId(3)));

        let failed = erase(&db, &MockStreamMessages::new(), &request(by_email(), false))
            .await
            .expect_err("stopped");

        assert!(matches!(
            failed.why,
            ErasureError::Repository(RepositoryError::Unavailable(_))
        ));
        assert_eq!(failed.done.record, Some(ErasureId(3)));
    }
}

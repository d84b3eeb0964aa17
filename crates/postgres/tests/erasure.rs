//! PgErasures against a real PostgreSQL: what an erasure writes (rows and
//! document alike), finds, deletes, records and announces, and what the
//! repository then says of the erased orders. The stream is a fake here
//! (the app's tests erase from a real one).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use orders_domain::{
    ERASED, ErasureRequest, ErasureTarget, Notice, Order, OrderEvents, OrderQuery, OrderReads,
    OrderStore, OrderUid, Recorded, RejectReason, Rejection, SaveOutcome, SearchKey, StreamError,
    StreamMessages, erase,
};
use orders_postgres::{
    PgErasures, PgOrderEvents, PgOrderRepository, PoolSettings, connect_pool, migrate,
};
use orders_testkit::{TestDb, order_value};

const WAIT: Duration = Duration::from_secs(10);

async fn repository() -> (TestDb, PgOrderRepository) {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
    (db, PgOrderRepository::new(pool))
}

fn order(uid: &str, n: u64, email: &str, phone: &str) -> Order {
    let mut value = order_value(uid, n);
    value["delivery"]["email"] = email.into();
    value["delivery"]["phone"] = phone.into();
    value["customer_id"] = format!("customer-of-{email}").into();
    Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid order")
}

fn rejection(sequence: u64, uid: Option<&str>, payload: &str) -> Rejection {
    Rejection {
        reason: RejectReason::InvalidField,
        detail: "delivery.city: missing".into(),
        order_uid: uid.map(str::to_owned),
        subject: "orders".into(),
        stream: "ORDERS".into(),
        stream_sequence: Some(sequence),
        headers: Some("NATS/1.0\nX-Trace: 1".into()),
        payload: Bytes::from(payload.to_owned()),
    }
}

/// A stream that holds nothing: the database's side alone.
struct EmptyStream;

#[async_trait]
impl StreamMessages for EmptyStream {
    async fn payload(&self, _: &str, _: u64) -> Result<Option<Bytes>, StreamError> {
        Ok(None)
    }
    async fn delete(&self, _: &str, _: u64) -> Result<bool, StreamError> {
        Ok(false)
    }
}

fn request(kind: &str, value: &str, dry_run: bool) -> ErasureRequest {
    ErasureRequest {
        target: ErasureTarget::parse(kind, value).expect("target"),
        reason: "request 7".into(),
        orders_stream: "ORDERS".into(),
        dry_run,
    }
}

fn uids(list: &[&str]) -> Vec<OrderUid> {
    list.iter()
        .map(|u| OrderUid::parse(u).expect("uid"))
        .collect()
}

/// Erases the order `uid` (a test's setup), the stream aside.
async fn erase_order(repo: &PgOrderRepository, uid: &str) {
    erase(
        &PgErasures::new(repo.pool().clone()),
        &EmptyStream,
        &request("order_uid", uid, false),
    )
    .await
    .expect("erased");
}

async fn found_by(repo: &PgOrderRepository, key: SearchKey) -> usize {
    repo.list_recent(&OrderQuery::by(key), 100, None)
        .await
        .expect("search")
        .len()
}

#[tokio::test]
async fn an_erasure_by_email_writes_rows_and_documents_alike_deletes_the_rejected_rows_and_records_no_value()
 {
    // setup: two orders to one email (in two cases), one of them stored
    // before documents were kept; another person's order; rejected rows
    // of the first, holding the second's phone, and someone else's
    let (db, repo) = repository().await;
    let ann = order("ann-1", 1, "Ann@Example.com", "+7 900 000-00-01");
    let ann2 = order("ann-2", 2, "ann@example.com", "+7 900 000-00-02");
    let bob = order("bob-1", 3, "bob@example.com", "+7 900 000-00-03");
    let originals = [ann.clone(), ann2.clone(), bob.clone()];
    repo.save(&orders_testkit::new_orders(&originals))
        .await
        .expect("save");
    let client = db.client().await;
    client
        .execute(
            "UPDATE order_info SET document = NULL WHERE order_uid = 'ann-2'",
            &[],
        )
        .await
        .expect("an order from before V5");
    for r in [
        rejection(10, Some("ann-1"), "{\"order_uid\":\"ann-1\""),
        rejection(11, None, "{\"delivery\":{\"phone\":\"+7 900 000-00-02\"}"),
        rejection(12, None, "{\"delivery\":{\"email\":\"bob@example.com\"}"),
    ] {
        repo.record_rejection(&r).await.expect("rejection");
    }

    // exec
    let report = erase(
        &PgErasures::new(repo.pool().clone()),
        &EmptyStream,
        &request("email", "ANN@example.com", false),
    )
    .await
    .expect("erased");

    // check: the orders and the rejected rows erasure found
    assert_eq!(report.orders, uids(&["ann-1", "ann-2"]));
    let left: Vec<i64> = client
        .query(
            "SELECT stream_sequence FROM rejected_messages ORDER BY id",
            &[],
        )
        .await
        .expect("rejected")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [12], "only bob's rejected row is left");
    // each erased order's document is Order::erased of it, and its rows
    // (read with the document set aside) say the same
    for original in &originals[..2] {
        let uid = &original.order_uid;
        let document = repo.find_json(uid).await.expect("find").expect("kept");
        assert_eq!(document, original.clone().erased().to_json());
        client
            .execute(
                "UPDATE order_info SET document = NULL WHERE order_uid = $1",
                &[&uid.as_str()],
            )
            .await
            .expect("set the document aside");
        let from_rows = repo.find_json(uid).await.expect("find").expect("kept");
        assert_eq!(from_rows, document, "rows and document agree for {uid}");
    }
    let untouched = repo.find_json(&bob.order_uid).await.expect("find");
    assert_eq!(untouched, Some(Bytes::from(bob.to_json())));
    // search by what was erased finds nothing; the other person still is
    assert_eq!(
        found_by(&repo, SearchKey::Email("ann@example.com".into())).await,
        0
    );
    assert_eq!(
        found_by(&repo, SearchKey::Phone("+79000000002".into())).await,
        0
    );
    assert_eq!(
        found_by(
            &repo,
            SearchKey::CustomerId("customer-of-Ann@Example.com".into())
        )
        .await,
        0
    );
    assert_eq!(
        found_by(&repo, SearchKey::Email("bob@example.com".into())).await,
        1
    );
    // the record: reason, kind, uids, counts, finished; no erased value
    let record = client
        .query_one(
            "SELECT reason, matched_by, orders, order_uids, rejected_messages, \
             finished_at IS NOT NULL, erasures::text FROM erasures",
            &[],
        )
        .await
        .expect("one record");
    assert_eq!(record.get::<_, &str>(0), "request 7");
    assert_eq!(record.get::<_, &str>(1), "email");
    assert_eq!(record.get::<_, i32>(2), 2);
    assert_eq!(record.get::<_, Vec<String>>(3), ["ann-1", "ann-2"]);
    assert_eq!(record.get::<_, i32>(4), 2);
    assert!(record.get::<_, bool>(5), "finished");
    let text = record.get::<_, String>(6).to_lowercase();
    for value in ["ann@example.com", "000-00-0", "customer-of"] {
        assert!(!text.contains(value), "the record holds {value}: {text}");
    }
    // the repository knows them erased
    let mut erased = repo.erased_orders().await.expect("erased orders");
    erased.sort();
    assert_eq!(erased, uids(&["ann-1", "ann-2"]));
}

#[tokio::test]
async fn a_message_with_an_erased_uid_is_erased_whatever_it_holds_and_nothing_is_stored() {
    // setup: the sample, erased by its uid
    let (_db, repo) = repository().await;
    let sample = order("sample-1", 1, "ann@example.com", "+7 900 000-00-01");
    repo.save(&orders_testkit::new_orders(std::slice::from_ref(&sample)))
        .await
        .expect("save");
    erase_order(&repo, "sample-1").await;
    let erased_document = repo.find_json(&sample.order_uid).await.expect("find");

    // exec: the original again, and another order with that uid, in one
    // batch with a new order
    let other = order("sample-1", 2, "eve@example.com", "+1");
    let new = order("new-1", 3, "new@example.com", "+2");
    let outcomes = repo
        .save(&orders_testkit::new_orders(&[sample.clone(), other, new]))
        .await
        .expect("save");

    // check
    assert_eq!(
        outcomes,
        [
            SaveOutcome::Erased,
            SaveOutcome::Erased,
            SaveOutcome::Stored
        ]
    );
    assert_eq!(
        repo.find_json(&sample.order_uid).await.expect("find"),
        erased_document
    );
    assert_eq!(
        erased_document.map(|d| Order::parse(&d).expect("order").delivery.email),
        Some(ERASED.to_owned())
    );
}

#[tokio::test]
async fn a_dry_run_and_a_second_run_change_nothing_and_each_batch_is_announced_once() {
    // setup: a listener that hears this database, and three orders of one
    // customer
    let (db, repo) = repository().await;
    let orders: Vec<Order> = (0..3)
        .map(|n| order(&format!("c-{n}"), n, "c@example.com", "+3"))
        .collect();
    repo.save(&orders_testkit::new_orders(&orders))
        .await
        .expect("save");
    let eraser = PgErasures::new(repo.pool().clone());
    let mut events = PgOrderEvents::new(&db.url, "test-replica").expect("url");
    let listening = tokio::spawn(async move {
        let notice = tokio::time::timeout(WAIT, events.next()).await;
        (notice, events)
    });
    // The listener connects on its first `next`: wait until it listens.
    orders_testkit::eventually("the listener listens", WAIT, || async {
        db.count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'test-replica listener' AND query LIKE 'LISTEN%'")
            .await
            == 1
    })
    .await;
    let customer = orders[0].customer_id.clone();

    // exec: a dry run, the erasure, and the same erasure again
    let dry = erase(
        &eraser,
        &EmptyStream,
        &request("customer_id", &customer, true),
    )
    .await
    .expect("dry run");
    let documents_after_dry_run = db
        .count("SELECT count(*) FROM order_info WHERE erased_at IS NULL")
        .await;
    let records_after_dry_run = db.count("SELECT count(*) FROM erasures").await;
    let first = erase(
        &eraser,
        &EmptyStream,
        &request("customer_id", &customer, false),
    )
    .await
    .expect("erased");
    let again = erase(
        &eraser,
        &EmptyStream,
        &request("customer_id", &customer, false),
    )
    .await
    .expect("erased again");

    // check
    assert_eq!(dry.orders, uids(&["c-0", "c-1", "c-2"]));
    assert_eq!(dry.record, None);
    assert_eq!((documents_after_dry_run, records_after_dry_run), (3, 0));
    assert_eq!(first.orders.len(), 3);
    assert!(again.orders.is_empty(), "erased orders match no more");
    assert_eq!(db.count("SELECT count(*) FROM erasures").await, 2);
    let (notice, mut events) = listening.await.expect("listener");
    assert_eq!(
        notice.expect("announced in time"),
        Some(Notice::Erased(uids(&["c-0", "c-1", "c-2"])))
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "the dry run and the empty run announced nothing"
    );
}

#[tokio::test]
async fn replay_never_chooses_an_erased_row_which_has_nothing_to_send() {
    use orders_postgres::replay::{ReplayFilter, replayable};
    // setup: an erased rejection (no bytes) and an ordinary one
    let (db, repo) = repository().await;
    let erased = Rejection {
        reason: RejectReason::Erased,
        headers: None,
        ..rejection(5, Some("ann-1"), "")
    };
    repo.record_rejection(&erased).await.expect("rejection");
    repo.record_rejection(&rejection(6, None, "{"))
        .await
        .expect("rejection");
    let client = db.client().await;
    let ids: Vec<i64> = client
        .query("SELECT id FROM rejected_messages ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();

    // exec: by time, by reason, by id
    let since = ReplayFilter {
        since: Some(time::OffsetDateTime::UNIX_EPOCH),
        ..ReplayFilter::default()
    };
    let by_reason = ReplayFilter {
        reason: Some(RejectReason::Erased),
        again: true,
        ..ReplayFilter::default()
    };
    let by_id = ReplayFilter {
        ids: ids.clone(),
        again: true,
        ..ReplayFilter::default()
    };
    let db = &db;
    let chosen = |f| async move {
        replayable(&db.client().await, &f)
            .await
            .expect("replayable")
            .iter()
            .map(|r| r.reason.clone())
            .collect::<Vec<_>>()
    };

    // check
    assert_eq!(chosen(since).await, ["invalid_field"]);
    assert!(chosen(by_reason).await.is_empty());
    assert_eq!(chosen(by_id).await, ["invalid_field"]);
}

#[tokio::test]
async fn a_rejected_message_naming_an_erased_order_is_kept_as_erased_without_its_bytes() {
    // setup: ann-1 stored then erased; bob-1 stored and kept
    let (db, repo) = repository().await;
    let ann = order("ann-1", 1, "ann@example.com", "+7 900 000-00-01");
    let bob = order("bob-1", 2, "bob@example.com", "+7 900 000-00-02");
    repo.save(&orders_testkit::new_orders(&[ann, bob]))
        .await
        .expect("save");
    erase_order(&repo, "ann-1").await;

    // exec: a malformed copy of each, as a producer might resend them
    let of_ann = repo
        .record_rejection(&rejection(
            20,
            Some("ann-1"),
            "{\"order_uid\":\"ann-1\",\"email\":\"ann@example.com\"",
        ))
        .await
        .expect("rejection");
    let of_bob = repo
        .record_rejection(&rejection(21, Some("bob-1"), "{\"order_uid\":\"bob-1\""))
        .await
        .expect("rejection");

    // check: ann's row says erased and keeps nothing of the message; bob's is as sent
    assert_eq!((of_ann, of_bob), (Recorded::Erased, Recorded::Kept));
    let rows = db
        .client()
        .await
        .query(
            "SELECT reason, detail, headers, payload FROM rejected_messages ORDER BY stream_sequence",
            &[],
        )
        .await
        .expect("rows");
    let row = |i: usize| -> (String, String, Option<String>, Vec<u8>) {
        (
            rows[i].get(0),
            rows[i].get(1),
            rows[i].get(2),
            rows[i].get(3),
        )
    };
    let (reason, detail, headers, payload) = row(0);
    assert_eq!(reason, "erased");
    assert!(!detail.contains("ann@example.com"), "{detail}");
    assert_eq!((headers, payload), (None, Vec::new()));
    let (reason, _, headers, payload) = row(1);
    assert_eq!(reason, "invalid_field");
    assert!(headers.is_some());
    assert_eq!(payload, b"{\"order_uid\":\"bob-1\"");
}

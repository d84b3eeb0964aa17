//! `order-service erase` against two running replicas that share one
//! database, each with its cache: what lookups and searches answer on
//! both before and after, the rejected rows and stream messages it
//! deletes, its record, a dry run, and a message that would bring an
//! erased order back.

mod support;

use std::process::Output;
use std::time::Duration;

use orders_domain::StreamMessages as _;
use orders_nats::JetStreamMessages;
use orders_testkit::{eventually, get, order_value};
use serde_json::Value;
use support::{TestApp, spawn_app, spawn_beside};

const BIN: &str = env!("CARGO_BIN_EXE_order-service");

/// What the service promises: every replica's cache drops an erased order
/// within this long of the erasure's commit.
const CACHES_DROP_WITHIN: Duration = Duration::from_secs(1);

/// `order-service erase ARGS` on `app`'s database and stream.
async fn erase(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("erase")
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("NATS_URL", &app.stream.url)
        .env("NATS_STREAM", &app.stream.stream)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("order-service erase runs")
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An order of the sample's shape delivered to `email` and `phone`.
fn order(uid: &str, n: u64, email: &str, phone: &str) -> Value {
    let mut order = order_value(uid, n);
    order["delivery"]["email"] = email.into();
    order["delivery"]["phone"] = phone.into();
    order
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// Publishes `body` on `app`'s stream and returns its sequence.
async fn publish(app: &TestApp, body: Vec<u8>, headers: async_nats::HeaderMap) -> u64 {
    app.js
        .publish_with_headers(app.stream.subject.clone(), headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("broker ack")
        .sequence
}

/// `/order?order_uid=UID` on `app`: the status and the delivery's email.
async fn email_of(app: &TestApp, uid: &str) -> (u16, String) {
    let (status, body) = get(app.addr, &format!("/order?order_uid={uid}")).await;
    let order: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let email = order["delivery"]["email"].as_str().unwrap_or_default();
    (status, email.to_owned())
}

/// How many orders `/orders?QUERY` lists on `app`.
async fn found(app: &TestApp, query: &str) -> usize {
    let (status, body) = get(app.addr, &format!("/orders?{query}")).await;
    assert_eq!(status, 200, "/orders?{query}");
    let page: Value = serde_json::from_slice(&body).expect("json");
    page["orders"].as_array().expect("orders").len()
}

/// The sequences of the stream's messages that `sequences` names and the
/// stream still holds.
async fn held(app: &TestApp, sequences: &[u64]) -> Vec<u64> {
    let messages = JetStreamMessages::new(app.stream.client().await);
    let mut held = Vec::new();
    for &sequence in sequences {
        if messages
            .payload(&app.stream.stream, sequence)
            .await
            .expect("the stream answers")
            .is_some()
        {
            held.push(sequence);
        }
    }
    held
}

async fn rejected_sequences(app: &TestApp) -> Vec<i64> {
    app.db
        .client()
        .await
        .query(
            "SELECT stream_sequence FROM rejected_messages ORDER BY stream_sequence",
            &[],
        )
        .await
        .expect("rejected")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Publishes `body`, a message for the erased order `uid`, on `app`'s
/// stream with a header naming the person, and checks how it ends: the
/// `rows`-th row of `rejected_messages`, `erased`, with no payload bytes
/// and no headers, and the message deleted from the stream.
async fn sent_again_ends_erased(app: &TestApp, body: Vec<u8>, uid: &str, rows: i64) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Customer", "ann@example.com");
    let sequence = publish(app, body, headers).await;
    app.wait_rows("rejected_messages", rows).await;
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT reason, order_uid, octet_length(payload), headers \
             FROM rejected_messages WHERE stream_sequence = $1",
            &[&(sequence as i64)],
        )
        .await
        .expect("the row of the message sent again");
    assert_eq!(row.get::<_, &str>(0), "erased");
    assert_eq!(row.get::<_, Option<&str>>(1), Some(uid));
    assert_eq!(row.get::<_, i32>(2), 0, "no payload bytes");
    assert_eq!(row.get::<_, Option<&str>>(3), None, "no headers");
    eventually(
        "the message deleted from the stream",
        Duration::from_secs(10),
        || async move { held(app, &[sequence]).await.is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_reaches_both_replicas_caches_and_searches_the_rejected_rows_and_the_stream() {
    // setup: two replicas on one database; A takes the orders from its
    // stream. Ann has two orders, one email in two cases; Bob one.
    let a = spawn_app().await;
    let b = spawn_beside(&a).await;
    let ann1 = order("ann-1", 1, "ann@example.com", "+7 900 000-00-01");
    let ann2 = order("ann-2", 2, "Ann@Example.com", "+7 900 000-00-02");
    let bob = order("bob-1", 3, "bob@example.com", "+7 900 000-00-03");
    let none = async_nats::HeaderMap::new;
    let mut sequences = Vec::new();
    for o in [&ann1, &ann2, &bob] {
        sequences.push(publish(&a, bytes(o), none()).await);
    }
    a.wait_stored(3).await;
    // The rejected rows: ann-1's (a conflict), one that holds ann-2's
    // email as stored (no order in it), and one of no one's.
    let mut conflict = ann1.clone();
    conflict["payment"]["amount"] = 1.into();
    sequences.push(publish(&a, bytes(&conflict), none()).await);
    let holds_email = br#"{"delivery": {"email": "Ann@Example.com"}}"#.to_vec();
    sequences.push(publish(&a, holds_email, none()).await);
    sequences.push(publish(&a, b"not json".to_vec(), none()).await);
    a.wait_rows("rejected_messages", 3).await;
    let [s_ann1, _, s_bob, _, s_email, s_other] = sequences[..] else {
        unreachable!("six messages")
    };
    // Both replicas answer Ann's orders, and cache them.
    for app in [&a, &b] {
        assert_eq!(
            email_of(app, "ann-1").await,
            (200, "ann@example.com".into())
        );
        assert_eq!(
            email_of(app, "ann-2").await,
            (200, "Ann@Example.com".into())
        );
        assert_eq!(found(app, "email=ann%40example.com").await, 2);
        assert_eq!(found(app, "phone=%2B79000000002").await, 1);
    }

    // exec 1: a dry run
    let dry = erase(
        &a,
        &[
            "--email",
            "ANN@example.COM",
            "--reason",
            "ticket 7",
            "--dry-run",
        ],
    )
    .await;

    // check 1: it lists what it would do, and changes nothing
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let listed = lines(&dry.stdout);
    for line in [
        "order\tann-1".to_owned(),
        "order\tann-2".to_owned(),
        format!("stream_message\t{}\t{s_ann1}", a.stream.stream),
        format!("stream_message\t{}\t{s_email}", a.stream.stream),
    ] {
        assert!(listed.contains(&line), "{line:?} not in {listed:?}");
    }
    assert_eq!(
        listed
            .iter()
            .filter(|l| l.starts_with("rejected_message\t"))
            .count(),
        2,
        "{listed:?}"
    );
    assert!(String::from_utf8_lossy(&dry.stderr).contains("nothing changed"));
    assert_eq!(
        held(&a, &sequences).await,
        sequences,
        "the stream holds all"
    );
    assert_eq!(rejected_sequences(&a).await.len(), 3);
    assert_eq!(a.db.count("SELECT count(*) FROM erasures").await, 0);
    for app in [&a, &b] {
        assert_eq!(
            email_of(app, "ann-1").await,
            (200, "ann@example.com".into())
        );
    }

    // exec 2: the erasure
    let erased = erase(&a, &["--email", "ANN@example.COM", "--reason", "ticket 7"]).await;

    // check 2: both replicas' caches drop Ann's orders within a second;
    // lookups answer them erased, searches no longer find them
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    for app in [&a, &b] {
        eventually(
            "the erased orders answered erased",
            CACHES_DROP_WITHIN,
            || async move {
                email_of(app, "ann-1").await == (200, "[erased]".into())
                    && email_of(app, "ann-2").await == (200, "[erased]".into())
            },
        )
        .await;
    }
    for app in [&a, &b] {
        assert_eq!(found(app, "email=ann%40example.com").await, 0);
        assert_eq!(found(app, "phone=%2B79000000001").await, 0);
        assert_eq!(found(app, "phone=%2B79000000002").await, 0);
        assert_eq!(
            found(app, "customer_id=test").await,
            1,
            "Bob's, the sample's customer"
        );
        assert_eq!(
            email_of(app, "bob-1").await,
            (200, "bob@example.com".into())
        );
        let (_, body) = get(app.addr, "/order?order_uid=ann-2").await;
        let text = String::from_utf8_lossy(&body);
        for personal in [
            "Ann@",
            "900 000",
            "Test Testov",
            "Kiryat Mozkin",
            "WBILMTESTTRACK",
        ] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
        let erased: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(erased["payment"]["amount"], ann2["payment"]["amount"]);
    }
    // the rejected rows: Ann's two gone, the other kept; the stream holds
    // only Bob's order and the other
    assert_eq!(rejected_sequences(&a).await, [s_other as i64]);
    assert_eq!(held(&a, &sequences).await, [s_bob, s_other]);
    // the record: no erased value, nor any of the person's
    let record = a
        .db
        .client()
        .await
        .query_one(
            "SELECT matched_by, orders, order_uids, stream_messages, erasures::text FROM erasures",
            &[],
        )
        .await
        .expect("one record");
    assert_eq!(record.get::<_, &str>(0), "email");
    assert_eq!(record.get::<_, i32>(1), 2);
    assert_eq!(record.get::<_, Vec<String>>(2), ["ann-1", "ann-2"]);
    assert_eq!(record.get::<_, i32>(3), 4);
    let text = record.get::<_, String>(4).to_lowercase();
    assert!(
        !text.contains("ann@example.com") && !text.contains("000-00"),
        "{text}"
    );

    // exec 3 and check 3: a producer sends Ann's first order again, with
    // headers; then a malformed copy of her second (its city missing),
    // which would otherwise be kept whole as invalid_field. Each ends the
    // same way, and the orders stay erased on both replicas.
    sent_again_ends_erased(&a, bytes(&ann1), "ann-1", 2).await;
    let mut malformed = ann2.clone();
    malformed["delivery"]
        .as_object_mut()
        .expect("delivery")
        .remove("city");
    sent_again_ends_erased(&a, bytes(&malformed), "ann-2", 3).await;
    for app in [&a, &b] {
        assert_eq!(email_of(app, "ann-1").await, (200, "[erased]".into()));
        assert_eq!(email_of(app, "ann-2").await, (200, "[erased]".into()));
    }
    assert_eq!(
        a.metric("orders_messages_rejected_total{reason=\"erased\"}")
            .await,
        2
    );
    assert_eq!(
        b.metric("orders_messages_rejected_total{reason=\"erased\"}")
            .await,
        0
    );
    a.shutdown.cancel();
    b.shutdown.cancel();
}

#[tokio::test]
async fn erase_takes_exactly_one_key_and_a_reason_and_says_what_is_wrong() {
    // setup: the service's database and stream, with nothing in them
    let app = spawn_app().await;

    for (args, says) in [
        (&["--reason", "r"][..], "required"),
        (
            &["--email", "a@b", "--phone", "+1", "--reason", "r"][..],
            "cannot be used with",
        ),
        (&["--email", "a@b"][..], "--reason"),
        (&["--email", "a@b", "--reason", " "][..], "empty"),
        (&["--email", "nobody", "--reason", "r"][..], "@"),
        (&["--phone", "none", "--reason", "r"][..], "no digits"),
        (&["--order-uid", "a b", "--reason", "r"][..], "order_uid"),
    ] {
        // exec
        let out = erase(&app, args).await;

        // check
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let none = erase(&app, &["--customer-id", "nobody", "--reason", "r"]).await;
    assert!(
        none.status.success(),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    assert!(none.stdout.is_empty());
    assert!(String::from_utf8_lossy(&none.stderr).contains("erased 0 orders"));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM erasures WHERE orders = 0")
            .await,
        1
    );
    app.shutdown.cancel();
}

//! Finding orders and listing rejected messages on a real PostgreSQL: the
//! right rows, in the right order, page by page, every kind of search
//! served by an index on a table of 100,000 orders, and phones and emails
//! compared in one normal form, the same in Rust and in SQL.

use bytes::Bytes;
use orders_domain::{
    DIGIT_ZEROS, Order, OrderCursor, OrderQuery, OrderReads, OrderStore, RejectReason, RejectedId,
    RejectedReads, Rejection, SearchKey, normalize_email, normalize_phone,
};
use orders_postgres::search::{
    NORMALIZED_EMAIL, NORMALIZED_PHONE, Statement, list_orders, list_rejected,
};
use orders_postgres::{PgOrderRepository, PoolSettings, connect_pool, migrate};
use orders_testkit::{TestDb, order_value};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

async fn repository() -> (TestDb, PgOrderRepository) {
    let db = TestDb::new().await;
    migrate(&db.url).await.expect("migrations");
    let pool = connect_pool(&db.url, PoolSettings::default()).expect("pool");
    (db, PgOrderRepository::new(pool))
}

fn key(name: &str, value: &str) -> SearchKey {
    SearchKey::parse(name, value)
        .expect("a key name")
        .expect("a valid value")
}

/// The uids `query` lists, page after page of `limit`.
async fn all_pages(repo: &PgOrderRepository, query: &OrderQuery, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut before: Option<OrderCursor> = None;
    loop {
        let page = repo
            .list_recent(query, limit, before.clone())
            .await
            .expect("a page");
        seen.extend(page.iter().map(|s| s.order_uid.to_string()));
        match page.last() {
            Some(last) if page.len() == limit => before = Some(last.cursor.clone()),
            _ => return seen,
        }
    }
}

/// What SQL's normal form (`NORMALIZED_PHONE` or `NORMALIZED_EMAIL`)
/// makes of each of `raws`, in one round trip.
async fn in_sql(client: &tokio_postgres::Client, form: &str, raws: &[String]) -> Vec<String> {
    let column = if form == NORMALIZED_PHONE {
        "phone"
    } else {
        "email"
    };
    let sql = format!(
        "SELECT {form} FROM unnest($1::text[]) WITH ORDINALITY AS d({column}, n) ORDER BY n"
    );
    client
        .query(&sql, &[&raws])
        .await
        .expect("normalize")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Every decimal digit of Unicode (each run of [`DIGIT_ZEROS`], and
/// ASCII's), alone and inside a phone.
fn every_digit() -> Vec<String> {
    let zeros = DIGIT_ZEROS.iter().copied().chain(['0']);
    let digits: Vec<char> = zeros
        .flat_map(|zero| (0..10).map(move |d| char::from_u32(u32::from(zero) + d).expect("char")))
        .collect();
    let mut raws: Vec<String> = digits.iter().map(|c| c.to_string()).collect();
    raws.extend(digits.iter().map(|c| format!("+7 ({c}00) 1{c}2-3")));
    raws
}

#[tokio::test]
async fn the_phone_normal_form_is_the_same_in_rust_and_in_sql() {
    let (db, _repo) = repository().await;
    let client = db.client().await;
    let mut raws: Vec<String> = [
        "+7 (900) 123-45-67",
        "8-900-123.45.67 ext. 9",
        "+972 0000 000 ++",
        "tel:+1\u{a0}202\t555\n0100",
        // Digits of other scripts and full-width digits: their ASCII
        // digits; a full-width plus, a superscript two: dropped.
        "\u{663}\u{664}\u{665} \u{FF14}\u{FF15} \u{FF0B}1 \u{6F9} \u{B2}",
        "",
        "no digits at all",
        "\u{1f4de} +44 20 7946 0958",
    ]
    .map(str::to_owned)
    .into();
    raws.extend(every_digit());

    let sql = in_sql(&client, NORMALIZED_PHONE, &raws).await;

    for (raw, in_sql) in raws.iter().zip(&sql) {
        assert_eq!(*in_sql, normalize_phone(raw), "{raw:?}");
    }
    assert_eq!(sql.len(), raws.len());
    // Every digit is one: nothing of the table is lost on either side.
    for (raw, key) in raws.iter().zip(&sql).skip(8).take(770) {
        assert_eq!(key.len(), 1, "{raw:?} became {key:?}");
    }
}

#[tokio::test]
async fn the_email_normal_form_is_the_same_in_rust_and_in_sql() {
    let (db, _repo) = repository().await;
    let client = db.client().await;
    let raws: Vec<String> = [
        "Ann@Example.COM",
        // Kelvin sign, dotted capital I, dotless i, sharp s and its
        // capital, final sigma, Cyrillic, fullwidth A: none of them ASCII.
        "\u{212A}elly@example.com",
        "\u{130}nci@example.com",
        "\u{131}NCI@EXAMPLE.COM",
        "stra\u{DF}e@\u{1E9E}.de",
        "\u{3A3}\u{3C3}\u{3C2}@x",
        "\u{416}\u{436}@x",
        "\u{FF21}@x",
        "\u{C9}LISE@example.com",
        "",
    ]
    .map(str::to_owned)
    .into();

    let sql = in_sql(&client, NORMALIZED_EMAIL, &raws).await;

    for (raw, in_sql) in raws.iter().zip(&sql) {
        assert_eq!(*in_sql, normalize_email(raw), "{raw:?}");
    }
}

/// Characters a phone or an email may hold, the troublesome ones often:
/// ASCII digits and letters, '+', separators, every kind of Unicode digit,
/// letters whose case Unicode folds to ASCII, and any character at all
/// (PostgreSQL's text holds no NUL, so neither does a stored value).
fn troublesome_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::char::range('0', '9'),
        prop::char::range('A', 'Z'),
        prop::char::range('a', 'z'),
        prop::sample::select(vec![
            '+', ' ', '-', '(', ')', '.', '@', '\u{FF0B}', '\u{A0}'
        ]),
        (prop::sample::select(DIGIT_ZEROS.to_vec()), 0u32..10)
            .prop_map(|(zero, d)| char::from_u32(u32::from(zero) + d).expect("char")),
        prop::sample::select(vec![
            '\u{212A}', '\u{130}', '\u{131}', '\u{DF}', '\u{1E9E}', '\u{17F}', '\u{3A3}', '\u{B2}',
            '\u{2163}', '\u{FF21}', '\u{0301}', '\u{200F}', '\u{202E}',
        ]),
        any::<char>().prop_filter("no NUL", |c| *c != '\0'),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normal_forms_agree_on_generated_strings() {
    let (db, _repo) = repository().await;
    let client = db.client().await;
    // 64 cases of 64 strings each: a few thousand strings in 64 round trips.
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strings = prop::collection::vec(
        prop::collection::vec(troublesome_char(), 0..24).prop_map(String::from_iter),
        64,
    );

    let outcome = runner.run(&strings, |raws| {
        let handle = tokio::runtime::Handle::current();
        for (form, rust) in [
            (NORMALIZED_PHONE, normalize_phone as fn(&str) -> String),
            (NORMALIZED_EMAIL, normalize_email),
        ] {
            let sql = tokio::task::block_in_place(|| handle.block_on(in_sql(&client, form, &raws)));
            for (raw, in_sql) in raws.iter().zip(&sql) {
                prop_assert_eq!(in_sql, &rust(raw), "{} of {:?}", form, raw);
            }
        }
        Ok(())
    });

    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_search_never_finds_a_value_that_differs_after_normalization() {
    // setup: phones with a non-ASCII digit, emails with non-ASCII letters
    let (_db, repo) = repository().await;
    let stored = [
        // "+7 (900) 1" then ARABIC-INDIC TWO, "3-45-67": +79001234567
        ("arabic-two", "+7 (900) 1\u{662}3-45-67", "ann@example.com"),
        // fullwidth digits throughout: +79007654321
        (
            "fullwidth",
            "+7 \u{FF19}\u{FF10}\u{FF10} \u{FF17}\u{FF16}\u{FF15} \u{FF14}\u{FF13} \u{FF12}\u{FF11}",
            "Ann@Example.COM",
        ),
        ("kelvin", "+1 555 0100", "\u{212A}elly@example.com"),
        ("dotted-i", "+1 555 0101", "\u{130}nci@example.com"),
        ("e-acute", "+1 555 0102", "\u{C9}LISE@example.com"),
    ];
    let orders: Vec<Order> = stored
        .iter()
        .enumerate()
        .map(|(n, (uid, phone, email))| {
            let mut value = order_value(uid, n as u64 + 1);
            value["delivery"]["phone"] = json!(phone);
            value["delivery"]["email"] = json!(email);
            Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid")
        })
        .collect();
    repo.save(&orders_testkit::new_orders(&orders))
        .await
        .expect("save");
    let found = |name: &'static str, value: &'static str| {
        let repo = repo.clone();
        async move {
            let mut uids = all_pages(&repo, &OrderQuery::by(key(name, value)), 5).await;
            uids.sort();
            uids
        }
    };

    // exec and check: the same number in ASCII digits finds it ...
    assert_eq!(found("phone", "+7 900 123 45 67").await, ["arabic-two"]);
    assert_eq!(found("phone", "+79007654321").await, ["fullwidth"]);
    // ... and the shorter numbers the non-ASCII digits once left do not
    assert!(found("phone", "+7900134567").await.is_empty());
    assert!(found("phone", "+7").await.is_empty());
    // ASCII letters fold; nothing else does
    assert_eq!(
        found("email", "ANN@example.com").await,
        ["arabic-two", "fullwidth"]
    );
    for (other, exact, uid) in [
        ("kelly@example.com", "\u{212A}elly@example.com", "kelvin"),
        ("inci@example.com", "\u{130}nci@example.com", "dotted-i"),
        (
            "i\u{307}nci@example.com",
            "\u{130}NCI@EXAMPLE.COM",
            "dotted-i",
        ),
        (
            "\u{E9}lise@example.com",
            "\u{C9}lise@EXAMPLE.com",
            "e-acute",
        ),
    ] {
        assert!(
            found("email", other).await.is_empty(),
            "{other} found {uid}"
        );
        assert_eq!(found("email", exact).await, [uid], "{exact}");
    }
}

#[tokio::test]
async fn each_key_finds_exactly_its_orders_newest_first_page_by_page() {
    // setup: 12 orders of one customer (phone written three ways), 3 of another
    let (_db, repo) = repository().await;
    let mut orders = Vec::new();
    for n in 1..=15u64 {
        let mut value = order_value(&format!("find-{n:02}"), n);
        let (customer, phone, email) = if n <= 12 {
            let phone = ["+7 (900) 111-22-33", "+79001112233", "+7 900 111 22 33"][n as usize % 3];
            ("ann", phone, "Ann@Example.com")
        } else {
            ("bob", "+7 900 999 00 00", "bob@example.com")
        };
        value["customer_id"] = json!(customer);
        value["delivery"]["phone"] = json!(phone);
        value["delivery"]["email"] = json!(email);
        value["track_number"] = json!(format!("WBTRACK{n:02}"));
        value["payment"]["transaction"] = json!(format!("tx-{n:02}"));
        orders.push(Order::parse(&serde_json::to_vec(&value).expect("json")).expect("valid"));
    }
    repo.save(&orders_testkit::new_orders(&orders))
        .await
        .expect("save");
    let newest_first = |range: std::ops::RangeInclusive<u64>| -> Vec<String> {
        range.rev().map(|n| format!("find-{n:02}")).collect()
    };

    // exec and check: each key, in pages of 5
    let by = |name: &str, value: &str| OrderQuery::by(key(name, value));
    assert_eq!(
        all_pages(&repo, &by("phone", "+7-900-111-2233"), 5).await,
        newest_first(1..=12)
    );
    assert_eq!(
        all_pages(&repo, &by("email", "ann@EXAMPLE.com"), 5).await,
        newest_first(1..=12)
    );
    assert_eq!(
        all_pages(&repo, &by("customer_id", "ann"), 5).await,
        newest_first(1..=12)
    );
    assert_eq!(
        all_pages(&repo, &by("customer_id", "bob"), 5).await,
        newest_first(13..=15)
    );
    assert_eq!(
        all_pages(&repo, &by("track_number", "WBTRACK07"), 5).await,
        ["find-07"]
    );
    assert_eq!(
        all_pages(&repo, &by("transaction", "tx-14"), 5).await,
        ["find-14"]
    );

    // never a part of a value
    for (name, value) in [
        ("track_number", "WBTRACK"),
        ("track_number", "wbtrack07"),
        ("customer_id", "an"),
        ("transaction", "tx-1"),
        ("email", "ann@example"),
        ("phone", "+7900111"),
        ("phone", "89001112233"),
    ] {
        assert_eq!(
            all_pages(&repo, &by(name, value), 5).await,
            Vec::<String>::new(),
            "{name}={value}"
        );
    }

    // a span of date_created: from inclusive, to exclusive
    let date = |n: u64| orders[n as usize - 1].date_created.instant();
    let span = OrderQuery {
        key: Some(key("customer_id", "ann")),
        from: Some(date(3)),
        to: Some(date(9)),
    };
    assert_eq!(all_pages(&repo, &span, 2).await, newest_first(3..=8));
    let span = OrderQuery {
        key: None,
        from: Some(date(10)),
        to: None,
    };
    assert_eq!(all_pages(&repo, &span, 4).await, newest_first(10..=15));
}

/// Every sequential scan (with its table) and every sort in an EXPLAIN
/// (FORMAT JSON) plan.
fn nodes(plan: &Value, found: &mut Vec<String>) {
    let kind = plan["Node Type"].as_str().unwrap_or_default();
    if kind == "Seq Scan" {
        found.push(format!(
            "Seq Scan on {}",
            plan["Relation Name"].as_str().unwrap_or("?")
        ));
    }
    if kind == "Sort" || kind == "Incremental Sort" {
        found.push(kind.to_owned());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, found);
    }
}

async fn explain(client: &tokio_postgres::Client, statement: &Statement) -> (Vec<String>, Value) {
    let row = client
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) {}", statement.sql),
            &statement.params(),
        )
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", statement.sql));
    let plan: Value = row.get(0);
    let mut found = Vec::new();
    nodes(&plan[0]["Plan"], &mut found);
    (found, plan)
}

/// 100,000 orders (no items: the searches do not read them), 5 per
/// customer, 3 per phone and email, and as many rejected messages, two
/// reasons taking turns.
async fn seed(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "INSERT INTO order_info (order_uid, track_number, entry, locale, internal_signature,
                 customer_id, delivery_service, shardkey, sm_id, date_created, created_at, oof_shard)
             SELECT 'o' || g, 'WB' || lpad(g::text, 10, '0'), 'WBIL', 'en', '',
                 'customer-' || g / 5, 'meest', '9', 99,
                 to_char(timestamp '2021-01-01' + g * interval '1 minute',
                         'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                 timestamptz '2021-01-01 00:00:00Z' + g * interval '1 minute', '1'
             FROM generate_series(1, 100000) g;
             INSERT INTO delivery (order_uid, name, phone, zip, city, address, region, email)
             SELECT 'o' || g, 'Test Testov', '+7 (900) ' || lpad((g / 3)::text, 7, '0'),
                 '2639809', 'Kiryat Mozkin', 'Ploshad Mira 15', 'Kraiot',
                 'User' || g / 3 || '@Example.com'
             FROM generate_series(1, 100000) g;
             INSERT INTO payment (order_uid, transaction, request_id, currency, provider, amount,
                 payment_dt, bank, delivery_cost, goods_total, custom_fee)
             SELECT 'o' || g, 'tx' || g, '', 'USD', 'wbpay', 1817, 1637907727, 'alpha', 1500, 317, 0
             FROM generate_series(1, 100000) g;
             INSERT INTO rejected_messages (reason, detail, subject, stream, stream_sequence, payload)
             SELECT CASE WHEN g % 2 = 0 THEN 'invalid_json' ELSE 'conflict' END, 'seeded',
                 'orders', 'ORDERS', g, '{}'::bytea
             FROM generate_series(1, 100000) g;
             ANALYZE;",
        )
        .await
        .expect("seeding 100,000 orders");
}

#[tokio::test]
async fn every_search_reads_an_index_on_100000_orders() {
    // setup
    let (db, repo) = repository().await;
    let client = db.client().await;
    seed(&client).await;
    let cursor = OrderCursor::parse("1612137600000000.o50000").expect("cursor");
    let from = orders_domain::DateCreated::parse("2021-02-01T00:00:00Z")
        .expect("date")
        .instant();
    let to = orders_domain::DateCreated::parse("2021-02-02T00:00:00Z")
        .expect("date")
        .instant();
    let keys = [
        key("track_number", "WB0000054321"),
        key("customer_id", "customer-4242"),
        key("transaction", "tx777"),
        key("phone", "+79000012345"),
        key("email", "user12345@example.com"),
    ];
    // Keys in order_info walk their index in the list's order: no sort at all.
    let sorted_ok = |key: &Option<SearchKey>| {
        matches!(
            key,
            Some(SearchKey::Transaction(_) | SearchKey::Phone(_) | SearchKey::Email(_))
        )
    };

    // exec and check: each key alone, with a cursor, and with a span; no key with a span
    let mut queries: Vec<(OrderQuery, Option<&OrderCursor>)> = Vec::new();
    for key in keys {
        queries.push((OrderQuery::by(key.clone()), None));
        queries.push((OrderQuery::by(key.clone()), Some(&cursor)));
        queries.push((
            OrderQuery {
                key: Some(key),
                from: Some(from),
                to: Some(to),
            },
            None,
        ));
    }
    queries.push((OrderQuery::all(), None));
    queries.push((OrderQuery::all(), Some(&cursor)));
    queries.push((
        OrderQuery {
            key: None,
            from: Some(from),
            to: Some(to),
        },
        Some(&cursor),
    ));
    for (query, before) in &queries {
        let (found, plan) = explain(&client, &list_orders(query, 20, *before)).await;
        let bad: Vec<&String> = found
            .iter()
            .filter(|n| n.starts_with("Seq Scan") || !sorted_ok(&query.key))
            .collect();
        assert!(bad.is_empty(), "{query:?} {before:?}: {bad:?} in {plan:#}");
        // and the repository answers it
        repo.list_recent(query, 20, (*before).cloned())
            .await
            .expect("a page");
    }
    let found = repo
        .list_recent(&OrderQuery::by(key("phone", "+7 900 001 23 45")), 20, None)
        .await
        .expect("a page");
    assert_eq!(
        found
            .iter()
            .map(|s| s.order_uid.to_string())
            .collect::<Vec<_>>(),
        ["o37037", "o37036", "o37035"]
    );

    for reason in [None, Some(RejectReason::Conflict)] {
        for before in [None, RejectedId::new(5_000).ok()] {
            let (found, plan) = explain(&client, &list_rejected(reason, 20, before)).await;
            assert!(
                found.is_empty(),
                "rejected {reason:?} {before:?}: {found:?} in {plan:#}"
            );
        }
    }
}

#[tokio::test]
async fn rejected_messages_are_listed_newest_first_by_reason_with_their_bytes() {
    // setup: three rejections, one of them not UTF-8, one replayed
    let (db, repo) = repository().await;
    let rejection = |sequence: u64, reason: RejectReason, payload: &'static [u8]| Rejection {
        reason,
        detail: format!("detail {sequence}"),
        order_uid: Some(format!("uid-{sequence}")),
        subject: "orders".into(),
        stream: "ORDERS".into(),
        stream_sequence: Some(sequence),
        headers: (sequence == 2).then(|| "NATS/1.0\r\nNats-Msg-Id: x\r\n".to_owned()),
        payload: Bytes::from_static(payload),
    };
    repo.record_rejection(&rejection(1, RejectReason::InvalidJson, b"{oops"))
        .await
        .expect("record");
    repo.record_rejection(&rejection(2, RejectReason::Conflict, b"\xff\xfe binary"))
        .await
        .expect("record");
    repo.record_rejection(&rejection(3, RejectReason::InvalidJson, b"[]"))
        .await
        .expect("record");
    db.client()
        .await
        .batch_execute("UPDATE rejected_messages SET replayed_at = now() WHERE stream_sequence = 1")
        .await
        .expect("mark replayed");

    // exec
    let all = repo.list_rejected(None, 2, None).await.expect("a page");
    let rest = repo
        .list_rejected(None, 2, Some(all[1].id))
        .await
        .expect("a page");
    let invalid = repo
        .list_rejected(Some(RejectReason::InvalidJson), 10, None)
        .await
        .expect("a page");
    let binary = repo
        .find_rejected(all[1].id)
        .await
        .expect("find")
        .expect("found");

    // check
    let details = |rows: &[orders_domain::RejectedSummary]| -> Vec<String> {
        rows.iter().map(|r| r.detail.clone()).collect()
    };
    assert_eq!(details(&all), ["detail 3", "detail 2"]);
    assert_eq!(details(&rest), ["detail 1"]);
    assert_eq!(details(&invalid), ["detail 3", "detail 1"]);
    assert!(rest[0].replayed_at.is_some() && all[0].replayed_at.is_none());
    assert_eq!(all[1].size, 9);
    assert_eq!(all[1].order_uid.as_deref(), Some("uid-2"));
    assert_eq!(binary.payload.0, Bytes::from_static(b"\xff\xfe binary"));
    assert_eq!(
        binary.headers.as_deref(),
        Some("NATS/1.0\r\nNats-Msg-Id: x\r\n")
    );
    assert_eq!(binary.stream_sequence, Some(2));
    let json = serde_json::to_value(&binary).expect("json");
    assert_eq!(json["payload_encoding"], "base64");
    assert_eq!(json["reason"], "conflict");
    assert!(
        repo.find_rejected(RejectedId::new(999).expect("id"))
            .await
            .expect("find")
            .is_none()
    );
}

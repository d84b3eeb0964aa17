//! Properties of the query-string and header parsers of the routes, on
//! generated input around every bound: percent-encoding (valid, invalid,
//! NUL, bytes that are not UTF-8), repeated and unknown parameters, numbers
//! at the usize and i64 edges, dates at the year edges with every offset,
//! any Unicode. Each parser returns a value that obeys its rules or an
//! error naming the parameter; none panics.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use super::*;

/// The default 256 cases; failures are not persisted next to the source.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `text` with each byte of `escape` percent-encoded (any byte: `%00`,
/// `%FF`), the rest as it is.
fn percent_encoded(text: &str, escape: &[bool]) -> String {
    text.bytes()
        .zip(escape.iter().cycle())
        .map(|(b, &e)| {
            if e || !b.is_ascii_graphic() {
                format!("%{b:02X}")
            } else {
                char::from(b).to_string()
            }
        })
        .collect()
}

/// A number as a client may write one, around the bounds.
fn edge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "+1",
            "-1",
            "01",
            " 1",
            "1.0",
            "1e3",
            "100",
            "101",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999",
            "\u{FF11}",
            "\u{661}",
            "",
        ])
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// A date at the year edges (0000, 0001, 9999, 10000) with any offset.
fn edge_date() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["0000", "0001", "9999", "10000", "2021"]),
        prop::sample::select(vec!["01-01T00:00:00", "12-31T23:59:59", "06-15T12:00:00"]),
        prop::sample::select(vec!["", ".999999999", ".5"]),
        prop_oneof![
            Just("Z".to_owned()),
            (-1439i32..=1439).prop_map(|m| format!(
                "{}{:02}:{:02}",
                if m < 0 { '-' } else { '+' },
                m.abs() / 60,
                m.abs() % 60
            )),
        ],
    )
        .prop_map(|(year, rest, fraction, zone)| format!("{year}-{rest}{fraction}{zone}"))
}

/// Any value a parameter may carry, before encoding.
fn edge_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,70}",
        edge_number(),
        edge_date(),
        "[+0-9 ()\u{FF10}-\u{FF19}\u{660}-\u{669}-]{0,20}",
        "[a-zA-Z\u{212A}]{1,6}@[a-z]{1,6}\\.com",
        prop::sample::select(vec![
            "1637907739000000.b563feb7b2b84b6test",
            "253402300800000000.x"
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        ".{300}",
    ]
}

/// A query string: parameters with known and unknown names, repeated or
/// not, each value written plain or percent-encoded, and stray `&`, `=`,
/// `%`, `+` and `;`.
fn query(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let pair = (
        prop::sample::select(names),
        edge_value(),
        prop::collection::vec(any::<bool>(), 1..8),
    )
        .prop_map(|(name, value, escape)| format!("{name}={}", percent_encoded(&value, &escape)));
    let stray = prop::sample::select(vec!["", "&", "=", "%", "%ZZ", "+", ";", "a", "%00=%FF"])
        .prop_map(str::to_owned);
    prop::collection::vec(prop_oneof![4 => pair, 1 => stray], 0..5)
        .prop_map(|parts| parts.join("&"))
}

/// A message names a parameter: one of the query's keys, or says it is
/// unknown, or is about the span.
fn names_a_parameter(message: &str, query: &str) -> bool {
    let keys: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    !message.is_empty()
        && (keys
            .iter()
            .any(|k| !k.is_empty() && message.starts_with(k.as_str()))
            || message.starts_with("unknown parameter")
            || message.starts_with("from must be before to"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_order_uid_query_is_one_valid_uid_or_an_error_naming_order_uid(
        query in query(&["order_uid", "order_uid", "uid", "Order_uid", "order%5Fuid"]),
    ) {
        let parsed = order_uid_from_query(&query);

        let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "order_uid")
            .map(|(_, v)| v.into_owned())
            .collect();
        match parsed {
            Ok(uid) => {
                prop_assert_eq!(values.len(), 1, "{}", query);
                prop_assert_eq!(uid.as_str(), values[0].as_str());
            }
            Err(message) => {
                prop_assert!(message.contains("order_uid"), "{}: {}", query, message);
                prop_assert!(values.len() != 1 || OrderUid::parse(&values[0]).is_err(), "{}", query);
            }
        }
    }

    #[test]
    fn a_limit_is_a_whole_number_from_1_or_an_error_naming_limit(raw in edge_number()) {
        match limit_from(&raw, MAX_PAGE) {
            Ok(n) => {
                prop_assert!(n >= 1);
                prop_assert_eq!(raw.trim_start_matches('+').parse::<usize>(), Ok(n));
            }
            Err(message) => {
                prop_assert!(message.starts_with("limit: "), "{}", message);
                prop_assert!(raw.parse::<usize>().is_err() || raw.parse::<usize>() == Ok(0));
            }
        }
    }

    #[test]
    fn an_orders_query_is_a_checked_search_or_an_error_naming_the_parameter(
        query in query(&[
            "phone", "email", "track_number", "customer_id", "transaction", "from", "to",
            "limit", "before", "order_uid", "Phone",
        ]),
    ) {
        match search_from_query(&query) {
            Ok((search, limit, before)) => {
                prop_assert!(limit >= 1);
                if let Some(cursor) = before {
                    prop_assert_eq!(OrderCursor::parse(&cursor.to_string()), Ok(cursor));
                }
                if let (Some(from), Some(to)) = (search.from, search.to) {
                    prop_assert!(from < to);
                }
            }
            Err(message) => prop_assert!(names_a_parameter(&message, &query), "{}: {}", query, message),
        }
    }

    #[test]
    fn a_date_bound_is_held_in_utc_or_an_error_naming_it(
        name in prop::sample::select(vec!["from", "to"]),
        date in edge_date(),
    ) {
        let encoded: String = form_urlencoded::byte_serialize(date.as_bytes()).collect();
        let query = format!("{name}={encoded}");

        match search_from_query(&query) {
            Ok((search, _, _)) => {
                let at = if name == "from" { search.from } else { search.to };
                prop_assert!(at.is_some_and(|at| at.offset().is_utc()), "{}", date);
            }
            Err(message) => prop_assert!(message.starts_with(&format!("{name}: ")), "{}", message),
        }
    }

    #[test]
    fn a_rejected_query_is_a_reason_limit_and_id_or_an_error_naming_the_parameter(
        query in query(&["reason", "limit", "before", "id", "Reason"]),
    ) {
        match rejected_from_query(&query) {
            Ok((_, limit, before)) => {
                prop_assert!(limit >= 1);
                prop_assert!(before.is_none_or(|id| id.get() >= 1));
            }
            Err(message) => prop_assert!(names_a_parameter(&message, &query), "{}: {}", query, message),
        }
    }

    #[test]
    fn last_event_id_opens_a_stream_or_is_400_naming_the_header(
        raw in prop_oneof![
            edge_number().prop_map(String::into_bytes),
            "[ \t0-9a-z\u{FF11}]{0,25}".prop_map(String::into_bytes),
            // Any bytes a header value may hold (no control characters but tab).
            prop::collection::vec(
                any::<u8>().prop_filter("a header byte", |b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)),
                0..40,
            ),
        ],
    ) {
        let Ok(value) = HeaderValue::from_bytes(&raw) else {
            // hyper would not have let such a value in.
            return Ok(());
        };
        let mut repo = orders_domain::MockOrderReads::new();
        repo.expect_stored_since().returning(|_, _, _| Ok(Vec::new()));
        let router = Router::new(
            Arc::new(OrderService::new(
                orders_domain::Ports {
                    reads: Arc::new(repo),
                    ..orders_domain::Ports::mocks()
                },
                1 << 20,
            )),
            Arc::new(Readiness::default()),
            Arc::new(crate::report::recording::Recording::default()),
        );
        let request = Request::builder()
            .uri("/orders/events")
            .header(&LAST_EVENT_ID, value.clone())
            .body(())
            .expect("a request");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");

        let response = runtime.block_on(router.handle(request));

        let text = value.to_str().map(str::trim);
        let valid = match text {
            Ok("") => true,
            Ok(t) => EventId::parse(t).is_ok(),
            Err(_) => false,
        };
        if valid {
            prop_assert_eq!(response.status(), StatusCode::OK, "{:?}", value);
            prop_assert_eq!(
                response.headers().get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static("text/event-stream"))
            );
            // The stream (and its keep-alive timer) ends with the runtime.
            runtime.block_on(async move { drop(response) });
        } else {
            prop_assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{:?}", value);
            let body = runtime
                .block_on(http_body_util::BodyExt::collect(response.into_body()))
                .expect("a whole body")
                .to_bytes();
            let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            prop_assert!(
                error["error"].as_str().is_some_and(|e| e.starts_with("Last-Event-ID: ")),
                "{}",
                error
            );
        }
    }
}

//! Properties of the order model, checked on generated input:
//!
//! - any valid order, serialized, parses; its JSON reads back equal to what
//!   was sent, and parsing that JSON again gives an equal `Order`;
//! - `Order::parse` never panics, whatever the bytes; a JSON value that is
//!   not an object is rejected as such; and whatever a damaged order still
//!   gets accepted obeys every rule the database relies on;
//! - `OrderUid` accepts exactly the strings matching `^[A-Za-z0-9_-]{1,64}$`,
//!   through `parse` and through serde alike;
//! - one field of an order replaced by a value of a wrong type, or removed,
//!   or set to money out of range, is rejected with an error that names
//!   exactly that field (with the item's index);
//! - around every bound (dates at the year edges with every offset, counts
//!   at the i64 and u64 edges, long strings, NUL, surrogate escapes, any
//!   Unicode), a near-valid order is accepted and round-trips, or is
//!   refused naming the field it was changed in;
//! - every parser of request input the domain holds (search keys and
//!   spans, phone and email normalization, cursors, event and rejected
//!   ids) returns a value that obeys its rules or an error naming the
//!   parameter, never a panic.

use orders_domain::{
    DIGIT_ZEROS, DateCreated, EventId, InvalidDate, MAX_SEARCH_LEN, Order, OrderCursor, OrderQuery,
    OrderUid, RejectReason, RejectedId, SEARCH_KEYS, SearchKey, ValidationError, normalize_email,
    normalize_phone,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

/// Modest case counts keep the file at a few seconds in a debug build;
/// failures are not persisted to files next to the test.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The documented uid rule, written independently of the domain's code:
/// 1 to 64 characters, each an ASCII letter or digit, `_` or `-`.
fn matches_uid_pattern(raw: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (1..=64).contains(&raw.chars().count()) && raw.chars().all(allowed)
}

// ---------------------------------------------------------------------------
// Generating valid orders
// ---------------------------------------------------------------------------

/// Any text the database can hold: everything but NUL.
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

/// Money and counts: any non-negative `bigint`, edges included.
fn count() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(i64::MAX), 0..=i64::MAX]
}

/// An RFC 3339 time from year 1970 to 9999, with nanoseconds and a UTC
/// offset in whole minutes (RFC 3339 has no offset seconds).
fn rfc3339_time() -> impl Strategy<Value = String> {
    (
        0i64..=253_402_214_400,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
        -1439i32..=1439,
    )
        .prop_map(|(seconds, nanos, offset_minutes)| {
            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).expect("offset");
            let at = OffsetDateTime::from_unix_timestamp(seconds).expect("in range")
                + time::Duration::nanoseconds(i64::from(nanos));
            at.to_offset(offset).format(&Rfc3339).expect("formats")
        })
        // Shifting by the offset can leave years 0..=9999 at the edges.
        .prop_filter("representable in RFC 3339", |s| {
            DateCreated::parse(s).is_ok()
        })
}

prop_compose! {
    fn valid_item()(
        chrt_id in count(), price in count(), sale in 0i64..=100, total_price in count(),
        nm_id in count(), status in count(),
        (track_number, rid, name, size, brand) in (text(), text(), text(), text(), text()),
    ) -> Value {
        json!({
            "chrt_id": chrt_id, "track_number": track_number, "price": price, "rid": rid,
            "name": name, "sale": sale, "size": size, "total_price": total_price,
            "nm_id": nm_id, "brand": brand, "status": status,
        })
    }
}

prop_compose! {
    fn valid_delivery()(
        (name, phone, zip, city) in (text(), text(), text(), text()),
        (address, region, email) in (text(), text(), text()),
    ) -> Value {
        json!({
            "name": name, "phone": phone, "zip": zip, "city": city,
            "address": address, "region": region, "email": email,
        })
    }
}

prop_compose! {
    fn valid_payment()(
        (transaction, request_id, currency, provider, bank) in
            (text(), text(), text(), text(), text()),
        (amount, payment_dt, delivery_cost, goods_total, custom_fee) in
            (count(), count(), count(), count(), count()),
    ) -> Value {
        json!({
            "transaction": transaction, "request_id": request_id, "currency": currency,
            "provider": provider, "amount": amount, "payment_dt": payment_dt, "bank": bank,
            "delivery_cost": delivery_cost, "goods_total": goods_total, "custom_fee": custom_fee,
        })
    }
}

prop_compose! {
    /// A valid order, every value generated.
    fn valid_order()(
        uid in "[A-Za-z0-9_-]{1,64}",
        delivery in valid_delivery(),
        payment in valid_payment(),
        items in prop::collection::vec(valid_item(), 1..4),
        (track_number, entry, locale, internal_signature) in (text(), text(), text(), text()),
        (customer_id, delivery_service, shardkey, oof_shard) in (text(), text(), text(), text()),
        sm_id in count(),
        date_created in rfc3339_time(),
    ) -> Value {
        json!({
            "order_uid": uid, "track_number": track_number, "entry": entry,
            "delivery": delivery, "payment": payment, "items": items, "locale": locale,
            "internal_signature": internal_signature, "customer_id": customer_id,
            "delivery_service": delivery_service, "shardkey": shardkey, "sm_id": sm_id,
            "date_created": date_created, "oof_shard": oof_shard,
        })
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

// ---------------------------------------------------------------------------
// The fields of an order, and values of the wrong type for each
// ---------------------------------------------------------------------------

/// What a field holds, which decides what is a wrong value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// A non-negative integer (money, counts, ids).
    Count,
    Object,
    List,
}

/// A field of the sample order: where it is, how errors name it, its kind.
#[derive(Debug, Clone)]
struct Field {
    /// JSON pointer, for `Value::pointer_mut`: `/items/2/price`.
    pointer: String,
    /// The name errors use: `items[2].price`.
    path: String,
    kind: Kind,
}

/// The sample order with three items, so an error must name the right index.
fn sample_with_three_items() -> Value {
    let mut order: Value = serde_json::from_slice(SAMPLE).expect("the sample is JSON");
    let item = order["items"][0].clone();
    order["items"] = json!([item.clone(), item.clone(), item]);
    order
}

/// Every field of `value`, nested ones included, found by walking it.
fn fields_of(value: &Value) -> Vec<Field> {
    fn walk(value: &Value, pointer: &str, path: &str, out: &mut Vec<Field>) {
        let kind = match value {
            Value::String(_) => Kind::Text,
            Value::Number(_) => Kind::Count,
            Value::Object(_) => Kind::Object,
            Value::Array(_) => Kind::List,
            Value::Null | Value::Bool(_) => panic!("the sample has no {value} at {path}"),
        };
        if !path.is_empty() {
            out.push(Field {
                pointer: pointer.to_owned(),
                path: path.to_owned(),
                kind,
            });
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, &format!("{pointer}/{key}"), &child_path, out);
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    walk(
                        child,
                        &format!("{pointer}/{i}"),
                        &format!("{path}[{i}]"),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", "", &mut out);
    out
}

/// Values no field of `kind` may hold.
fn wrong_value_for(kind: Kind) -> BoxedStrategy<Value> {
    let null = Just(Value::Null).boxed();
    let boolean = any::<bool>().prop_map(Value::from).boxed();
    let integer = any::<i64>().prop_map(Value::from).boxed();
    let string = ".{0,10}".prop_map(Value::from).boxed();
    let array = prop::collection::vec(any::<i64>().prop_map(Value::from), 0..3)
        .prop_map(Value::from)
        .boxed();
    let object = Just(json!({"nested": "object"})).boxed();
    match kind {
        Kind::Text => prop_oneof![null, boolean, integer, array, object].boxed(),
        Kind::Count => prop_oneof![
            null,
            boolean,
            string,
            array,
            object,
            // Negative, fractional, or past i64::MAX (a float, then).
            (i64::MIN..0).prop_map(Value::from),
            (0i64..1_000_000).prop_map(|n| Value::from(n as f64 + 0.5)),
            (1e19f64..1e300).prop_map(Value::from),
        ]
        .boxed(),
        Kind::Object => prop_oneof![null, boolean, integer, string, array].boxed(),
        Kind::List => prop_oneof![null, boolean, integer, string, object].boxed(),
    }
}

/// Any field of the three-item sample.
fn any_field() -> impl Strategy<Value = Field> {
    prop::sample::select(fields_of(&sample_with_three_items()))
}

/// A field of the three-item sample and a wrong value for it.
fn field_and_wrong_value() -> impl Strategy<Value = (Field, Value)> {
    any_field().prop_flat_map(|field| (Just(field.clone()), wrong_value_for(field.kind)))
}

/// The error must be about `path` itself, not a field before or inside it.
fn assert_names_field(bytes: &[u8], path: &str) -> Result<(), TestCaseError> {
    match Order::parse(bytes) {
        Ok(_) => Err(TestCaseError::fail(format!("accepted with {path} broken"))),
        Err(error) => {
            let ValidationError::Fields(problems) = &error else {
                return Err(TestCaseError::fail(format!(
                    "{path}: not a field error: {error}"
                )));
            };
            prop_assert_eq!(problems.listed.len(), 1, "one problem: {}", error);
            prop_assert_eq!(problems.listed[0].path.as_str(), path, "error: {}", error);
            prop_assert_eq!(error.reason(), RejectReason::InvalidField);
            prop_assert!(
                error.to_string().starts_with(&format!("{path}: ")),
                "{}",
                error
            );
            Ok(())
        }
    }
}

/// What the database's constraints require of an accepted order.
fn assert_obeys_rules(order: &Order) -> Result<(), TestCaseError> {
    prop_assert!(matches_uid_pattern(order.order_uid.as_str()));
    prop_assert!(!order.items.is_empty());
    prop_assert!(DateCreated::parse(order.date_created.as_str()).is_ok());
    let p = &order.payment;
    let mut counts = vec![
        order.sm_id,
        p.amount,
        p.payment_dt,
        p.delivery_cost,
        p.goods_total,
        p.custom_fee,
    ];
    for item in &order.items {
        prop_assert!((0..=100).contains(&item.sale.get()), "sale {:?}", item.sale);
        counts.extend([
            item.chrt_id,
            item.price,
            item.total_price,
            item.nm_id,
            item.status,
        ]);
    }
    prop_assert!(counts.iter().all(|n| *n >= 0), "{:?}", counts);
    // Every string, wherever it sits, is free of NUL.
    let json: Value = serde_json::from_slice(&order.to_json()).expect("its own JSON");
    prop_assert!(!json.to_string().contains("\\u0000"), "a NUL got through");
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn a_valid_order_round_trips_unchanged(sent in valid_order()) {
        let bytes = serde_json::to_vec(&sent).expect("serializable");

        let order = Order::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let read_back: Value = serde_json::from_slice(&order.to_json()).expect("JSON");
        prop_assert_eq!(&read_back, &sent);
        let again = Order::parse(&order.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &order);
        assert_obeys_rules(&order)?;
    }

    #[test]
    fn unknown_fields_change_nothing(
        sent in valid_order(),
        extra in prop::collection::btree_map("x_[a-z]{1,8}", any_json(), 1..4),
    ) {
        let plain = Order::parse(&serde_json::to_vec(&sent).expect("json")).expect("valid");
        let mut padded = sent.clone();
        padded.as_object_mut().expect("object").extend(extra);

        let parsed = Order::parse(&serde_json::to_vec(&padded).expect("json"));

        prop_assert_eq!(parsed, Ok(plain));
    }

    #[test]
    fn a_wrongly_typed_field_is_rejected_naming_it((field, wrong) in field_and_wrong_value()) {
        let mut order = sample_with_three_items();
        *order.pointer_mut(&field.pointer).expect("the field exists") = wrong;

        assert_names_field(&serde_json::to_vec(&order).expect("json"), &field.path)?;
    }

    #[test]
    fn a_missing_field_is_defaulted_or_rejected_naming_it(field in any_field()) {
        // Removing an item shifts the rest; an array element is not a field.
        prop_assume!(!field.path.ends_with(']'));
        let mut order = sample_with_three_items();
        let (parent, key) = field.pointer.rsplit_once('/').expect("a pointer");
        order
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("a parent object")
            .remove(key);

        let bytes = serde_json::to_vec(&order).expect("json");

        let required = ["order_uid", "date_created", "items", "delivery", "payment"];
        if required.contains(&field.path.as_str()) {
            assert_names_field(&bytes, &field.path)?;
            let text = Order::parse(&bytes).expect_err("rejected").to_string();
            prop_assert_eq!(text, format!("{}: missing", field.path));
        } else {
            // Scalars a Go producer's `omitempty` may leave out: "" or 0.
            let decoded = Order::decode(&bytes).expect("defaulted");
            let label = field
                .path
                .replace("[0]", "[]")
                .replace("[1]", "[]")
                .replace("[2]", "[]");
            prop_assert_eq!(decoded.defaulted, vec![label.as_str()]);
            let back: Value = serde_json::from_slice(&decoded.order.to_json()).expect("json");
            let filled = back.pointer(&field.pointer).expect("filled in");
            prop_assert!(filled == &json!("") || filled == &json!(0), "{}", filled);
        }
    }

    #[test]
    fn money_out_of_bigint_range_is_rejected_naming_the_field(
        field in any_field().prop_filter("a count", |f| f.kind == Kind::Count),
        // Past i64::MAX, as exact integers JSON allows and a Value cannot hold.
        excess in 1u128..=u128::from(u64::MAX) * 4,
        negative in any::<bool>(),
    ) {
        let big = u128::from(i64::MAX as u64) + excess;
        let raw = if negative { format!("-{big}") } else { big.to_string() };
        let mut order = sample_with_three_items();
        *order.pointer_mut(&field.pointer).expect("the field exists") = json!("@@number@@");
        let text = serde_json::to_string(&order)
            .expect("json")
            .replace("\"@@number@@\"", &raw);

        assert_names_field(text.as_bytes(), &field.path)?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let _ = Order::parse(&bytes);
    }

    #[test]
    fn a_json_value_that_is_not_an_object_is_rejected_as_such(value in any_json()) {
        // An object becomes an array holding it: still JSON, not an order.
        let value = if value.is_object() { Value::from(vec![value]) } else { value };
        let bytes = serde_json::to_vec(&value).expect("json");
        let error = Order::parse(&bytes).expect_err("not an order");
        prop_assert_eq!(error.reason(), RejectReason::NotAnObject);
    }

    #[test]
    fn whatever_a_damaged_order_parses_to_obeys_the_rules(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        // Overwrite, insert or delete a few bytes of the sample.
        let mut bytes = SAMPLE.to_vec();
        for (at, byte, how) in edits {
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if let Ok(order) = Order::parse(&bytes) {
            assert_obeys_rules(&order)?;
        }
    }

    #[test]
    fn order_uid_accepts_exactly_the_pattern(
        raw in prop_oneof![
            // Around the rule: right characters, lengths 0 to 70.
            "[A-Za-z0-9_-]{0,70}",
            // Mostly right characters with near misses mixed in.
            "[A-Za-z0-9_\\-. /%'\"<>\\\\\u{0}\u{e9}\u{442}\u{1f69a}]{0,66}",
            any::<String>(),
        ],
    ) {
        let expected = matches_uid_pattern(&raw);

        let parsed = OrderUid::parse(&raw);
        let deserialized: Result<OrderUid, _> = serde_json::from_value(Value::from(raw.as_str()));

        prop_assert_eq!(parsed.is_ok(), expected, "parse({:?})", raw);
        prop_assert_eq!(deserialized.is_ok(), expected, "deserialize({:?})", raw);
        if let Ok(uid) = parsed {
            prop_assert_eq!(uid.as_str(), raw.as_str());
        }
    }
}

/// The walk finds every field the model has: a regression guard for the
/// generated cases above, which only cover what it finds.
#[test]
fn the_field_walk_covers_the_whole_model() {
    let fields = fields_of(&sample_with_three_items());
    let top = fields
        .iter()
        .filter(|f| !f.path.contains(['.', '[']))
        .count();
    let per_item = fields
        .iter()
        .filter(|f| f.path.starts_with("items[1]."))
        .count();
    assert_eq!(top, 14, "top-level fields");
    assert_eq!(per_item, 11, "fields of an item");
    assert_eq!(
        fields
            .iter()
            .filter(|f| f.path.starts_with("delivery."))
            .count(),
        7
    );
    assert_eq!(
        fields
            .iter()
            .filter(|f| f.path.starts_with("payment."))
            .count(),
        10
    );
    assert_eq!(fields.len(), 14 + 7 + 10 + 3 + 3 * 11);
}

/// Deep nesting is refused by the parser's depth limit, not by the stack.
#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    for depth in [200, 10_000, 200_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let in_a_field = format!(r#"{{"order_uid": "deep", "delivery": {nested}}}"#);
        for body in [nested.as_bytes(), in_a_field.as_bytes()] {
            let error = Order::parse(body).expect_err("rejected");
            assert_eq!(
                error.reason(),
                RejectReason::InvalidJson,
                "depth {depth}: {error}"
            );
            assert!(error.to_string().contains("recursion limit"), "{error}");
        }
    }
}

// ---------------------------------------------------------------------------
// Around every bound: dates, numbers, strings, and every parser of request
// input. Each property: no panic, and either a value that obeys the rules
// or an error that says what is wrong, naming the field or parameter.
// ---------------------------------------------------------------------------

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`), written here independently of the
/// `time` crate so the date properties have an oracle of their own.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An RFC 3339 time built around the edges, and what the service must make
/// of it: the UTC instant in microseconds, or the error.
#[derive(Debug, Clone)]
struct EdgeDate {
    text: String,
    expected: Result<i64, InvalidDate>,
}

/// The first and last microseconds held: 0001-01-01T00:00:00Z and
/// 9999-12-31T23:59:59.999999Z (crates/domain/src/dates.rs).
const FIRST_MICROS: i64 = -62_135_596_800_000_000;
const LAST_MICROS: i64 = 253_402_300_799_999_999;

prop_compose! {
    /// Years 0000, 0001, 9999 (and any), the first and last days of the
    /// year (and any day, 30 February included), the last second of a day
    /// (and a leap second), fractions of 0 to 12 digits or a thousand, and
    /// every offset from -23:59 to +23:59, or `Z`.
    fn edge_date()(
        year in prop_oneof![Just(0i64), Just(1), Just(9999), 0i64..=9999],
        (month, day) in prop_oneof![Just((1i64, 1i64)), Just((12, 31)), (1i64..=12, 1i64..=31)],
        (hour, minute, second) in prop_oneof![
            Just((0i64, 0i64, 0i64)),
            Just((23, 59, 59)),
            Just((23, 59, 60)),
            (0i64..=23, 0i64..=59, 0i64..=59),
        ],
        fraction in prop_oneof![
            Just(String::new()),
            "[0-9]{1,12}",
            Just("9".repeat(1000)),
        ],
        offset in prop_oneof![Just(None), (-1439i64..=1439).prop_map(Some), Just(Some(-1439)), Just(Some(1439))],
        separator in prop::sample::select(vec!['T', 't', ' ']),
        zulu in prop::sample::select(vec!['Z', 'z']),
    ) -> EdgeDate {
        let zone = match offset {
            None => zulu.to_string(),
            Some(m) => format!("{}{:02}:{:02}", if m < 0 { '-' } else { '+' }, m.abs() / 60, m.abs() % 60),
        };
        let dot = if fraction.is_empty() { "" } else { "." };
        let text = format!(
            "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{dot}{fraction}{zone}"
        );
        let expected = if second == 60 {
            Err(InvalidDate::LeapSecond)
        } else if day > days_in_month(year, month) {
            Err(InvalidDate::NotRfc3339)
        } else if year == 0 {
            Err(InvalidDate::Year(0))
        } else {
            let local = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
            let utc = local - offset.unwrap_or(0) * 60;
            let micros_of_second: i64 = format!("{fraction:0<6}")[..6].parse().expect("digits");
            let micros = utc * 1_000_000 + micros_of_second;
            if (FIRST_MICROS..=LAST_MICROS).contains(&micros) {
                Ok(micros)
            } else {
                Err(InvalidDate::OutOfRange)
            }
        };
        EdgeDate { text, expected }
    }
}

/// A JSON number as text, around every bound a count meets: 0, -0, ±1,
/// the i64 and u64 edges and one past them, exponents and fractions,
/// numbers beyond f64, and digit strings of any length.
fn edge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "9223372036854775806",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775807",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "1e3",
            "1E+2",
            "1e-2",
            "0e0",
            "1.0",
            "-0.0",
            "0.5",
            "9.223372036854775807e18",
            "1e400",
            "-1e400",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        "-?[1-9][0-9]{19,400}",
        Just(format!("1{}", "0".repeat(5000))),
    ]
}

/// A JSON string as text, around every bound a string meets: empty, long,
/// NUL, lone and paired surrogates as escapes, combining marks, bidi
/// controls, fullwidth and Arabic-Indic digits, noncharacters, and any
/// Unicode at all.
fn edge_string() -> impl Strategy<Value = String> {
    let quoted = |s: &str| serde_json::to_string(s).expect("a string");
    prop_oneof![
        prop::sample::select(vec![
            r#""""#.to_owned(),
            quoted(&"x".repeat(10_000)),
            quoted(&"\u{441}".repeat(5_000)),
            quoted("nul\u{0}inside"),
            r#""\u0000""#.to_owned(),
            r#""\ud800""#.to_owned(),
            r#""\udc00x""#.to_owned(),
            r#""\ud83d\ude9a""#.to_owned(),
            r#""\ud83d\u0041""#.to_owned(),
            quoted("e\u{301}\u{301}\u{301}"),
            quoted("\u{202E}cba\u{202C}\u{200F}"),
            quoted("\u{FF11}\u{FF12}\u{FF13}"),
            quoted("\u{663}\u{664}\u{665}"),
            quoted("\u{FEFF}\u{FFFF}\u{10FFFF}"),
            quoted("%00%FF%ZZ+"),
        ]),
        any::<String>().prop_map(move |s| quoted(&s)),
    ]
}

/// Any edge value, as JSON text.
fn edge_value() -> impl Strategy<Value = String> {
    prop_oneof![
        edge_number(),
        edge_string(),
        edge_date().prop_map(|d| serde_json::to_string(&d.text).expect("a string")),
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "[]",
            "{}",
            "[0]",
            r#"{"a":1}"#
        ])
        .prop_map(str::to_owned),
    ]
}

/// The three-item sample with the field at `pointer` set to the JSON text
/// `raw`, written in place (a `Value` cannot hold every number).
fn sample_with_raw(pointer: &str, raw: &str) -> String {
    let mut order = sample_with_three_items();
    *order.pointer_mut(pointer).expect("the field exists") = json!("@@edge@@");
    serde_json::to_string(&order)
        .expect("json")
        .replace("\"@@edge@@\"", raw)
}

/// What an accepted order must be: valid by every rule, and the same order
/// again when its own JSON is decoded.
fn assert_accepted_round_trips(order: &Order) -> Result<(), TestCaseError> {
    assert_obeys_rules(order)?;
    let again = Order::decode(&order.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&again.order, order);
    Ok(())
}

/// A rejection must say what is wrong: a non-empty message, and, when it
/// is about fields, every problem inside the field that was changed.
fn assert_clear_rejection(error: &ValidationError, path: &str) -> Result<(), TestCaseError> {
    prop_assert!(!error.to_string().is_empty());
    if let ValidationError::Fields(problems) = error {
        prop_assert!(!problems.listed.is_empty(), "{}", error);
        for problem in &problems.listed {
            prop_assert!(
                problem.path.starts_with(path) && !problem.problem.is_empty(),
                "{} for a change of {}",
                error,
                path
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn dates_at_the_year_edges_with_every_offset_are_held_or_refused_as_the_oracle_says(
        date in edge_date(),
    ) {
        let parsed = DateCreated::parse(&date.text);

        match (&parsed, &date.expected) {
            (Ok(held), Ok(micros)) => {
                prop_assert_eq!(held.unix_micros(), *micros, "{}", date.text);
                prop_assert_eq!(held.instant().offset(), UtcOffset::UTC);
                prop_assert_eq!(held.as_str(), date.text.as_str());
                // Its cursor is one the listing takes.
                let cursor = format!("{micros}.uid");
                prop_assert!(OrderCursor::parse(&cursor).is_ok(), "{}", cursor);
            }
            (Err(got), Err(want)) => prop_assert_eq!(got, want, "{}", date.text),
            _ => prop_assert!(false, "{}: {:?}, expected {:?}", date.text, parsed, date.expected),
        }
        // The same date in a message, and as a bound of /orders.
        let message = sample_with_raw("/date_created", &serde_json::to_string(&date.text).expect("json"));
        match Order::parse(message.as_bytes()) {
            Ok(order) => {
                prop_assert!(date.expected.is_ok());
                assert_accepted_round_trips(&order)?;
            }
            Err(error) => {
                prop_assert!(date.expected.is_err());
                assert_names_field(message.as_bytes(), "date_created")?;
                prop_assert_eq!(error.reason(), RejectReason::InvalidField);
            }
        }
        for name in ["from", "to"] {
            let taken = OrderQuery::all().take(name, &date.text).expect("a search parameter");
            match taken {
                Ok(()) => prop_assert!(date.expected.is_ok()),
                Err(e) => prop_assert!(e.to_string().starts_with(&format!("{name}: ")), "{}", e),
            }
        }
    }

    #[test]
    fn a_count_at_the_number_edges_is_the_number_or_refused_naming_it(
        field in count_field(),
        raw in edge_number(),
    ) {
        let message = sample_with_raw(&field.pointer, &raw);

        match Order::decode(message.as_bytes()) {
            Ok(decoded) => {
                assert_accepted_round_trips(&decoded.order)?;
                let back: Value = serde_json::from_slice(&decoded.order.to_json()).expect("json");
                let value = back.pointer(&field.pointer).and_then(Value::as_i64).expect("a count");
                // Whatever the spelling, the value is the number sent.
                let sent: f64 = raw.parse().expect("a number");
                prop_assert!(value >= 0 && (value as f64 - sent).abs() <= sent.abs() * 1e-15, "{} read as {}", raw, value);
            }
            Err(error) => {
                // A plain whole number from 0 to i64::MAX (to 100 for a
                // sale) is always taken.
                let plain = raw.bytes().all(|b| b.is_ascii_digit());
                let most = if field.path.ends_with(".sale") { 100 } else { i64::MAX };
                let fits = raw.parse::<i64>().is_ok_and(|n| n <= most);
                prop_assert!(!(plain && fits), "{} refused: {}", raw, error);
                assert_clear_rejection(&error, &field.path)?;
                prop_assert!(
                    matches!(error.reason(), RejectReason::InvalidField | RejectReason::InvalidJson),
                    "{}",
                    error
                );
            }
        }
    }

    #[test]
    fn a_near_valid_order_is_accepted_and_round_trips_or_refused_naming_the_field(
        field in any_field(),
        raw in edge_value(),
    ) {
        let message = sample_with_raw(&field.pointer, &raw);

        match Order::decode(message.as_bytes()) {
            Ok(decoded) => assert_accepted_round_trips(&decoded.order)?,
            Err(error) => assert_clear_rejection(&error, &field.path)?,
        }
    }

    #[test]
    fn search_parameters_are_a_checked_key_or_an_error_naming_the_parameter(
        params in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "track_number", "customer_id", "transaction", "phone", "email", "from",
                    "to", "limit", "before", "Phone", "phone ", "", "order_uid",
                ]),
                prop_oneof![
                    any::<String>(),
                    "[+0-9 ()\\-]{0,20}",
                    ".{0,300}",
                    "[a-zA-Z\u{212A}\u{130}]{1,8}@[a-z.]{1,8}",
                    edge_date().prop_map(|d| d.text),
                    phone_with_any_digits(),
                ],
            ),
            1..4,
        ),
    ) {
        let mut query = OrderQuery::all();
        for (name, value) in &params {
            match query.take(name, value) {
                None => prop_assert!(
                    !SEARCH_KEYS.contains(name) && *name != "from" && *name != "to",
                    "{} not taken",
                    name
                ),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    let message = e.to_string();
                    prop_assert!(
                        params.iter().any(|(n, _)| !n.is_empty() && message.starts_with(n)),
                        "{:?}: {}",
                        params,
                        message
                    );
                    return Ok(());
                }
            }
        }
        let Ok(query) = query.finish() else {
            // Only a span can be wrong as a whole.
            let from = params.iter().any(|(n, _)| *n == "from");
            prop_assert!(from);
            return Ok(());
        };
        if let Some(key) = &query.key {
            let (name, sent) = params.iter().find(|(n, _)| *n == key.name()).expect("sent");
            prop_assert!((1..=MAX_SEARCH_LEN).contains(&sent.chars().count()), "{}", name);
            match key {
                SearchKey::Phone(phone) => {
                    prop_assert!(phone.bytes().all(|b| b == b'+' || b.is_ascii_digit()), "{}", phone);
                    prop_assert!(phone.bytes().any(|b| b.is_ascii_digit()));
                    prop_assert_eq!(phone, &normalize_phone(sent));
                }
                SearchKey::Email(email) => {
                    prop_assert!(email.contains('@') && !email.bytes().any(|b| b.is_ascii_uppercase()));
                    prop_assert_eq!(email, &normalize_email(sent));
                }
                other => prop_assert_eq!(other.value(), sent.as_str()),
            }
        }
        for at in [query.from, query.to].into_iter().flatten() {
            prop_assert_eq!(at.offset(), UtcOffset::UTC);
        }
    }

    #[test]
    fn phones_and_emails_normalize_char_by_char_and_once(
        raw in prop_oneof![any::<String>(), phone_with_any_digits()],
        split in any::<prop::sample::Index>(),
    ) {
        let phone = normalize_phone(&raw);
        let email = normalize_email(&raw);

        prop_assert!(phone.bytes().all(|b| b == b'+' || b.is_ascii_digit()));
        prop_assert_eq!(normalize_phone(&phone), phone.clone());
        prop_assert_eq!(normalize_email(&email), email.clone());
        prop_assert_eq!(email.chars().count(), raw.chars().count());
        for (a, b) in raw.chars().zip(email.chars()) {
            prop_assert!(a == b || (a.is_ascii_uppercase() && b == a.to_ascii_lowercase()));
        }
        // Char by char: a phone's digits do not depend on their neighbours.
        let chars: Vec<char> = raw.chars().collect();
        let at = split.index(chars.len() + 1);
        let (left, right): (String, String) = (chars[..at].iter().collect(), chars[at..].iter().collect());
        prop_assert_eq!(phone, normalize_phone(&left) + &normalize_phone(&right));
        // Every kind of digit counts as one digit.
        let digits = raw
            .chars()
            .filter(|c| c.is_ascii_digit() || DIGIT_ZEROS.iter().any(|z| (*z..=char::from_u32(u32::from(*z) + 9).expect("char")).contains(c)))
            .count();
        prop_assert_eq!(normalize_phone(&raw).bytes().filter(u8::is_ascii_digit).count(), digits);
    }

    #[test]
    fn cursors_around_the_bounds_are_held_or_refused_naming_before(
        micros in prop_oneof![
            prop::sample::select(vec![
                FIRST_MICROS - 1, FIRST_MICROS, FIRST_MICROS + 1, LAST_MICROS - 1, LAST_MICROS,
                LAST_MICROS + 1, i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX, 0, -1, 1,
            ])
            .prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "-0", "+5", "007", "", "-", " 5", "5 ", "1e3", "\u{FF15}", "\u{665}",
                "99999999999999999999999999",
            ])
            .prop_map(str::to_owned),
        ],
        uid in prop_oneof!["[A-Za-z0-9_-]{1,64}", any::<String>(), Just("a.b".to_owned())],
    ) {
        let raw = format!("{micros}.{uid}");

        match OrderCursor::parse(&raw) {
            Ok(cursor) => {
                prop_assert!((FIRST_MICROS..=LAST_MICROS).contains(&cursor.created_micros));
                prop_assert!(matches_uid_pattern(cursor.order_uid.as_str()));
                prop_assert_eq!(OrderCursor::parse(&cursor.to_string()), Ok(cursor));
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("before: "));
                // A canonical number in range and a valid uid are never refused.
                let canonical = micros.parse::<i64>().is_ok_and(|n| n.to_string() == micros);
                let held = micros.parse::<i64>().is_ok_and(|n| (FIRST_MICROS..=LAST_MICROS).contains(&n));
                prop_assert!(!(canonical && held && matches_uid_pattern(&uid)), "{} refused", raw);
            }
        }
    }

    #[test]
    fn ids_at_the_number_edges_are_ids_or_refused(
        raw in prop_oneof![
            edge_number(),
            prop::sample::select(vec![
                "", "+1", " 1", "1 ", "00000000000000000001", "\u{FF11}", "\u{661}", "0x10", "1_000",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ],
    ) {
        // The oracle: decimal ASCII digits only, the value within i64.
        let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
        let value = digits.then(|| raw.trim_start_matches('0').to_owned());
        let fits = |v: &str| v.len() < 19 || (v.len() == 19 && v <= "9223372036854775807");
        let as_i64 = value.filter(|v| fits(v)).map(|v| if v.is_empty() { 0 } else { v.parse::<i64>().expect("fits") });

        match EventId::parse(&raw) {
            Ok(id) => prop_assert_eq!(Some(id.get()), as_i64, "{}", raw),
            Err(e) => {
                prop_assert!(e.to_string().contains("Last-Event-ID"));
                // Only a 20-digit spelling of a small number is refused beyond the oracle.
                prop_assert!(as_i64.is_none() || raw.len() > 19, "{} refused", raw);
            }
        }
        match RejectedId::parse(&raw) {
            Ok(id) => prop_assert_eq!(Some(id.get()), as_i64.filter(|n| *n >= 1), "{}", raw),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(as_i64.is_none_or(|n| n < 1), "{} refused", raw);
            }
        }
    }
}

/// Any count field of the three-item sample (money, ids, a sale).
fn count_field() -> impl Strategy<Value = Field> {
    let counts = fields_of(&sample_with_three_items())
        .into_iter()
        .filter(|f| f.kind == Kind::Count)
        .collect::<Vec<_>>();
    prop::sample::select(counts)
}

/// A phone written with digits of any script.
fn phone_with_any_digits() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            (prop::sample::select(DIGIT_ZEROS.to_vec()), 0u32..10)
                .prop_map(|(zero, d)| char::from_u32(u32::from(zero) + d).expect("char")),
            prop::char::range('0', '9'),
            prop::sample::select(vec![
                '+', ' ', '-', '(', ')', '\u{FF0B}', '\u{B2}', '\u{2163}'
            ]),
        ],
        0..20,
    )
    .prop_map(String::from_iter)
}

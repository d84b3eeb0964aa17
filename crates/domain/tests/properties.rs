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
//!   exactly that field (with the item's index).

use orders_domain::{DateCreated, Order, OrderUid, RejectReason, ValidationError};
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

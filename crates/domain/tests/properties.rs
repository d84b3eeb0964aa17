//! Properties of the domain, checked on generated input: parsing never
//! panics, a valid order survives serialization unchanged, the uid rule is
//! exactly `^[A-Za-z0-9_-]{1,64}$`, and a wrongly typed field is rejected
//! with an error that names it.

use orders_domain::{Order, OrderUid};
use proptest::prelude::*;
use serde_json::{Value, json};

const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

fn sample() -> Value {
    serde_json::from_slice(SAMPLE).expect("the sample is JSON")
}

fn money() -> impl Strategy<Value = i64> {
    0..=i64::MAX
}

prop_compose! {
    fn an_item()(
        chrt_id in money(), price in money(), sale in 0i64..=100, total_price in money(),
        nm_id in money(), status in money(),
        name in any::<String>(), brand in any::<String>(), size in any::<String>(),
        rid in any::<String>(), track in any::<String>(),
    ) -> Value {
        json!({
            "chrt_id": chrt_id, "track_number": track, "price": price, "rid": rid,
            "name": name, "sale": sale, "size": size, "total_price": total_price,
            "nm_id": nm_id, "brand": brand, "status": status,
        })
    }
}

prop_compose! {
    /// A valid order: the sample's shape with generated values.
    fn an_order()(
        uid in "[A-Za-z0-9_-]{1,64}",
        items in prop::collection::vec(an_item(), 1..5),
        amount in money(), payment_dt in money(), sm_id in money(),
        delivery_cost in money(), goods_total in money(), custom_fee in money(),
        name in any::<String>(), email in any::<String>(), city in any::<String>(),
        customer in any::<String>(), locale in any::<String>(),
        seconds in 0i64..4_000_000_000,
    ) -> Value {
        let mut order = sample();
        order["order_uid"] = json!(uid);
        order["items"] = json!(items);
        order["payment"]["amount"] = json!(amount);
        order["payment"]["payment_dt"] = json!(payment_dt);
        order["payment"]["delivery_cost"] = json!(delivery_cost);
        order["payment"]["goods_total"] = json!(goods_total);
        order["payment"]["custom_fee"] = json!(custom_fee);
        order["sm_id"] = json!(sm_id);
        order["delivery"]["name"] = json!(name);
        order["delivery"]["email"] = json!(email);
        order["delivery"]["city"] = json!(city);
        order["customer_id"] = json!(customer);
        order["locale"] = json!(locale);
        let date = time::OffsetDateTime::from_unix_timestamp(seconds).expect("in range");
        order["date_created"] = json!(
            date.format(&time::format_description::well_known::Rfc3339).expect("formats")
        );
        order
    }
}

/// Every field path of the sample whose value is a scalar, with a value of
/// another JSON type.
fn wrongly_typed_fields() -> Vec<(String, Value)> {
    fn walk(path: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&here, v, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), v, out);
                }
            }
            Value::String(_) => out.push((path.to_owned(), json!(12))),
            Value::Number(_) => out.push((path.to_owned(), json!("12"))),
            _ => out.push((path.to_owned(), json!([]))),
        }
    }
    let mut out = Vec::new();
    walk("", &sample(), &mut out);
    out
}

/// The sample with the field at `path` (as `a.b[0].c`) set to `value`.
fn replaced(path: &str, value: Value) -> Value {
    let mut order = sample();
    let mut target = &mut order;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        target = &mut target[key];
        if let Some(i) = index {
            target = &mut target[i];
        }
    }
    *target = value;
    order
}

fn uid_rule(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
        let _ = Order::parse(&bytes);
    }

    #[test]
    fn parsing_never_panics_on_mangled_orders(cut in 0usize..900, byte in any::<u8>()) {
        let mut bytes = SAMPLE.to_vec();
        let at = cut % bytes.len();
        bytes[at] = byte;
        let _ = Order::parse(&bytes);
        let _ = Order::parse(&SAMPLE[..at]);
    }

    #[test]
    fn a_valid_order_round_trips_unchanged(order in an_order()) {
        let bytes = serde_json::to_vec(&order).expect("serializable");
        let parsed = Order::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again: Value = serde_json::from_slice(&parsed.to_json()).expect("JSON");
        prop_assert_eq!(&again, &order);
        let reparsed = Order::parse(&parsed.to_json()).expect("its own JSON parses");
        prop_assert_eq!(reparsed, parsed);
    }

    #[test]
    fn the_uid_rule_is_exactly_the_documented_one(raw in "[A-Za-z0-9_\\-%' <>.\u{e9}\u{0}]{0,70}") {
        prop_assert_eq!(OrderUid::parse(&raw).is_ok(), uid_rule(&raw), "{:?}", raw);
    }

    #[test]
    fn any_string_is_a_uid_only_by_the_rule(raw in any::<String>()) {
        prop_assert_eq!(OrderUid::parse(&raw).is_ok(), uid_rule(&raw));
    }
}

#[test]
fn every_wrongly_typed_field_is_rejected_naming_it() {
    let fields = wrongly_typed_fields();
    assert!(fields.len() > 30, "the sample has its fields");
    for (path, value) in fields {
        let order = replaced(&path, value.clone());
        let bytes = serde_json::to_vec(&order).expect("serializable");
        let err = Order::parse(&bytes).expect_err(&format!("{path} = {value} accepted"));
        let text = err.to_string();
        // Item fields may be named with their index or without it.
        let leaf = path.rsplit('.').next().expect("a leaf");
        assert!(
            text.contains(&path) || text.contains(leaf),
            "{path} = {value}: the error does not name the field: {text}"
        );
    }
}

use std::fmt;

use serde_json::{Map, Value};

use crate::order::{DateCreated, Delivery, Item, Order, Payment};
use crate::uid::OrderUid;

/// Why a message is not an order. The message always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is larger than the configured limit; it was never parsed.
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The body is not valid UTF-8 JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A field is missing or wrong.
    #[error("{path}: {problem}")]
    Field { path: String, problem: String },
}

/// A short, stable name for each kind of rejection: a metrics label and the
/// `reason` column's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooLarge,
    InvalidJson,
    NotAnObject,
    InvalidField,
    /// Same uid as a stored order, different content.
    Conflict,
    /// The database refused the order as a data error (a constraint the
    /// validation did not foresee). Retrying cannot help.
    Refused,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidJson => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::InvalidField => "invalid_field",
            Self::Conflict => "conflict",
            Self::Refused => "refused",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ValidationError {
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::TooLarge { .. } => RejectReason::TooLarge,
            Self::Json(_) => RejectReason::InvalidJson,
            Self::NotAnObject(_) => RejectReason::NotAnObject,
            Self::Field { .. } => RejectReason::InvalidField,
        }
    }

    fn field(path: String, problem: impl Into<String>) -> Self {
        Self::Field {
            path,
            problem: problem.into(),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read, with the path that names its fields in errors.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn get(&self, name: &str) -> Result<&'a Value, ValidationError> {
        self.map
            .get(name)
            .ok_or_else(|| ValidationError::field(self.path_of(name), "missing"))
    }

    fn string(&self, name: &str) -> Result<String, ValidationError> {
        match self.get(name)? {
            Value::String(s) if s.contains('\0') => Err(ValidationError::field(
                self.path_of(name),
                "must not contain NUL characters",
            )),
            Value::String(s) => Ok(s.clone()),
            other => Err(ValidationError::field(
                self.path_of(name),
                format!("expected a string, got {}", kind_of(other)),
            )),
        }
    }

    /// A non-negative integer that fits PostgreSQL's `bigint`.
    fn count(&self, name: &str) -> Result<i64, ValidationError> {
        self.get(name)?.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
            ValidationError::field(
                self.path_of(name),
                format!("expected a non-negative integer of at most {}", i64::MAX),
            )
        })
    }

    fn object(&self, name: &str) -> Result<Fields<'a>, ValidationError> {
        match self.get(name)? {
            Value::Object(map) => Ok(Fields {
                map,
                path: self.path_of(name),
            }),
            other => Err(ValidationError::field(
                self.path_of(name),
                format!("expected an object, got {}", kind_of(other)),
            )),
        }
    }
}

pub(crate) fn parse_order(bytes: &[u8]) -> Result<Order, ValidationError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ValidationError::Json(e.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(ValidationError::NotAnObject(kind_of(&value)));
    };
    let root = Fields {
        map,
        path: String::new(),
    };

    let raw_uid = root.string("order_uid")?;
    let order_uid = OrderUid::try_from(raw_uid)
        .map_err(|e| ValidationError::field("order_uid".to_owned(), e.to_string()))?;
    let date_text = root.string("date_created")?;
    let date_created = DateCreated::parse(&date_text).map_err(|_| {
        ValidationError::field(
            "date_created".to_owned(),
            "expected an RFC 3339 time such as 2021-11-26T06:22:19Z",
        )
    })?;

    Ok(Order {
        order_uid,
        track_number: root.string("track_number")?,
        entry: root.string("entry")?,
        delivery: parse_delivery(&root.object("delivery")?)?,
        payment: parse_payment(&root.object("payment")?)?,
        items: parse_items(&root)?,
        locale: root.string("locale")?,
        internal_signature: root.string("internal_signature")?,
        customer_id: root.string("customer_id")?,
        delivery_service: root.string("delivery_service")?,
        shardkey: root.string("shardkey")?,
        sm_id: root.count("sm_id")?,
        date_created,
        oof_shard: root.string("oof_shard")?,
    })
}

fn parse_delivery(d: &Fields<'_>) -> Result<Delivery, ValidationError> {
    Ok(Delivery {
        name: d.string("name")?,
        phone: d.string("phone")?,
        zip: d.string("zip")?,
        city: d.string("city")?,
        address: d.string("address")?,
        region: d.string("region")?,
        email: d.string("email")?,
    })
}

fn parse_payment(p: &Fields<'_>) -> Result<Payment, ValidationError> {
    Ok(Payment {
        transaction: p.string("transaction")?,
        request_id: p.string("request_id")?,
        currency: p.string("currency")?,
        provider: p.string("provider")?,
        amount: p.count("amount")?,
        payment_dt: p.count("payment_dt")?,
        bank: p.string("bank")?,
        delivery_cost: p.count("delivery_cost")?,
        goods_total: p.count("goods_total")?,
        custom_fee: p.count("custom_fee")?,
    })
}

fn parse_items(root: &Fields<'_>) -> Result<Vec<Item>, ValidationError> {
    let list = match root.get("items")? {
        Value::Array(list) if list.is_empty() => {
            return Err(ValidationError::field(
                "items".to_owned(),
                "expected at least one item",
            ));
        }
        Value::Array(list) => list,
        other => {
            return Err(ValidationError::field(
                "items".to_owned(),
                format!("expected an array, got {}", kind_of(other)),
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, value)| {
            let path = format!("items[{i}]");
            let Value::Object(map) = value else {
                return Err(ValidationError::field(
                    path,
                    format!("expected an object, got {}", kind_of(value)),
                ));
            };
            parse_item(&Fields { map, path })
        })
        .collect()
}

fn parse_item(it: &Fields<'_>) -> Result<Item, ValidationError> {
    let sale = it.count("sale")?;
    if sale > 100 {
        return Err(ValidationError::field(
            it.path_of("sale"),
            "expected a percentage from 0 to 100",
        ));
    }
    Ok(Item {
        chrt_id: it.count("chrt_id")?,
        track_number: it.string("track_number")?,
        price: it.count("price")?,
        rid: it.string("rid")?,
        name: it.string("name")?,
        sale,
        size: it.string("size")?,
        total_price: it.count("total_price")?,
        nm_id: it.count("nm_id")?,
        brand: it.string("brand")?,
        status: it.count("status")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn sample() -> Value {
        serde_json::from_slice(SAMPLE).expect("the sample is JSON")
    }

    fn parse_value(v: &Value) -> Result<Order, ValidationError> {
        Order::parse(&serde_json::to_vec(v).expect("serializable"))
    }

    fn error_of(v: &Value) -> String {
        parse_value(v).expect_err("must be rejected").to_string()
    }

    #[test]
    fn sample_order_parses_and_serializes_back_to_the_same_json() {
        let order = Order::parse(SAMPLE).expect("the sample is valid");

        assert_eq!(order.order_uid.as_str(), "b563feb7b2b84b6test");
        assert_eq!(order.items.len(), 1);
        let back: Value = serde_json::from_slice(&order.to_json()).expect("json");
        assert_eq!(back, sample());
    }

    #[test]
    fn money_must_be_a_non_negative_integer() {
        for bad in [
            json!(-1),
            json!(1.5),
            json!("1817"),
            json!(null),
            json!(1e300),
        ] {
            let mut v = sample();
            v["payment"]["amount"] = bad.clone();
            assert!(
                error_of(&v).starts_with("payment.amount: expected a non-negative integer"),
                "{bad}: {}",
                error_of(&v)
            );
        }
    }

    #[test]
    fn huge_integers_are_rejected_not_wrapped() {
        let text = String::from_utf8(SAMPLE.to_vec())
            .expect("utf8")
            .replace("\"amount\": 1817", "\"amount\": 99999999999999999999999");
        let err = Order::parse(text.as_bytes()).expect_err("too big");
        assert!(err.to_string().starts_with("payment.amount:"), "{err}");
    }

    #[test]
    fn each_missing_field_is_named() {
        let v = sample();
        let Value::Object(root) = &v else {
            unreachable!()
        };
        for key in root.keys() {
            let mut broken = v.clone();
            broken.as_object_mut().expect("object").remove(key);
            assert!(error_of(&broken).starts_with(&format!("{key}: ")), "{key}");
        }
        for nested in ["delivery", "payment"] {
            for key in v[nested].as_object().expect("object").keys() {
                let mut broken = v.clone();
                broken[nested].as_object_mut().expect("object").remove(key);
                assert_eq!(error_of(&broken), format!("{nested}.{key}: missing"));
            }
        }
        for key in v["items"][0].as_object().expect("object").keys() {
            let mut broken = v.clone();
            broken["items"][0]
                .as_object_mut()
                .expect("object")
                .remove(key);
            assert_eq!(error_of(&broken), format!("items[0].{key}: missing"));
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let mut v = sample();
        v["delivery"]["city"] = json!(42);
        assert_eq!(
            error_of(&v),
            "delivery.city: expected a string, got a number"
        );

        let mut v = sample();
        v["payment"] = json!([]);
        assert_eq!(error_of(&v), "payment: expected an object, got an array");

        let mut v = sample();
        v["items"] = json!({});
        assert_eq!(error_of(&v), "items: expected an array, got an object");

        let mut v = sample();
        v["items"] = json!([1]);
        assert_eq!(error_of(&v), "items[0]: expected an object, got a number");
    }

    #[test]
    fn an_order_needs_an_item() {
        let mut v = sample();
        v["items"] = json!([]);
        assert_eq!(error_of(&v), "items: expected at least one item");
    }

    #[test]
    fn sale_is_a_percentage() {
        let mut v = sample();
        v["items"][0]["sale"] = json!(101);
        assert_eq!(
            error_of(&v),
            "items[0].sale: expected a percentage from 0 to 100"
        );
    }

    #[test]
    fn date_created_must_be_rfc3339() {
        for bad in [
            "2021-11-26 06:22:19",
            "yesterday",
            "2021-02-30T00:00:00Z",
            "",
        ] {
            let mut v = sample();
            v["date_created"] = json!(bad);
            assert!(
                error_of(&v).starts_with("date_created: expected an RFC 3339"),
                "{bad}"
            );
        }
        let mut v = sample();
        v["date_created"] = json!("2021-11-26T09:22:19.123+03:00");
        assert_eq!(
            parse_value(&v).expect("valid").date_created.as_str(),
            "2021-11-26T09:22:19.123+03:00"
        );
    }

    #[test]
    fn order_uid_rules_are_named() {
        let mut v = sample();
        v["order_uid"] = json!("x'; DROP TABLE order_info;--");
        assert_eq!(
            error_of(&v),
            "order_uid: order_uid may hold only letters, digits, '_' and '-'"
        );
        v["order_uid"] = json!("");
        assert_eq!(error_of(&v), "order_uid: order_uid is empty");
    }

    #[test]
    fn nul_characters_are_rejected() {
        let mut v = sample();
        v["delivery"]["name"] = json!("a\u{0}b");
        assert_eq!(
            error_of(&v),
            "delivery.name: must not contain NUL characters"
        );
    }

    #[test]
    fn not_json_not_an_object_and_deep_nesting_are_rejected() {
        assert_eq!(
            Order::parse(b"null").map_err(|e| e.reason()),
            Err(RejectReason::NotAnObject)
        );
        assert_eq!(
            Order::parse(b"[1]").map_err(|e| e.to_string()),
            Err("expected a JSON object, got an array".to_owned())
        );
        for bad in [&b""[..], b"{", b"\xff\xfe", &SAMPLE[..SAMPLE.len() / 2]] {
            assert_eq!(
                Order::parse(bad).map_err(|e| e.reason()),
                Err(RejectReason::InvalidJson)
            );
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            Order::parse(deep.as_bytes()).map_err(|e| e.reason()),
            Err(RejectReason::InvalidJson)
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = sample();
        v["extra"] = json!({"anything": [1, 2]});
        assert!(parse_value(&v).is_ok());
    }
}

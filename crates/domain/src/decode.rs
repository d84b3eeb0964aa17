//! Messages into orders, the one way in.
//!
//! The order's shape is its serde derive (`order.rs`); this module is the
//! deserializer it runs against. It walks the message's JSON with the path
//! of each field in hand, so that:
//!
//! - every bad field is named once, by its path, with what is wrong with
//!   its value (`payment.amount: expected a whole number, got 748.14`), all
//!   of them (up to [`MAX_PROBLEMS`]), not only the first;
//! - an absent string reads as `""` and an absent number as `0`, as Go
//!   producers' `omitempty` leaves them out, except `order_uid`,
//!   `date_created` and `items`, which must be there (and an absent
//!   `delivery` or `payment` object, which no producer omits);
//! - fields the order does not know are ignored, and reported;
//! - a key given twice in one object is refused: readers that keep the
//!   first and readers that keep the last would disagree about the order.
//!
//! After a problem the walk goes on with a placeholder value, so the rest of
//! the message is still checked; an order with any problem is never
//! returned, so no placeholder escapes.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize as _};
use serde_json::{Map, Number, Value};

use crate::order::{DateCreated, Order, Percent};
use crate::uid::OrderUid;
use crate::validation::{FieldProblem, FieldProblems, MAX_PROBLEMS, ValidationError};

/// An order and what decoding it noticed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub order: Order,
    /// Fields the message left out that were filled with `""` or `0`,
    /// named by the order's own field list (`payment.request_id`,
    /// `items[].sale`), never by the message.
    pub defaulted: Vec<&'static str>,
    /// Paths of fields the order does not know, as the message named them.
    pub unknown_fields: Vec<String>,
}

/// A message that is not an order: why, and the `order_uid` it held when
/// one could be read (it helps whoever reads `rejected_messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnOrder {
    pub error: ValidationError,
    /// The message's `order_uid` as it was, if it was a string (NUL
    /// characters dropped, at most 128 characters), valid or not.
    pub order_uid: Option<String>,
}

impl Order {
    /// Turns a message body into an order, or says which fields are wrong
    /// and how. See the module documentation for the rules.
    pub fn parse(bytes: &[u8]) -> Result<Order, ValidationError> {
        decode(bytes).map(|d| d.order).map_err(|e| e.error)
    }

    /// [`parse`](Self::parse), and what was defaulted or unknown.
    pub fn decode(bytes: &[u8]) -> Result<Decoded, ValidationError> {
        decode(bytes).map_err(|e| e.error)
    }

    /// [`decode`](Self::decode), and on failure the uid the message held:
    /// the message is read once, whatever comes of it.
    pub fn decode_message(bytes: &[u8]) -> Result<Decoded, NotAnOrder> {
        decode(bytes)
    }
}

/// The longest uid a rejection keeps of a message that is not an order.
const MAX_UID_HINT: usize = 128;

fn decode(bytes: &[u8]) -> Result<Decoded, NotAnOrder> {
    if let Some(order) = exactly_an_order(bytes) {
        return Ok(Decoded {
            order,
            defaulted: Vec::new(),
            unknown_fields: Vec::new(),
        });
    }
    let value = strict_json(bytes).map_err(|error| NotAnOrder {
        error,
        order_uid: None,
    })?;
    let failed = |error| NotAnOrder {
        error,
        order_uid: match value.get("order_uid") {
            Some(Value::String(uid)) => Some(
                uid.chars()
                    .filter(|c| *c != '\0')
                    .take(MAX_UID_HINT)
                    .collect(),
            ),
            _ => None,
        },
    };
    if !value.is_object() {
        return Err(failed(ValidationError::NotAnObject(kind_of(&value))));
    }
    let report = Report::default();
    let root = Node {
        value: Some(&value),
        path: &Path::Root,
        report: &report,
        poisoned: false,
    };
    let order = Order::deserialize(root);
    if let Some(Value::Array(items)) = value.get("items")
        && items.is_empty()
    {
        report.problem(&Path::Root.field("items"), "expected at least one item");
    }
    match order {
        Ok(order) if report.problems.borrow().is_empty() => Ok(Decoded {
            order,
            defaulted: report.defaulted.take(),
            unknown_fields: report.unknown.take(),
        }),
        // A decoder error is a shape this walk does not know: a bug here,
        // reported rather than hidden.
        Err(DecodeError(why)) if report.problems.borrow().is_empty() => {
            Err(failed(ValidationError::Fields(FieldProblems {
                listed: vec![FieldProblem {
                    path: "order".into(),
                    problem: why,
                }],
                more: 0,
            })))
        }
        _ => Err(failed(ValidationError::Fields(FieldProblems {
            listed: report.problems.take(),
            more: report.more.get(),
        }))),
    }
}

/// The order a message holds when it is exactly one, read in one pass
/// with serde's derive, without building a JSON tree first: every field
/// there, of its type, no field the order does not know, no key twice
/// (serde_json and the derive refuse the last three), and what the checks
/// below ask of values. Such a message is what producers send; it decodes
/// about four times faster this way. Anything else, `None`: the walk
/// below reads it again, defaulting, reporting and naming every problem,
/// so this path decides nothing the walk would not (a property test holds
/// the two to that).
fn exactly_an_order(bytes: &[u8]) -> Option<Order> {
    // Checked whole, at SIMD speed, so the parser reads a `str` and does
    // not check each string again.
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let order: Order = serde_json::from_str(text).ok()?;
    // The newtypes checked themselves (uid, date, percent); the rules the
    // walk applies to plain values are left.
    let plain = !order.items.is_empty() && order.serialize(PlainValues).is_ok();
    plain.then_some(order)
}

/// Walks an order's values (its `Serialize`), failing on any the decoder
/// would refuse: a whole number below 0 (money and counts are from 0) or
/// a string holding NUL (PostgreSQL's `text` cannot). Names no field:
/// any failure sends the message to the walk, which names it.
#[derive(Clone, Copy)]
struct PlainValues;

#[derive(Debug)]
struct NotPlain;

impl fmt::Display for NotPlain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value the decoder refuses")
    }
}

impl std::error::Error for NotPlain {}

impl serde::ser::Error for NotPlain {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotPlain
    }
}

impl serde::Serializer for PlainValues {
    type Ok = ();
    type Error = NotPlain;
    type SerializeSeq = Self;
    type SerializeTuple = serde::ser::Impossible<(), NotPlain>;
    type SerializeTupleStruct = serde::ser::Impossible<(), NotPlain>;
    type SerializeTupleVariant = serde::ser::Impossible<(), NotPlain>;
    type SerializeMap = serde::ser::Impossible<(), NotPlain>;
    type SerializeStruct = Self;
    type SerializeStructVariant = serde::ser::Impossible<(), NotPlain>;

    fn serialize_i64(self, v: i64) -> Result<(), NotPlain> {
        if v < 0 { Err(NotPlain) } else { Ok(()) }
    }
    fn serialize_str(self, v: &str) -> Result<(), NotPlain> {
        if v.contains('\0') {
            Err(NotPlain)
        } else {
            Ok(())
        }
    }
    fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), NotPlain> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, NotPlain> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NotPlain> {
        Ok(self)
    }

    // The order holds only structs, lists, strings and whole numbers:
    // anything else is no order this path knows.
    other_shapes_fail!(NotPlain);
}

impl serde::ser::SerializeStruct for PlainValues {
    type Ok = ();
    type Error = NotPlain;

    fn serialize_field<T: serde::Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), NotPlain> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), NotPlain> {
        Ok(())
    }
}

impl serde::ser::SerializeSeq for PlainValues {
    type Ok = ();
    type Error = NotPlain;

    fn serialize_element<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), NotPlain> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), NotPlain> {
        Ok(())
    }
}

/// The JSON value of `bytes`, refusing a key given twice in one object.
fn strict_json(bytes: &[u8]) -> Result<Value, ValidationError> {
    let duplicate = RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictValue {
        path: &Path::Root,
        duplicate: &duplicate,
    };
    let parsed = seed.deserialize(&mut reader).and_then(|v| {
        reader.end()?;
        Ok(v)
    });
    match (parsed, duplicate.take()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some((path, key))) => Err(ValidationError::DuplicateKey { path, key }),
        (Err(e), None) => Err(ValidationError::Json(e.to_string())),
    }
}

/// Builds a [`Value`] like serde_json does, but fails on a repeated key,
/// noting where.
struct StrictValue<'p> {
    path: &'p Path<'p>,
    duplicate: &'p RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue {
            path: &self.path.index(list.len()),
            duplicate: self.duplicate,
        })? {
            list.push(v);
        }
        Ok(Value::Array(list))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictValue {
                path: &self.path.key(&key),
                duplicate: self.duplicate,
            })?;
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some((self.path.to_string(), key.clone()));
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Where a value sits in the message: `payment.amount`, `items[2].sale`.
/// Built on the stack as the walk descends; written out only when needed.
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'static str),
    /// A key of the message's own (only for reporting unknown fields and
    /// duplicates).
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn field(&'p self, name: &'static str) -> Path<'p> {
        Path::Field(self, name)
    }
    fn key(&'p self, name: &'p str) -> Path<'p> {
        Path::Key(self, name)
    }
    fn index(&'p self, i: usize) -> Path<'p> {
        Path::Index(self, i)
    }

    /// The path with indices left out (`items[].sale`): a label from the
    /// order's own field names, whatever the message holds.
    fn label(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Field(Path::Root, name) => (*name).to_owned(),
            Path::Field(parent, name) => format!("{}.{name}", parent.label()),
            Path::Key(parent, _) => parent.label(),
            Path::Index(parent, _) => format!("{}[]", parent.label()),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Key(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Key(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// What the walk found.
#[derive(Default)]
struct Report {
    problems: RefCell<Vec<FieldProblem>>,
    more: Cell<usize>,
    defaulted: RefCell<Vec<&'static str>>,
    unknown: RefCell<Vec<String>>,
}

impl Report {
    fn problem(&self, path: &Path<'_>, problem: impl Into<String>) {
        let mut problems = self.problems.borrow_mut();
        if problems.len() < MAX_PROBLEMS {
            problems.push(FieldProblem {
                path: path.to_string(),
                problem: problem.into(),
            });
        } else {
            self.more.set(self.more.get() + 1);
        }
    }

    fn defaulted(&self, path: &Path<'_>) {
        let label = path.label();
        // Labels come from the order's field names: a small, fixed set,
        // interned so callers can use them as metric labels.
        self.defaulted.borrow_mut().push(intern(&label));
    }
}

/// The `&'static` copy of a defaulted-field label. Labels are built only
/// from the order's own field names, so this set is small and bounded.
fn intern(label: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static LABELS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let mut labels = LABELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = labels.get(label) {
        return known;
    }
    let leaked: &'static str = Box::leak(label.to_owned().into_boxed_str());
    labels.insert(leaked);
    leaked
}

/// A shape the walk cannot decode (a bug in the order's derive or here).
#[derive(Debug)]
struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError(msg.to_string())
    }
}

/// The value at one path (absent: `None`) and where problems go. A
/// poisoned node stands in after a problem: it yields placeholders and
/// reports nothing, so one problem is named once.
#[derive(Clone, Copy)]
struct Node<'a, 'p> {
    value: Option<&'a Value>,
    path: &'p Path<'p>,
    report: &'p Report,
    poisoned: bool,
}

impl<'a, 'p> Node<'a, 'p> {
    fn child<'q>(self, value: Option<&'a Value>, path: &'q Path<'q>) -> Node<'a, 'q>
    where
        'p: 'q,
    {
        Node {
            value,
            path,
            report: self.report,
            poisoned: self.poisoned,
        }
    }

    fn problem(&self, problem: impl Into<String>) {
        if !self.poisoned {
            self.report.problem(self.path, problem);
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

/// A string PostgreSQL's `text` can hold.
fn text(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) if s.contains('\0') => Err("must not contain NUL characters".into()),
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, got {}", kind_of(other))),
    }
}

/// Money, counts and times in an order: whole numbers from 0 that fit
/// PostgreSQL's `bigint`.
fn whole_number(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(i),
            _ if n.is_f64() => Err(format!("expected a whole number, got {n}")),
            _ => Err(format!(
                "expected a whole number from 0 to {}, got {n}",
                i64::MAX
            )),
        },
        other => Err(format!("expected a whole number, got {}", kind_of(other))),
    }
}

/// The rules of the order's newtypes, by the name they give serde: what an
/// absent value means, how a present one is checked (by the type's own
/// parser), and the placeholder that stands in after a problem.
struct Rule {
    required: bool,
    check: fn(&Value) -> Result<(), String>,
    placeholder: Placeholder,
}

#[derive(Clone, Copy)]
enum Placeholder {
    Text(&'static str),
    Number(i64),
}

fn rule(name: &str) -> Option<Rule> {
    match name {
        OrderUid::SERDE_NAME => Some(Rule {
            required: true,
            check: |v| {
                OrderUid::parse(text(v)?)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
            placeholder: Placeholder::Text("_"),
        }),
        DateCreated::SERDE_NAME => Some(Rule {
            required: true,
            check: |v| {
                DateCreated::parse(text(v)?)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
            placeholder: Placeholder::Text("1970-01-01T00:00:00Z"),
        }),
        Percent::SERDE_NAME => Some(Rule {
            required: false,
            check: |v| {
                Percent::try_from(whole_number(v)?)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
            placeholder: Placeholder::Number(0),
        }),
        _ => None,
    }
}

impl<'de, 'p> de::Deserializer<'de> for Node<'de, 'p> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DecodeError> {
        Err(DecodeError(format!(
            "{}: the order has a field of a kind the decoder does not read",
            self.path
        )))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Some(value) if !self.poisoned => match text(value) {
                Ok(s) => visitor.visit_borrowed_str(s),
                Err(problem) => {
                    self.problem(problem);
                    visitor.visit_borrowed_str("")
                }
            },
            None if !self.poisoned => {
                self.report.defaulted(self.path);
                visitor.visit_borrowed_str("")
            }
            _ => visitor.visit_borrowed_str(""),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Some(value) if !self.poisoned => match whole_number(value) {
                Ok(n) => visitor.visit_i64(n),
                Err(problem) => {
                    self.problem(problem);
                    visitor.visit_i64(0)
                }
            },
            None if !self.poisoned => {
                self.report.defaulted(self.path);
                visitor.visit_i64(0)
            }
            _ => visitor.visit_i64(0),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let Some(rule) = rule(name) else {
            return visitor.visit_newtype_struct(self);
        };
        let verdict = match self.value {
            _ if self.poisoned => Err(None),
            None if rule.required => Err(Some("missing".to_owned())),
            None => {
                self.report.defaulted(self.path);
                Err(None)
            }
            Some(value) => (rule.check)(value).map_err(Some),
        };
        match verdict {
            Ok(()) => visitor.visit_newtype_struct(self),
            Err(problem) => {
                if let Some(problem) = problem {
                    self.problem(problem);
                }
                match rule.placeholder {
                    Placeholder::Text(s) => visitor.visit_newtype_struct(s.into_deserializer()),
                    Placeholder::Number(n) => visitor.visit_newtype_struct(n.into_deserializer()),
                }
            }
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let list = match self.value {
            Some(Value::Array(list)) if !self.poisoned => list.as_slice(),
            _ if self.poisoned => &[],
            None => {
                self.problem("missing");
                &[]
            }
            Some(other) => {
                self.problem(format!("expected an array, got {}", kind_of(other)));
                &[]
            }
        };
        visitor.visit_seq(Elements {
            node: self,
            list,
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let (map, poisoned) = match self.value {
            Some(Value::Object(map)) if !self.poisoned => (Some(map), false),
            _ if self.poisoned => (None, true),
            None => {
                self.problem("missing");
                (None, true)
            }
            Some(other) => {
                self.problem(format!("expected an object, got {}", kind_of(other)));
                (None, true)
            }
        };
        if let Some(map) = map {
            for key in map.keys().filter(|k| !fields.contains(&k.as_str())) {
                self.report
                    .unknown
                    .borrow_mut()
                    .push(self.path.key(key).to_string());
            }
        }
        visitor.visit_map(Fields {
            node: Node { poisoned, ..self },
            map,
            fields,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

/// The fields of one struct, in the order's order, each whether the message
/// has it or not (absent ones are defaulted or missing).
struct Fields<'a, 'p> {
    node: Node<'a, 'p>,
    map: Option<&'a Map<String, Value>>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'de, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match self.fields.get(self.next) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let name = self.fields[self.next];
        self.next += 1;
        let path = self.node.path.field(name);
        let value = self.map.and_then(|m| m.get(name));
        seed.deserialize(self.node.child(value, &path))
    }
}

/// The elements of one array.
struct Elements<'a, 'p> {
    node: Node<'a, 'p>,
    list: &'a [Value],
    next: usize,
}

impl<'de> SeqAccess<'de> for Elements<'de, '_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        let Some(value) = self.list.get(self.next) else {
            return Ok(None);
        };
        let path = self.node.path.index(self.next);
        self.next += 1;
        seed.deserialize(self.node.child(Some(value), &path))
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.list.len() - self.next)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::RejectReason;

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn sample() -> Value {
        serde_json::from_slice(SAMPLE).expect("the sample is JSON")
    }

    fn parse_value(v: &Value) -> Result<Decoded, ValidationError> {
        Order::decode(&serde_json::to_vec(v).expect("serializable"))
    }

    fn error_of(v: &Value) -> String {
        parse_value(v).expect_err("must be rejected").to_string()
    }

    fn remove(v: &mut Value, pointer: &str) {
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        v.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("an object")
            .remove(key);
    }

    #[test]
    fn sample_order_parses_and_serializes_back_to_the_same_json() {
        let decoded = parse_value(&sample()).expect("the sample is valid");

        assert_eq!(decoded.order.order_uid.as_str(), "b563feb7b2b84b6test");
        assert_eq!(decoded.order.items.len(), 1);
        assert!(decoded.defaulted.is_empty());
        assert!(decoded.unknown_fields.is_empty());
        let back: Value = serde_json::from_slice(&decoded.order.to_json()).expect("json");
        assert_eq!(back, sample());
    }

    #[test]
    fn omitted_strings_and_numbers_are_defaulted_and_named() {
        // What a Go producer with `omitempty` sends for the sample.
        let mut v = sample();
        remove(&mut v, "/payment/request_id");
        remove(&mut v, "/payment/custom_fee");
        remove(&mut v, "/internal_signature");

        let decoded = parse_value(&v).expect("accepted");

        let back: Value = serde_json::from_slice(&decoded.order.to_json()).expect("json");
        assert_eq!(back, sample(), "the defaults are filled in");
        assert_eq!(
            decoded.defaulted,
            [
                "payment.request_id",
                "payment.custom_fee",
                "internal_signature"
            ]
        );
    }

    #[test]
    fn every_scalar_but_the_uid_and_date_may_be_omitted() {
        let v = sample();
        let mut pointers = Vec::new();
        for (key, value) in v.as_object().expect("object") {
            match value {
                Value::Object(inner) => {
                    pointers.extend(inner.keys().map(|k| format!("/{key}/{k}")));
                }
                Value::Array(_) => {
                    let item = v["items"][0].as_object().expect("object");
                    pointers.extend(item.keys().map(|k| format!("/items/0/{k}")));
                }
                _ if key == "order_uid" || key == "date_created" => {}
                _ => pointers.push(format!("/{key}")),
            }
        }
        assert_eq!(pointers.len(), 9 + 7 + 10 + 11, "{pointers:?}");
        for pointer in pointers {
            let mut broken = v.clone();
            remove(&mut broken, &pointer);
            let decoded = parse_value(&broken).expect(&pointer);
            let expected = pointer
                .trim_start_matches('/')
                .replace("items/0/", "items[].")
                .replace('/', ".");
            assert_eq!(decoded.defaulted, [expected.as_str()], "{pointer}");
        }
    }

    #[test]
    fn the_uid_the_date_the_items_and_the_parts_must_be_there() {
        for key in ["order_uid", "date_created", "items", "delivery", "payment"] {
            let mut v = sample();
            remove(&mut v, &format!("/{key}"));
            assert_eq!(error_of(&v), format!("{key}: missing"));
        }
    }

    #[test]
    fn every_bad_field_is_named_once() {
        let mut v = sample();
        remove(&mut v, "/date_created");
        remove(&mut v, "/order_uid");
        v["payment"]["amount"] = json!(748.14);
        v["delivery"]["city"] = json!(42);
        v["items"][0]["sale"] = json!(101);
        v["payment"]["bank"] = json!("a\u{0}b");

        assert_eq!(
            error_of(&v),
            "order_uid: missing; delivery.city: expected a string, got a number; \
             payment.amount: expected a whole number, got 748.14; \
             payment.bank: must not contain NUL characters; \
             items[0].sale: expected a percentage from 0 to 100, got 101; \
             date_created: missing"
        );
    }

    #[test]
    fn at_most_twenty_problems_are_listed() {
        let mut v = sample();
        let item = v["items"][0].clone();
        v["items"] = Value::Array(vec![item; 30]);
        for i in 0..30 {
            v["items"][i]["price"] = json!(-1);
        }
        let err = parse_value(&v).expect_err("rejected");
        let ValidationError::Fields(problems) = err else {
            panic!("field problems expected")
        };
        assert_eq!(problems.listed.len(), MAX_PROBLEMS);
        assert_eq!(problems.more, 10);
        assert!(problems.to_string().ends_with("; and 10 more"));
    }

    #[test]
    fn numbers_say_what_was_wrong_with_the_value() {
        for (bad, says) in [
            (
                json!(-1),
                "expected a whole number from 0 to 9223372036854775807, got -1",
            ),
            (json!(1.5), "expected a whole number, got 1.5"),
            (json!(1e300), "expected a whole number, got 1e+300"),
            (json!("1817"), "expected a whole number, got a string"),
            (json!(null), "expected a whole number, got null"),
            (
                json!(18446744073709551615u64),
                "expected a whole number from 0 to 9223372036854775807, got 18446744073709551615",
            ),
        ] {
            let mut v = sample();
            v["payment"]["amount"] = bad.clone();
            assert_eq!(error_of(&v), format!("payment.amount: {says}"), "{bad}");
        }
    }

    #[test]
    fn huge_integers_are_rejected_not_wrapped() {
        let text = String::from_utf8(SAMPLE.to_vec())
            .expect("utf8")
            .replace("\"amount\": 1817", "\"amount\": 99999999999999999999999");
        let err = Order::parse(text.as_bytes()).expect_err("too big");
        assert!(err.to_string().starts_with("payment.amount: "), "{err}");
    }

    #[test]
    fn wrong_shapes_are_named_without_reporting_their_insides() {
        let mut v = sample();
        v["payment"] = json!([]);
        assert_eq!(error_of(&v), "payment: expected an object, got an array");

        let mut v = sample();
        v["items"] = json!({});
        assert_eq!(error_of(&v), "items: expected an array, got an object");

        let mut v = sample();
        v["items"] = json!([1]);
        assert_eq!(error_of(&v), "items[0]: expected an object, got a number");

        let mut v = sample();
        v["items"] = json!([]);
        assert_eq!(error_of(&v), "items: expected at least one item");
    }

    #[test]
    fn dates_must_be_rfc3339_and_storable() {
        for (bad, says) in [
            ("2021-11-26X06:22:19Z", "expected an RFC 3339 time"),
            ("2021-11-26 06:22:19", "expected an RFC 3339 time"),
            ("2021-02-30T00:00:00Z", "expected an RFC 3339 time"),
            ("0000-01-01T00:00:00Z", "year 0 is outside 0001-9999"),
            ("2016-12-31T23:59:60Z", "a leap second"),
            // Valid RFC 3339 in years 0001-9999 as written, out of them in
            // UTC: the conversion to UTC panicked here once.
            ("9999-12-31T23:00:00-05:00", "in UTC it falls outside"),
            ("0001-01-01T00:00:00+01:00", "in UTC it falls outside"),
        ] {
            let mut v = sample();
            v["date_created"] = json!(bad);
            assert!(
                error_of(&v).starts_with(&format!("date_created: {says}")),
                "{bad}: {}",
                error_of(&v)
            );
        }
        let mut v = sample();
        v["date_created"] = json!("2021-11-26T09:22:19.123+23:00");
        let order = parse_value(&v).expect("valid").order;
        assert_eq!(order.date_created.as_str(), "2021-11-26T09:22:19.123+23:00");
    }

    #[test]
    fn order_uid_rules_are_named_once() {
        let mut v = sample();
        v["order_uid"] = json!("x'; DROP TABLE order_info;--");
        assert_eq!(
            error_of(&v),
            "order_uid: may hold only letters, digits, '_' and '-'"
        );
        v["order_uid"] = json!("");
        assert_eq!(error_of(&v), "order_uid: empty");
        v["order_uid"] = json!(7);
        assert_eq!(error_of(&v), "order_uid: expected a string, got a number");
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let cases = [
            (
                r#"{"order_uid": "a", "order_uid": "b"}"#,
                "duplicate key \"order_uid\"",
            ),
            (
                r#"{"payment": {"amount": 1, "amount": 2}}"#,
                "payment: duplicate key \"amount\"",
            ),
            (
                r#"{"items": [{}, {"sm_id": -5, "sm_id": 99}]}"#,
                "items[1]: duplicate key \"sm_id\"",
            ),
        ];
        for (text, says) in cases {
            let err = Order::parse(text.as_bytes()).expect_err(text);
            assert_eq!(err.reason(), RejectReason::DuplicateKey, "{text}");
            assert_eq!(err.to_string(), says);
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_reported() {
        let mut v = sample();
        v["extra"] = json!({"anything": [1, 2]});
        v["payment"]["tip"] = json!(5);
        v["items"][0]["colour"] = json!("red");

        let decoded = parse_value(&v).expect("accepted");

        let mut unknown = decoded.unknown_fields.clone();
        unknown.sort();
        assert_eq!(unknown, ["extra", "items[0].colour", "payment.tip"]);
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
        for bad in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            &SAMPLE[..SAMPLE.len() / 2],
            b"{} x",
        ] {
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
    fn a_stored_order_reads_back_through_plain_serde() {
        let order = Order::parse(SAMPLE).expect("valid");
        let back: Order = serde_json::from_slice(&order.to_json()).expect("plain serde");
        assert_eq!(back, order);
        let bad = String::from_utf8(order.to_json())
            .expect("utf8")
            .replace("\"sale\":30", "\"sale\":300");
        assert!(serde_json::from_str::<Order>(&bad).is_err());
    }

    /// The walk alone, as the decoder was before its one-pass path.
    fn walked(bytes: &[u8]) -> Option<Decoded> {
        let value = strict_json(bytes).ok()?;
        value.is_object().then_some(())?;
        let report = Report::default();
        let order = Order::deserialize(Node {
            value: Some(&value),
            path: &Path::Root,
            report: &report,
            poisoned: false,
        })
        .ok()?;
        let empty = matches!(value.get("items"), Some(Value::Array(items)) if items.is_empty());
        (report.problems.borrow().is_empty() && !empty).then(|| Decoded {
            order,
            defaulted: report.defaulted.take(),
            unknown_fields: report.unknown.take(),
        })
    }

    /// Every scalar of the sample, by JSON pointer.
    fn scalar_pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    scalar_pointers(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(list) => {
                for (i, child) in list.iter().enumerate() {
                    scalar_pointers(child, format!("{at}/{i}"), out);
                }
            }
            _ => out.push(at),
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The one-pass path takes a message only when the walk would take
        /// it as an order with nothing defaulted or unknown, and then reads
        /// the same order.
        #[test]
        fn the_one_pass_path_decides_nothing_the_walk_would_not(
            field in 0usize..64,
            value in proptest::prop_oneof![
                proptest::prelude::any::<i64>().prop_map(Value::from),
                proptest::prelude::Just(Value::from(i64::MAX)),
                proptest::prelude::Just(Value::from(u64::MAX)),
                proptest::prelude::Just(Value::from(-1)),
                proptest::prelude::Just(Value::from(0)),
                proptest::prelude::Just(json!(1.5)),
                proptest::prelude::Just(json!(-0.0)),
                proptest::prelude::Just(Value::Null),
                proptest::prelude::Just(json!(true)),
                proptest::prelude::Just(json!([])),
                proptest::prelude::Just(json!({})),
                "\\PC{0,12}".prop_map(Value::from),
                proptest::prelude::Just(Value::from("a\u{0}b")),
                proptest::prelude::Just(Value::from("9999-12-31T23:00:00-05:00")),
                proptest::prelude::Just(Value::from("2021-11-26T06:22:19Z")),
            ],
            how in 0u8..4,
        ) {
            let mut order = sample();
            let mut pointers = Vec::new();
            scalar_pointers(&order, String::new(), &mut pointers);
            let pointer = &pointers[field % pointers.len()];
            let text = match how {
                // The field given another value.
                0 => {
                    *order.pointer_mut(pointer).expect("a field") = value;
                    serde_json::to_vec(&order).expect("json")
                }
                // The field left out.
                1 => {
                    let (parent, key) = pointer.rsplit_once('/').expect("a key");
                    if let Some(Value::Object(map)) = order.pointer_mut(parent) {
                        map.remove(key);
                    }
                    serde_json::to_vec(&order).expect("json")
                }
                // A field the order does not know, beside it.
                2 => {
                    let (parent, _) = pointer.rsplit_once('/').expect("a key");
                    if let Some(Value::Object(map)) = order.pointer_mut(parent) {
                        map.insert("gift_wrap".into(), value);
                    }
                    serde_json::to_vec(&order).expect("json")
                }
                // The field's key given twice (the second with the value).
                _ => {
                    let (_, key) = pointer.rsplit_once('/').expect("a key");
                    let text = String::from_utf8(serde_json::to_vec(&order).expect("json"))
                        .expect("utf-8");
                    let needle = format!("\"{key}\":");
                    let extra = format!("{needle}{value},");
                    text.replacen(&needle, &format!("{extra}{needle}"), 1).into_bytes()
                }
            };

            let fast = exactly_an_order(&text);
            let slow = walked(&text);

            if let Some(fast) = fast {
                let slow = slow.expect("the walk takes what the one pass takes");
                proptest::prop_assert_eq!(&slow.order, &fast);
                proptest::prop_assert!(slow.defaulted.is_empty() && slow.unknown_fields.is_empty());
            } else if let Some(slow) = slow {
                // Refused by the one pass, taken by the walk: only with
                // something to default or report.
                proptest::prop_assert!(
                    !slow.defaulted.is_empty() || !slow.unknown_fields.is_empty(),
                    "{}", String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn the_sample_takes_the_one_pass_path() {
        assert_eq!(exactly_an_order(SAMPLE), Order::parse(SAMPLE).ok());
        let mut unknown = sample();
        unknown["gift_wrap"] = json!(true);
        assert!(exactly_an_order(&serde_json::to_vec(&unknown).expect("json")).is_none());
    }
}

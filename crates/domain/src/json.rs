//! An order's compact JSON, written straight into a buffer: byte for byte
//! what `serde_json::to_vec` writes for the same value (a property test
//! holds the two to that), at less cost on ingest's hot path.
//!
//! serde_json escapes each string byte by byte behind its `io::Write` and
//! formatter layers; most of an order's strings (its field names, uids,
//! names, addresses) hold nothing to escape. Here each string is first
//! checked eight bytes at a time and, when plain, copied whole.
//!
//! Only what an order is made of is written: structs, lists, strings and
//! whole numbers. Anything else is [`Unwritable`], and the caller falls back
//! to serde_json.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

/// A value of a shape this writer does not write (a map, a float, ...).
#[derive(Debug)]
pub(crate) struct Unwritable;

impl fmt::Display for Unwritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of a shape the order's JSON writer does not write")
    }
}

impl std::error::Error for Unwritable {}

impl ser::Error for Unwritable {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unwritable
    }
}

/// Appends `value` as compact JSON to `out`.
pub(crate) fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    value.serialize(Writer { out })
}

/// How each byte is written inside a JSON string, as serde_json writes it:
/// 0 as itself, `u` as `\u00XX`, any other as a backslash and that byte.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the eight bytes in `chunk` must be escaped: a control
/// character (below 0x20), a quote or a backslash. Each test is the
/// classic "has a byte less than n" bit trick, exact as a yes or no.
fn needs_escape(chunk: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let below_space = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quotes = chunk ^ (ONES * u64::from(b'"'));
    let quote = quotes.wrapping_sub(ONES) & !quotes;
    let backslashes = chunk ^ (ONES * u64::from(b'\\'));
    let backslash = backslashes.wrapping_sub(ONES) & !backslashes;
    (below_space | quote | backslash) & HIGH != 0
}

/// Whether `bytes` hold nothing to escape.
fn plain(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(eight)) {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|b| ESCAPE[usize::from(*b)] == 0)
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            let escape = ESCAPE[usize::from(*b)];
            if escape == 0 {
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(*b >> 4)]);
                out.push(HEX[usize::from(*b & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(escape);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// An open struct or list: its opening bracket is written, and whether
/// an element has been.
struct Open<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Open<'_> {
    fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Unwritable;
    type SerializeSeq = Open<'a>;
    type SerializeTuple = Impossible<(), Unwritable>;
    type SerializeTupleStruct = Impossible<(), Unwritable>;
    type SerializeTupleVariant = Impossible<(), Unwritable>;
    type SerializeMap = Impossible<(), Unwritable>;
    type SerializeStruct = Open<'a>;
    type SerializeStructVariant = Impossible<(), Unwritable>;

    fn serialize_str(self, v: &str) -> Result<(), Unwritable> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unwritable> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unwritable> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Open<'a>, Unwritable> {
        self.out.push(b'[');
        Ok(Open {
            out: self.out,
            first: true,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Open<'a>, Unwritable> {
        self.out.push(b'{');
        Ok(Open {
            out: self.out,
            first: true,
        })
    }

    other_shapes_fail!(Unwritable);
}

impl ser::SerializeStruct for Open<'_> {
    type Ok = ();
    type Error = Unwritable;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unwritable> {
        self.separate();
        write_str(self.out, key);
        self.out.push(b':');
        value.serialize(Writer { out: self.out })
    }
    fn end(self) -> Result<(), Unwritable> {
        self.out.push(b'}');
        Ok(())
    }
}

impl ser::SerializeSeq for Open<'_> {
    type Ok = ();
    type Error = Unwritable;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unwritable> {
        self.separate();
        value.serialize(Writer { out: self.out })
    }
    fn end(self) -> Result<(), Unwritable> {
        self.out.push(b']');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::order::Order;

    const SAMPLE: &[u8] = include_bytes!("../../../fixtures/model.json");

    fn written<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write(value, &mut out).expect("writable");
        out
    }

    #[test]
    fn the_sample_is_written_as_serde_json_writes_it() {
        let order = Order::parse(SAMPLE).expect("the sample");
        assert_eq!(
            written(&order),
            serde_json::to_vec(&order).expect("serde_json")
        );
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        for text in [all.as_str(), "", "a\"b\\c\u{7f}\u{1f}\u{0}", "é€😀"] {
            assert_eq!(
                written(&text),
                serde_json::to_vec(&text).expect("serde_json"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_shape_an_order_does_not_have_is_unwritable() {
        let mut out = Vec::new();
        assert!(write(&1.5f64, &mut out).is_err());
        assert!(write(&Some(1i64), &mut out).is_err());
    }

    proptest! {
        /// Any order, its strings any Unicode (control characters, quotes
        /// and backslashes included), at any place in the eight-byte
        /// chunks: the same bytes as serde_json.
        #[test]
        fn an_order_is_written_byte_for_byte_as_serde_json_writes_it(
            name in "\\PC{0,40}",
            city in ".{0,20}",
            brand in proptest::collection::vec(any::<char>(), 0..24),
            amount in 0i64..=i64::MAX,
        ) {
            let mut order = Order::parse(SAMPLE).expect("the sample");
            order.delivery.name = name;
            order.delivery.city = city;
            order.items[0].brand = brand.into_iter().collect();
            order.payment.amount = amount;

            prop_assert_eq!(written(&order), serde_json::to_vec(&order).expect("serde_json"));
        }
    }
}

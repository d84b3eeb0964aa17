//! Orders to rows and back, by the order's own serde shape and the column
//! lists of `schema.rs`: no field is named here.
//!
//! [`write_order`] walks an order with a serde `Serializer` and hands each
//! value to a [`RowSink`] in the column order of its table, adding the
//! columns the order does not hold as fields (the uid keying each part, an
//! item's position, `date_created` as an instant). [`read_order`] and
//! [`read_item`] are a serde `Deserializer` over result rows whose columns
//! are named like the fields.

use std::fmt;

use orders_domain::{Item, NewOrder, Order, RepositoryError};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::ser::{self, Impossible, Serialize};
use serde::{Deserialize, Serializer};
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::errors::corrupt;
use crate::schema::{ORDER_INFO, Source, Table, TableId};

/// One value on its way to a column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Text(&'a str),
    BigInt(i64),
    Integer(i32),
    TimestampTz(OffsetDateTime),
    Bytes(&'a [u8]),
    /// SQL NULL (a column the order may leave empty).
    Null,
}

/// Where [`write_order`] puts an order's values.
pub trait RowSink {
    /// A row of `table` begins; its values follow in its column order
    /// (rows of different tables may interleave: a part's row is written
    /// while its order's row is open).
    fn begin_row(&mut self, table: TableId);
    /// The next column's value of the open row of `table`.
    fn value(&mut self, table: TableId, cell: Cell<'_>);
}

/// The order's shape and the column lists disagree: a field without a
/// column, a column without a field, or a field of a kind no column holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the order does not match the tables: {0}")]
pub struct SchemaMismatch(String);

impl ser::Error for SchemaMismatch {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Writes one order's rows into `sink`: its `order_info` row (with the
/// JSON it was given as its document), the rows of its delivery and
/// payment, one row per item.
pub fn write_order(new: &NewOrder, sink: &mut dyn RowSink) -> Result<(), SchemaMismatch> {
    let mut writer = Writer { new, sink };
    new.order.serialize(Part {
        writer: &mut writer,
        table: &ORDER_INFO,
        position: None,
    })
}

struct Writer<'a> {
    new: &'a NewOrder,
    sink: &'a mut dyn RowSink,
}

/// Serializes a struct as a row of `table`.
struct Part<'w, 'a> {
    writer: &'w mut Writer<'a>,
    table: &'static Table,
    position: Option<i32>,
}

/// A row being written: the next column to fill.
struct RowWriter<'w, 'a> {
    writer: &'w mut Writer<'a>,
    table: &'static Table,
    next: usize,
    position: Option<i32>,
}

impl RowWriter<'_, '_> {
    /// Fills the columns at the cursor that no field holds.
    fn derived(&mut self) -> Result<(), SchemaMismatch> {
        while let Some(column) = self.table.columns.get(self.next) {
            let new = self.writer.new;
            let order = &new.order;
            let cell = match column.source {
                Source::Field => return Ok(()),
                Source::OrderUid => Cell::Text(order.order_uid.as_str()),
                // Made once at ingest, as the cache and lookups have it.
                Source::Document => Cell::Bytes(&new.json),
                Source::StreamSequence => new
                    .stream_sequence
                    .and_then(|s| i64::try_from(s).ok())
                    .map_or(Cell::Null, Cell::BigInt),
                Source::CreatedAt => Cell::TimestampTz(order.date_created.instant()),
                Source::Position => Cell::Integer(self.position.ok_or_else(|| {
                    SchemaMismatch(format!("{}: a position outside a list", self.table.name))
                })?),
            };
            self.writer.sink.value(self.table.id, cell);
            self.next += 1;
        }
        Ok(())
    }

    /// Checks that the column at the cursor holds field `key`.
    fn expect(&self, key: &str) -> Result<(), SchemaMismatch> {
        match self.table.columns.get(self.next) {
            Some(column) if column.name == key && column.source == Source::Field => Ok(()),
            Some(column) => Err(SchemaMismatch(format!(
                "field {key} meets column {}.{}",
                self.table.name, column.name
            ))),
            None => Err(SchemaMismatch(format!(
                "field {key} has no column in {}",
                self.table.name
            ))),
        }
    }

    fn put(&mut self, key: &str, cell: Cell<'_>) -> Result<(), SchemaMismatch> {
        self.expect(key)?;
        self.writer.sink.value(self.table.id, cell);
        self.next += 1;
        self.derived()
    }
}

impl ser::SerializeStruct for RowWriter<'_, '_> {
    type Ok = ();
    type Error = SchemaMismatch;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SchemaMismatch> {
        value.serialize(FieldWriter { row: self, key })
    }

    fn end(self) -> Result<(), SchemaMismatch> {
        match self.table.columns.get(self.next) {
            None => Ok(()),
            Some(column) => Err(SchemaMismatch(format!(
                "column {}.{} has no field",
                self.table.name, column.name
            ))),
        }
    }
}

/// The methods of a serde `Serializer` for shapes no column holds: the
/// order has only structs, lists, strings and whole numbers. `$what` says
/// what the caller expected instead.
macro_rules! other_shapes_fail {
    ($what:literal; $($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self $(, _: $arg)*) -> Result<(), SchemaMismatch> {
            Err(SchemaMismatch(format!("{}: expected {}", stringify!($method), $what)))
        })*

        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), SchemaMismatch> {
            Err(SchemaMismatch(format!("an optional field: expected {}", $what)))
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), SchemaMismatch> {
            Err(SchemaMismatch(format!("an enum field: expected {}", $what)))
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, SchemaMismatch> {
            Err(SchemaMismatch(format!("a tuple field: expected {}", $what)))
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, SchemaMismatch> {
            Err(SchemaMismatch(format!("a tuple field: expected {}", $what)))
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, SchemaMismatch> {
            Err(SchemaMismatch(format!("an enum field: expected {}", $what)))
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, SchemaMismatch> {
            Err(SchemaMismatch(format!("a map field: expected {}", $what)))
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, SchemaMismatch> {
            Err(SchemaMismatch(format!("an enum field: expected {}", $what)))
        }
    };
}

/// Serializes one field of a row: a scalar into its column, a struct as
/// the row of its part's table, a list as one row per element.
struct FieldWriter<'r, 'w, 'a> {
    row: &'r mut RowWriter<'w, 'a>,
    key: &'static str,
}

impl<'r, 'w, 'a> Serializer for FieldWriter<'r, 'w, 'a> {
    type Ok = ();
    type Error = SchemaMismatch;
    type SerializeSeq = PartList<'r, 'a>;
    type SerializeTuple = Impossible<(), SchemaMismatch>;
    type SerializeTupleStruct = Impossible<(), SchemaMismatch>;
    type SerializeTupleVariant = Impossible<(), SchemaMismatch>;
    type SerializeMap = Impossible<(), SchemaMismatch>;
    type SerializeStruct = RowWriter<'r, 'a>;
    type SerializeStructVariant = Impossible<(), SchemaMismatch>;

    fn serialize_str(self, v: &str) -> Result<(), SchemaMismatch> {
        self.row.put(self.key, Cell::Text(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), SchemaMismatch> {
        self.row.put(self.key, Cell::BigInt(v))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), SchemaMismatch> {
        value.serialize(self)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<RowWriter<'r, 'a>, SchemaMismatch> {
        let table = part_table(self.key)?;
        Part {
            writer: &mut *self.row.writer,
            table,
            position: None,
        }
        .serialize_struct(name, len)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<PartList<'r, 'a>, SchemaMismatch> {
        Ok(PartList {
            writer: &mut *self.row.writer,
            table: part_table(self.key)?,
            position: 0,
        })
    }

    other_shapes_fail!("a string, a whole number, a struct or a list";
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
}

fn part_table(field: &str) -> Result<&'static Table, SchemaMismatch> {
    Table::of_part(field).ok_or_else(|| SchemaMismatch(format!("no table holds the part {field}")))
}

impl<'w, 'a> Part<'w, 'a> {
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<RowWriter<'w, 'a>, SchemaMismatch> {
        self.writer.sink.begin_row(self.table.id);
        let mut row = RowWriter {
            writer: self.writer,
            table: self.table,
            next: 0,
            position: self.position,
        };
        row.derived()?;
        Ok(row)
    }
}

impl<'w, 'a> Serializer for Part<'w, 'a> {
    type Ok = ();
    type Error = SchemaMismatch;
    type SerializeSeq = Impossible<(), SchemaMismatch>;
    type SerializeTuple = Impossible<(), SchemaMismatch>;
    type SerializeTupleStruct = Impossible<(), SchemaMismatch>;
    type SerializeTupleVariant = Impossible<(), SchemaMismatch>;
    type SerializeMap = Impossible<(), SchemaMismatch>;
    type SerializeStruct = RowWriter<'w, 'a>;
    type SerializeStructVariant = Impossible<(), SchemaMismatch>;

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<RowWriter<'w, 'a>, SchemaMismatch> {
        Part::serialize_struct(self, name, len)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), SchemaMismatch> {
        Err(SchemaMismatch("a part must be a struct".into()))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, SchemaMismatch> {
        Err(SchemaMismatch("a part must be a struct".into()))
    }

    other_shapes_fail!("a struct";
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
}

/// A list of parts (the items): one row each, numbered from 0.
struct PartList<'w, 'a> {
    writer: &'w mut Writer<'a>,
    table: &'static Table,
    position: i32,
}

impl ser::SerializeSeq for PartList<'_, '_> {
    type Ok = ();
    type Error = SchemaMismatch;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), SchemaMismatch> {
        let position = self.position;
        self.position += 1;
        value.serialize(Part {
            writer: &mut *self.writer,
            table: self.table,
            position: Some(position),
        })
    }

    fn end(self) -> Result<(), SchemaMismatch> {
        Ok(())
    }
}

/// Reads the order in `row` (its `order_info`, `delivery` and `payment`
/// columns, named like the fields) with `items`.
pub(crate) fn read_order(row: &Row, items: Vec<Item>) -> Result<Order, RepositoryError> {
    let hint = std::cell::Cell::new(0);
    let mut order =
        Order::deserialize(RowReader { row, hint: &hint }).map_err(|e| corrupt("order row", e))?;
    order.items = items;
    Ok(order)
}

/// Reads an item from `row` (the `items` columns named like its fields).
pub(crate) fn read_item(row: &Row) -> Result<Item, RepositoryError> {
    let hint = std::cell::Cell::new(0);
    Item::deserialize(RowReader { row, hint: &hint }).map_err(|e| corrupt("item row", e))
}

/// A row that did not read as an order.
#[derive(Debug)]
pub(crate) struct ReadError(String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

impl de::Error for ReadError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// A struct read from a row's columns by field name. The SELECT lists name
/// columns in nearly the fields' order, so each lookup tries the column
/// after the last one read before searching the row.
#[derive(Clone, Copy)]
struct RowReader<'r, 'x> {
    row: &'r Row,
    hint: &'x std::cell::Cell<usize>,
}

impl<'r> RowReader<'r, '_> {
    fn index(&self, name: &str) -> Result<usize, ReadError> {
        let columns = self.row.columns();
        let hint = self.hint.get();
        let found = match columns.get(hint) {
            Some(c) if c.name() == name => Some(hint),
            _ => columns.iter().position(|c| c.name() == name),
        };
        let index = found.ok_or_else(|| ReadError(format!("no column {name}")))?;
        self.hint.set(index + 1);
        Ok(index)
    }
}

impl<'de> de::Deserializer<'de> for RowReader<'de, '_> {
    type Error = ReadError;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        visitor.visit_map(FieldReader {
            reader: self,
            fields,
            next: 0,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ReadError> {
        Err(ReadError("an order is read as a struct".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The fields of one struct, each from its column.
struct FieldReader<'r, 'x> {
    reader: RowReader<'r, 'x>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for FieldReader<'de, '_> {
    type Error = ReadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ReadError> {
        match self.fields.get(self.next) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ReadError> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(ColumnReader {
            reader: self.reader,
            name,
        })
    }
}

/// One field's value: a column, or a part read from the same row.
struct ColumnReader<'r, 'x> {
    reader: RowReader<'r, 'x>,
    name: &'static str,
}

impl<'de> de::Deserializer<'de> for ColumnReader<'de, '_> {
    type Error = ReadError;

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let index = self.reader.index(self.name)?;
        let text: &'de str = self
            .reader
            .row
            .try_get(index)
            .map_err(|e| ReadError(format!("{}: {e}", self.name)))?;
        visitor.visit_borrowed_str(text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        let index = self.reader.index(self.name)?;
        let n: i64 = self
            .reader
            .row
            .try_get(index)
            .map_err(|e| ReadError(format!("{}: {e}", self.name)))?;
        visitor.visit_i64(n)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        de::Deserializer::deserialize_struct(self.reader, name, fields, visitor)
    }

    /// A list (the items) is not in the row: it reads as empty here and
    /// [`read_order`] puts the items read from their own rows in its place.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        visitor.visit_seq(de::value::SeqDeserializer::new(std::iter::empty::<i64>()))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ReadError> {
        Err(ReadError(format!(
            "{}: a field of a kind no column holds",
            self.name
        )))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        option unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TABLES;

    /// Counts values per row and checks each row is whole.
    #[derive(Default)]
    struct Counting {
        rows: [usize; 4],
        open: [Option<usize>; 4],
    }

    impl Counting {
        fn close(&mut self, table: TableId) {
            let t = table as usize;
            if let Some(values) = self.open[t].take() {
                assert_eq!(
                    values,
                    TABLES[t].columns.len(),
                    "a short row of {}",
                    TABLES[t].name
                );
            }
        }
    }

    impl RowSink for Counting {
        fn begin_row(&mut self, table: TableId) {
            self.close(table);
            self.rows[table as usize] += 1;
            self.open[table as usize] = Some(0);
        }
        fn value(&mut self, table: TableId, _cell: Cell<'_>) {
            *self.open[table as usize].as_mut().expect("a row is open") += 1;
        }
    }

    #[test]
    fn the_order_and_the_column_lists_agree() {
        let mut order =
            Order::parse(include_bytes!("../../../fixtures/model.json")).expect("the sample");
        order.items.push(order.items[0].clone());
        let mut sink = Counting::default();

        write_order(&NewOrder::new(order, Some(7)), &mut sink).expect("every field has its column");

        for table in [
            TableId::OrderInfo,
            TableId::Delivery,
            TableId::Payment,
            TableId::Items,
        ] {
            sink.close(table);
        }
        assert_eq!(sink.rows, [1, 1, 1, 2]);
    }
}

//! A batch of orders as one array per column, for `INSERT ... UNNEST`.
//!
//! Each column is written straight into PostgreSQL's binary array format
//! as the row writer hands over its values: one growing buffer per
//! column, so a batch costs a few dozen buffers, not an owned `String`
//! per text value (about forty per order) and a copy of every document
//! into a `Vec` of its own.

use std::error::Error as StdError;

use bytes::{BufMut as _, BytesMut};
use orders_domain::NewOrder;
use time::OffsetDateTime;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};

use crate::rows::{Cell, RowSink, write_order};
use crate::schema::{SqlType, TABLES, TableId};

/// PostgreSQL's epoch for timestamps, 2000-01-01 00:00 UTC, in Unix
/// microseconds.
const PG_EPOCH_MICROS: i128 = 946_684_800 * 1_000_000;

/// Microseconds since PostgreSQL's epoch, as `timestamptz` is sent in
/// binary: the Unix microseconds [`DateCreated::unix_micros`] gives (finer
/// digits truncated), so a stored instant and a cursor agree.
///
/// [`DateCreated::unix_micros`]: orders_domain::DateCreated::unix_micros
pub fn pg_micros(at: OffsetDateTime) -> i64 {
    let micros = at.unix_timestamp_nanos() / 1_000 - PG_EPOCH_MICROS;
    // Years 1-9999 (what the domain accepts) are far inside i64.
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// One column's values down a batch, already in the binary array format's
/// element encoding (each a length, then its bytes; -1 for NULL).
#[derive(Debug)]
struct ArrayColumn {
    element: Type,
    count: i32,
    has_null: bool,
    elements: BytesMut,
    /// Bytes the whole statement's parameters take, on the first column
    /// only (else 0): the driver builds the statement's message in one
    /// buffer, parameter after parameter, and reserving it all at the
    /// first spares it growing (and copying what it holds) at each.
    statement_bytes: usize,
}

/// Bytes a value of a text column takes on average, its length word
/// included: room reserved up front so a batch's buffers do not grow by
/// doubling (each doubling a copy: a third of building the columns).
const TEXT_BYTES: usize = 32;

impl ArrayColumn {
    /// A column of `sql_type` with room for `rows` values of about
    /// `bytes` each (`None`: the type's own size).
    fn of(sql_type: SqlType, rows: usize, bytes: Option<usize>) -> Self {
        let each = bytes.unwrap_or(match sql_type {
            SqlType::Text | SqlType::Bytea => TEXT_BYTES,
            SqlType::BigInt | SqlType::TimestampTz => 12,
            SqlType::Integer => 8,
        });
        Self {
            element: match sql_type {
                SqlType::Text => Type::TEXT,
                SqlType::BigInt => Type::INT8,
                SqlType::Integer => Type::INT4,
                SqlType::TimestampTz => Type::TIMESTAMPTZ,
                SqlType::Bytea => Type::BYTEA,
            },
            count: 0,
            has_null: false,
            elements: BytesMut::with_capacity(rows * each),
            statement_bytes: 0,
        }
    }

    /// What this column adds to the statement's message: the array's
    /// header, its elements, and the parameter's length word.
    fn encoded_len(&self) -> usize {
        24 + self.elements.len()
    }

    fn push(&mut self, cell: Cell<'_>) {
        let fits = match cell {
            Cell::Text(_) => self.element == Type::TEXT,
            Cell::BigInt(_) => self.element == Type::INT8,
            Cell::Integer(_) => self.element == Type::INT4,
            Cell::TimestampTz(_) => self.element == Type::TIMESTAMPTZ,
            Cell::Bytes(_) => self.element == Type::BYTEA,
            Cell::Null => true,
        };
        // The row writer checks names, not types: a mismatch here is a
        // column list typed unlike the field, caught by the tests.
        assert!(fits, "{cell:?} does not fit a column of {}", self.element);
        let out = &mut self.elements;
        match cell {
            // A message is at most MAX_ORDER_BYTES: a value fits i32.
            Cell::Text(s) => {
                out.put_i32(s.len() as i32);
                out.put_slice(s.as_bytes());
            }
            Cell::Bytes(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            Cell::BigInt(n) => {
                out.put_i32(8);
                out.put_i64(n);
            }
            Cell::Integer(n) => {
                out.put_i32(4);
                out.put_i32(n);
            }
            Cell::TimestampTz(at) => {
                out.put_i32(8);
                out.put_i64(pg_micros(at));
            }
            Cell::Null => {
                out.put_i32(-1);
                self.has_null = true;
            }
        }
        self.count += 1;
    }
}

impl ToSql for ArrayColumn {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match ty.kind() {
            Kind::Array(element) if *element == self.element => {}
            _ => return Err(format!("an array of {} is not a {ty}", self.element).into()),
        }
        // One dimension, the NULL flag, the element type, the length and
        // the lower bound (1), then the elements.
        out.reserve(self.statement_bytes.max(self.encoded_len()));
        out.put_i32(1);
        out.put_i32(i32::from(self.has_null));
        out.put_u32(self.element.oid());
        out.put_i32(self.count);
        out.put_i32(1);
        out.put_slice(&self.elements);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    to_sql_checked!();
}

/// Every column of the four tables, filled from a batch of orders.
#[derive(Debug)]
pub(crate) struct UnnestColumns {
    tables: [Vec<ArrayColumn>; 4],
    next: [usize; 4],
}

impl UnnestColumns {
    pub(crate) fn of(orders: &[&NewOrder]) -> Self {
        // Rows per table: one per order, one per item; a document column
        // takes the documents' lengths.
        let items: usize = orders.iter().map(|o| o.order.items.len()).sum();
        let documents: usize = orders.iter().map(|o| o.json.len() + 4).sum();
        let mut columns = Self {
            tables: TABLES.map(|t| {
                let rows = if t.id == TableId::Items {
                    items
                } else {
                    orders.len()
                };
                t.columns
                    .iter()
                    .map(|c| {
                        let bytes = (c.source == crate::schema::Source::Document)
                            .then(|| documents.div_ceil(rows.max(1)));
                        ArrayColumn::of(c.sql_type, rows, bytes)
                    })
                    .collect()
            }),
            next: [0; 4],
        };
        for order in orders {
            if let Err(mismatch) = write_order(order, &mut columns) {
                // The order's shape and schema.rs disagree: a build that
                // cannot have passed its tests.
                panic!("{mismatch}");
            }
        }
        columns
    }

    /// The statement's parameters, in the order of `TABLES` and their
    /// columns (call once the rows are all written).
    pub(crate) fn params(&mut self) -> Vec<&(dyn ToSql + Sync)> {
        let total: usize = self
            .tables
            .iter()
            .flatten()
            .map(ArrayColumn::encoded_len)
            .sum();
        if let Some(first) = self.tables.iter_mut().flatten().next() {
            first.statement_bytes = total;
        }
        self.tables
            .iter()
            .flatten()
            .map(|c| c as &(dyn ToSql + Sync))
            .collect()
    }
}

impl RowSink for UnnestColumns {
    fn begin_row(&mut self, table: TableId) {
        self.next[table as usize] = 0;
    }

    fn value(&mut self, table: TableId, cell: Cell<'_>) {
        let t = table as usize;
        self.tables[t][self.next[t]].push(cell);
        self.next[t] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_from_2000() {
        let at = OffsetDateTime::from_unix_timestamp(946_684_801).expect("time");
        assert_eq!(pg_micros(at), 1_000_000);
    }

    #[test]
    fn an_array_is_written_in_the_binary_format() {
        let mut column = ArrayColumn::of(SqlType::BigInt, 2, None);
        column.push(Cell::BigInt(7));
        column.push(Cell::Null);
        let mut out = BytesMut::new();

        column
            .to_sql(&Type::INT8_ARRAY, &mut out)
            .expect("an int8 array");

        let mut expected = Vec::new();
        for word in [1i32, 1, 20, 2, 1, 8] {
            expected.extend_from_slice(&word.to_be_bytes());
        }
        expected.extend_from_slice(&7i64.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(&out[..], &expected[..]);
        assert!(column.to_sql(&Type::TEXT_ARRAY, &mut out).is_err());
    }
}

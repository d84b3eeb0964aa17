//! Orders in PostgreSQL's binary COPY format, one stream per table: the
//! fastest way PostgreSQL takes rows, used by the bench's ceiling and its
//! comparison of insert methods (the service inserts by `UNNEST`).
//! Columns as `orders_postgres::schema` lists them, rows by the service's
//! own row writer.

use bytes::{BufMut, Bytes, BytesMut};
use orders_domain::NewOrder;
use orders_postgres::pg_micros;
use orders_postgres::rows::{Cell, RowSink, SchemaMismatch, write_order};
use orders_postgres::schema::{TABLES, Table, TableId};

/// The header every binary COPY stream starts with: the signature, no
/// flags, no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// A batch of orders as four binary COPY streams.
#[derive(Debug)]
pub struct CopyData {
    tables: [BytesMut; 4],
}

impl CopyData {
    /// The rows of `orders` (the caller sees to distinct uids).
    pub fn of<'a>(orders: impl IntoIterator<Item = &'a NewOrder>) -> Result<Self, SchemaMismatch> {
        let mut data = Self {
            tables: std::array::from_fn(|_| BytesMut::from(HEADER)),
        };
        for order in orders {
            write_order(order, &mut data)?;
        }
        Ok(data)
    }

    /// Each table with its COPY statement and its data, parents first.
    pub fn into_parts(self) -> impl Iterator<Item = (&'static Table, String, Bytes)> {
        TABLES
            .into_iter()
            .zip(self.tables)
            .map(|(table, mut data)| {
                data.put_i16(-1);
                (table, copy_statement(table), data.freeze())
            })
    }
}

/// `COPY table (columns) FROM STDIN (FORMAT binary)`.
pub fn copy_statement(table: &Table) -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.name,
        table.column_list()
    )
}

impl RowSink for CopyData {
    fn begin_row(&mut self, table: TableId) {
        let columns = TABLES[table as usize].columns.len();
        // At most a few dozen columns: fits.
        self.tables[table as usize].put_i16(columns as i16);
    }

    fn value(&mut self, table: TableId, cell: Cell<'_>) {
        let out = &mut self.tables[table as usize];
        match cell {
            Cell::Text(s) => {
                // A message is at most MAX_ORDER_BYTES: a field fits i32.
                out.put_i32(s.len() as i32);
                out.put_slice(s.as_bytes());
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
            Cell::Bytes(b) => {
                // An order's JSON is at most a little over MAX_ORDER_BYTES.
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            Cell::Null => out.put_i32(-1),
        }
    }
}

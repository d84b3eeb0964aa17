//! A batch of orders as one array per column, for `INSERT ... UNNEST`.

use std::error::Error as StdError;

use bytes::BytesMut;
use orders_domain::Order;
use time::OffsetDateTime;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::rows::{Cell, RowSink, write_order};
use crate::schema::{SqlType, TABLES, TableId};

/// One column's values down a batch.
#[derive(Debug)]
enum ColumnData {
    Text(Vec<String>),
    BigInt(Vec<i64>),
    Integer(Vec<i32>),
    TimestampTz(Vec<OffsetDateTime>),
    Bytea(Vec<Vec<u8>>),
}

impl ColumnData {
    fn of(sql_type: SqlType) -> Self {
        match sql_type {
            SqlType::Text => Self::Text(Vec::new()),
            SqlType::BigInt => Self::BigInt(Vec::new()),
            SqlType::Integer => Self::Integer(Vec::new()),
            SqlType::TimestampTz => Self::TimestampTz(Vec::new()),
            SqlType::Bytea => Self::Bytea(Vec::new()),
        }
    }

    fn push(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Self::Text(v), Cell::Text(s)) => v.push(s.to_owned()),
            (Self::BigInt(v), Cell::BigInt(n)) => v.push(n),
            (Self::Integer(v), Cell::Integer(n)) => v.push(n),
            (Self::TimestampTz(v), Cell::TimestampTz(t)) => v.push(t),
            (Self::Bytea(v), Cell::Bytes(b)) => v.push(b.to_vec()),
            // The row writer checks names, not types: a mismatch here is a
            // column list typed unlike the field, caught by the tests.
            (column, cell) => panic!("{cell:?} does not fit the column {column:?}"),
        }
    }
}

impl ToSql for ColumnData {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Self::Text(v) => v.to_sql(ty, out),
            Self::BigInt(v) => v.to_sql(ty, out),
            Self::Integer(v) => v.to_sql(ty, out),
            Self::TimestampTz(v) => v.to_sql(ty, out),
            Self::Bytea(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Vec<String> as ToSql>::accepts(ty)
            || <Vec<i64> as ToSql>::accepts(ty)
            || <Vec<i32> as ToSql>::accepts(ty)
            || <Vec<OffsetDateTime> as ToSql>::accepts(ty)
            || <Vec<Vec<u8>> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// Every column of the four tables, filled from a batch of orders.
#[derive(Debug)]
pub(crate) struct UnnestColumns {
    tables: [Vec<ColumnData>; 4],
    next: [usize; 4],
}

impl UnnestColumns {
    pub(crate) fn of<'a>(orders: impl Iterator<Item = &'a Order>) -> Self {
        let mut columns = Self {
            tables: TABLES.map(|t| {
                t.columns
                    .iter()
                    .map(|c| ColumnData::of(c.sql_type))
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

    /// The statement's parameters, in the order of `TABLES` and their columns.
    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
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

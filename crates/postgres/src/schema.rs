//! The order's four tables as the code sees them: each column named once,
//! with its type and where its value comes from, in the order the row writer
//! (`rows.rs`) meets them when it walks an order. The migrations create the
//! tables; every statement that names their columns (the INSERT, the
//! SELECTs, the bench's COPY and seeding) is built from these lists.
//!
//! A column whose source is [`Source::Field`] carries the order's field of
//! the same name: the row writer and reader check, field by field, that the
//! order's serde shape and these lists agree, so a field added to `Order`
//! and not here (or the reverse) fails the first write, in tests.

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Text,
    BigInt,
    Integer,
    TimestampTz,
    Bytea,
}

impl SqlType {
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::BigInt => "bigint",
            Self::Integer => "integer",
            Self::TimestampTz => "timestamptz",
            Self::Bytea => "bytea",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The order's field of the column's name (in the table's part of it).
    Field,
    /// The order's uid, keying a part (delivery, payment, an item) to it.
    OrderUid,
    /// An item's place in the order's list, so items read back in order.
    Position,
    /// `date_created` as an instant, for ordering the newest first.
    CreatedAt,
    /// The whole order as compact JSON ([`Order::to_json`]), as lookups
    /// answer it: the warm-up reads this column alone instead of joining
    /// four tables and serializing every order again.
    ///
    /// [`Order::to_json`]: orders_domain::Order::to_json
    Document,
    /// The stream sequence of the message the order came in (NULL for an
    /// order stored otherwise): erasing the order deletes that message.
    StreamSequence,
}

/// One column of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: SqlType,
    pub source: Source,
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        sql_type: SqlType::Text,
        source: Source::Field,
    }
}

const fn bigint(name: &'static str) -> Column {
    Column {
        name,
        sql_type: SqlType::BigInt,
        source: Source::Field,
    }
}

/// The uid column of a part's table.
const KEY: Column = Column {
    name: "order_uid",
    sql_type: SqlType::Text,
    source: Source::OrderUid,
};

/// Which of the four tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableId {
    OrderInfo = 0,
    Delivery = 1,
    Payment = 2,
    Items = 3,
}

/// One of the order's tables.
#[derive(Debug)]
pub struct Table {
    pub id: TableId,
    pub name: &'static str,
    /// The alias the repository's SELECTs give it.
    pub alias: &'static str,
    pub columns: &'static [Column],
}

pub const ORDER_INFO: Table = Table {
    id: TableId::OrderInfo,
    name: "order_info",
    alias: "o",
    columns: &[
        text("order_uid"),
        text("track_number"),
        text("entry"),
        text("locale"),
        text("internal_signature"),
        text("customer_id"),
        text("delivery_service"),
        text("shardkey"),
        bigint("sm_id"),
        text("date_created"),
        Column {
            name: "created_at",
            sql_type: SqlType::TimestampTz,
            source: Source::CreatedAt,
        },
        text("oof_shard"),
        Column {
            name: "document",
            sql_type: SqlType::Bytea,
            source: Source::Document,
        },
        Column {
            name: "stream_sequence",
            sql_type: SqlType::BigInt,
            source: Source::StreamSequence,
        },
    ],
};

/// Named after the order's field that holds its part, as are the next two.
pub const DELIVERY: Table = Table {
    id: TableId::Delivery,
    name: "delivery",
    alias: "d",
    columns: &[
        KEY,
        text("name"),
        text("phone"),
        text("zip"),
        text("city"),
        text("address"),
        text("region"),
        text("email"),
    ],
};

pub const PAYMENT: Table = Table {
    id: TableId::Payment,
    name: "payment",
    alias: "p",
    columns: &[
        KEY,
        text("transaction"),
        text("request_id"),
        text("currency"),
        text("provider"),
        bigint("amount"),
        bigint("payment_dt"),
        text("bank"),
        bigint("delivery_cost"),
        bigint("goods_total"),
        bigint("custom_fee"),
    ],
};

pub const ITEMS: Table = Table {
    id: TableId::Items,
    name: "items",
    alias: "i",
    columns: &[
        KEY,
        Column {
            name: "position",
            sql_type: SqlType::Integer,
            source: Source::Position,
        },
        bigint("chrt_id"),
        text("track_number"),
        bigint("price"),
        text("rid"),
        text("name"),
        bigint("sale"),
        text("size"),
        bigint("total_price"),
        bigint("nm_id"),
        text("brand"),
        bigint("status"),
    ],
};

/// The four tables, `order_info` first (the others reference it).
pub const TABLES: [&Table; 4] = [&ORDER_INFO, &DELIVERY, &PAYMENT, &ITEMS];

impl Table {
    /// The table of a part of the order, by the order's field that holds it.
    pub fn of_part(field: &str) -> Option<&'static Table> {
        [&DELIVERY, &PAYMENT, &ITEMS]
            .into_iter()
            .find(|t| t.name == field)
    }

    /// `a, b, c`: every column, for INSERT and COPY.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns that hold the order's own fields.
    pub fn field_columns(&self) -> impl Iterator<Item = &'static Column> + use<> {
        let columns: &'static [Column] = self.columns;
        columns.iter().filter(|c| c.source == Source::Field)
    }

    /// `o.a, o.b`: the columns holding order fields, qualified by the alias.
    pub fn field_select(&self) -> String {
        self.field_columns()
            .map(|c| format!("{}.{}", self.alias, c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_written_for_sql() {
        assert_eq!(
            DELIVERY.column_list(),
            "order_uid, name, phone, zip, city, address, region, email"
        );
        assert_eq!(
            PAYMENT.field_select().split(", ").next(),
            Some("p.transaction")
        );
        assert_eq!(Table::of_part("items").map(|t| t.name), Some("items"));
        assert!(Table::of_part("order_info").is_none());
    }
}

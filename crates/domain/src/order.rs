use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::uid::OrderUid;
use crate::validation::{self, ValidationError};

/// One order, shaped exactly like the message it came from: serializing it
/// gives back the message's field names, types and nesting.
///
/// The only way in from outside is [`Order::parse`]. Money and counts are
/// `i64` because PostgreSQL's `bigint` stores them; `parse` guarantees they
/// are non-negative, and the database's CHECK constraints guard the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_uid: OrderUid,
    pub track_number: String,
    pub entry: String,
    pub delivery: Delivery,
    pub payment: Payment,
    pub items: Vec<Item>,
    pub locale: String,
    pub internal_signature: String,
    pub customer_id: String,
    pub delivery_service: String,
    pub shardkey: String,
    pub sm_id: i64,
    pub date_created: DateCreated,
    pub oof_shard: String,
}

/// Where the order goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub name: String,
    pub phone: String,
    pub zip: String,
    pub city: String,
    pub address: String,
    pub region: String,
    pub email: String,
}

/// How the order was paid. Amounts are in the currency's minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub transaction: String,
    pub request_id: String,
    pub currency: String,
    pub provider: String,
    pub amount: i64,
    /// Unix time, seconds.
    pub payment_dt: i64,
    pub bank: String,
    pub delivery_cost: i64,
    pub goods_total: i64,
    pub custom_fee: i64,
}

/// One line of the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub chrt_id: i64,
    pub track_number: String,
    pub price: i64,
    pub rid: String,
    pub name: String,
    /// Discount in percent, 0 to 100.
    pub sale: i64,
    pub size: String,
    pub total_price: i64,
    pub nm_id: i64,
    pub brand: String,
    pub status: i64,
}

/// `date_created`, proved to be an RFC 3339 time. The text is kept as it
/// came so the order reads back exactly as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateCreated {
    text: String,
    unix_nanos: i128,
}

impl DateCreated {
    /// Parses an RFC 3339 time such as `2021-11-26T06:22:19Z`.
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        let at = OffsetDateTime::parse(text, &Rfc3339)?;
        Ok(Self {
            text: text.to_owned(),
            unix_nanos: at.unix_timestamp_nanos(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Nanoseconds since the Unix epoch, for ordering.
    pub fn unix_nanos(&self) -> i128 {
        self.unix_nanos
    }
}

impl fmt::Display for DateCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for DateCreated {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl Order {
    /// Turns a message body into an order, or says which field is wrong and
    /// how (`payment.amount: expected a non-negative integer`).
    ///
    /// Checks: valid UTF-8 JSON holding an object; every field of the sample
    /// order present with its type; strings without NUL characters (the
    /// database cannot store them); money and counts non-negative integers
    /// that fit a `bigint`; `sale` at most 100; at least one item;
    /// `date_created` an RFC 3339 time. Fields the model does not know are
    /// ignored.
    pub fn parse(bytes: &[u8]) -> Result<Order, ValidationError> {
        validation::parse_order(bytes)
    }

    /// The order as compact JSON, in the message's shape.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers into a Vec
        // cannot fail: there are no maps with non-string keys and no I/O.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

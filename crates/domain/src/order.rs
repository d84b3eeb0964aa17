//! The order: its shape, written once. Serde's derives turn it into JSON and
//! back, the decoder (`decode.rs`) reads messages into it field by field, and
//! the PostgreSQL adapter maps it to rows by these same field names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::dates::{self, InvalidDate};
use crate::uid::OrderUid;

/// One order, shaped exactly like the message it came from: serializing it
/// gives back the message's field names, types and nesting.
///
/// Messages come in through [`Order::parse`](crate::Order::parse). Money and
/// counts are `i64` because PostgreSQL's `bigint` stores them; the decoder
/// guarantees they are non-negative, and the database's CHECK constraints
/// guard the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are reported by the decoder (decode.rs), which yields
// only these fields; plain serde_json refuses them, so the decoder's one-pass
// path falls back to the reporting one.
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are reported by the decoder (decode.rs), which yields
// only these fields; plain serde_json refuses them, so the decoder's one-pass
// path falls back to the reporting one.
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are reported by the decoder (decode.rs), which yields
// only these fields; plain serde_json refuses them, so the decoder's one-pass
// path falls back to the reporting one.
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are reported by the decoder (decode.rs), which yields
// only these fields; plain serde_json refuses them, so the decoder's one-pass
// path falls back to the reporting one.
#[serde(deny_unknown_fields)]
pub struct Item {
    pub chrt_id: i64,
    pub track_number: String,
    pub price: i64,
    pub rid: String,
    pub name: String,
    pub sale: Percent,
    pub size: String,
    pub total_price: i64,
    pub nm_id: i64,
    pub brand: String,
    pub status: i64,
}

/// A discount in percent, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(into = "i64")]
pub struct Percent(i64);

/// Why a number is not a [`Percent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a percentage from 0 to 100, got {0}")]
pub struct InvalidPercent(i64);

impl Percent {
    /// The name the order decoder knows this type's rule by.
    pub(crate) const SERDE_NAME: &'static str = "Percent";

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Percent {
    type Error = InvalidPercent;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        if (0..=100).contains(&n) {
            Ok(Self(n))
        } else {
            Err(InvalidPercent(n))
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::newtype::deserialize(
            deserializer,
            Self::SERDE_NAME,
            <Self as TryFrom<i64>>::try_from,
        )
    }
}

impl From<Percent> for i64 {
    fn from(p: Percent) -> Self {
        p.0
    }
}

/// `date_created`, proved to be an RFC 3339 time the service holds (in
/// UTC within the years 0001-9999: [`dates`](crate::dates)). The text is kept as it came so the order reads
/// back exactly as it was sent; the instant is what the database stores for
/// ordering, computed here once so the database never re-parses the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateCreated {
    text: String,
    at: OffsetDateTime,
}

impl DateCreated {
    /// The name the order decoder knows this type's rule by.
    pub(crate) const SERDE_NAME: &'static str = "DateCreated";

    /// Parses an RFC 3339 time such as `2021-11-26T06:22:19Z` (`T`, `t` or
    /// a space between date and time, as RFC 3339 allows; `Z`, `z` or an
    /// offset of at most ±23:59).
    pub fn parse(text: &str) -> Result<Self, InvalidDate> {
        let at = dates::parse_rfc3339(text)?;
        Ok(Self {
            text: text.to_owned(),
            at,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant, in UTC, to the microsecond, within the range the
    /// service holds ([`dates`](crate::dates)): binding it to PostgreSQL
    /// converts nothing.
    pub fn instant(&self) -> OffsetDateTime {
        self.at
    }

    /// Microseconds since the Unix epoch: what PostgreSQL stores.
    pub fn unix_micros(&self) -> i64 {
        dates::unix_micros(self.at)
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

impl<'de> Deserialize<'de> for DateCreated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::newtype::deserialize(deserializer, Self::SERDE_NAME, |text: String| {
            DateCreated::parse(&text)
        })
    }
}

impl Order {
    /// The order as compact JSON, in the message's shape.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_sized(0)
    }

    /// [`to_json`](Self::to_json) into a buffer made for about `size`
    /// bytes (the message's length is a close guess): it then grows
    /// rarely, where from empty it grows and copies a dozen times.
    pub fn to_json_sized(&self, size: usize) -> Vec<u8> {
        let mut json = Vec::with_capacity(size);
        // Serializing plain structs of strings and integers into a Vec
        // cannot fail: there are no maps with non-string keys and no I/O.
        match serde_json::to_writer(&mut json, self) {
            Ok(()) => json,
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_checked_exactly() {
        for good in [
            "2021-11-26T06:22:19Z",
            "2021-11-26t06:22:19z",
            "2021-11-26 06:22:19Z",
            "2021-11-26T09:22:19.123+03:00",
            "2021-11-26T06:22:19.123456789-23:59",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(DateCreated::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "2021-11-26X06:22:19Z",
            "2021-11-26T06:22:19",
            "2021-11-26T06:22:19+24:00",
            "2021-11-26T06:22:19+23:60",
            "2021-11-26T06:22:19+0300",
            "2021-11-26T06:22:19.Z",
            "2021-02-30T00:00:00Z",
            "2021-11-26T06:22:19Z ",
            "yesterday",
            "",
        ] {
            assert_eq!(
                DateCreated::parse(bad),
                Err(InvalidDate::NotRfc3339),
                "{bad}"
            );
        }
        assert_eq!(
            DateCreated::parse("2016-12-31T23:59:60Z"),
            Err(InvalidDate::LeapSecond)
        );
        assert_eq!(
            DateCreated::parse("2016-12-31T23:59:60.5Z"),
            Err(InvalidDate::LeapSecond)
        );
        assert_eq!(
            DateCreated::parse("0000-01-01T00:00:00Z"),
            Err(InvalidDate::Year(0))
        );
        assert_eq!(
            DateCreated::parse("0001-01-01T00:00:00+01:00"),
            Err(InvalidDate::OutOfRange)
        );
        assert_eq!(
            DateCreated::parse("9999-12-31T23:00:00-05:00"),
            Err(InvalidDate::OutOfRange)
        );
    }

    #[test]
    fn the_text_is_kept_and_the_instant_computed() {
        let date = DateCreated::parse("2021-11-26T09:22:19.1234567+03:00").expect("valid");
        assert_eq!(date.as_str(), "2021-11-26T09:22:19.1234567+03:00");
        assert_eq!(date.unix_micros(), 1_637_907_739_123_456);
        assert_eq!(date.instant().offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn percent_is_0_to_100() {
        assert_eq!(Percent::try_from(0).map(i64::from), Ok(0));
        assert_eq!(Percent::try_from(100).map(i64::from), Ok(100));
        assert!(Percent::try_from(101).is_err());
        assert!(Percent::try_from(-1).is_err());
    }
}

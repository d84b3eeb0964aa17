//! The order: its shape, written once. Serde's derives turn it into JSON and
//! back, the decoder (`decode.rs`) reads messages into it field by field, and
//! the PostgreSQL adapter maps it to rows by these same field names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::uid::OrderUid;

/// One order, shaped exactly like the message it came from: serializing it
/// gives back the message's field names, types and nesting.
///
/// Messages come in through [`Order::parse`](crate::Order::parse). Money and
/// counts are `i64` because PostgreSQL's `bigint` stores them; the decoder
/// guarantees they are non-negative, and the database's CHECK constraints
/// guard the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// `date_created`, proved to be an RFC 3339 time that PostgreSQL's
/// `timestamptz` can hold. The text is kept as it came so the order reads
/// back exactly as it was sent; the instant is what the database stores for
/// ordering, computed here once so the database never re-parses the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateCreated {
    text: String,
    at: OffsetDateTime,
}

/// Why a string is not a [`DateCreated`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDate {
    #[error("expected an RFC 3339 time such as 2021-11-26T06:22:19Z")]
    NotRfc3339,
    #[error("a leap second (:60) cannot be stored")]
    LeapSecond,
    #[error("year {0} is outside 0001-9999")]
    Year(i32),
}

impl DateCreated {
    /// The name the order decoder knows this type's rule by.
    pub(crate) const SERDE_NAME: &'static str = "DateCreated";

    /// Parses an RFC 3339 time such as `2021-11-26T06:22:19Z` (`T`, `t` or
    /// a space between date and time, as RFC 3339 allows; `Z`, `z` or an
    /// offset of at most ±23:59).
    pub fn parse(text: &str) -> Result<Self, InvalidDate> {
        let at = parse_rfc3339(text)?;
        Ok(Self {
            text: text.to_owned(),
            at,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant, in UTC.
    pub fn instant(&self) -> OffsetDateTime {
        self.at
    }

    /// Nanoseconds since the Unix epoch, for ordering.
    pub fn unix_nanos(&self) -> i128 {
        self.at.unix_timestamp_nanos()
    }

    /// Microseconds since the Unix epoch: PostgreSQL's precision (finer
    /// digits are truncated, as PostgreSQL rounds them).
    pub fn unix_micros(&self) -> i64 {
        // Years 1-9999 are about ±2.5e17 µs: far inside i64.
        (self.at.unix_timestamp_nanos() / 1_000) as i64
    }
}

/// RFC 3339's `date-time`, exactly: the `time` crate's parser also takes
/// any byte between date and time and offsets past ±23:59, so the grammar
/// is checked here first; a leap second (`:60`) is a valid RFC 3339 time
/// but no `timestamptz`, and years outside 1-9999 are refused too.
fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, InvalidDate> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let shape_ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape_ok {
        return Err(InvalidDate::NotRfc3339);
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(InvalidDate::NotRfc3339);
        }
        rest = &fraction[n..];
    }
    let offset_ok = match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    };
    if !offset_ok {
        return Err(InvalidDate::NotRfc3339);
    }
    if &b[17..19] == b"60" {
        return Err(InvalidDate::LeapSecond);
    }
    // The grammar holds; the time crate checks the calendar (no 30
    // February) and builds the instant. It wants an upper-case `T` and `Z`.
    let mut normal = text.to_owned();
    normal.replace_range(10..11, "T");
    if normal.ends_with('z') {
        normal.replace_range(normal.len() - 1.., "Z");
    }
    let at = OffsetDateTime::parse(&normal, &Rfc3339).map_err(|_| InvalidDate::NotRfc3339)?;
    let year = at.year();
    let utc_year = at.to_offset(time::UtcOffset::UTC).year();
    if !(1..=9999).contains(&year) || !(1..=9999).contains(&utc_year) {
        return Err(InvalidDate::Year(year));
    }
    Ok(at)
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
        // Serializing plain structs of strings and integers into a Vec
        // cannot fail: there are no maps with non-string keys and no I/O.
        serde_json::to_vec(self).unwrap_or_default()
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
            Err(InvalidDate::Year(1))
        );
    }

    #[test]
    fn the_text_is_kept_and_the_instant_computed() {
        let date = DateCreated::parse("2021-11-26T09:22:19.1234567+03:00").expect("valid");
        assert_eq!(date.as_str(), "2021-11-26T09:22:19.1234567+03:00");
        assert_eq!(date.unix_micros(), 1_637_907_739_123_456);
    }

    #[test]
    fn percent_is_0_to_100() {
        assert_eq!(Percent::try_from(0).map(i64::from), Ok(0));
        assert_eq!(Percent::try_from(100).map(i64::from), Ok(100));
        assert!(Percent::try_from(101).is_err());
        assert!(Percent::try_from(-1).is_err());
    }
}

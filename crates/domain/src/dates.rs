//! The instants the service holds, and the one parser of dates that come
//! in. Every date, wherever it enters (a message's `date_created`,
//! `/orders`' `from` and `to`, a listing cursor, `order-publisher replay
//! --since/--until`), is checked against [`FIRST`]..=[`LAST`] there, and
//! one outside is refused there, naming its field; past the edge no code
//! converts an instant that could leave the range.
//!
//! The range is the narrowest of what an instant meets on its way:
//!
//! - PostgreSQL's `timestamptz` holds 4713 BC to 294276 AD, to the
//!   microsecond;
//! - the `time` crate (without its `large-dates` feature, which nothing
//!   here enables) holds the years -9999 to 9999 *in the offset a value is
//!   converted to*, and its `to_offset` panics beyond them: so
//!   `9999-12-31T23:00:00-05:00`, year 10000 in UTC, cannot even be turned
//!   into UTC, and tokio-postgres turns every bound `OffsetDateTime` into
//!   UTC with that panicking call;
//! - RFC 3339 writes the years 0000 to 9999, and the order contract takes
//!   0001 to 9999 (year 0000 is 1 BC, which no producer means).
//!
//! So an instant is held in UTC, from `0001-01-01T00:00:00Z` to
//! `9999-12-31T23:59:59.999999Z`, to the microsecond (PostgreSQL's
//! precision: finer digits are dropped here, toward the past, so every
//! adapter stores the same instant and the range's end stays in it).
//! Being UTC already, binding one to PostgreSQL converts nothing. An
//! instant of the range may not be shifted to another offset (the last day
//! of 9999 plus an hour is out of the `time` crate's range): nothing here
//! does.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The first instant held: 0001-01-01T00:00:00Z.
pub const FIRST: OffsetDateTime = utc_from_unix_micros(-62_135_596_800_000_000);

/// The last instant held: 9999-12-31T23:59:59.999999Z.
pub const LAST: OffsetDateTime = utc_from_unix_micros(253_402_300_799_999_999);

/// [`FIRST`] in microseconds since the Unix epoch (listing cursors).
pub(crate) const FIRST_MICROS: i64 = unix_micros(FIRST);

/// [`LAST`] in microseconds since the Unix epoch.
pub(crate) const LAST_MICROS: i64 = unix_micros(LAST);

const fn utc_from_unix_micros(micros: i64) -> OffsetDateTime {
    // Widening: every i64 is an i128.
    match OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000) {
        Ok(at) => at,
        Err(_) => panic!("the range's ends are instants the time crate holds"),
    }
}

/// Microseconds since the Unix epoch of an instant of the range (whole
/// microseconds, so the division is exact).
pub(crate) const fn unix_micros(at: OffsetDateTime) -> i64 {
    // The range is about ±2.5e17 µs, far inside i64: never truncated.
    (at.unix_timestamp_nanos() / 1_000) as i64
}

/// Why a string is not a date the service holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDate {
    #[error("expected an RFC 3339 time such as 2021-11-26T06:22:19Z")]
    NotRfc3339,
    #[error("a leap second (:60) cannot be stored")]
    LeapSecond,
    #[error("year {0} is outside 0001-9999")]
    Year(i32),
    #[error(
        "in UTC it falls outside the years 0001-9999 \
         (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)"
    )]
    OutOfRange,
}

/// `at` as an instant the service holds: in UTC, to the microsecond, and
/// within [`FIRST`]..=[`LAST`]; `None` when it is outside (whatever its
/// offset: the conversion is the checked one, never a panic).
pub fn held(at: OffsetDateTime) -> Option<OffsetDateTime> {
    let utc = at.checked_to_offset(UtcOffset::UTC)?;
    let micros = utc
        .replace_nanosecond(utc.nanosecond() / 1_000 * 1_000)
        .ok()?;
    (FIRST..=LAST).contains(&micros).then_some(micros)
}

/// RFC 3339's `date-time`, exactly (`T`, `t` or a space between date and
/// time, as RFC 3339 allows; `Z`, `z` or an offset of at most ±23:59; any
/// number of fraction digits), as an instant the service holds (see
/// [`held`]). The `time` crate's parser also takes any byte between date
/// and time and any offset hour up to 23 with minutes past 59, so the
/// grammar is checked here first; a leap second (`:60`) is a valid RFC
/// 3339 time but no `timestamptz`; a written year 0000, or an instant
/// outside the range in UTC, is refused.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, InvalidDate> {
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
    // The grammar holds (so every byte up to the offset is ASCII and the
    // indices below are on character boundaries); the time crate checks
    // the calendar (no 30 February) and builds the instant, in the offset
    // as written. It wants an upper-case `T` and `Z`.
    let mut normal = text.to_owned();
    normal.replace_range(10..11, "T");
    if normal.ends_with('z') {
        normal.replace_range(normal.len() - 1.., "Z");
    }
    let at = OffsetDateTime::parse(&normal, &Rfc3339).map_err(|_| InvalidDate::NotRfc3339)?;
    if !(1..=9999).contains(&at.year()) {
        return Err(InvalidDate::Year(at.year()));
    }
    held(at).ok_or(InvalidDate::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_text(at: OffsetDateTime) -> String {
        at.format(&Rfc3339).expect("formats")
    }

    #[test]
    fn the_range_is_the_years_1_to_9999_in_utc_to_the_microsecond() {
        assert_eq!(utc_text(FIRST), "0001-01-01T00:00:00Z");
        assert_eq!(utc_text(LAST), "9999-12-31T23:59:59.999999Z");
        assert_eq!(FIRST_MICROS, -62_135_596_800_000_000);
        assert_eq!(LAST_MICROS, 253_402_300_799_999_999);
        assert_eq!(FIRST.offset(), UtcOffset::UTC);
        assert_eq!(LAST.offset(), UtcOffset::UTC);
    }

    #[test]
    fn an_offset_that_carries_a_date_out_of_the_years_is_refused_not_a_panic() {
        for (text, why) in [
            // Year 10000 in UTC: `to_offset` would panic here.
            ("9999-12-31T23:00:00-05:00", InvalidDate::OutOfRange),
            (
                "9999-12-31T23:59:59.999999999-23:59",
                InvalidDate::OutOfRange,
            ),
            ("9999-12-31T00:01:00-23:59", InvalidDate::OutOfRange),
            // Year 0000 in UTC.
            ("0001-01-01T00:00:00+00:01", InvalidDate::OutOfRange),
            ("0001-01-01T23:58:59.999+23:59", InvalidDate::OutOfRange),
            // Written in year 0000, whatever it is in UTC.
            ("0000-12-31T23:00:00-05:00", InvalidDate::Year(0)),
            ("0000-01-01T00:00:00Z", InvalidDate::Year(0)),
        ] {
            assert_eq!(parse_rfc3339(text), Err(why), "{text}");
        }
    }

    #[test]
    fn the_edges_themselves_are_held_in_utc() {
        for (text, utc) in [
            ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
            // Finer digits are dropped toward the past, inside the range.
            (
                "9999-12-31T23:59:59.9999999999Z",
                "9999-12-31T23:59:59.999999Z",
            ),
            (
                "9999-12-31T18:59:59.9999995-05:00",
                "9999-12-31T23:59:59.999999Z",
            ),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("0001-01-01T00:00:00-23:59", "0001-01-01T23:59:00Z"),
            ("0001-01-02T00:00:00+23:59", "0001-01-01T00:01:00Z"),
            ("1969-12-31T23:59:59.0000009Z", "1969-12-31T23:59:59Z"),
        ] {
            let at = parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(utc_text(at), utc, "{text}");
            assert_eq!(at.offset(), UtcOffset::UTC, "{text}");
        }
    }

    #[test]
    fn held_converts_with_the_checked_call() {
        let last_day = OffsetDateTime::parse("9999-12-31T23:00:00-05:00", &Rfc3339)
            .expect("the time crate parses it in its own offset");
        assert_eq!(held(last_day), None);
        assert_eq!(
            held(OffsetDateTime::UNIX_EPOCH),
            Some(OffsetDateTime::UNIX_EPOCH)
        );
        let bc = OffsetDateTime::parse("0000-06-01T00:00:00Z", &Rfc3339).expect("parses");
        assert_eq!(held(bc), None);
    }
}

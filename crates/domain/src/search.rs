//! Finding orders by what a customer has at hand: a track number, their
//! customer id, a payment's transaction, a phone or an email, within an
//! optional span of `date_created`. Exact values only: no substring or
//! prefix search on personal data, so the API cannot enumerate customers.

use std::fmt;

use time::OffsetDateTime;

use crate::dates::{self, InvalidDate};

/// The longest search value taken: longer than any real track number,
/// phone or email, short enough that a value never costs the index much.
pub const MAX_SEARCH_LEN: usize = 256;

/// What to look for, with the value in the form the stored one is compared
/// in (a phone normalized by [`normalize_phone`], an email by
/// [`normalize_email`]; the adapter MUST normalize the stored value with
/// the same function, and compare the rest exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    TrackNumber(String),
    CustomerId(String),
    /// The payment's `transaction`.
    Transaction(String),
    /// Normalized by [`normalize_phone`]: `+` and ASCII digits only.
    Phone(String),
    /// Normalized by [`normalize_email`]: ASCII letters in lower case.
    Email(String),
}

/// Why a search parameter is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSearch {
    #[error("{0}: empty; give the exact value")]
    Empty(&'static str),
    #[error("{0}: longer than {MAX_SEARCH_LEN} characters")]
    TooLong(&'static str),
    #[error("phone: no digits")]
    PhoneWithoutDigits,
    #[error("email: expected an address with an @")]
    EmailWithoutAt,
    #[error("{first} and {second} given together: search by one of them at a time")]
    TwoKeys {
        first: &'static str,
        second: &'static str,
    },
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    #[error("{name}: {problem}")]
    Date {
        name: &'static str,
        problem: InvalidDate,
    },
    #[error("from must be before to")]
    EmptySpan,
}

/// The query parameter names of the search keys, in [`SearchKey`]'s order.
pub const SEARCH_KEYS: [&str; 5] = [
    "track_number",
    "customer_id",
    "transaction",
    "phone",
    "email",
];

impl SearchKey {
    /// The key named `name` (one of [`SEARCH_KEYS`]) with `value`, checked
    /// and normalized; `None` when `name` names no key.
    pub fn parse(name: &str, value: &str) -> Option<Result<Self, InvalidSearch>> {
        let name: &'static str = SEARCH_KEYS.into_iter().find(|k| *k == name)?;
        Some(Self::checked(name, value))
    }

    fn checked(name: &'static str, value: &str) -> Result<Self, InvalidSearch> {
        if value.is_empty() {
            return Err(InvalidSearch::Empty(name));
        }
        if value.chars().count() > MAX_SEARCH_LEN {
            return Err(InvalidSearch::TooLong(name));
        }
        let value = value.to_owned();
        Ok(match name {
            "track_number" => Self::TrackNumber(value),
            "customer_id" => Self::CustomerId(value),
            "transaction" => Self::Transaction(value),
            "phone" => {
                let phone = normalize_phone(&value);
                if !phone.bytes().any(|b| b.is_ascii_digit()) {
                    return Err(InvalidSearch::PhoneWithoutDigits);
                }
                Self::Phone(phone)
            }
            _ => {
                if !value.contains('@') {
                    return Err(InvalidSearch::EmailWithoutAt);
                }
                Self::Email(normalize_email(&value))
            }
        })
    }

    /// The parameter name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TrackNumber(_) => "track_number",
            Self::CustomerId(_) => "customer_id",
            Self::Transaction(_) => "transaction",
            Self::Phone(_) => "phone",
            Self::Email(_) => "email",
        }
    }

    /// The value, as compared.
    pub fn value(&self) -> &str {
        match self {
            Self::TrackNumber(v)
            | Self::CustomerId(v)
            | Self::Transaction(v)
            | Self::Phone(v)
            | Self::Email(v) => v,
        }
    }
}

impl fmt::Display for SearchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name(), self.value())
    }
}

/// A phone as it is compared: every Unicode decimal digit (Arabic-Indic,
/// fullwidth, ...) turned into its ASCII digit, then `+` and the ASCII
/// digits kept, in their order, and everything else (spaces, dashes,
/// brackets, dots, other characters) dropped. Dropping a non-ASCII digit
/// instead would make the phone a shorter number, someone else's. The
/// migration `V6__search_normalization.sql` defines `order_phone_key`, the
/// same function in SQL, and indexes it; a test holds the two to agreement.
pub fn normalize_phone(raw: &str) -> String {
    raw.chars()
        .filter_map(|c| match c {
            '0'..='9' | '+' => Some(c),
            _ => crate::digits::ascii_digit(c),
        })
        .collect()
}

/// An email as it is compared: the ASCII letters in lower case, every
/// other character as it is. No Unicode case folding: it depends on a
/// version and a locale, and would let the Kelvin sign match a `k` or a
/// dotted capital I an `i`, a different address. The migration
/// `V6__search_normalization.sql` defines `order_email_key` (`lower(email
/// COLLATE "C")`, which folds A-Z alone), the same function in SQL.
pub fn normalize_email(raw: &str) -> String {
    raw.to_ascii_lowercase()
}

/// Which orders to list: all, or those matching one key, within an
/// optional span of `date_created` (`from` inclusive, `to` exclusive; each
/// an instant the service holds, in UTC: [`dates`](crate::dates)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderQuery {
    pub key: Option<SearchKey>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

impl OrderQuery {
    /// Every order, newest first.
    pub fn all() -> Self {
        Self::default()
    }

    /// Orders matching `key`.
    pub fn by(key: SearchKey) -> Self {
        Self {
            key: Some(key),
            ..Self::default()
        }
    }

    /// Takes one query parameter if it is a search parameter (a key,
    /// `from` or `to`): `None` when the name is none of them, so the caller
    /// can handle the rest (`limit`, `before`) or refuse it.
    pub fn take(&mut self, name: &str, value: &str) -> Option<Result<(), InvalidSearch>> {
        match name {
            "from" | "to" => Some(self.take_date(name, value)),
            _ => {
                let key = SearchKey::parse(name, value)?;
                Some(key.and_then(|key| self.take_key(key)))
            }
        }
    }

    fn take_key(&mut self, key: SearchKey) -> Result<(), InvalidSearch> {
        match &self.key {
            Some(first) if first.name() == key.name() => Err(InvalidSearch::Repeated(key.name())),
            Some(first) => Err(InvalidSearch::TwoKeys {
                first: first.name(),
                second: key.name(),
            }),
            None => {
                self.key = Some(key);
                Ok(())
            }
        }
    }

    fn take_date(&mut self, name: &str, value: &str) -> Result<(), InvalidSearch> {
        let (name, slot) = if name == "from" {
            ("from", &mut self.from)
        } else {
            ("to", &mut self.to)
        };
        if slot.is_some() {
            return Err(InvalidSearch::Repeated(name));
        }
        let at =
            dates::parse_rfc3339(value).map_err(|problem| InvalidSearch::Date { name, problem })?;
        *slot = Some(at);
        Ok(())
    }

    /// Checks what only the whole query can show (call after the last
    /// [`take`](Self::take)).
    pub fn finish(self) -> Result<Self, InvalidSearch> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if from >= to => Err(InvalidSearch::EmptySpan),
            _ => Ok(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<OrderQuery, InvalidSearch> {
        let mut q = OrderQuery::all();
        for (name, value) in pairs {
            q.take(name, value).expect("a search parameter")?;
        }
        q.finish()
    }

    #[test]
    fn phones_keep_the_plus_and_the_digits_of_every_script_as_ascii() {
        assert_eq!(normalize_phone("+972 (000) 00-00.00"), "+972000000000");
        assert_eq!(normalize_phone("8 900 123"), "8900123");
        // Arabic-Indic 3 4 5, fullwidth 4 5, extended Arabic-Indic 9,
        // mathematical bold 7: each its ASCII digit, not dropped.
        assert_eq!(
            normalize_phone("\u{663}\u{664}\u{665} \u{FF14}\u{FF15} \u{6F9}\u{1D7D5} x"),
            "3454597"
        );
        // A fullwidth plus is no '+', a superscript two no digit.
        assert_eq!(normalize_phone("\u{FF0B}1\u{B2}"), "1");
    }

    #[test]
    fn emails_fold_ascii_letters_only() {
        assert_eq!(normalize_email("Ann@Example.COM"), "ann@example.com");
        // The Kelvin sign, a dotted capital I, an E with an acute accent,
        // a sharp s: kept as they are, so never an ASCII address.
        assert_eq!(
            normalize_email("\u{212A}IM@\u{130}.\u{C9}x\u{1E9E}"),
            "\u{212A}im@\u{130}.\u{C9}x\u{1E9E}"
        );
    }

    #[test]
    fn each_key_is_parsed_and_normalized_once() {
        assert_eq!(
            query(&[("phone", " +7 (900) 123-45-67 ")]).map(|q| q.key),
            Ok(Some(SearchKey::Phone("+79001234567".into())))
        );
        assert_eq!(
            query(&[("email", "Test@Gmail.com")]).map(|q| q.key),
            Ok(Some(SearchKey::Email("test@gmail.com".into())))
        );
        assert_eq!(
            query(&[("phone", "+7 \u{669}\u{660}\u{660} 1")]).map(|q| q.key),
            Ok(Some(SearchKey::Phone("+79001".into())))
        );
        assert_eq!(
            query(&[("track_number", "WBILMTESTTRACK")]).map(|q| q.key),
            Ok(Some(SearchKey::TrackNumber("WBILMTESTTRACK".into())))
        );
        let span = query(&[
            ("from", "2021-11-26T00:00:00Z"),
            ("to", "2021-11-27T00:00:00+03:00"),
        ])
        .expect("a span");
        assert_eq!(span.key, None);
        assert!(span.from < span.to);
        // Held in UTC, so binding them converts nothing.
        let offsets = [span.from, span.to].map(|at| at.map(|at| at.offset()));
        assert_eq!(offsets, [Some(time::UtcOffset::UTC); 2]);
    }

    #[test]
    fn bad_searches_name_the_parameter() {
        let cases: [(&[(&str, &str)], &str); 10] = [
            (&[("phone", "")], "phone: empty"),
            (&[("phone", "call me")], "phone: no digits"),
            (&[("email", "nobody")], "email: expected an address"),
            (
                &[("phone", "1"), ("email", "a@b")],
                "phone and email given together",
            ),
            (
                &[("customer_id", "a"), ("customer_id", "b")],
                "customer_id is given more than once",
            ),
            (&[("from", "yesterday")], "from: expected an RFC 3339 time"),
            (&[("to", "2021-11-26")], "to: expected an RFC 3339 time"),
            // In the years 0001-9999 as written, year 10000 in UTC.
            (
                &[("from", "9999-12-31T23:00:00-05:00")],
                "from: in UTC it falls outside",
            ),
            (
                &[("to", "0001-01-01T00:00:00+00:01")],
                "to: in UTC it falls outside",
            ),
            (
                &[
                    ("from", "2021-11-27T00:00:00Z"),
                    ("to", "2021-11-26T00:00:00Z"),
                ],
                "from must be before to",
            ),
        ];
        for (pairs, message) in cases {
            let err = query(pairs).expect_err("refused");
            assert!(err.to_string().starts_with(message), "{pairs:?}: {err}");
        }
        let long = "1".repeat(MAX_SEARCH_LEN + 1);
        assert_eq!(
            query(&[("transaction", &long)]),
            Err(InvalidSearch::TooLong("transaction"))
        );
    }

    #[test]
    fn other_names_are_left_to_the_caller() {
        assert!(OrderQuery::all().take("limit", "5").is_none());
        assert!(OrderQuery::all().take("order_uid", "x").is_none());
        assert!(OrderQuery::all().take("Phone", "1").is_none());
    }
}

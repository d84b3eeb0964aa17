use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest order uid we accept. Long enough for any uid scheme in use
/// (UUIDs, ULIDs, the 19-character sample), short enough to index cheaply.
pub const MAX_UID_LEN: usize = 64;

/// An order's identifier, proved valid: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// A raw string becomes an `OrderUid` once, at the edge (a message, a query
/// string); everything past the edge can rely on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderUid(String);

impl Serialize for OrderUid {
    /// As its text (without the copy `#[serde(into = "String")]` makes).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a string is not an [`OrderUid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrderUid {
    #[error("empty")]
    Empty,
    #[error("longer than {MAX_UID_LEN} characters")]
    TooLong,
    #[error("may hold only letters, digits, '_' and '-'")]
    BadCharacter,
}

impl OrderUid {
    /// The name the order decoder knows this type's rule by.
    pub(crate) const SERDE_NAME: &'static str = "OrderUid";

    /// Parses a uid, naming the rule it breaks when it is not one.
    pub fn parse(raw: &str) -> Result<Self, InvalidOrderUid> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    fn check(raw: &str) -> Result<(), InvalidOrderUid> {
        if raw.is_empty() {
            return Err(InvalidOrderUid::Empty);
        }
        if raw.len() > MAX_UID_LEN {
            return Err(InvalidOrderUid::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(InvalidOrderUid::BadCharacter);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrderUid {
    type Error = InvalidOrderUid;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }
}

impl<'de> Deserialize<'de> for OrderUid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::newtype::deserialize(
            deserializer,
            Self::SERDE_NAME,
            <Self as TryFrom<String>>::try_from,
        )
    }
}

impl From<OrderUid> for String {
    fn from(uid: OrderUid) -> Self {
        uid.0
    }
}

impl fmt::Display for OrderUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for OrderUid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_uid_is_valid() {
        assert_eq!(
            OrderUid::parse("b563feb7b2b84b6test").map(String::from),
            Ok("b563feb7b2b84b6test".to_owned())
        );
    }

    #[test]
    fn each_rule_is_named() {
        assert_eq!(OrderUid::parse(""), Err(InvalidOrderUid::Empty));
        assert_eq!(
            OrderUid::parse(&"a".repeat(65)),
            Err(InvalidOrderUid::TooLong)
        );
        assert!(OrderUid::parse(&"a".repeat(64)).is_ok());
        for bad in ["a b", "a'; drop table x;--", "é", "a/b", "a.b", "..", "a\0"] {
            assert_eq!(
                OrderUid::parse(bad),
                Err(InvalidOrderUid::BadCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn deserializing_checks_the_rules() {
        let parsed: Result<OrderUid, _> = serde_json::from_str("\"bad uid\"");
        assert!(parsed.is_err());
    }
}

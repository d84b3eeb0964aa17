//! How the order's validated newtypes meet serde: each one deserializes
//! through `deserialize_newtype_struct` under its own name, so the message
//! decoder can apply the type's rule by that name, and any other
//! deserializer (serde_json, a database row) simply gets the inner value.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Deserializes `T` as the newtype `name` around an `R`, checked by `parse`.
pub(crate) fn deserialize<'de, D, R, T, E>(
    deserializer: D,
    name: &'static str,
    parse: fn(R) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
    E: fmt::Display,
{
    deserializer.deserialize_newtype_struct(
        name,
        Newtype {
            name,
            parse,
            inner: PhantomData,
        },
    )
}

struct Newtype<R, T, E> {
    name: &'static str,
    parse: fn(R) -> Result<T, E>,
    inner: PhantomData<R>,
}

impl<'de, R, T, E> Visitor<'de> for Newtype<R, T, E>
where
    R: Deserialize<'de>,
    E: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a valid {}", self.name)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let raw = R::deserialize(d)?;
        (self.parse)(raw).map_err(de::Error::custom)
    }
}

//! The list of recent orders: newest first, keyset-paginated.

use std::fmt;

use serde::Serialize;

use crate::dates::{FIRST_MICROS, LAST_MICROS};
use crate::order::Order;
use crate::uid::OrderUid;

/// The most orders one page of the list holds, whatever the client asks.
pub const MAX_PAGE: usize = 100;
/// The page size when the client does not ask for one.
pub const DEFAULT_PAGE: usize = 20;

/// A position in the list: the (creation time, uid) of the last order on a
/// page. The next page holds the orders strictly older than it. Written as
/// `MICROS.UID` (microseconds since the Unix epoch, a dot, the uid), which
/// needs no escaping in a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_micros: i64,
    pub order_uid: OrderUid,
}

/// Why a string is not an [`OrderCursor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("before: expected a cursor from a previous page's \"next\"")]
pub struct InvalidCursor;

impl OrderCursor {
    pub fn parse(raw: &str) -> Result<Self, InvalidCursor> {
        let (micros, uid) = raw.split_once('.').ok_or(InvalidCursor)?;
        let created_micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
        // The instants a stored order can have (crate::dates): a cursor
        // outside them points at no order and would overflow the
        // database's arithmetic.
        if !(FIRST_MICROS..=LAST_MICROS).contains(&created_micros) {
            return Err(InvalidCursor);
        }
        let order_uid = OrderUid::parse(uid).map_err(|_| InvalidCursor)?;
        Ok(Self {
            created_micros,
            order_uid,
        })
    }
}

impl fmt::Display for OrderCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_micros, self.order_uid)
    }
}

/// One line of the list of recent orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderSummary {
    pub order_uid: OrderUid,
    /// As sent in the order.
    pub date_created: String,
    pub amount: i64,
    pub currency: String,
    /// Where this line stands in the list.
    #[serde(skip)]
    pub cursor: OrderCursor,
}

impl OrderSummary {
    /// The line of the list that `order` is.
    pub fn of(order: &Order) -> Self {
        Self {
            order_uid: order.order_uid.clone(),
            date_created: order.date_created.to_string(),
            amount: order.payment.amount,
            currency: order.payment.currency.clone(),
            cursor: OrderCursor {
                created_micros: order.date_created.unix_micros(),
                order_uid: order.order_uid.clone(),
            },
        }
    }
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// The cursor for the next page, or `None` on the last page.
    pub next: Option<String>,
}

impl OrderPage {
    /// A page from the lines the repository returned for a request of
    /// `limit` lines: a full page may have more after it.
    pub fn new(orders: Vec<OrderSummary>, limit: usize) -> Self {
        let next = next_cursor(&orders, limit, |last| last.cursor.to_string());
        Self { orders, next }
    }
}

/// The cursor of a page of `rows` read for a request of `limit`: that of
/// its last row when the page is full (more may follow), else none.
pub(crate) fn next_cursor<T, C>(
    rows: &[T],
    limit: usize,
    cursor: impl FnOnce(&T) -> C,
) -> Option<C> {
    rows.last().filter(|_| rows.len() == limit).map(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = OrderCursor {
            created_micros: 1_637_907_739_000_000,
            order_uid: OrderUid::parse("b563feb7b2b84b6test").expect("uid"),
        };
        let text = cursor.to_string();
        assert_eq!(text, "1637907739000000.b563feb7b2b84b6test");
        assert_eq!(OrderCursor::parse(&text), Ok(cursor));
    }

    #[test]
    fn cursors_at_the_ends_of_the_stored_years_are_taken() {
        assert!(OrderCursor::parse("253402300799999999.last").is_ok());
        assert!(OrderCursor::parse("-62135596800000000.first").is_ok());
    }

    #[test]
    fn the_cursors_of_the_first_and_last_dates_held_are_taken_and_no_further() {
        for (date, step) in [
            ("0001-01-01T00:00:00Z", -1),
            ("9999-12-31T23:59:59.999999999Z", 1),
        ] {
            let micros = crate::DateCreated::parse(date).expect("held").unix_micros();

            assert!(
                OrderCursor::parse(&format!("{micros}.edge")).is_ok(),
                "{date}"
            );
            let beyond = format!("{}.edge", micros + step);
            assert_eq!(OrderCursor::parse(&beyond), Err(InvalidCursor), "{beyond}");
        }
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in [
            "",
            "123",
            "x.abc",
            "12.",
            "12.a b",
            "-.x",
            "1.2.3",
            "9223372036854775807.zzz",
            "-9223372036854775808.zzz",
            "253402300800000000.late",
            "-62135596800000001.early",
            "99999999999999999999999.huge",
        ] {
            assert_eq!(OrderCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
        }
    }
}

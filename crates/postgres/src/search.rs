//! The statements that list orders (all, or found by a key) and rejected
//! messages: only the conditions a request has are written, so each kind
//! of request gets a plan of its own that walks its index
//! (`migrations/V3__search_indexes.sql`, the phone's and email's in
//! `V6__search_normalization.sql`). Public so a test can `EXPLAIN`
//! exactly what the repository runs.

use orders_domain::{OrderCursor, OrderQuery, RejectReason, RejectedId, SearchKey};
use tokio_postgres::types::ToSql;

/// A parameter of a built statement.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// SQL and its parameters, in order.
#[derive(Debug)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Statement {
    /// The parameters as tokio-postgres takes them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `WHERE a AND b ...`, numbering the parameters as they are added.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Conditions {
    /// Adds `clause`, in which `{}` stands for the next parameter.
    fn add(&mut self, clause: &str, param: Param) {
        self.params.push(param);
        let placeholder = format!("${}", self.params.len());
        self.clauses.push(clause.replace("{}", &placeholder));
    }

    /// Adds `clause` with two parameters, `{1}` and `{2}`.
    fn add_two(&mut self, clause: &str, first: Param, second: Param) {
        let n = self.params.len();
        self.params.push(first);
        self.params.push(second);
        self.clauses.push(
            clause
                .replace("{1}", &format!("${}", n + 1))
                .replace("{2}", &format!("${}", n + 2)),
        );
    }

    /// ` WHERE ...` (or nothing) and ` LIMIT $n`, with the ordering between.
    fn finish(mut self, select: &str, order_by: &str, limit: usize) -> Statement {
        let mut sql = select.to_owned();
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        self.params
            .push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
        sql.push_str(&format!(
            " ORDER BY {order_by} LIMIT ${}",
            self.params.len()
        ));
        Statement {
            sql,
            params: self.params,
        }
    }
}

/// A phone in its normal form, in SQL: the expression the index
/// `delivery_phone_key` holds, and `orders_domain::normalize_phone`'s twin
/// (`migrations/V6__search_normalization.sql`).
pub const NORMALIZED_PHONE: &str = "order_phone_key(d.phone)";

/// An email in its normal form, in SQL: the expression the index
/// `delivery_email_key` holds, and `orders_domain::normalize_email`'s twin.
pub const NORMALIZED_EMAIL: &str = "order_email_key(d.email)";

/// One page of orders matching `query`, newest first, older than `before`.
/// The columns: uid, date_created, micros, amount, currency.
pub fn list_orders(query: &OrderQuery, limit: usize, before: Option<&OrderCursor>) -> Statement {
    let mut from = "SELECT o.order_uid, o.date_created, \
         (extract(epoch FROM o.created_at) * 1000000)::bigint AS micros, p.amount, p.currency \
         FROM order_info o JOIN payment p USING (order_uid)"
        .to_owned();
    let mut conditions = Conditions::default();
    if let Some(key) = &query.key {
        let value: Param = Box::new(key.value().to_owned());
        match key {
            SearchKey::TrackNumber(_) => conditions.add("o.track_number = {}", value),
            SearchKey::CustomerId(_) => conditions.add("o.customer_id = {}", value),
            SearchKey::Transaction(_) => conditions.add("p.transaction = {}", value),
            SearchKey::Phone(_) => {
                from.push_str(" JOIN delivery d USING (order_uid)");
                conditions.add(&format!("{NORMALIZED_PHONE} = {{}}"), value);
            }
            SearchKey::Email(_) => {
                from.push_str(" JOIN delivery d USING (order_uid)");
                conditions.add(&format!("{NORMALIZED_EMAIL} = {{}}"), value);
            }
        }
    }
    if let Some(at) = query.from {
        conditions.add("o.created_at >= {}", Box::new(at));
    }
    if let Some(at) = query.to {
        conditions.add("o.created_at < {}", Box::new(at));
    }
    if let Some(cursor) = before {
        // Microseconds are added to the epoch as an interval, exactly,
        // rather than through a float.
        conditions.add_two(
            "(o.created_at, o.order_uid) < \
             ('epoch'::timestamptz + {1}::bigint * interval '1 microsecond', {2}::text)",
            Box::new(cursor.created_micros),
            Box::new(cursor.order_uid.as_str().to_owned()),
        );
    }
    conditions.finish(&from, "o.created_at DESC, o.order_uid DESC", limit)
}

/// The columns of a line of the rejected messages' list.
pub const REJECTED_SUMMARY: &str = "id, received_at, reason, detail, order_uid, \
     octet_length(payload)::bigint AS size, replayed_at";

/// One page of rejected messages, newest (highest id) first.
pub fn list_rejected(
    reason: Option<RejectReason>,
    limit: usize,
    before: Option<RejectedId>,
) -> Statement {
    let mut conditions = Conditions::default();
    if let Some(reason) = reason {
        conditions.add("reason = {}", Box::new(reason.as_str()));
    }
    if let Some(id) = before {
        conditions.add("id < {}", Box::new(id.get()));
    }
    conditions.finish(
        &format!("SELECT {REJECTED_SUMMARY} FROM rejected_messages"),
        "id DESC",
        limit,
    )
}

/// A rejected message whole, by id.
pub fn find_rejected(id: RejectedId) -> Statement {
    Statement {
        sql: format!(
            "SELECT {REJECTED_SUMMARY}, subject, stream, stream_sequence, headers, payload \
             FROM rejected_messages WHERE id = $1"
        ),
        params: vec![Box::new(id.get())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_conditions_asked_for_are_written() {
        let all = list_orders(&OrderQuery::all(), 20, None);
        assert!(!all.sql.contains("WHERE"), "{}", all.sql);
        assert!(all.sql.ends_with("LIMIT $1"), "{}", all.sql);

        let cursor = OrderCursor::parse("5.abc").expect("cursor");
        let phone = OrderQuery {
            key: Some(SearchKey::Phone("+7900".into())),
            from: Some(time::OffsetDateTime::UNIX_EPOCH),
            to: None,
        };
        let page = list_orders(&phone, 20, Some(&cursor));
        assert!(page.sql.contains("JOIN delivery d"), "{}", page.sql);
        assert!(
            page.sql.contains(
                "WHERE order_phone_key(d.phone) = $1 AND o.created_at >= $2 \
                 AND (o.created_at, o.order_uid) < ('epoch'::timestamptz + $3::bigint"
            ),
            "{}",
            page.sql
        );
        assert!(page.sql.ends_with("LIMIT $5"), "{}", page.sql);
        assert_eq!(page.params.len(), 5);

        let rejected = list_rejected(Some(RejectReason::Conflict), 10, RejectedId::new(9).ok());
        assert!(
            rejected
                .sql
                .ends_with("WHERE reason = $1 AND id < $2 ORDER BY id DESC LIMIT $3"),
            "{}",
            rejected.sql
        );
    }
}

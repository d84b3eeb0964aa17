//! The repository's SQL, in one place. Statements that name the order's
//! columns are built from `schema.rs`, once, at first use; the listing and
//! search statements, built per request, are in `search.rs`.

use std::sync::LazyLock;

use crate::schema::{DELIVERY, ITEMS, ORDER_INFO, PAYMENT, TABLES, Table};

/// Inserts a batch of orders into the four tables in ONE statement, so in
/// one transaction and one round trip. Each column comes as an array and is
/// turned back into rows by `UNNEST`. Uids already stored are skipped by `ON
/// CONFLICT DO NOTHING`; the other tables take only the rows whose uid
/// `info` returned, so a skipped order adds nothing anywhere. The uids in a
/// batch must be distinct (the caller sees to it). Every parameter is cast
/// so its type does not depend on inference:
///
/// ```sql
/// WITH info AS (INSERT INTO order_info (order_uid, ...) SELECT u.* FROM UNNEST($1::text[], ...)
///               AS u(order_uid, ...) ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid),
///      t1 AS (INSERT INTO delivery (order_uid, ...) SELECT u.* FROM UNNEST($13::text[], ...)
///               AS u(order_uid, ...) JOIN info USING (order_uid)), ...
/// SELECT order_uid FROM info
/// ```
pub(crate) static INSERT_ORDERS: LazyLock<String> = LazyLock::new(|| {
    let mut next = 0;
    insert_all(|table| {
        let params: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                next += 1;
                format!("${next}::{}[]", c.sql_type.as_sql())
            })
            .collect();
        (
            "u.*".to_owned(),
            format!(
                "UNNEST({}) AS u({})",
                params.join(", "),
                table.column_list()
            ),
        )
    })
});

/// One statement that inserts into the four tables: `order_info` first,
/// skipping uids stored already, then each other table's rows of the uids
/// it took, each table's rows from `source(table)` (a select list and a
/// FROM item). Returns the uids taken. Public for tools that fill the
/// tables from other sources (the bench inserts from staging tables).
pub fn insert_all(mut source: impl FnMut(&Table) -> (String, String)) -> String {
    let [info, parts @ ..] = TABLES;
    let (select, from) = source(info);
    let mut sql = format!(
        "WITH info AS (INSERT INTO {} ({}) SELECT {select} FROM {from} \
         ON CONFLICT (order_uid) DO NOTHING RETURNING order_uid)",
        info.name,
        info.column_list(),
    );
    for (n, part) in parts.iter().enumerate() {
        let (select, from) = source(part);
        sql.push_str(&format!(
            ", t{n} AS (INSERT INTO {} ({}) SELECT {select} FROM {from} JOIN info USING (order_uid))",
            part.name,
            part.column_list(),
        ));
    }
    sql.push_str(" SELECT order_uid FROM info");
    sql
}

/// The stored documents of the orders whose uids are in $1: what a batch's
/// duplicate is compared with (NULL for an order stored before documents
/// were kept), and whether each was erased.
pub(crate) const DOCUMENTS_OF: &str = "SELECT order_uid, document, erased_at IS NOT NULL \
     FROM order_info WHERE order_uid = ANY($1)";

/// Every erased order's uid, by the partial index `order_info_erased`.
pub(crate) const ERASED_ORDERS: &str =
    "SELECT order_uid FROM order_info WHERE erased_at IS NOT NULL";

/// An order's own columns from `order_info`, `delivery` and `payment`,
/// named like its fields, over the aliases `o`, `d` and `p`.
static ORDER_FIELDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, {}, {}",
        ORDER_INFO.field_select(),
        DELIVERY.field_select(),
        PAYMENT.field_select()
    )
});

/// The joins that put an order's one-row parts beside it.
const ORDER_JOINS: &str = "JOIN delivery d USING (order_uid) JOIN payment p USING (order_uid)";

/// One order from its rows (an order stored before documents were kept).
pub(crate) static FIND_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM order_info o {ORDER_JOINS} WHERE o.order_uid = $1",
        *ORDER_FIELDS
    )
});

pub(crate) static FIND_ITEMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM items i WHERE i.order_uid = $1 ORDER BY i.position",
        ITEMS.field_select()
    )
});

/// One order's document: one row of one table, by its primary key.
pub(crate) const FIND_DOCUMENT: &str = "SELECT document FROM order_info WHERE order_uid = $1";

/// The orders whose uids are in $1, from their rows.
pub(crate) static ORDERS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM order_info o {ORDER_JOINS} WHERE o.order_uid = ANY($1)",
        *ORDER_FIELDS
    )
});

/// The items of the orders whose uids are in $1, each with its position.
pub(crate) static ITEMS_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT i.order_uid, i.position, {} FROM items i WHERE i.order_uid = ANY($1)",
        ITEMS.field_select()
    )
});

/// Where the newest `$1 + 1` orders end: the oldest of them, by the
/// index `order_info_newest` alone (an index-only scan where the table is
/// vacuumed). No row: there are no more orders than that.
pub(crate) const NEWEST_CUTOFF: &str = "SELECT created_at, order_uid FROM order_info \
     ORDER BY created_at DESC, order_uid DESC OFFSET $1 LIMIT 1";

/// Every order's document, read straight through the table (in no order:
/// a sequential scan, where the index's order would read the table's pages
/// at random, 2.3x slower for a million orders).
pub(crate) const ALL_DOCUMENTS: &str = "SELECT order_uid, document FROM order_info";

/// The documents of the orders at or after a cutoff ($1, $2). The planner
/// picks the index for a few, a sequential scan for most: the statement is
/// planned with the cutoff's values.
pub(crate) const DOCUMENTS_SINCE: &str = "SELECT order_uid, document FROM order_info \
     WHERE (created_at, order_uid) >= ($1, $2)";

/// Writes the documents of orders stored before they were kept (V5):
/// only where none is yet, so a document is never replaced.
pub(crate) const BACKFILL_DOCUMENTS: &str = "UPDATE order_info o SET document = d.document \
     FROM UNNEST($1::text[], $2::bytea[]) AS d(order_uid, document) \
     WHERE o.order_uid = d.order_uid AND o.document IS NULL";

/// The orders after an event id ($1), through another ($2), lowest id
/// first, at most $3, by the index `order_info_event`: each as its line of
/// the list (uid, date_created, micros, amount, currency, the columns
/// `search::list_orders` gives), its event id and its document.
pub(crate) const STORED_SINCE: &str = "SELECT o.order_uid, o.date_created, \
     (extract(epoch FROM o.created_at) * 1000000)::bigint AS micros, p.amount, p.currency, \
     o.event_id, o.document \
     FROM order_info o JOIN payment p USING (order_uid) \
     WHERE o.event_id > $1 AND o.event_id <= $2 ORDER BY o.event_id LIMIT $3";

/// Records a rejected message, once per stream and sequence; one that
/// names an erased order ($3) as `erased`, without its bytes or headers
/// (they would store the erased data again). Answers whether it named one.
pub(crate) const INSERT_REJECTION: &str = "\
WITH erased AS (
    SELECT EXISTS (SELECT 1 FROM order_info WHERE order_uid = $3 AND erased_at IS NOT NULL) AS yes
), recorded AS (
    INSERT INTO rejected_messages (reason, detail, order_uid, subject, stream, stream_sequence, headers, payload)
    SELECT CASE WHEN e.yes THEN 'erased' ELSE $1 END,
           CASE WHEN e.yes THEN 'order_uid ' || $3 || ' was erased on request; nothing of this message is kept' ELSE $2 END,
           $3, $4, $5, $6,
           CASE WHEN e.yes THEN NULL ELSE $7 END,
           CASE WHEN e.yes THEN ''::bytea ELSE $8 END
    FROM erased e
    ON CONFLICT ON CONSTRAINT rejected_once DO NOTHING
)
SELECT yes FROM erased";

/// Whether our commits are confirmed by a synchronous standby: the primary
/// names synchronous standbys, this session's commits wait for them
/// (`synchronous_commit` from `remote_write` up), and at least one is
/// streaming as `sync` (or `quorum`, for `ANY n (...)`). Standbys whose
/// details the role may not see (without `pg_read_all_stats`) are
/// counted apart.
pub(crate) const SYNC_STANDBY: &str = "\
SELECT current_setting('synchronous_standby_names') <> ''
         AND current_setting('synchronous_commit') IN ('on', 'remote_write', 'remote_apply'),
       count(*) FILTER (WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')),
       count(*) FILTER (WHERE sync_state IS NULL)
FROM pg_stat_replication";

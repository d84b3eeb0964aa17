//! What `order-publisher replay` reads and marks in `rejected_messages`:
//! rows chosen by id, reason or time, published again, and marked
//! `replayed_at`, never deleted.

use orders_domain::RejectReason;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

/// Which rejected messages to replay. Rows already replayed are left out
/// unless `again`; rows rejected as `erased` always (they keep no bytes).
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub ids: Vec<i64>,
    pub reason: Option<RejectReason>,
    /// Received at or after.
    pub since: Option<OffsetDateTime>,
    /// Received before.
    pub until: Option<OffsetDateTime>,
    pub again: bool,
}

impl ReplayFilter {
    /// Whether the filter chooses rows at all (an empty one would choose
    /// every row, which nobody should get by forgetting a flag).
    pub fn chooses(&self) -> bool {
        !self.ids.is_empty()
            || self.reason.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// One row to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayable {
    pub id: i64,
    pub reason: String,
    pub detail: String,
    pub subject: String,
    pub received_at: OffsetDateTime,
    pub replayed_at: Option<OffsetDateTime>,
    pub payload: Vec<u8>,
    /// The message's NATS headers as they arrived (its `traceparent`
    /// among them, so a replay continues the first send's trace).
    pub headers: Option<String>,
}

/// The rows `filter` chooses, oldest first (so a replay keeps the order
/// in which they first came).
pub async fn replayable(
    client: &impl GenericClient,
    filter: &ReplayFilter,
) -> Result<Vec<Replayable>, tokio_postgres::Error> {
    let ids = (!filter.ids.is_empty()).then_some(&filter.ids);
    let reason = filter.reason.map(RejectReason::as_str);
    let rows = client
        .query(
            "SELECT id, reason, detail, subject, received_at, replayed_at, payload, headers \
             FROM rejected_messages \
             WHERE ($1::bigint[] IS NULL OR id = ANY($1)) \
               AND ($2::text IS NULL OR reason = $2) \
               AND ($3::timestamptz IS NULL OR received_at >= $3) \
               AND ($4::timestamptz IS NULL OR received_at < $4) \
               AND ($5 OR replayed_at IS NULL) \
               AND reason <> 'erased' \
             ORDER BY id",
            &[&ids, &reason, &filter.since, &filter.until, &filter.again],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Replayable {
                id: row.try_get(0)?,
                reason: row.try_get(1)?,
                detail: row.try_get(2)?,
                subject: row.try_get(3)?,
                received_at: row.try_get(4)?,
                replayed_at: row.try_get(5)?,
                payload: row.try_get(6)?,
                headers: row.try_get(7)?,
            })
        })
        .collect()
}

/// Marks row `id` as replayed now.
pub async fn mark_replayed(
    client: &impl GenericClient,
    id: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rejected_messages SET replayed_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(())
}

//! The rejected messages: recorded by ingest ([`OrderStore::record_rejection`]),
//! read by the support desk ([`RejectedReads`]).
//!
//! [`OrderStore::record_rejection`]: orders_domain::OrderStore::record_rejection

use async_trait::async_trait;
use orders_domain::{
    Payload, Recorded, RejectReason, RejectedId, RejectedMessage, RejectedReads, RejectedSummary,
    Rejection, RepositoryError,
};
use tokio_postgres::Row;

use crate::errors::{corrupt, from_pg};
use crate::reads::query_all;
use crate::repository::PgOrderRepository;
use crate::sql;

/// Records `r` on the primary, once per stream and sequence.
pub(crate) async fn record(
    repo: &PgOrderRepository,
    r: &Rejection,
) -> Result<Recorded, RepositoryError> {
    let client = repo.client().await?;
    let statement = client
        .prepare_cached(sql::INSERT_REJECTION)
        .await
        .map_err(from_pg)?;
    let sequence = r.stream_sequence.and_then(|s| i64::try_from(s).ok());
    let row = client
        .query_one(
            &statement,
            &[
                &r.reason.as_str(),
                &r.detail,
                &r.order_uid,
                &r.subject,
                &r.stream,
                &sequence,
                &r.headers,
                &r.payload.as_ref(),
            ],
        )
        .await
        .map_err(from_pg)?;
    let erased: bool = row.try_get(0).map_err(|e| corrupt("rejection", e))?;
    Ok(if erased {
        Recorded::Erased
    } else {
        Recorded::Kept
    })
}

#[async_trait]
impl RejectedReads for PgOrderRepository {
    async fn list_rejected(
        &self,
        reason: Option<RejectReason>,
        limit: usize,
        before: Option<RejectedId>,
    ) -> Result<Vec<RejectedSummary>, RepositoryError> {
        let statement = crate::search::list_rejected(reason, limit, before);
        let rows = self
            .read(&statement, |c, s| Box::pin(query_all(c, s)), |_| false)
            .await?;
        rows.iter().map(rejected_from_row).collect()
    }

    async fn find_rejected(
        &self,
        id: RejectedId,
    ) -> Result<Option<RejectedMessage>, RepositoryError> {
        let statement = crate::search::find_rejected(id);
        let rows = self
            .read(&statement, |c, s| Box::pin(query_all(c, s)), |_| false)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let read = |e: tokio_postgres::Error| corrupt("rejected message", e);
        let payload: Vec<u8> = row.try_get("payload").map_err(read)?;
        Ok(Some(RejectedMessage {
            summary: rejected_from_row(row)?,
            subject: row.try_get("subject").map_err(read)?,
            stream: row.try_get("stream").map_err(read)?,
            stream_sequence: row.try_get("stream_sequence").map_err(read)?,
            headers: row.try_get("headers").map_err(read)?,
            payload: Payload(payload.into()),
        }))
    }
}

/// A line of the rejected messages' list (`search::REJECTED_SUMMARY`).
fn rejected_from_row(row: &Row) -> Result<RejectedSummary, RepositoryError> {
    let read = |e: tokio_postgres::Error| corrupt("rejected message", e);
    let id: i64 = row.try_get("id").map_err(read)?;
    let reason: &str = row.try_get("reason").map_err(read)?;
    Ok(RejectedSummary {
        id: RejectedId::new(id).map_err(|e| corrupt("rejected message id", e))?,
        received_at: row.try_get("received_at").map_err(read)?,
        reason: RejectReason::from_name(reason)
            .ok_or_else(|| corrupt("rejected message reason", reason))?,
        detail: row.try_get("detail").map_err(read)?,
        order_uid: row.try_get("order_uid").map_err(read)?,
        size: row.try_get("size").map_err(read)?,
        replayed_at: row.try_get("replayed_at").map_err(read)?,
    })
}

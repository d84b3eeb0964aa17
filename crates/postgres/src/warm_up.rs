//! The warm-up ([`OrderReads::load_recent`]): the newest orders' documents,
//! streamed in chunks from one snapshot, and the documents of orders stored
//! before they were kept, written back once.
//!
//! [`OrderReads::load_recent`]: orders_domain::OrderReads::load_recent

use bytes::Bytes;
use deadpool_postgres::Pool;
use futures::{SinkExt, StreamExt, TryStreamExt, pin_mut};
use orders_domain::{OrderChunks, OrderJson, OrderUid, RepositoryError};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::errors::{corrupt, from_pg, from_pool};
use crate::reads::orders_of;
use crate::repository::PgOrderRepository;
use crate::sql;

/// Read by a task of its own, so the caller caches one chunk while the
/// next is read.
pub(crate) fn load_recent(repo: PgOrderRepository, limit: usize) -> OrderChunks {
    let (mut sender, receiver) = futures::channel::mpsc::channel(LOAD_CHUNKS_AHEAD);
    tokio::spawn(async move {
        let streamed = match repo.read_client().await {
            Ok(read) => {
                let from_reads = read.from_reads;
                let streamed = stream_recent(read.client, &repo.pool, limit, &mut sender).await;
                if let (true, Err(err)) = (from_reads, &streamed) {
                    // The warm-up is retried; the next try reads the primary.
                    repo.read_failed(err);
                }
                streamed
            }
            Err(err) => Err(err),
        };
        if let Err(err) = streamed {
            let _ = sender.send(Err(err)).await;
        }
    });
    receiver.boxed()
}

/// Orders per chunk of the warm-up stream.
const LOAD_CHUNK: usize = 4_096;

/// Chunks read ahead of the consumer: bounds the memory a slow consumer costs.
const LOAD_CHUNKS_AHEAD: usize = 4;

type ChunkSender = futures::channel::mpsc::Sender<Result<Vec<OrderJson>, RepositoryError>>;

/// Sends the newest `limit` orders' documents to `sender` in chunks, all
/// read in ONE snapshot (a repeatable-read transaction on `reads`):
/// which orders are the newest `limit` is decided first, by the index,
/// then their documents are read in one pass over the table. Orders stored
/// before documents were kept are read from their rows afterwards, in the
/// same snapshot, and their documents written on the `primary` for the
/// next time. Stops early, without an error, when the receiver is dropped.
async fn stream_recent(
    mut reads: deadpool_postgres::Object,
    primary: &Pool,
    limit: usize,
    sender: &mut ChunkSender,
) -> Result<(), RepositoryError> {
    if limit == 0 {
        return Ok(());
    }
    let offset = i64::try_from(limit - 1).unwrap_or(i64::MAX);
    let tx = reads
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(from_pg)?;
    let cutoff = tx
        .query_opt(sql::NEWEST_CUTOFF, &[&offset])
        .await
        .map_err(from_pg)?;
    let rows = match &cutoff {
        Some(row) => {
            let at: time::OffsetDateTime = row.try_get(0).map_err(|e| corrupt("order row", e))?;
            let uid: &str = row.try_get(1).map_err(|e| corrupt("order row", e))?;
            let params: [&(dyn ToSql + Sync); 2] = [&at, &uid];
            tx.query_raw(sql::DOCUMENTS_SINCE, params).await
        }
        None => {
            tx.query_raw(
                sql::ALL_DOCUMENTS,
                std::iter::empty::<&(dyn ToSql + Sync)>(),
            )
            .await
        }
    }
    .map_err(from_pg)?;
    pin_mut!(rows);
    let mut chunk = Vec::with_capacity(LOAD_CHUNK);
    let mut without_document = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(from_pg)? {
        let read = |e| corrupt("order row", e);
        let uid: &str = row.try_get(0).map_err(read)?;
        let Some(json) = row.try_get::<_, Option<&[u8]>>(1).map_err(read)? else {
            without_document.push(uid.to_owned());
            continue;
        };
        let uid = OrderUid::try_from(uid.to_owned())
            .map_err(|e| corrupt("order row", format!("order_uid {uid:?}: {e}")))?;
        chunk.push(OrderJson {
            uid,
            json: Bytes::copy_from_slice(json),
        });
        if chunk.len() == LOAD_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() && sender.send(Ok(chunk)).await.is_err() {
        return Ok(());
    }
    for uids in without_document.chunks(LOAD_CHUNK) {
        let orders = orders_of(&tx, uids).await?;
        let documents: Vec<OrderJson> = orders.iter().map(OrderJson::of).collect();
        backfill(primary, &documents).await;
        if sender.send(Ok(documents)).await.is_err() {
            return Ok(());
        }
    }
    tx.commit().await.map_err(from_pg)?;
    Ok(())
}

/// Writes the documents of orders stored without one, on the primary. Best
/// effort: the warm-up has what it needs either way, and the next one
/// tries again.
async fn backfill(primary: &Pool, documents: &[OrderJson]) {
    let uids: Vec<&str> = documents.iter().map(|d| d.uid.as_str()).collect();
    let jsons: Vec<&[u8]> = documents.iter().map(|d| d.json.as_ref()).collect();
    let written = async {
        let client = primary.get().await.map_err(from_pool)?;
        client
            .execute(sql::BACKFILL_DOCUMENTS, &[&uids, &jsons])
            .await
            .map_err(from_pg)
    }
    .await;
    match written {
        Ok(rows) => tracing::info!(rows, "wrote the documents of orders stored without one"),
        Err(err) => tracing::warn!(
            error = %orders_domain::error_chain(&err),
            "could not write the documents of orders stored without one; the next warm-up tries again"
        ),
    }
}

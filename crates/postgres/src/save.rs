//! Storing a batch ([`OrderStore::save`]): one `INSERT ... UNNEST` for the
//! whole batch; the orders the database refuses found by halves under
//! savepoints; a uid already stored told a duplicate or a conflict by its
//! stored document.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Transaction};
use orders_domain::{NewOrder, OrderStore, Recorded, Rejection, RepositoryError, SaveOutcome};

use crate::columns::UnnestColumns;
use crate::errors::{corrupt, from_pg};
use crate::reads::orders_of;
use crate::repository::PgOrderRepository;
use crate::sql;
use crate::trace;
use tracing::Instrument as _;

/// What inserting a batch did: the uids it stored, and the orders the
/// database refused, by their place in the batch, with why.
#[derive(Debug, Default)]
struct Inserted {
    stored: HashSet<String>,
    refused: HashMap<usize, String>,
}

/// Runs the batch INSERT for `orders` (distinct uids) on `client`: the
/// uids it took.
async fn insert(
    client: &impl GenericClient,
    orders: &[&NewOrder],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let mut columns = UnnestColumns::of(orders);
    let statement = client.prepare_cached(&sql::INSERT_ORDERS).await?;
    let rows = client.query(&statement, &columns.params()).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Inserts what the database takes of `orders` inside `tx`, finding the
/// orders it refuses by halves: each attempt runs under a savepoint, so a
/// refused attempt leaves nothing behind, and a batch with one bad order
/// costs about 2 log2(n) statements, the good orders still stored in large
/// inserts.
async fn insert_isolating(
    tx: &mut Transaction<'_>,
    orders: &[&NewOrder],
    inserted: &mut Inserted,
) -> Result<(), RepositoryError> {
    let mut pending = vec![(0, orders)];
    while let Some((at, part)) = pending.pop() {
        let savepoint = tx.savepoint("isolate").await.map_err(from_pg)?;
        match insert(&savepoint, part).await.map_err(from_pg) {
            Ok(stored) => {
                savepoint.commit().await.map_err(from_pg)?;
                inserted.stored.extend(stored);
            }
            Err(RepositoryError::Refused(why)) => {
                savepoint.rollback().await.map_err(from_pg)?;
                if let [_] = part {
                    inserted.refused.insert(at, why);
                } else {
                    let half = part.len() / 2;
                    pending.push((at + half, &part[half..]));
                    pending.push((at, &part[..half]));
                }
            }
            Err(transient) => return Err(transient),
        }
    }
    Ok(())
}

/// What holds a uid that was taken before a batch.
enum Taken {
    /// An order, with this document.
    Document(Bytes),
    /// An erased order: whatever comes with its uid is refused.
    Erased,
}

impl PgOrderRepository {
    /// The documents stored for these uids (taken before this batch), on
    /// the primary: a standby may not have them yet. An order stored
    /// before documents were kept is serialized from its rows.
    async fn stored_documents(
        &self,
        uids: &[String],
    ) -> Result<HashMap<String, Taken>, RepositoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql::DOCUMENTS_OF)
            .await
            .map_err(from_pg)?;
        let rows = client.query(&statement, &[&uids]).await.map_err(from_pg)?;
        let mut documents = HashMap::with_capacity(rows.len());
        let mut without = Vec::new();
        for row in &rows {
            let read = |e| corrupt("order row", e);
            let uid: String = row.try_get(0).map_err(read)?;
            if row.try_get::<_, bool>(2).map_err(read)? {
                documents.insert(uid, Taken::Erased);
                continue;
            }
            match row.try_get::<_, Option<&[u8]>>(1).map_err(read)? {
                Some(json) => {
                    documents.insert(uid, Taken::Document(Bytes::copy_from_slice(json)));
                }
                None => without.push(uid),
            }
        }
        if !without.is_empty() {
            for order in orders_of(&client, &without).await? {
                let json = Bytes::from(order.to_json());
                documents.insert(order.order_uid.to_string(), Taken::Document(json));
            }
        }
        Ok(documents)
    }
}

#[async_trait]
impl OrderStore for PgOrderRepository {
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    async fn save(&self, orders: &[NewOrder]) -> Result<Vec<SaveOutcome>, RepositoryError> {
        // A uid repeated within the batch is inserted once (its first
        // occurrence) and the rest are judged against that one.
        let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(orders.len());
        let mut firsts: Vec<&NewOrder> = Vec::with_capacity(orders.len());
        let mut place_of_first: Vec<usize> = Vec::with_capacity(orders.len());
        for (i, new) in orders.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                first_of.entry(new.order.order_uid.as_str())
            {
                slot.insert(i);
                firsts.push(new);
                place_of_first.push(i);
            }
        }

        let span = trace::statement("INSERT", "order_info");
        span.record("db.operation.batch.size", firsts.len());
        let mut client = self.client().instrument(span.clone()).await?;
        // The common case in one statement; only if the database refuses
        // some order, the batch again under savepoints to find which.
        let first_try = insert(&client, &firsts)
            .instrument(span.clone())
            .await
            .map_err(from_pg);
        trace::ended(&span, &first_try);
        drop(span);
        let inserted = match first_try {
            Ok(stored) => Inserted {
                stored,
                refused: HashMap::new(),
            },
            Err(RepositoryError::Refused(why)) => {
                tracing::warn!(%why, "the database refused an order of the batch; finding which");
                let mut inserted = Inserted::default();
                let mut tx = client.transaction().await.map_err(from_pg)?;
                insert_isolating(&mut tx, &firsts, &mut inserted).await?;
                tx.commit().await.map_err(from_pg)?;
                inserted
            }
            Err(transient) => return Err(transient),
        };
        drop(client);
        let refused: HashMap<usize, String> = inserted
            .refused
            .into_iter()
            .map(|(k, why)| (place_of_first[k], why))
            .collect();

        // The uids taken before this batch: the same order again, or another?
        let taken: Vec<String> = firsts
            .iter()
            .enumerate()
            .filter(|(k, new)| {
                !refused.contains_key(&place_of_first[*k])
                    && !inserted.stored.contains(new.order.order_uid.as_str())
            })
            .map(|(_, new)| new.order.order_uid.to_string())
            .collect();
        let before = if taken.is_empty() {
            HashMap::new()
        } else {
            self.stored_documents(&taken).await?
        };

        let mut outcomes = Vec::with_capacity(orders.len());
        for (i, new) in orders.iter().enumerate() {
            let uid = new.order.order_uid.as_str();
            let first = first_of.get(uid).copied().unwrap_or(i);
            if let Some(why) = refused.get(&first) {
                outcomes.push(SaveOutcome::Refused(why.clone()));
                continue;
            }
            let stored = if inserted.stored.contains(uid) {
                if first == i {
                    outcomes.push(SaveOutcome::Stored);
                    continue;
                }
                &orders[first].json
            } else {
                match before.get(uid) {
                    Some(Taken::Document(document)) => document,
                    Some(Taken::Erased) => {
                        outcomes.push(SaveOutcome::Erased);
                        continue;
                    }
                    // Deleted between our insert and this read: rare; retry.
                    None => {
                        return Err(RepositoryError::Unavailable(
                            "order vanished while checking for a duplicate".into(),
                        ));
                    }
                }
            };
            outcomes.push(if *stored == new.json {
                SaveOutcome::Duplicate
            } else {
                SaveOutcome::Conflict
            });
        }
        Ok(outcomes)
    }

    async fn record_rejection(&self, rejection: &Rejection) -> Result<Recorded, RepositoryError> {
        crate::rejected::record(self, rejection).await
    }
}

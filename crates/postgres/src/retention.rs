//! [`Purger`] over PostgreSQL: one replica at a time holds a session
//! advisory lock for its pass, and deletes old rows in small batches, each
//! its own transaction.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use orders_domain::{PurgePass, PurgeTarget, Purger, RepositoryError};

use crate::errors::{from_pg, from_pool};

/// A key of our own for `pg_try_advisory_lock`, so one replica at a time
/// purges ("orderpur"; the migrations take another).
pub const PURGE_LOCK: i64 = 0x6f72_6465_7270_7572;

/// Deletes one batch: the oldest `$2` rows older than `$1` seconds, skipping
/// rows another transaction holds (a replay marking one, say) rather than
/// waiting for them. The ids are picked first, once (`ARRAY(...)`), on the
/// time column's index, so the statement reads only the rows it deletes.
/// As a statement on its own, it is a transaction of its own.
const DELETE_REJECTED: &str = "DELETE FROM rejected_messages WHERE id = ANY(ARRAY(\
       SELECT id FROM rejected_messages \
       WHERE received_at < now() - make_interval(secs => $1) \
       ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// The same for the read audit.
const DELETE_READS: &str = "DELETE FROM order_reads WHERE id = ANY(ARRAY(\
       SELECT id FROM order_reads \
       WHERE at < now() - make_interval(secs => $1) \
       ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// The statement that deletes one batch of `target`'s old rows.
pub fn delete_statement(target: PurgeTarget) -> &'static str {
    match target {
        PurgeTarget::RejectedMessages => DELETE_REJECTED,
        PurgeTarget::OrderReads => DELETE_READS,
    }
}

/// [`Purger`] on the primary's pool: a pass holds one of its connections.
#[derive(Clone)]
pub struct PgPurger {
    pool: Pool,
}

impl std::fmt::Debug for PgPurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPurger").finish_non_exhaustive()
    }
}

impl PgPurger {
    /// Purges through `pool` (the primary's: deletes are writes).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Purger for PgPurger {
    async fn begin(&self) -> Result<Option<Box<dyn PurgePass>>, RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PURGE_LOCK])
            .await
            .map_err(from_pg)?;
        let locked: bool = row.try_get(0).map_err(from_pg)?;
        if !locked {
            return Ok(None);
        }
        Ok(Some(Box::new(PgPurgePass {
            client: Some(client),
        })))
    }
}

/// A pass: the connection that holds the lock.
pub struct PgPurgePass {
    /// `None` once finished.
    client: Option<deadpool_postgres::Object>,
}

impl std::fmt::Debug for PgPurgePass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPurgePass")
            .field("finished", &self.client.is_none())
            .finish()
    }
}

impl PgPurgePass {
    fn client(&self) -> Result<&deadpool_postgres::Object, RepositoryError> {
        self.client
            .as_ref()
            .ok_or_else(|| RepositoryError::Unavailable("the purge pass is finished".into()))
    }
}

/// An unfinished pass (an error, a shutdown mid-batch) takes its
/// connection out of the pool and closes it: the server then releases the
/// lock, which a pooled connection would otherwise keep for its next user.
impl Drop for PgPurgePass {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

#[async_trait]
impl PurgePass for PgPurgePass {
    async fn delete_older(
        &mut self,
        target: PurgeTarget,
        age: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError> {
        let client = self.client()?;
        let statement = client
            .prepare_cached(delete_statement(target))
            .await
            .map_err(from_pg)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .execute(&statement, &[&age.as_secs_f64(), &limit])
            .await
            .map_err(from_pg)
    }

    async fn finish(&mut self) -> Result<(), RepositoryError> {
        let client = self.client()?;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&PURGE_LOCK])
            .await;
        match unlocked {
            // Back to the pool, the lock released.
            Ok(_) => {
                self.client.take();
                Ok(())
            }
            // Dropped, which closes the connection (and so the lock).
            Err(err) => Err(from_pg(err)),
        }
    }
}

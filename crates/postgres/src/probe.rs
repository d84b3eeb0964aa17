//! Whether the primary can take ingest's writes ([`DatabaseProbe`]): it
//! answers, and (for operators who require one) a synchronous standby
//! holds each commit.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use orders_domain::{DatabaseProbe, RepositoryError};

use crate::errors::{corrupt, from_pg};
use crate::repository::PgOrderRepository;
use crate::sql;

#[async_trait]
impl DatabaseProbe for PgOrderRepository {
    async fn ping(&self) -> Result<(), RepositoryError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(from_pg)?;
        Ok(())
    }

    async fn has_sync_standby(&self) -> Result<bool, RepositoryError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql::SYNC_STANDBY)
            .await
            .map_err(from_pg)?;
        let row = client.query_one(&statement, &[]).await.map_err(from_pg)?;
        let read = |e| corrupt("pg_stat_replication row", e);
        let commits_wait: bool = row.try_get(0).map_err(read)?;
        let synchronous: i64 = row.try_get(1).map_err(read)?;
        let hidden: i64 = row.try_get(2).map_err(read)?;
        if commits_wait
            && synchronous == 0
            && hidden > 0
            && !self.hidden_standbys_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                standbys = hidden,
                "cannot see whether the standbys are synchronous: the database role needs \
                 pg_read_all_stats (GRANT pg_monitor TO ...); counted as no synchronous standby"
            );
        }
        Ok(commits_wait && synchronous > 0)
    }
}

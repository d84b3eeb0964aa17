//! [`PgOrderRepository`]: the pools it holds. What it does is in a file per
//! job, each implementing the port its caller needs:
//!
//! | file | port | job |
//! |---|---|---|
//! | `save.rs` | `OrderStore::save` | the batch insert, refused orders isolated, duplicates told from conflicts |
//! | `rejected.rs` | `OrderStore::record_rejection`, `RejectedReads` | the rejected messages |
//! | `reads.rs` | `OrderReads` | lookups, listing, the live list, with one read-fallback helper |
//! | `warm_up.rs` | `OrderReads::load_recent` | the warm-up and its document backfill |
//! | `probe.rs` | `DatabaseProbe` | ping, and the synchronous-standby check |
//! | `sql.rs` | | the statements |

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use deadpool_postgres::Pool;
use orders_domain::RepositoryError;

use crate::errors::from_pool;
use crate::reads::ReadPool;

/// The orders' PostgreSQL: the primary's pool for writes and pings, and
/// optionally another for reads (a standby). Statements are prepared once
/// per connection and cached by the pool's client wrapper.
#[derive(Clone)]
pub struct PgOrderRepository {
    pub(crate) pool: Pool,
    /// Where lookups, listings and the warm-up go first, if not to the
    /// primary ([`PgOrderRepository::with_reads`]).
    pub(crate) reads: Option<ReadPool>,
    /// Whether the warning that standbys are hidden from this role was
    /// logged: once is enough, the health watcher asks every second.
    pub(crate) hidden_standbys_logged: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgOrderRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderRepository")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgOrderRepository {
    /// A repository on the primary's `pool` ([`connect_pool`](crate::connect_pool)).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            reads: None,
            hidden_standbys_logged: Arc::default(),
        }
    }

    /// Sends lookups, listings and the warm-up to `reads` first
    /// ([`connect_read_pool`](crate::connect_read_pool): a standby). A
    /// standby may lag, so an order it does not have is looked for on the
    /// primary; when it fails, reads go to the primary (and skip it for
    /// a few seconds). Writes, pings and the duplicate check of `save`
    /// stay on the primary.
    pub fn with_reads(mut self, reads: Pool) -> Self {
        self.reads = Some(ReadPool::new(reads));
        self
    }

    /// The primary's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes both pools: no new connection, idle ones dropped.
    pub fn close(&self) {
        self.pool.close();
        if let Some(reads) = &self.reads {
            reads.pool.close();
        }
    }

    /// A connection to the primary.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(from_pool)
    }
}

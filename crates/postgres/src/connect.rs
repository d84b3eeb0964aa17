use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls, SimpleQueryMessage};

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Setting up the database failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("not a valid PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    #[error("the URL names no database")]
    NoDatabaseName,
    #[error("target_session_attrs=read-only asks for a server that refuses writes")]
    ReadOnlyTarget,
    #[error("cannot reach PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot create database {0:?}")]
    CreateDatabase(String, #[source] tokio_postgres::Error),
    #[error("cannot build the connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
    #[error("running the migrations failed")]
    Migrate(#[source] refinery::Error),
    #[error("cannot take the migration lock")]
    Lock(#[source] tokio_postgres::Error),
}

/// How the pool behaves. Each number is chosen for a service whose one
/// ingest loop uses one connection at a time and whose HTTP read-throughs
/// use the rest.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most open connections. PostgreSQL on a few cores is saturated well
    /// before 16 busy connections; more would only queue inside it.
    pub max_size: usize,
    /// Longest wait for a free connection, for a new one, or for checking an
    /// idle one, before the call fails as "database unavailable" (which the
    /// ingest loop retries and HTTP answers with 503).
    pub timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Checks that `url` is a PostgreSQL URL naming a database, fit for the
/// writes (the primary), without connecting. It may name several hosts
/// (`postgres://u@h1:5432,h2:5432/orders`); it may not ask for a read-only
/// server.
pub fn check_url(url: &str) -> Result<(), ConnectError> {
    let config = parse_url(url)?;
    config.get_dbname().ok_or(ConnectError::NoDatabaseName)?;
    if config.get_target_session_attrs() == TargetSessionAttrs::ReadOnly {
        return Err(ConnectError::ReadOnlyTarget);
    }
    Ok(())
}

/// Checks that `url` is a PostgreSQL URL naming a database, for reads (a
/// standby, say), without connecting.
pub fn check_read_url(url: &str) -> Result<(), ConnectError> {
    let config = parse_url(url)?;
    config.get_dbname().ok_or(ConnectError::NoDatabaseName)?;
    Ok(())
}

fn parse_url(url: &str) -> Result<Config, ConnectError> {
    let mut config: Config = url.parse().map_err(ConnectError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok(config)
}

/// The primary's connection settings: whatever the URL says, a connection
/// is kept only with a server that takes writes (tokio-postgres asks each
/// host in turn `SHOW transaction_read_only`, as libpq's
/// `target_session_attrs=read-write` does). A URL naming the old primary
/// and its standby then reaches whichever is the primary now, and never a
/// standby, nor a promoted node an orchestrator still fences read-only.
pub(crate) fn primary_config(url: &str) -> Result<Config, ConnectError> {
    let mut config = parse_url(url)?;
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    Ok(config)
}

async fn connect(config: &Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Creates the database named in `url` if it does not exist yet (connecting
/// to the server's `postgres` database to do so). Returns whether it did.
pub async fn ensure_database(url: &str) -> Result<bool, ConnectError> {
    let config = primary_config(url)?;
    let name = config
        .get_dbname()
        .ok_or(ConnectError::NoDatabaseName)?
        .to_owned();
    match connect(&config).await {
        Ok(_) => return Ok(false),
        Err(err) if err.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(err) => return Err(ConnectError::Connect(err)),
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = connect(&admin).await.map_err(ConnectError::Connect)?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(true)
        }
        // Another replica created it first.
        Err(err) if err.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(err) => Err(ConnectError::CreateDatabase(name, err)),
    }
}

/// A key of our own for `pg_advisory_lock`, so replicas that start together
/// run the migrations one after the other (refinery takes no lock itself).
const MIGRATION_LOCK: i64 = 0x6f72_6465_7273; // "orders"

/// Brings the schema up to date. Safe to call from several processes at once.
pub async fn migrate(url: &str) -> Result<(), ConnectError> {
    let config = primary_config(url)?;
    let mut client = connect(&config).await.map_err(ConnectError::Connect)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(ConnectError::Lock)?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(ConnectError::Migrate);
    // Closing the connection would release the lock too; unlock explicitly
    // so the next replica does not wait for the socket to close.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report?;
    unlocked.map_err(ConnectError::Lock)?;
    for applied in report.applied_migrations() {
        tracing::info!(migration = %applied, "applied migration");
    }
    Ok(())
}

/// A pool of connections to the primary at `url` (one host or several).
/// Like deadpool itself, it does not connect yet: call
/// [`PgOrderRepository::ping`](crate::PgOrderRepository) to know the
/// database answers.
///
/// A connection is handed out only while its server takes writes: after a
/// fail-over, connections to the old primary are dropped (broken, or alive
/// on a node that is now read-only) and new ones reach the new primary.
pub fn connect_pool(url: &str, settings: PoolSettings) -> Result<Pool, ConnectError> {
    build_primary_pool(primary_config(url)?, settings)
}

/// [`connect_pool`], each connection named `replica` (its
/// `application_name`): the announcements of the orders it stores carry
/// the name, so [`PgOrderEvents`](crate::PgOrderEvents) made with the same
/// name knows them for this replica's own.
pub fn connect_pool_as(
    url: &str,
    settings: PoolSettings,
    replica: &str,
) -> Result<Pool, ConnectError> {
    let mut config = primary_config(url)?;
    config.application_name(replica);
    build_primary_pool(config, settings)
}

fn build_primary_pool(config: Config, settings: PoolSettings) -> Result<Pool, ConnectError> {
    let timeout = settings.timeout;
    build_pool(
        config,
        // The liveness check is the writability check below.
        RecyclingMethod::Fast,
        settings,
    )?
    .post_recycle(writable_only(timeout))
    .build()
    .map_err(ConnectError::Pool)
}

/// A pool of connections for reads (`DATABASE_READ_URL`: a standby, or
/// several), whatever role its servers have.
pub fn connect_read_pool(url: &str, settings: PoolSettings) -> Result<Pool, ConnectError> {
    build_pool(
        parse_url(url)?,
        // A connection broken by a restart is dropped on checkout, not
        // handed out.
        RecyclingMethod::Verified,
        settings,
    )?
    .build()
    .map_err(ConnectError::Pool)
}

fn build_pool(
    config: Config,
    recycling_method: RecyclingMethod,
    settings: PoolSettings,
) -> Result<deadpool_postgres::PoolBuilder, ConnectError> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method });
    Ok(Pool::builder(manager)
        .max_size(settings.max_size)
        // The timeouts do nothing without a runtime.
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout)))
}

/// Checked each time an idle connection is handed out again: the server
/// still answers, and still takes writes. A connection that was made to
/// the primary stays open when that node turns read-only under it (an
/// orchestrator fencing it with `default_transaction_read_only` before a
/// switchover), and every write on it would fail with SQLSTATE 25006; a
/// liveness check alone (`SELECT 1`, or deadpool's `Verified`) keeps it.
/// So the pool asks what `target_session_attrs=read-write` asks of a new
/// connection, and drops the connection unless the answer is `off`. (A
/// query that returns no row on a standby, `SELECT 1 WHERE NOT
/// pg_is_in_recovery()`, would not do: deadpool drops a connection only
/// when the query fails.) Not under the pool's recycle timeout, so bounded
/// here.
fn writable_only(timeout: Duration) -> Hook {
    Hook::async_fn(move |client: &mut ClientWrapper, _| {
        Box::pin(async move {
            let answer =
                tokio::time::timeout(timeout, client.simple_query("SHOW transaction_read_only"))
                    .await
                    .map_err(|_| HookError::message("no answer to SHOW transaction_read_only"))?
                    .map_err(HookError::Backend)?;
            let read_only = answer.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            });
            if read_only == Some("off") {
                return Ok(());
            }
            // deadpool does not log why it drops a connection.
            tracing::info!("dropping a pooled connection: its server no longer takes writes");
            Err(HookError::message(
                "the server no longer takes writes (a standby, or a primary being fenced)",
            ))
        })
    })
}

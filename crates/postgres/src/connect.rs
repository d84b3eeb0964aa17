use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Setting up the database failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabaseName,
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

/// Checks that `url` is a PostgreSQL URL naming a database, without connecting.
pub fn check_url(url: &str) -> Result<(), ConnectError> {
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
    let config = parse_url(url)?;
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
    let config = parse_url(url)?;
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

/// A pool of connections to `url`. Like deadpool itself, it does not connect
/// yet: call [`PgOrderRepository::ping`](crate::PgOrderRepository) to know the
/// database answers.
pub fn connect_pool(url: &str, settings: PoolSettings) -> Result<Pool, ConnectError> {
    let config = parse_url(url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection broken by a database restart is dropped on
            // checkout, not handed out.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size)
        // The timeouts do nothing without a runtime.
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.timeout))
        .create_timeout(Some(settings.timeout))
        .recycle_timeout(Some(settings.timeout))
        .build()
        .map_err(ConnectError::Pool)
}

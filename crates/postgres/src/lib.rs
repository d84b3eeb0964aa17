//! The order service's database ports over PostgreSQL
//! ([`PgOrderRepository`] implements `OrderStore`, `OrderReads`,
//! `RejectedReads` and `DatabaseProbe`; [`PgErasures`] the erasures): tokio-postgres for the protocol,
//! deadpool-postgres for the pool, refinery for the migrations in the
//! workspace's `migrations/` folder.
//!
//! [`schema`] names the tables' columns once; [`rows`] maps orders to rows
//! and back by the order's own serde shape. They are public so tools (the
//! bench's COPY and seeding) write the same columns the service does.

pub mod audit;
mod columns;
mod connect;
pub mod erasure;
mod errors;
mod events;
mod probe;
mod reads;
mod rejected;
pub mod replay;
mod repository;
pub mod retention;
pub mod rows;
mod save;
pub mod schema;
pub mod search;
pub mod sql;
mod trace;
mod warm_up;

pub use audit::PgAuditLog;
pub use columns::pg_micros;
pub use connect::{
    ConnectError, PoolSettings, check_read_url, check_url, connect_pool, connect_pool_as,
    connect_read_pool, ensure_database, migrate,
};
pub use erasure::PgErasures;
pub use events::PgOrderEvents;
pub use repository::PgOrderRepository;
pub use retention::{PgPurgePass, PgPurger};

//! [`OrderRepository`](orders_domain::OrderRepository) over PostgreSQL:
//! tokio-postgres for the protocol, deadpool-postgres for the pool, refinery
//! for the migrations in the workspace's `migrations/` folder.
//!
//! [`schema`] names the tables' columns once; [`rows`] maps orders to rows
//! and back by the order's own serde shape; [`copy`] writes them in COPY's
//! binary format. They are public so tools (the bench's COPY and seeding)
//! write the same columns the service does.

pub mod audit;
mod columns;
mod connect;
pub mod copy;
mod errors;
mod events;
pub mod replay;
mod repository;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod search;

pub use audit::PgAuditLog;
pub use connect::{
    ConnectError, PoolSettings, check_read_url, check_url, connect_pool, connect_pool_as,
    connect_read_pool, ensure_database, migrate,
};
pub use events::PgOrderEvents;
pub use repository::{InsertMethod, PgOrderRepository};
pub use retention::{PgPurgePass, PgPurger};

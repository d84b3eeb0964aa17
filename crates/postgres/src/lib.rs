//! [`OrderRepository`](orders_domain::OrderRepository) over PostgreSQL:
//! tokio-postgres for the protocol, deadpool-postgres for the pool, refinery
//! for the migrations in the workspace's `migrations/` folder.

mod connect;
mod errors;
mod repository;
mod rows;

pub use connect::{ConnectError, PoolSettings, check_url, connect_pool, ensure_database, migrate};
pub use repository::PgOrderRepository;

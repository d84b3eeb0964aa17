//! The HTTP adapter: plain hyper 1.x, no framework. It serves the metrics
//! that `orders-metrics` keeps, and records its own requests there.
//!
//! | request | answer |
//! |---|---|
//! | `GET /order?order_uid=UID` | 200 the order's JSON; 400 / 404 / 503 `{"error": ...}` |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the cache is warm and the database and broker answer, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /orders?limit=N&before=CURSOR` | the newest orders, keyset-paginated |
//! | `GET /orders/events` | `text/event-stream`: each order's summary as it is stored; `Last-Event-ID` resumes |
//! | `GET /`, `/style.css`, `/app.js` | the embedded web page |
//! | another method on a known path | 405 with `Allow: GET, HEAD` |
//!
//! With bearer tokens set ([`Access`]), the routes that give out orders
//! answer 401 to a request without a listed token. The rate limit
//! ([`RateLimit`]) counts per caller (a listed token) or per client address:
//! the peer, or, behind a proxy in [`TrustedProxies`], the address it
//! forwarded for.

mod auth;
mod body;
mod client;
mod limits;
mod routes;
mod server;
mod statics;
mod trace;

pub use auth::{Access, Tokens, TokensError};
pub use client::{InvalidProxies, TrustedProxies};
pub use limits::{ClientIp, RateLimit};
pub use routes::Router;
pub use server::{HttpSettings, serve};

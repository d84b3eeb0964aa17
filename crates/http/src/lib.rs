//! The HTTP adapter: plain hyper 1.x, no framework. It reports each request
//! through [`RequestReport`] (the app counts them in its metrics) and serves
//! at `GET /metrics` the text that report gives.
//!
//! | request | answer |
//! |---|---|
//! | `GET /order?order_uid=UID` | 200 the order's JSON; 400 / 404 / 503 `{"error": ...}` |
//! | `GET /orders?limit=N&before=CURSOR` | the newest orders, keyset-paginated; with one search key (`phone`, `email`, `track_number`, `customer_id`, `transaction`) and `from`/`to`, the orders it matches |
//! | `GET /orders/events` | `text/event-stream`: each order's summary as it is stored; `Last-Event-ID` resumes |
//! | `GET /rejected?reason=R&limit=N&before=ID` | the rejected messages, newest first, keyset-paginated |
//! | `GET /rejected/{id}` | one rejected message, with its bytes |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the cache is warm and the database and broker answer, else 503 |
//! | `GET /metrics` | Prometheus text format (not here when it has a listener of its own) |
//! | `GET /`, `/index.html`, `/style.css`, `/app.js`, `/favicon.svg` | the embedded web page |
//! | another method on a known path | 405 with `Allow: GET, HEAD` |
//! | any other path | 404 |
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
mod report;
mod routes;
mod server;
mod statics;
mod trace;

pub use auth::{Access, Tokens, TokensError};
pub use client::{InvalidProxies, TrustedProxies};
pub use limits::{ClientIp, RateLimit};
pub use report::{RequestReport, RouteReport};
pub use routes::Router;
pub use server::{HttpSettings, serve};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The paths the route table at the top of this file names: the first
    /// cell's backticked paths, without `GET ` and the query string.
    fn documented_paths() -> BTreeSet<String> {
        include_str!("lib.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter_map(|l| l.strip_prefix("//! | `"))
            .flat_map(|row| {
                let first_cell = row.split(" | ").next().unwrap_or_default();
                first_cell
                    .split('`')
                    .map(|part| part.trim_start_matches("GET "))
                    .filter(|part| part.starts_with('/'))
                    .map(|part| part.split('?').next().unwrap_or(part).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_route_table_names_every_route_and_no_other() {
        let documented = documented_paths();
        let routes = crate::routes::LABELS
            .into_iter()
            .filter(|label| label.starts_with('/'));
        let files = crate::statics::FILES.iter().map(|(path, _)| *path);
        let served: BTreeSet<String> = routes.chain(files).map(str::to_owned).collect();

        assert_eq!(documented, served);
    }
}

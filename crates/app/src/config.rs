//! Configuration: read once at start from the environment (12-factor), each
//! variable also a flag of the same name, validated with messages that name
//! the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use orders_domain::Retention;
use orders_http::TrustedProxies;

use crate::audit::AUDIT_QUEUE;
use crate::purge::PURGE_EVERY;

/// The order service: takes orders from NATS JetStream, stores them in
/// PostgreSQL, keeps them in memory and answers `GET /order?order_uid=...`.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-service", version, about, long_about = None, after_help = TRACES_HELP)]
pub struct Config {
    /// PostgreSQL URL of the primary. It may name several hosts
    /// (postgres://u@h1:5432,h2:5432/orders): the service connects only to
    /// the one that takes writes, so after a fail-over it finds the new
    /// primary by itself. The database is created if missing and migrated
    /// at start.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = postgres_url)]
    pub database_url: String,

    /// PostgreSQL URL for reads: lookups that miss the cache, the listing
    /// and the warm-up go there first (a standby, or several hosts). Unset
    /// or empty: reads go to the primary. A standby may lag: an order it
    /// does not have is looked for on the primary, and when it fails,
    /// reads go to the primary.
    #[arg(long, env = "DATABASE_READ_URL", default_value = "", hide_default_value = true,
          value_parser = read_url)]
    pub database_read_url: ReadUrl,

    /// Pause ingest (pull and ack nothing) and report not ready while
    /// PostgreSQL has no synchronous standby (true or false): for operators
    /// who prefer stalling to the risk that a primary lost with its disk
    /// takes acked orders with it.
    #[arg(long, env = "REQUIRE_SYNC_STANDBY", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub require_sync_standby: bool,

    /// NATS server(s), comma-separated; the client fails over between them.
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL, value_parser = nats_urls)]
    pub nats_url: String,

    /// Subject orders are published on; may be a wildcard (orders.*,
    /// orders.>) when producers split by region or shop.
    #[arg(long, env = "NATS_SUBJECT", default_value = "orders", value_parser = nats_subject)]
    pub nats_subject: String,

    /// JetStream stream that captures the subject (created if missing).
    #[arg(long, env = "NATS_STREAM", default_value = DEFAULT_NATS_STREAM, value_parser = nats_name)]
    pub nats_stream: String,

    /// Durable consumer name, shared by every replica.
    #[arg(long, env = "NATS_DURABLE", default_value = "order-service", value_parser = nats_name)]
    pub nats_durable: String,

    /// Stream replicas when this service creates the stream (3 on a cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = count(1, 5))]
    pub nats_stream_replicas: usize,

    /// How long the broker waits for an ack before it redelivers a message
    /// (e.g. 30s): what a crashed replica's messages wait before they move on.
    /// Longer than the slowest batch commit.
    #[arg(long, env = "NATS_ACK_WAIT", default_value = "30s", value_parser = ack_wait)]
    pub nats_ack_wait: Duration,

    /// Most deliveries of one message. A message no replica settles in as
    /// many (redelivered after NATS_ACK_WAIT, doubling up to 5 minutes) is
    /// given up by the broker and recorded in rejected_messages as
    /// undeliverable.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = 10,
          value_parser = count(2, 1_000))]
    pub nats_max_deliver: usize,

    /// Address the HTTP server listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080", value_parser = socket_addr)]
    pub http_addr: SocketAddr,

    /// Address of a listener of its own for GET /metrics (an internal
    /// port); then HTTP_ADDR does not serve it. Unset or empty: HTTP_ADDR
    /// serves it.
    #[arg(long, env = "METRICS_ADDR", default_value = "", hide_default_value = true,
          value_parser = optional_addr)]
    pub metrics_addr: MetricsAddr,

    /// File of bearer tokens for the routes that give out orders (/order,
    /// /orders, /rejected, ...): one caller a line, name:token or
    /// name:sha256:HEX (the token's SHA-256, so the file need not hold the
    /// secret). Re-read on SIGHUP. Unset or empty: no tokens, which only a
    /// loopback HTTP_ADDR allows, unless ALLOW_ANONYMOUS=true.
    #[arg(long, env = "API_TOKENS_FILE", default_value = "", hide_default_value = true,
          value_parser = optional_path)]
    pub api_tokens_file: TokensFile,

    /// Serve orders without tokens on an address other than loopback (true
    /// or false): for a listener that only a trusted network reaches, or a
    /// port that the host publishes on loopback only (as the compose files
    /// do). Anyone who reaches it reads every order's personal data.
    #[arg(long, env = "ALLOW_ANONYMOUS", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,

    /// Most HTTP connections served at once. Lowered, with a warning, to
    /// what the open-file limit carries (the soft limit is raised to the
    /// hard one at start).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = count(1, 1_000_000))]
    pub max_connections: usize,

    /// A client that does not take a write of the answer within this time
    /// is cut off (e.g. 30s).
    #[arg(long, env = "HTTP_WRITE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub http_write_timeout: Duration,

    /// A connection on which nothing is read or written for this long is
    /// closed (e.g. 60s; checked once per period, so after one to two).
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub http_idle_timeout: Duration,

    /// Requests per second each client may make to the order-bearing
    /// routes, with bursts of twice that; more get 429 with Retry-After. A
    /// request with a listed token counts against its token (one bucket a
    /// caller, wherever it comes from), any other against its client
    /// address (see TRUSTED_PROXIES). 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32))]
    pub rate_limit: u32,

    /// Proxies whose X-Forwarded-For (or Forwarded: for=) is believed:
    /// comma-separated CIDR blocks, IPv4 or IPv6 (10.0.0.0/8, fd00::/8, or
    /// one address). A request from one of them is from the rightmost
    /// forwarded address that is not itself a trusted proxy's: the rate
    /// limit and the access log go by it. From anyone else the headers are
    /// ignored. Empty: the client is the TCP peer.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", hide_default_value = true,
          value_parser = trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Lookups that may read through to PostgreSQL at once (orders not in
    /// memory); more get 503 with Retry-After at once. Keep it below the
    /// connection pool (16), which ingest shares.
    #[arg(long, env = "READ_THROUGH_LIMIT", default_value_t = orders_domain::DEFAULT_READ_THROUGH,
          value_parser = count(1, 15))]
    pub read_through_limit: usize,

    /// Most event streams (GET /orders/events) open at once; more get 503
    /// with Retry-After. Each costs a connection (within MAX_CONNECTIONS)
    /// and a place in the shared fan-out, not a buffer of its own.
    #[arg(long, env = "SSE_MAX_CLIENTS", default_value_t = orders_domain::DEFAULT_MAX_STREAMS,
          value_parser = count(1, 1_000_000))]
    pub sse_max_clients: usize,

    /// Most orders held in memory; the newest are loaded at start, the rest
    /// are read from PostgreSQL on demand. One million sample-sized orders
    /// take about 1 GiB.
    #[arg(long, env = "CACHE_CAPACITY", default_value_t = 1_000_000,
          value_parser = count(1, 100_000_000))]
    pub cache_capacity: usize,

    /// Longest graceful drain on SIGINT/SIGTERM (e.g. 10s, 500ms).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Larger messages are rejected without being parsed (e.g. 1MiB, 64KiB, 5000).
    #[arg(long, env = "MAX_ORDER_BYTES", default_value = "1MiB", value_parser = byte_size)]
    pub max_order_bytes: usize,

    /// Most messages stored in one transaction. 1 stores each message on its
    /// own (slower; kept for comparison).
    #[arg(long, env = "INGEST_BATCH_SIZE", default_value_t = 500,
          value_parser = count(1, 10_000))]
    pub ingest_batch_size: usize,

    /// Most batches being stored at once: the next batch is pulled, parsed
    /// and inserted while the last one commits. 1 stores one batch at a time.
    #[arg(long, env = "INGEST_IN_FLIGHT", default_value_t = 2,
          value_parser = count(1, 16))]
    pub ingest_in_flight: usize,

    /// Longest wait for more messages to fill a batch once one has arrived
    /// (e.g. 5ms); the latency a lone message may gain.
    #[arg(long, env = "INGEST_LINGER", default_value = "5ms", value_parser = duration)]
    pub ingest_linger: Duration,

    /// How long a row of rejected_messages (a message's bytes and headers,
    /// personal data included) is kept (1s or more, e.g. 30d); older rows
    /// are deleted in the background, about once a minute, by one replica
    /// at a time. 0 keeps them forever.
    #[arg(long, env = "REJECTED_RETENTION", default_value = "30d", value_parser = retention,
          allow_hyphen_values = true)]
    pub rejected_retention: Retention,

    /// How long the stream keeps each message, acked or not, when this
    /// service creates it (1s or more, e.g. 7d); 0: until deleted by hand.
    /// An existing stream keeps its own limit (a warning at start says when
    /// it has none).
    #[arg(long, env = "NATS_STREAM_MAX_AGE", default_value = "7d", value_parser = retention,
          allow_hyphen_values = true)]
    pub nats_stream_max_age: Retention,

    /// Record who was given which orders, in order_reads (true or false):
    /// each 2xx answer of /order, /orders, /rejected and /rejected/ID, and
    /// each opening of /orders/events, with the caller (token name, else
    /// address), the time, the route and the order uids. Written in batches
    /// off the request path (a full queue drops reads and counts them);
    /// `order-service audit` reads them.
    #[arg(long, env = "AUDIT_READS", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub audit_reads: bool,

    /// How long a row of order_reads is kept (1s or more, e.g. 365d); purged
    /// as rejected messages are. 0 keeps them forever.
    #[arg(long, env = "AUDIT_RETENTION", default_value = "365d", value_parser = retention,
          allow_hyphen_values = true)]
    pub audit_retention: Retention,

    /// Reads waiting to be written to order_reads, at most (not a flag:
    /// tests make it small).
    #[arg(skip = AUDIT_QUEUE)]
    pub audit_queue: usize,

    /// How often a purge pass runs (not a flag: tests make it short).
    #[arg(skip = PURGE_EVERY)]
    pub purge_every: Duration,

    /// Log filter, in tracing's EnvFilter syntax (e.g. info, orders_app=debug).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,

    /// Log format: pretty for people, json for machines.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty", value_enum)]
    pub log_format: LogFormat,
}

/// What `--help` says of traces: the SDK reads these variables itself.
pub(crate) const TRACES_HELP: &str = "Traces: with OTEL_EXPORTER_OTLP_ENDPOINT (or \
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, spans are exported over OTLP/HTTP (protobuf); \
OTEL_SERVICE_NAME (default order-service), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER \
and OTEL_TRACES_SAMPLER_ARG (e.g. parentbased_traceidratio, 0.1) are honoured. Unset: \
nothing is exported and spans cost nothing. See docs/operations.md, Traces.";

/// `DATABASE_URL` when unset: the service's and its subcommands'.
pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orders";

/// `NATS_URL` and `NATS_STREAM` when unset: the service's and its
/// subcommands'.
pub(crate) const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub(crate) const DEFAULT_NATS_STREAM: &str = "ORDERS";

/// `DATABASE_READ_URL`: where reads go first, if not to the primary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadUrl(Option<String>);

impl ReadUrl {
    /// The URL, unless reads go to the primary.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// `METRICS_ADDR`: a listener of its own for `/metrics`, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn optional_addr(raw: &str) -> Result<MetricsAddr, String> {
    if raw.trim().is_empty() {
        return Ok(MetricsAddr(None));
    }
    socket_addr(raw).map(|a| MetricsAddr(Some(a)))
}

/// `API_TOKENS_FILE`: where the bearer tokens are, if anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokensFile(pub Option<PathBuf>);

fn optional_path(raw: &str) -> Result<TokensFile, String> {
    Ok(TokensFile(
        (!raw.trim().is_empty()).then(|| PathBuf::from(raw)),
    ))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Config {
    /// The configuration with every default, for tests to adjust.
    pub fn defaults() -> Self {
        Self::parse_from(["order-service"])
    }
}

/// A whole number from `low` to `high`.
fn count(low: u64, high: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(low..=high)
}

fn ack_wait(raw: &str) -> Result<Duration, String> {
    let wait = duration(raw)?;
    if wait < Duration::from_secs(1) {
        return Err(format!("{raw:?} is shorter than 1s"));
    }
    Ok(wait)
}

fn retention(raw: &str) -> Result<Retention, String> {
    Retention::parse(raw).map_err(|e| e.to_string())
}

pub(crate) fn postgres_url(raw: &str) -> Result<String, String> {
    orders_postgres::check_url(raw)
        .map(|()| raw.to_owned())
        .map_err(|e| format!("invalid PostgreSQL URL {raw:?}: {e}"))
}

/// A PostgreSQL URL, or nothing (empty: reads go to the primary, so a
/// deployment template may leave it blank).
fn read_url(raw: &str) -> Result<ReadUrl, String> {
    if raw.trim().is_empty() {
        return Ok(ReadUrl(None));
    }
    orders_postgres::check_read_url(raw)
        .map(|()| ReadUrl(Some(raw.to_owned())))
        .map_err(|e| format!("invalid PostgreSQL URL {raw:?}: {e}"))
}

fn trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(raw).map_err(|e| format!("invalid proxy list: {e}"))
}

pub(crate) fn nats_urls(raw: &str) -> Result<String, String> {
    orders_nats::check_urls(raw).map(|()| raw.to_owned())
}

/// Dot-separated tokens without spaces; `*` only as a whole token, `>`
/// only as the whole last one.
fn nats_subject(raw: &str) -> Result<String, String> {
    let tokens: Vec<&str> = raw.split('.').collect();
    let last = tokens.len() - 1;
    let ok = !raw.is_empty()
        && !raw.chars().any(char::is_whitespace)
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && (!t.contains('*') || *t == "*")
                && (!t.contains('>') || (*t == ">" && i == last))
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "invalid subject {raw:?}: dot-separated tokens without spaces; \
             `*` only as a whole token, `>` only as the whole last one"
        ))
    }
}

pub(crate) fn nats_name(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "invalid name {raw:?}: 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        format!("invalid socket address {raw:?} (expected host:port, e.g. 127.0.0.1:8080)")
    })
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("invalid duration {raw:?} ({e}); e.g. 10s, 500ms, 1m"))
}

/// A size in bytes: a plain number, or one with B, KB/KiB, MB/MiB (both
/// meaning powers of 1024, as people mean them for message limits).
fn byte_size(raw: &str) -> Result<usize, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "invalid size {raw:?}: use e.g. 1MiB, 64KiB or 5000"
            ));
        }
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("invalid size {raw:?}: use e.g. 1MiB, 64KiB or 5000"))?;
    match value.checked_mul(multiplier) {
        Some(0) | None => Err(format!("invalid size {raw:?}: must be at least 1 byte")),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["order-service"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/orders");
        assert!(!c.require_sync_standby);
        assert_eq!(c.database_read_url.get(), None);
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.nats_subject, "orders");
        assert_eq!(c.nats_stream, "ORDERS");
        assert_eq!(c.nats_durable, "order-service");
        assert_eq!(c.nats_stream_replicas, 1);
        assert_eq!(c.nats_ack_wait, Duration::from_secs(30));
        assert_eq!(c.nats_max_deliver, 10);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_addr, MetricsAddr(None));
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.http_write_timeout, Duration::from_secs(30));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.rate_limit, 10_000);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.read_through_limit, 8);
        assert_eq!(c.sse_max_clients, 1_000);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.max_order_bytes, 1024 * 1024);
        assert_eq!(c.ingest_batch_size, 500);
        assert_eq!(c.ingest_in_flight, 2);
        assert_eq!(c.ingest_linger, Duration::from_millis(5));
        assert_eq!(c.rejected_retention.to_string(), "30d");
        assert_eq!(
            c.nats_stream_max_age.get(),
            Some(orders_nats::DEFAULT_MAX_AGE)
        );
        assert!(!c.audit_reads);
        assert_eq!(c.audit_retention.to_string(), "365d");
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn errors_name_the_variable_and_the_problem() {
        let err = parse(&["--http-addr", "x"]).expect_err("invalid");
        assert!(
            err.contains("HTTP_ADDR") || err.contains("--http-addr"),
            "{err}"
        );
        assert!(err.contains("invalid socket address \"x\""), "{err}");

        for (flag, value, says) in [
            ("--shutdown-timeout", "soon", "invalid duration"),
            ("--max-order-bytes", "lots", "invalid size"),
            ("--max-order-bytes", "0", "at least 1 byte"),
            ("--nats-stream", "a b", "invalid name"),
            ("--nats-subject", "orders.>.x", "invalid subject"),
            ("--nats-subject", "orders.e*", "invalid subject"),
            ("--nats-subject", "orders..eu", "invalid subject"),
            ("--nats-max-deliver", "1", "1"),
            ("--nats-url", "http://[::1", "invalid NATS server address"),
            (
                "--database-url",
                "postgres://x:y:z@",
                "invalid PostgreSQL URL",
            ),
            (
                "--database-url",
                "postgres://u@h1,h2/orders?target_session_attrs=read-only",
                "refuses writes",
            ),
            ("--cache-capacity", "0", "0"),
            ("--ingest-batch-size", "0", "0"),
            ("--nats-ack-wait", "500ms", "shorter than 1s"),
            (
                "--require-sync-standby",
                "yes",
                "possible values: true, false",
            ),
            (
                "--database-read-url",
                "postgres://h:x/orders",
                "invalid PostgreSQL URL",
            ),
            (
                "--database-read-url",
                "postgres://h1,h2",
                "names no database",
            ),
            (
                "--trusted-proxies",
                "10.0.0.0/8,10.1.0.0/33",
                "invalid proxy list: \"10.1.0.0/33\": the prefix must be",
            ),
            (
                "--trusted-proxies",
                "nginx",
                "invalid proxy list: \"nginx\"",
            ),
            ("--rejected-retention", "500ms", "shorter than 1s"),
            ("--rejected-retention", "-1", "invalid duration"),
            ("--rejected-retention", "x", "invalid duration"),
            ("--audit-retention", "500ms", "shorter than 1s"),
            ("--nats-stream-max-age", "x", "invalid duration"),
            ("--audit-reads", "yes", "possible values: true, false"),
        ] {
            let err = parse(&[flag, value]).expect_err(flag);
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn a_blank_read_url_sends_reads_to_the_primary() {
        for blank in ["", " "] {
            let c = parse(&["--database-read-url", blank]).expect("blank is none");
            assert_eq!(c.database_read_url.get(), None);
        }
        let c = parse(&["--database-read-url", "postgres://u@h1:5432,h2:5432/orders"])
            .expect("several hosts");
        assert_eq!(
            c.database_read_url.get(),
            Some("postgres://u@h1:5432,h2:5432/orders")
        );
    }

    #[test]
    fn trusted_proxies_are_cidr_blocks_and_a_bad_one_names_the_variable() {
        let c = parse(&["--trusted-proxies", "172.30.23.0/24, fd00::/8"]).expect("valid");
        assert!(!c.trusted_proxies.is_empty());
        let c = parse(&["--trusted-proxies", ""]).expect("empty is none");
        assert!(c.trusted_proxies.is_empty());

        let err = parse(&["--trusted-proxies", "172.30.23.1/24"]).expect_err("host bits");
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
        assert!(err.contains("the block is 172.30.23.0/24"), "{err}");
    }

    #[test]
    fn a_retention_of_zero_keeps_forever() {
        let c = parse(&[
            "--rejected-retention",
            "0",
            "--audit-retention",
            "0",
            "--nats-stream-max-age",
            "0",
        ])
        .expect("zero is forever");

        assert_eq!(c.rejected_retention, Retention::FOREVER);
        assert_eq!(c.audit_retention, Retention::FOREVER);
        assert_eq!(c.nats_stream_max_age, Retention::FOREVER);
    }

    #[test]
    fn subjects_may_be_wildcards() {
        for good in ["orders", "orders.*", "orders.>", "orders.*.eu", ">", "*"] {
            assert_eq!(nats_subject(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(byte_size("1MiB"), Ok(1 << 20));
        assert_eq!(byte_size("64KiB"), Ok(64 << 10));
        assert_eq!(byte_size("5000"), Ok(5000));
        assert_eq!(byte_size("2 mb"), Ok(2 << 20));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn help_lists_every_variable() {
        let help = Config::command().render_long_help().to_string();
        for var in [
            "DATABASE_URL",
            "DATABASE_READ_URL",
            "REQUIRE_SYNC_STANDBY",
            "NATS_URL",
            "NATS_SUBJECT",
            "NATS_STREAM",
            "NATS_DURABLE",
            "NATS_STREAM_REPLICAS",
            "NATS_ACK_WAIT",
            "NATS_MAX_DELIVER",
            "HTTP_ADDR",
            "METRICS_ADDR",
            "MAX_CONNECTIONS",
            "HTTP_WRITE_TIMEOUT",
            "HTTP_IDLE_TIMEOUT",
            "RATE_LIMIT",
            "TRUSTED_PROXIES",
            "READ_THROUGH_LIMIT",
            "CACHE_CAPACITY",
            "SHUTDOWN_TIMEOUT",
            "MAX_ORDER_BYTES",
            "INGEST_BATCH_SIZE",
            "INGEST_IN_FLIGHT",
            "INGEST_LINGER",
            "REJECTED_RETENTION",
            "NATS_STREAM_MAX_AGE",
            "AUDIT_READS",
            "AUDIT_RETENTION",
            "RUST_LOG",
            "LOG_FORMAT",
        ] {
            assert!(help.contains(var), "--help does not mention {var}");
        }
    }
}

//! The command line: `order-service` alone serves (every setting a
//! variable and a flag, [`Config`]); `order-service audit ...` and
//! `order-service erase ...` are operators' tools beside it, reading only
//! what they need.

use std::ffi::OsString;
use std::io::Write;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orders_domain::{
    AuditLog, ErasureReport, ErasureRequest, ErasureTarget, OrderUid, ReadRecord, ReadsOf,
};
use orders_nats::JetStreamMessages;
use orders_postgres::{PgAuditLog, PgErasures, PoolSettings};
use time::format_description::well_known::Rfc3339;

use crate::config::{
    Config, DEFAULT_DATABASE_URL, DEFAULT_NATS_STREAM, DEFAULT_NATS_URL, nats_name, nats_urls,
    postgres_url,
};

/// The order service: takes orders from NATS JetStream, stores them in
/// PostgreSQL, keeps them in memory and answers `GET /order?order_uid=...`.
#[derive(Debug, Parser)]
#[command(
    name = "order-service",
    version,
    about,
    long_about = None,
    after_help = crate::config::TRACES_HELP,
    // The service's flags, or a subcommand with its own: not both.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Without a subcommand: serve.
    #[command(flatten)]
    pub serve: Config,
}

/// The subcommands alone: clap reads the variable of every flag it
/// knows, so parsing [`Cli`] for `order-service audit` would read (and
/// refuse, if malformed) an `HTTP_ADDR` that `audit` never uses.
#[derive(Debug, Parser)]
#[command(name = "order-service", version)]
struct Tools {
    #[command(subcommand)]
    command: Command,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Run {
    /// Serve, as configured.
    Serve(Box<Config>),
    /// An operator's tool.
    Tool(Command),
}

impl Cli {
    /// Parses `args` (the program's name first): a subcommand with its
    /// own flags and variables only, or the service's.
    pub fn try_run_from(args: impl IntoIterator<Item = OsString>) -> Result<Run, clap::Error> {
        let args: Vec<OsString> = args.into_iter().collect();
        let first = args.get(1).and_then(|a| a.to_str());
        let tools = <Tools as clap::CommandFactory>::command();
        let is_tool =
            first.is_some_and(|name| tools.get_subcommands().any(|c| c.get_name() == name));
        if is_tool {
            return Ok(Run::Tool(Tools::try_parse_from(args)?.command));
        }
        let cli = Cli::try_parse_from(args)?;
        Ok(match cli.command {
            Some(command) => Run::Tool(command),
            None => Run::Serve(Box::new(cli.serve)),
        })
    }

    /// [`Cli::try_run_from`] on the process's arguments; prints the error
    /// (or the help or version asked for) and exits as clap does.
    pub fn run_from_env() -> Run {
        Self::try_run_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
}

/// The operator's tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints who was given an order's data, or a customer's orders', and
    /// when: one line a read, oldest first (time, caller, route, the uids
    /// asked about), from order_reads, which the service fills with
    /// AUDIT_READS=true. Reads DATABASE_URL only; never prompts.
    Audit(AuditArgs),

    /// Erases a person's data on request: every stored order that one key
    /// matches (as search matches it) keeps its uid, dates, amounts and
    /// items, and its personal fields (the delivery's name, phone, zip,
    /// city, address, region and email, the customer id, the payment's
    /// transaction, the track numbers) become "[erased]" in the rows and in
    /// the document, a batch of 100 orders per transaction; every replica
    /// drops them from its cache within a second. Their rejected messages,
    /// and any whose bytes hold one of their emails or phones, are deleted,
    /// and so are the messages of both that the stream still holds. A
    /// message that brings an erased order back later is rejected as
    /// `erased`. One row of `erasures` records the run (when, the reason,
    /// the kind of match, the orders' uids; never the value matched).
    /// Prints one line per order, rejected message and stream message;
    /// never prompts.
    // Boxed: its flags are most of the enum's size.
    Erase(Box<EraseArgs>),
}

/// What to erase, why, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub whose: ErasureOf,

    /// Why (a request's or a ticket's reference), kept in the erasures
    /// record. Not the person's data: it is kept for good.
    #[arg(long, value_parser = reason)]
    pub reason: String,

    /// List what would be erased and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The service's PostgreSQL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = postgres_url)]
    pub database_url: String,

    /// NATS server(s), comma-separated: where the stream is.
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL, value_parser = nats_urls)]
    pub nats_url: String,

    /// The service's stream, which holds the orders' messages.
    #[arg(long, env = "NATS_STREAM", default_value = DEFAULT_NATS_STREAM, value_parser = nats_name)]
    pub nats_stream: String,
}

/// Exactly one key, matched as search matches it.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ErasureOf {
    /// The order with this uid.
    #[arg(long, value_parser = |v: &str| ErasureTarget::parse("order_uid", v))]
    pub order_uid: Option<ErasureTarget>,

    /// Every order of this customer (customer_id, exactly).
    #[arg(long, value_parser = |v: &str| ErasureTarget::parse("customer_id", v))]
    pub customer_id: Option<ErasureTarget>,

    /// Every order delivered to this email (A-Z and a-z alike).
    #[arg(long, value_parser = |v: &str| ErasureTarget::parse("email", v))]
    pub email: Option<ErasureTarget>,

    /// Every order delivered to this phone (its + and digits: "+7 (900)
    /// 123-45-67" is +79001234567).
    #[arg(long, value_parser = |v: &str| ErasureTarget::parse("phone", v))]
    pub phone: Option<ErasureTarget>,
}

impl ErasureOf {
    fn target(&self) -> Option<&ErasureTarget> {
        [&self.order_uid, &self.customer_id, &self.email, &self.phone]
            .into_iter()
            .find_map(Option::as_ref)
    }
}

fn reason(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("empty: say why (a request's or a ticket's reference)".to_owned());
    }
    Ok(raw.to_owned())
}

/// Whose reads, and where they are.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub whose: Whose,

    /// One JSON object a line ({"at", "who", "route", "order_uids"}) instead
    /// of text, for scripts.
    #[arg(long)]
    pub json: bool,

    /// The service's PostgreSQL, where order_reads is.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = postgres_url)]
    pub database_url: String,
}

/// Exactly one of an order or a customer.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Whose {
    /// The reads that gave out this order.
    #[arg(long, value_parser = order_uid)]
    pub order_uid: Option<OrderUid>,

    /// The reads that gave out any order of this customer (its
    /// customer_id).
    #[arg(long)]
    pub customer_id: Option<String>,
}

fn order_uid(raw: &str) -> Result<OrderUid, String> {
    OrderUid::parse(raw).map_err(|e| e.to_string())
}

impl Whose {
    fn reads_of(&self) -> ReadsOf {
        match (&self.order_uid, &self.customer_id) {
            (Some(uid), _) => ReadsOf::Order(uid.clone()),
            // clap's group makes it exactly one of the two.
            (None, customer) => ReadsOf::Customer(customer.clone().unwrap_or_default()),
        }
    }
}

/// `order-service audit`: prints the reads to standard output; says on
/// standard error when there are none.
pub async fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    // One connection is all a report needs.
    let settings = PoolSettings {
        max_size: 1,
        ..PoolSettings::default()
    };
    let pool = orders_postgres::connect_pool(&args.database_url, settings)
        .context("DATABASE_URL: building the connection pool")?;
    let whose = args.whose.reads_of();
    let reads = PgAuditLog::new(pool)
        .reads_of(&whose)
        .await
        .map_err(|e| anyhow::anyhow!(orders_domain::error_chain(&e)))
        .with_context(|| format!("reading order_reads at DATABASE_URL {}", args.database_url))?;
    if reads.is_empty() {
        eprintln!(
            "no reads recorded of {} (the service records them with AUDIT_READS=true)",
            match &whose {
                ReadsOf::Order(uid) => format!("order {uid}"),
                ReadsOf::Customer(customer) => format!("customer {customer:?}'s orders"),
            }
        );
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write_reads(&mut out, &reads, args.json)?;
    out.flush().context("writing to standard output")
}

/// `order-service erase`: erases (or, with `--dry-run`, lists) and prints
/// what it did, one line per order, rejected message and stream message;
/// a summary on standard error. Stops at the first fault, saying what was
/// done by then.
pub async fn erase(args: &EraseArgs) -> anyhow::Result<()> {
    let target = args
        .whose
        .target()
        .context("one of --order-uid, --customer-id, --email or --phone")?;
    // A batch's transaction, and the record's updates beside it.
    let settings = PoolSettings {
        max_size: 2,
        ..PoolSettings::default()
    };
    let pool = orders_postgres::connect_pool(&args.database_url, settings)
        .context("DATABASE_URL: building the connection pool")?;
    let nats = orders_nats::connect(&args.nats_url, "order-service erase")
        .await
        .context("NATS_URL")?;
    let request = ErasureRequest {
        target: target.clone(),
        reason: args.reason.clone(),
        orders_stream: args.nats_stream.clone(),
        dry_run: args.dry_run,
    };
    let erased = orders_domain::erase(
        &PgErasures::new(pool),
        &JetStreamMessages::new(nats.clone()),
        &request,
    )
    .await;
    // Whatever the stream was told is sent before the process exits.
    nats.flush().await.context("flushing NATS")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match erased {
        Ok(report) => {
            write_erasure(&mut out, &report)?;
            out.flush().context("writing to standard output")?;
            eprintln!("{}", erasure_summary(&report, args.dry_run));
            Ok(())
        }
        Err(failed) => {
            write_erasure(&mut out, &failed.done)?;
            out.flush().context("writing to standard output")?;
            let record = failed
                .done
                .record
                .map(|r| format!(" (erasures id {}, left unfinished)", r.0))
                .unwrap_or_default();
            Err(anyhow::anyhow!(orders_domain::error_chain(&failed.why))).with_context(|| {
                format!(
                    "{}{record}; the batch that failed changed nothing in the database: run the                      same erasure again to finish it",
                    erasure_summary(&failed.done, false)
                )
            })
        }
    }
}

/// One line per order (`order<tab>UID`), rejected message
/// (`rejected_message<tab>ID`) and stream message
/// (`stream_message<tab>STREAM<tab>SEQUENCE`).
pub fn write_erasure(out: &mut impl Write, report: &ErasureReport) -> anyhow::Result<()> {
    let written = (|| {
        for uid in &report.orders {
            writeln!(out, "order\t{uid}")?;
        }
        for id in &report.rejected {
            writeln!(out, "rejected_message\t{}", id.get())?;
        }
        for (stream, sequence) in &report.stream_messages {
            writeln!(out, "stream_message\t{stream}\t{sequence}")?;
        }
        Ok::<_, std::io::Error>(())
    })();
    written.context("writing to standard output")
}

/// What the run did (or would do), in a sentence.
pub fn erasure_summary(report: &ErasureReport, dry_run: bool) -> String {
    let counts = format!(
        "{} orders, {} rejected messages and {} stream messages",
        report.orders.len(),
        report.rejected.len(),
        report.stream_messages.len()
    );
    match (dry_run, report.record) {
        (true, _) => format!("dry run: would erase {counts}; nothing changed"),
        (false, Some(record)) => format!("erased {counts} (erasures id {})", record.0),
        (false, None) => format!("erased {counts}"),
    }
}

/// The reads, one a line: `TIME<tab>WHO<tab>ROUTE<tab>UID,UID`, or one
/// JSON object a line.
pub fn write_reads(out: &mut impl Write, reads: &[ReadRecord], json: bool) -> anyhow::Result<()> {
    for read in reads {
        if json {
            serde_json::to_writer(&mut *out, read).context("writing JSON")?;
            writeln!(out)
        } else {
            let at = read
                .at
                .to_offset(time::UtcOffset::UTC)
                .format(&Rfc3339)
                .context("formatting a time")?;
            writeln!(
                out,
                "{at}\t{}\t{}\t{}",
                read.who,
                read.route,
                read.order_uids.join(",")
            )
        }
        .context("writing to standard output")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Run, String> {
        Cli::try_run_from(args.iter().map(OsString::from)).map_err(|e| e.to_string())
    }

    fn audit_args(args: &[&str]) -> AuditArgs {
        match parse(args) {
            Ok(Run::Tool(Command::Audit(audit))) => audit,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn read(at: i64, who: &str, route: &str, uids: &[&str]) -> ReadRecord {
        ReadRecord {
            at: time::OffsetDateTime::from_unix_timestamp(at).expect("time"),
            who: who.into(),
            route: route.into(),
            order_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    #[test]
    fn without_a_subcommand_it_serves_with_every_flag_as_before() {
        let run = parse(&[
            "order-service",
            "--http-addr",
            "127.0.0.1:9",
            "--audit-reads",
            "true",
        ])
        .expect("serve");

        let Run::Serve(config) = run else {
            panic!("serves: {run:?}");
        };
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:9");
        assert!(config.audit_reads);
    }

    #[test]
    fn audit_takes_exactly_one_of_an_order_uid_or_a_customer() {
        let args = audit_args(&["order-service", "audit", "--order-uid", "abc"]);
        assert_eq!(
            args.whose.reads_of(),
            ReadsOf::Order(order_uid("abc").expect("uid"))
        );
        let args = audit_args(&["order-service", "audit", "--customer-id", "ann", "--json"]);
        assert_eq!(args.whose.reads_of(), ReadsOf::Customer("ann".into()));
        assert!(args.json);

        for bad in [
            &["order-service", "audit"][..],
            &[
                "order-service",
                "audit",
                "--order-uid",
                "a",
                "--customer-id",
                "b",
            ],
            &["order-service", "audit", "--order-uid", "a b"],
            &[
                "order-service",
                "--http-addr",
                "127.0.0.1:9",
                "audit",
                "--order-uid",
                "a",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn erase_args(args: &[&str]) -> EraseArgs {
        match parse(args) {
            Ok(Run::Tool(Command::Erase(erase))) => *erase,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn erase_takes_one_key_matched_as_search_matches_and_a_reason() {
        let args = erase_args(&[
            "order-service",
            "erase",
            "--phone",
            "+7 (900) 123-45-67",
            "--reason",
            "ticket 7",
            "--dry-run",
        ]);
        assert_eq!(
            args.whose.target(),
            Some(&ErasureTarget::Phone("+79001234567".into()))
        );
        assert_eq!(args.reason, "ticket 7");
        assert!(args.dry_run);
        assert_eq!(args.nats_stream, "ORDERS");
        let args = erase_args(&[
            "order-service",
            "erase",
            "--email",
            "Ann@Example.com",
            "--reason",
            "r",
        ]);
        assert_eq!(args.whose.target().map(ErasureTarget::kind), Some("email"));
        assert!(!args.dry_run);

        for bad in [
            &["order-service", "erase", "--reason", "r"][..],
            &["order-service", "erase", "--order-uid", "a"],
            &[
                "order-service",
                "erase",
                "--order-uid",
                "a",
                "--customer-id",
                "b",
                "--reason",
                "r",
            ],
            &[
                "order-service",
                "erase",
                "--email",
                "no-at",
                "--reason",
                "r",
            ],
            &[
                "order-service",
                "erase",
                "--customer-id",
                "a",
                "--reason",
                "",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_erasure_is_written_one_line_per_thing_and_summed_up() {
        let report = ErasureReport {
            record: Some(orders_domain::ErasureId(3)),
            orders: vec![order_uid("ann-1").expect("uid")],
            rejected: vec![orders_domain::RejectedId::new(42).expect("id")],
            stream_messages: vec![("ORDERS".into(), 17)],
        };
        let mut out = Vec::new();

        write_erasure(&mut out, &report).expect("written");

        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "order\tann-1\nrejected_message\t42\nstream_message\tORDERS\t17\n"
        );
        assert_eq!(
            erasure_summary(&report, false),
            "erased 1 orders, 1 rejected messages and 1 stream messages (erasures id 3)"
        );
        assert!(erasure_summary(&report, true).ends_with("nothing changed"));
    }

    #[test]
    fn reads_are_written_one_a_line_as_text_or_json() {
        let reads = [
            read(1_700_000_000, "desk", "/orders", &["a", "b"]),
            read(1_700_000_060, "192.0.2.7", "/order", &["b"]),
        ];
        let mut text = Vec::new();
        let mut json = Vec::new();

        write_reads(&mut text, &reads, false).expect("text");
        write_reads(&mut json, &reads, true).expect("json");

        assert_eq!(
            String::from_utf8(text).expect("utf-8"),
            "2023-11-14T22:13:20Z\tdesk\t/orders\ta,b\n\
             2023-11-14T22:14:20Z\t192.0.2.7\t/order\tb\n"
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(json)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"at": "2023-11-14T22:13:20Z", "who": "desk", "route": "/orders",
                               "order_uids": ["a", "b"]})
        );
        assert_eq!(lines.len(), 2);
    }
}

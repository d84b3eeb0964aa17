//! `order-publisher replay`: messages the service rejected, published
//! again. After a change to what the service accepts (Go's omitted fields,
//! say), rows rejected before may now be orders.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use orders_domain::RejectReason;
use orders_postgres::replay::{ReplayFilter, Replayable, mark_replayed, replayable};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Which rows to replay, and where they are.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A row's id (repeat for several).
    #[arg(long = "id")]
    pub ids: Vec<i64>,

    /// Rows rejected for this reason (too_large, invalid_json, duplicate_key,
    /// not_an_object, invalid_field, conflict, refused, undeliverable,
    /// internal).
    #[arg(long, value_parser = reason)]
    pub reason: Option<RejectReason>,

    /// Rows received at or after this time (RFC 3339).
    #[arg(long, value_parser = time_arg)]
    pub since: Option<OffsetDateTime>,

    /// Rows received before this time (RFC 3339).
    #[arg(long, value_parser = time_arg)]
    pub until: Option<OffsetDateTime>,

    /// Include rows replayed before.
    #[arg(long)]
    pub again: bool,

    /// List the rows that would be replayed; publish nothing, mark nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The service's PostgreSQL, where rejected_messages is.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/orders"
    )]
    pub database_url: String,
}

fn reason(raw: &str) -> Result<RejectReason, String> {
    RejectReason::from_name(raw).ok_or_else(|| {
        let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown reason {raw:?}: one of {}", names.join(", "))
    })
}

fn time_arg(raw: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time such as 2026-11-26T10:00:00Z: {e}"))
}

/// Lists or replays the chosen rows.
pub async fn run(args: &ReplayArgs, nats_url: &str, nats_subject: &str) -> anyhow::Result<()> {
    let filter = ReplayFilter {
        ids: args.ids.clone(),
        reason: args.reason,
        since: args.since,
        until: args.until,
        again: args.again,
    };
    anyhow::ensure!(
        filter.chooses(),
        "say which rows to replay: --id, --reason, --since or --until"
    );
    let (db, connection) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("DATABASE_URL: cannot reach {}", args.database_url))?;
    tokio::spawn(connection);
    let rows = replayable(&db, &filter)
        .await
        .context("reading rejected_messages")?;
    if args.dry_run {
        for row in &rows {
            println!("{}", describe(row));
        }
        println!(
            "{} rows would be replayed (dry run: nothing published)",
            rows.len()
        );
        return Ok(());
    }

    let client = orders_nats::connect(nats_url, "order-publisher").await?;
    let js = jetstream::new(client.clone());
    let mut replayed = 0;
    for row in &rows {
        // The subject it came on (a wildcard service may listen on many);
        // a row without one (read back after the broker gave up) goes to
        // NATS_SUBJECT.
        let subject = if row.subject.is_empty() {
            nats_subject.to_owned()
        } else {
            row.subject.clone()
        };
        let mut headers = HeaderMap::new();
        // A fresh id: the broker must not drop it as a repeat of the first.
        headers.insert("Nats-Msg-Id", fresh_msg_id(row.id).as_str());
        headers.insert("Orders-Replay-Of", row.id.to_string().as_str());
        js.publish_with_headers(subject, headers, Bytes::from(row.payload.clone()))
            .await
            .context("publishing")?
            .await
            .with_context(|| format!("the broker did not take row {}", row.id))?;
        mark_replayed(&db, row.id)
            .await
            .with_context(|| format!("marking row {} replayed", row.id))?;
        replayed += 1;
        println!("replayed {}", describe(row));
    }
    client.flush().await.context("flushing")?;
    println!("replayed {replayed} rows");
    Ok(())
}

fn fresh_msg_id(id: i64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("replay-{id}-{nanos}")
}

fn describe(row: &Replayable) -> String {
    let when = row
        .received_at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "?".to_owned());
    let detail: String = row.detail.chars().take(80).collect();
    let again = if row.replayed_at.is_some() {
        " (replayed before)"
    } else {
        ""
    };
    format!(
        "#{} {when} {} {} bytes on {:?}{again}: {detail}",
        row.id,
        row.reason,
        row.payload.len(),
        row.subject
    )
}

//! `order-publisher replay`: messages the service rejected, published
//! again. After a change to what the service accepts (Go's omitted fields,
//! say), rows rejected before may now be orders.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use orders_domain::RejectReason;
use orders_domain::trace::TraceParent;
use orders_postgres::replay::{ReplayFilter, Replayable, mark_replayed, replayable};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::trace::Producer;

/// Which rows to replay, and where they are.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A row's id (repeat for several).
    #[arg(long = "id")]
    pub ids: Vec<i64>,

    /// Rows rejected for this reason (too_large, invalid_json, duplicate_key,
    /// not_an_object, invalid_field, conflict, refused, undeliverable,
    /// internal; never erased: those rows keep no bytes to send).
    #[arg(long, value_parser = reason)]
    pub reason: Option<RejectReason>,

    /// Rows received at or after this time (RFC 3339, within the years
    /// 0001-9999 in UTC).
    #[arg(long, value_parser = time_arg)]
    pub since: Option<OffsetDateTime>,

    /// Rows received before this time (RFC 3339, within the years 0001-9999
    /// in UTC).
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

/// The service's own date parser: the instant comes back in UTC and
/// within the range PostgreSQL and the `time` crate hold
/// (`orders_domain::dates`), so binding it converts nothing and cannot
/// panic. clap names the flag in front of the message.
fn time_arg(raw: &str) -> Result<OffsetDateTime, String> {
    orders_domain::dates::parse_rfc3339(raw).map_err(|e| format!("{e}"))
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
    let producer = Producer::from_env()?;
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
        // A fresh id (below): the broker must not drop it as a repeat of
        // the first.
        headers.insert("Orders-Replay-Of", row.id.to_string().as_str());
        // The replay continues the first send's trace, when it had one.
        let first = row.headers.as_deref().and_then(TraceParent::from_headers);
        let msg_id = fresh_msg_id(row.id);
        let sent = producer
            .as_ref()
            .map(|p| p.send(&subject, Some(&msg_id), first.as_ref(), &mut headers));
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        js.publish_with_headers(subject, headers, Bytes::from(row.payload.clone()))
            .await
            .context("publishing")?
            .await
            .with_context(|| format!("the broker did not take row {}", row.id))?;
        drop(sent);
        mark_replayed(&db, row.id)
            .await
            .with_context(|| format!("marking row {} replayed", row.id))?;
        replayed += 1;
        println!("replayed {}", describe(row));
    }
    client.flush().await.context("flushing")?;
    if let Some(producer) = producer {
        producer.finish().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        replay: ReplayArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplayArgs, String> {
        Cli::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
            .map(|cli| cli.replay)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn since_and_until_outside_the_years_held_are_refused_naming_the_flag() {
        for (flag, value, says) in [
            // Year 10000 in UTC: binding it would panic in the driver.
            (
                "--since",
                "9999-12-31T23:00:00-05:00",
                "in UTC it falls outside",
            ),
            (
                "--until",
                "9999-12-31T23:00:00-05:00",
                "in UTC it falls outside",
            ),
            ("--until", "0000-06-01T00:00:00Z", "year 0 is outside"),
            (
                "--since",
                "2026-11-01X00:00:00Z",
                "expected an RFC 3339 time",
            ),
            ("--since", "2016-12-31T23:59:60Z", "a leap second"),
        ] {
            let err = parse(&[flag, value]).expect_err(value);

            assert!(
                err.contains(&format!("'{flag} <")) && err.contains(says),
                "{flag} {value}: {err}"
            );
        }
    }

    #[test]
    fn since_and_until_are_held_in_utc() {
        let args = parse(&[
            "--since",
            "2026-11-01T03:00:00+03:00",
            "--until",
            "9999-12-31T18:59:59-05:00",
        ])
        .expect("valid");

        let since = args.since.expect("since");
        let until = args.until.expect("until");
        assert_eq!(since.offset(), time::UtcOffset::UTC);
        assert_eq!(
            since.format(&Rfc3339).expect("formats"),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            until.format(&Rfc3339).expect("formats"),
            "9999-12-31T23:59:59Z"
        );
    }
}

//! `order-publisher`: publishes an order file, or generated orders, to NATS
//! JetStream with `Nats-Msg-Id` set to each order_uid, and waits for the
//! broker's acks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use async_nats::jetstream;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use orders_domain::{Order, Retention};
use orders_nats::StreamSettings;
use orders_publisher::trace::Producer;
use orders_publisher::{SplitMix64, invalid, order};

/// Publishes orders to the order service's stream: one file, or generated
/// ones; or (`replay`) messages the service rejected, again.
#[derive(Debug, Parser)]
#[command(name = "order-publisher", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// The order to publish (JSON, like fixtures/model.json). Ignored with --count.
    #[arg(long, default_value = "fixtures/model.json")]
    file: PathBuf,

    /// Publish the file even if it is not a valid order (to see it rejected).
    #[arg(long)]
    allow_invalid: bool,

    /// Publish this many generated orders instead of the file: valid, unique
    /// uids, 1 to 5 items, totals that add up.
    #[arg(long)]
    count: Option<u64>,

    /// Seed for --count: the same seed gives the same orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Most messages per second (0: as fast as the broker acks).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,

    /// Share of generated messages, 0 to 1, that are malformed on purpose.
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    invalid_ratio: f64,

    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,

    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,

    /// Subject orders are published on (a concrete one: the service may
    /// listen on a wildcard such as orders.>, a publisher sends on orders.eu).
    #[arg(long, env = "NATS_SUBJECT", default_value = "orders", global = true)]
    nats_subject: String,

    /// Stream that captures the subject (created if missing).
    #[arg(long, env = "NATS_STREAM", default_value = "ORDERS")]
    nats_stream: String,

    /// Stream replicas, if this tool creates the stream.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    nats_stream_replicas: usize,

    /// How long the stream keeps each message, if this tool creates it
    /// (as the service would: 1s or more, e.g. 7d; 0 keeps them until
    /// deleted by hand).
    #[arg(long, env = "NATS_STREAM_MAX_AGE", default_value = "7d", value_parser = retention)]
    nats_stream_max_age: Retention,
}

fn retention(raw: &str) -> Result<Retention, String> {
    Retention::parse(raw).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Publishes rows of rejected_messages again (each with a fresh
    /// Nats-Msg-Id) and marks them replayed; rows are never deleted. Rows
    /// replayed before are left out unless --again.
    Replay(orders_publisher::replay::ReplayArgs),
}

fn ratio(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{raw:?} is not a share from 0 to 1")),
    }
}

/// One message to send: its body and, for a valid order, its uid.
struct Outgoing {
    body: Vec<u8>,
    uid: Option<String>,
}

/// Publishes with a bounded number of acks outstanding, so a fast producer
/// does not flood the broker, and counts what the broker said.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    acked: u64,
    duplicates: u64,
    failed: u64,
}

/// Most publishes awaiting the broker's ack at once.
const IN_FLIGHT: usize = 512;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Replay(replay)) = &args.command {
        return orders_publisher::replay::run(replay, &args.nats_url, &args.nats_subject).await;
    }
    anyhow::ensure!(
        !args.nats_subject.contains(['*', '>']),
        "NATS_SUBJECT {:?} is a wildcard: publish on a subject it matches (--nats-subject orders.eu)",
        args.nats_subject
    );
    let client = orders_nats::connect(&args.nats_url, "order-publisher").await?;
    let js = jetstream::new(client.clone());
    let producer = Producer::from_env()?;
    let settings = StreamSettings {
        replicas: args.nats_stream_replicas,
        max_age: args.nats_stream_max_age.get(),
        ..StreamSettings::new(&args.nats_subject, &args.nats_stream)
    };
    orders_nats::ensure_stream(&js, &settings).await?;

    let messages: Box<dyn Iterator<Item = Outgoing>> = match args.count {
        Some(count) => Box::new(generated(count, args.seed, args.invalid_ratio)),
        None => Box::new(std::iter::once(from_file(&args)?)),
    };
    let total = args.count.unwrap_or(1);
    let bar = if args.quiet || total == 1 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} acked  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let pause = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut ticker = pause.map(tokio::time::interval);
    let mut pending: FuturesUnordered<Pin<Box<dyn Future<Output = AckResult> + Send>>> =
        FuturesUnordered::new();
    let mut tally = Tally::default();
    let mut last_uid = None;
    for message in messages {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        while pending.len() >= IN_FLIGHT {
            settle(pending.next().await, &mut tally, &bar);
        }
        let mut headers = HeaderMap::new();
        if let Some(uid) = &message.uid {
            // The broker drops a repeat of this id inside its duplicate window.
            headers.insert("Nats-Msg-Id", uid.as_str());
        }
        let sent = producer.as_ref().map(|p| {
            p.send(
                &args.nats_subject,
                message.uid.as_deref(),
                None,
                &mut headers,
            )
        });
        let ack = js
            .publish_with_headers(
                args.nats_subject.clone(),
                headers,
                Bytes::from(message.body),
            )
            .await
            .context("publishing")?;
        drop(sent);
        tally.published += 1;
        last_uid = message.uid;
        pending.push(Box::pin(ack.into_future()));
    }
    while let Some(result) = pending.next().await {
        settle(Some(result), &mut tally, &bar);
    }
    bar.finish_and_clear();
    client.flush().await.context("flushing")?;
    if let Some(producer) = producer {
        producer.finish().await;
    }

    let elapsed = started.elapsed();
    if args.count.is_none() {
        println!(
            "published order {} to {} (stream {}){} in {elapsed:.1?}",
            last_uid.as_deref().unwrap_or("<invalid>"),
            args.nats_subject,
            args.nats_stream,
            if tally.duplicates > 0 {
                ", duplicate: the broker already had it"
            } else {
                ""
            },
        );
    } else {
        println!(
            "published {}, acked by the broker {}, duplicates {}, failed {} in {elapsed:.2?} ({:.0} msg/s)",
            tally.published,
            tally.acked,
            tally.duplicates,
            tally.failed,
            tally.published as f64 / elapsed.as_secs_f64().max(1e-9),
        );
    }
    anyhow::ensure!(
        tally.failed == 0,
        "{} messages were not acked by the broker",
        tally.failed
    );
    Ok(())
}

type AckResult = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;

fn settle(result: Option<AckResult>, tally: &mut Tally, bar: &ProgressBar) {
    match result {
        Some(Ok(ack)) => {
            tally.acked += 1;
            if ack.duplicate {
                tally.duplicates += 1;
            }
        }
        Some(Err(err)) => {
            tally.failed += 1;
            bar.suspend(|| eprintln!("not acked: {err}"));
        }
        None => return,
    }
    bar.inc(1);
}

fn from_file(args: &Args) -> anyhow::Result<Outgoing> {
    let body =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let uid = match Order::parse(&body) {
        Ok(order) => Some(order.order_uid.to_string()),
        Err(err) if args.allow_invalid => {
            eprintln!(
                "warning: {} is not a valid order ({err}); publishing it anyway",
                args.file.display()
            );
            None
        }
        Err(err) => anyhow::bail!(
            "{} is not a valid order: {err} (use --allow-invalid to publish it anyway)",
            args.file.display()
        ),
    };
    Ok(Outgoing { body, uid })
}

fn generated(count: u64, seed: u64, invalid_ratio: f64) -> impl Iterator<Item = Outgoing> {
    let mut rng = SplitMix64::new(seed);
    let mut kind = 0;
    (0..count).map(move |i| {
        if rng.chance(invalid_ratio) {
            kind += 1;
            Outgoing {
                body: invalid(&mut rng, i, kind),
                uid: None,
            }
        } else {
            let value = order(&mut rng, i);
            let uid = value["order_uid"].as_str().map(str::to_owned);
            Outgoing {
                body: value.to_string().into_bytes(),
                uid,
            }
        }
    })
}

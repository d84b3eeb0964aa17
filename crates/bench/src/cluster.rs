//! `orders-bench --cluster ORDERS` (`just bench-cluster`): the native
//! topology of `just up-cluster` (three JetStream nodes on 4231-4233,
//! replicas on 8081 and 8082, pid files and logs in `.run/cluster/`)
//! measured with one and then two replicas, and left with two running.
//!
//! Ingest: ORDERS generated orders already in the R3 stream, timed from
//! starting the replicas until `count(*) FROM order_info` holds them all.
//! Lookups: wrk on every replica at once, with the harness's own script
//! (`load::wrk`) on uids drawn from 10,000 stored orders; the rates are
//! added. Prints a markdown table for docs/scaling.md.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use orders_nats::StreamSettings;

/// Where `scripts/up-cluster.sh` keeps pid files and logs, from the
/// repository root (where the recipe runs).
const RUN_DIR: &str = ".run/cluster";
/// The three nodes `just up-cluster` starts.
const NATS_URLS: &str = "nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233";
/// The replicas `just up-cluster` starts, and the most measured.
const REPLICAS: u16 = 2;
/// wrk per replica, as the table's head says: 32 connections for 10 s.
const CONNECTIONS: u32 = 32;
const LOOKUP_RUN: Duration = Duration::from_secs(10);
/// Stored orders the lookups draw their uids from.
const LOOKUP_UIDS: i64 = 10_000;
/// A run that takes longer has a stuck replica, not a slow one.
const INGEST_TIMEOUT: Duration = Duration::from_secs(300);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a replica gets to drain after SIGTERM, as `just down-cluster` gives it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The measures with 1 and then 2 replicas, `orders` orders per ingest row.
pub async fn run(orders: u64, service: &Path) -> anyhow::Result<()> {
    if !service.exists() {
        bail!(
            "{} is missing: cargo build --release --bin order-service",
            service.display()
        );
    }
    let dir = std::path::absolute(RUN_DIR)?;
    std::fs::create_dir_all(&dir)?;
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/orders".to_owned());
    let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {database_url} (`just services` starts it)"))?;
    tokio::spawn(connection);

    println!(
        "| replicas | ingest, orders/s | lookup, requests/s (wrk: 1 thread, \
         {CONNECTIONS} connections per replica, {} s) |",
        LOOKUP_RUN.as_secs()
    );
    println!("|---|---|---|");
    for n in 1..=REPLICAS {
        stop_replicas(&dir).await?;
        // The orders wait in the stream while no replica consumes it.
        let before = count(&db).await?;
        publish(orders).await?;
        let started = Instant::now();
        let pids = start_replicas(&dir, service, n)?;
        let target = before + i64::try_from(orders)?;
        while count(&db).await? < target {
            check_running(&dir, &pids)?;
            if started.elapsed() > INGEST_TIMEOUT {
                bail!("order_info does not hold {target} orders after {INGEST_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ingest = orders as f64 / started.elapsed().as_secs_f64();
        wait_ready(&dir, &pids).await?;
        let lookups = lookups(&db, &dir, n).await?;
        println!("| {n} | {} | {} |", ingest as u64, lookups as u64);
    }
    stop_replicas(&dir).await?;
    start_replicas(&dir, service, REPLICAS)?;
    Ok(())
}

async fn count(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = db
        .query_one("SELECT count(*) FROM order_info", &[])
        .await
        .context("SELECT count(*) FROM order_info")?;
    Ok(row.get(0))
}

/// `orders` generated orders with a fresh seed (new uids every run) to the
/// cluster, as `order-publisher` with `NATS_STREAM_REPLICAS=3` sends them:
/// the stream made with three replicas if missing, `Nats-Msg-Id` set to
/// the uid, every ack awaited.
async fn publish(orders: u64) -> anyhow::Result<()> {
    let subject = std::env::var("NATS_SUBJECT").unwrap_or_else(|_| "orders".to_owned());
    let stream = std::env::var("NATS_STREAM").unwrap_or_else(|_| "ORDERS".to_owned());
    let client = orders_nats::connect(NATS_URLS, "orders-bench")
        .await
        .context("the cluster's NATS (`just up-cluster` starts it)")?;
    let js = jetstream::new(client.clone());
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::new(&subject, &stream)
    };
    orders_nats::ensure_stream(&js, &settings).await?;
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let generated = crate::data::generate(seed, orders);
    // Just after `just up-cluster` restarted the nodes, a publish can get
    // "no responders" (seen in one run of four here; the stream likely had
    // no leader yet): nothing was stored, so those orders go again, until
    // this deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    for chunk in generated.chunks(1_000) {
        let mut pending: Vec<&serde_json::Value> = chunk.iter().collect();
        while !pending.is_empty() {
            let mut acks = Vec::with_capacity(pending.len());
            for order in pending {
                let mut headers = HeaderMap::new();
                if let Some(uid) = order["order_uid"].as_str() {
                    headers.insert("Nats-Msg-Id", uid);
                }
                let body = serde_json::to_vec(order)?;
                let ack = js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .context("publishing")?;
                acks.push((order, ack));
            }
            let mut again = Vec::new();
            for (order, ack) in acks {
                match ack.await {
                    // A duplicate never reaches order_info: the count would wait forever.
                    Ok(ack) if ack.duplicate => {
                        bail!("the broker dropped an order as a duplicate (seed {seed})")
                    }
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == PublishErrorKind::StreamNotFound
                            && Instant::now() < deadline =>
                    {
                        again.push(order);
                    }
                    Err(e) => return Err(e).context("the broker's ack"),
                }
            }
            if !again.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pending = again;
        }
    }
    client.flush().await.context("flushing")?;
    Ok(())
}

fn pid_file(dir: &Path, replica: u16) -> PathBuf {
    dir.join(format!("replica{replica}.pid"))
}

fn replica_addr(replica: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080 + replica))
}

/// Replicas 1..=n in the background, as `scripts/up-cluster.sh` starts
/// them (its pid files; logs appended to), with `RUST_LOG=warn`. Returns
/// their pids.
fn start_replicas(dir: &Path, service: &Path, n: u16) -> anyhow::Result<Vec<(u16, u32)>> {
    let mut pids = Vec::new();
    for r in 1..=n {
        let log_path = dir.join(format!("replica{r}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| log_path.display().to_string())?;
        let child = Command::new(service)
            .env("NATS_URL", NATS_URLS)
            .env("NATS_STREAM_REPLICAS", "3")
            .env("HTTP_ADDR", replica_addr(r).to_string())
            .env("RUST_LOG", "warn")
            // The bench is one client on one address: no per-client limit.
            .env("RATE_LIMIT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A group of its own: a Ctrl-C here does not stop the replicas
            // that outlive this run (`just down-cluster` does).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", service.display()))?;
        std::fs::write(pid_file(dir, r), format!("{}\n", child.id()))?;
        pids.push((r, child.id()));
    }
    Ok(pids)
}

/// SIGTERM to each replica in a pid file, up to 15 s for it to exit, then
/// the file goes.
async fn stop_replicas(dir: &Path) -> anyhow::Result<()> {
    for r in 1..=REPLICAS {
        let file = pid_file(dir, r);
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Ok(pid) = text.trim().parse::<u32>() {
            // kill(1): the workspace forbids the unsafe code a signal call needs.
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let until = Instant::now() + STOP_TIMEOUT;
            while sent && alive(pid) {
                if Instant::now() > until {
                    bail!("replica{r} (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        std::fs::remove_file(&file)?;
    }
    Ok(())
}

/// Whether `pid` runs: it has a /proc entry and is not a zombie (the
/// replicas this run started and stopped stay zombies until it exits).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Fails with the log's tail if a replica has exited.
fn check_running(dir: &Path, pids: &[(u16, u32)]) -> anyhow::Result<()> {
    for &(r, pid) in pids {
        if !alive(pid) {
            let log = dir.join(format!("replica{r}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            bail!("replica {r} (pid {pid}) exited; the tail of its log:\n{tail}");
        }
    }
    Ok(())
}

/// Until every replica's /readyz answers 200.
async fn wait_ready(dir: &Path, pids: &[(u16, u32)]) -> anyhow::Result<()> {
    let started = Instant::now();
    for &(r, _) in pids {
        while !crate::probe::ready(replica_addr(r)).await {
            check_running(dir, pids)?;
            if started.elapsed() > READY_TIMEOUT {
                bail!("replica {r} not ready after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Lookups per second over replicas 1..=n, wrk on each at once.
async fn lookups(db: &tokio_postgres::Client, dir: &Path, n: u16) -> anyhow::Result<f64> {
    let rows = db
        .query(
            "SELECT order_uid FROM order_info ORDER BY random() LIMIT $1",
            &[&LOOKUP_UIDS],
        )
        .await
        .context("drawing uids")?;
    let uids = dir.join("uids.txt");
    crate::write_uids(&uids, rows.iter().map(|row| row.get::<_, String>(0)))?;
    let runs: Vec<_> = (1..=n)
        .map(|r| {
            let uids = uids.clone();
            // A directory each: load::wrk writes its script there.
            let script_dir = dir.join(format!("wrk{r}"));
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&script_dir)?;
                crate::load::wrk(
                    replica_addr(r),
                    Some(&uids),
                    CONNECTIONS,
                    LOOKUP_RUN,
                    &script_dir,
                )
            })
        })
        .collect();
    let mut total = 0.0;
    for (r, run) in (1..=n).zip(runs) {
        let measured = run.await??;
        if measured.success < 1.0 {
            eprintln!(
                "replica {r}: {:.2}% of lookups were not 2xx",
                (1.0 - measured.success) * 100.0
            );
        }
        total += measured.requests_per_second;
    }
    Ok(total)
}

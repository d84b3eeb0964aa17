//! `bench`: measures the order service against ceilings taken in the same
//! run on the same machine, prints a table and (unless `--smoke`) writes it
//! to docs/benchmarks.md. `bench ceiling ADDR` runs the lookup ceiling.
//!
//! Needs PostgreSQL and NATS (the machine's, as the tests use them), wrk,
//! and oha for the constant-rate rows; `just bench` installs the last two.

mod ceiling;
mod data;
mod load;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use orders_testkit::servers::{ServiceProcess, free_port};
use orders_testkit::{TestDb, TestStream, get};
use report::{Report, Verdict};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Measures order-service against ceilings taken in the same run"
)]
struct Args {
    /// A few seconds with tiny counts: checks the harness, writes nothing.
    #[arg(long)]
    smoke: bool,
    /// Where the table goes (not in smoke mode).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The service binary (build it with --release first).
    #[arg(long, default_value = "target/release/order-service")]
    service: PathBuf,
    /// Run the lookup ceiling server on this address instead.
    #[arg(long, value_name = "ADDR")]
    ceiling: Option<SocketAddr>,
}

/// Counts and durations of one run.
struct Plan {
    lookup_orders: u64,
    ingest_orders: u64,
    per_message_orders: u64,
    warm_orders: u64,
    run: Duration,
    rates: &'static [u32],
}

const FULL: Plan = Plan {
    lookup_orders: 100_000,
    ingest_orders: 100_000,
    per_message_orders: 20_000,
    warm_orders: 1_000_000,
    run: Duration::from_secs(10),
    rates: &[100, 1_000, 10_000],
};

const SMOKE: Plan = Plan {
    lookup_orders: 1_000,
    ingest_orders: 2_000,
    per_message_orders: 200,
    warm_orders: 5_000,
    run: Duration::from_secs(1),
    rates: &[100],
};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(addr) = args.ceiling {
        return runtime.block_on(ceiling::serve(addr));
    }
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = if args.smoke { &SMOKE } else { &FULL };
    if !args.service.exists() {
        bail!(
            "{} is missing: cargo build --release --bin order-service",
            args.service.display()
        );
    }
    let has_oha = which("oha");
    if !which("wrk") {
        bail!("wrk is missing: apt-get install wrk (`just bench` installs it)");
    }
    if !has_oha && !args.smoke {
        bail!("oha is missing: cargo install --locked oha (`just bench` installs it)");
    }
    let scratch = std::env::temp_dir().join(orders_testkit::unique_name("bench"));
    std::fs::create_dir_all(&scratch)?;
    let started = Instant::now();
    let mut report = Report::new(args.smoke);

    lookups(&args, plan, has_oha, &scratch, &mut report).await?;
    ingest(&args, plan, &mut report).await?;
    warm_up(&args, plan, &scratch, &mut report).await?;

    let _ = std::fs::remove_dir_all(&scratch);
    let table = report.render(started.elapsed());
    println!("{table}");
    if !args.smoke {
        report::write(&args.out, &table)?;
        eprintln!("written to {}", args.out.display());
    }
    if report.broken() {
        bail!("a measure could not be taken");
    }
    Ok(())
}

fn which(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}

/// The service on `db` and a stream of its own, with extra variables.
fn service(bin: &Path, db: &TestDb, stream: &TestStream, env: &[(&str, &str)]) -> ServiceProcess {
    let mut svc = ServiceProcess::new(
        bin,
        &[
            ("DATABASE_URL", db.url.clone()),
            ("NATS_URL", stream.url.clone()),
            ("NATS_SUBJECT", stream.subject.clone()),
            ("NATS_STREAM", stream.stream.clone()),
            ("NATS_DURABLE", stream.durable.clone()),
            ("RUST_LOG", "warn".to_owned()),
        ],
    );
    for (key, value) in env {
        svc = svc.with_env(key, value);
    }
    svc
}

/// Starts `svc` and returns the time until `/readyz` answers 200.
async fn start_ready(svc: &mut ServiceProcess, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    svc.start();
    let addr = svc.addr();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() && get(addr, "/readyz").await.0 == 200
        {
            return Ok(started.elapsed());
        }
        if !svc.is_running() {
            bail!("order-service exited:\n{}", svc.log());
        }
        if started.elapsed() > timeout {
            bail!("order-service not ready after {timeout:?}:\n{}", svc.log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_in(url: &str) -> Option<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*) FROM order_info", &[])
        .await
        .ok()?;
    Some(row.get(0))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn write_uids(path: &Path, uids: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut text = String::new();
    for uid in uids {
        text.push_str(&uid);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// Lookup throughput and latency: the ceiling, cache hits, cold uids.
async fn lookups(
    args: &Args,
    plan: &Plan,
    has_oha: bool,
    scratch: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The ceiling, as its own process.
    let port = free_port();
    let ceiling_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut ceiling = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--ceiling", &ceiling_addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(ceiling_addr).await.is_err() {
        if Instant::now() > until {
            bail!("the ceiling server did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // wrk's Lua request() (a random uid per request) costs wrk itself as
    // much as a request costs a server here, so the ceiling gets the very
    // same script and uids as the service; and both are also measured on
    // one fixed URL without a script, where only the server's cost counts.
    let uids = scratch.join("uids.txt");
    write_uids(&uids, (0..plan.lookup_orders).map(data::seeded_uid))?;
    let ceiling_wrk = load::wrk(ceiling_addr, Some(&uids), 32, plan.run, scratch)?;
    let ceiling_fixed = load::wrk(ceiling_addr, None, 32, plan.run, scratch)?;
    let top_rate = *plan.rates.last().unwrap_or(&100);
    let ceiling_oha = if has_oha {
        Some(load::oha(
            &format!("http://{ceiling_addr}/order"),
            top_rate,
            plan.run,
        )?)
    } else {
        None
    };
    ceiling.kill().await?;

    // The service with `lookup_orders` cached.
    let db = data::migrated_db().await?;
    data::seed(&db, plan.lookup_orders).await?;
    let stream = TestStream::new();
    let mut svc = service(&args.service, &db, &stream, &[]);
    start_ready(&mut svc, Duration::from_secs(120)).await?;
    let hits = load::wrk(svc.addr(), Some(&uids), 32, plan.run, scratch)?;
    let fixed_path = format!("/order?order_uid={}", data::seeded_uid(0));
    let fixed = load::wrk_path(svc.addr(), &fixed_path, 32, plan.run)?;
    report.speed(
        "lookup throughput, cache hit",
        &format!(
            "wrk -t1 -c32 -d{}s, uids drawn from {} stored orders",
            plan.run.as_secs(),
            plan.lookup_orders
        ),
        hits,
        ceiling_wrk,
        Verdict::at_least_ratio(
            hits.requests_per_second,
            ceiling_wrk.requests_per_second,
            0.9,
        ),
        ">= 0.9x ceiling",
    );
    report.ceiling(
        "lookup ceiling (bare hyper, fixed bytes)",
        "the same wrk script and uids",
        ceiling_wrk,
    );
    report.speed(
        "lookup, one uid, no script",
        "wrk -t1 -c32 on one fixed /order URL: the server's cost alone",
        fixed,
        ceiling_fixed,
        Verdict::Info,
        "",
    );
    report.ceiling(
        "lookup ceiling, no script",
        "wrk -t1 -c32 on one URL",
        ceiling_fixed,
    );

    let digits = plan.lookup_orders.to_string().len() - 1;
    let regex = format!(
        "http://{}/order\\?order_uid=b0{{{}}}[0-9]{{{digits}}}",
        svc.addr(),
        10 - digits
    );
    if has_oha {
        for rate in plan.rates {
            let m = load::oha(&regex, *rate, plan.run)?;
            let verdict = if *rate == top_rate {
                match ceiling_oha {
                    Some(c) => Verdict::all_of(&[
                        Verdict::at_least(m.success, 1.0),
                        Verdict::at_most_ratio(m.p99.as_secs_f64(), c.p99.as_secs_f64(), 1.2),
                    ]),
                    None => Verdict::Info,
                }
            } else {
                Verdict::at_least(m.success, 1.0)
            };
            report.rate(
                *rate,
                m,
                if *rate == top_rate { ceiling_oha } else { None },
                verdict,
            );
        }
        if let Some(c) = ceiling_oha {
            report.ceiling_rate(top_rate, c);
        }
    } else {
        report.skipped("lookup at constant rates", "oha is not installed (smoke)");
    }
    svc.terminate(Duration::from_secs(10));

    // Cold uids: a cache of one, so every lookup reads through.
    let stream = TestStream::new();
    let mut svc = service(&args.service, &db, &stream, &[("CACHE_CAPACITY", "1")]);
    start_ready(&mut svc, Duration::from_secs(120)).await?;
    let cold = load::wrk(svc.addr(), Some(&uids), 32, plan.run, scratch)?;
    report.speed(
        "lookup, cold uid (read-through)",
        "wrk -t1 -c32, CACHE_CAPACITY=1 so every uid is read from PostgreSQL",
        cold,
        ceiling_wrk,
        Verdict::at_least(cold.requests_per_second, 5_000.0),
        ">= 5,000 req/s",
    );
    svc.terminate(Duration::from_secs(10));
    Ok(())
}

/// Ingest end to end against the ingest ceiling, batched and per message,
/// and its growth over the run.
async fn ingest(args: &Args, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let orders = data::generate(0x00be_4c11, plan.ingest_orders);

    let ceiling_db = data::migrated_db().await?;
    let ceiling = data::copy_in(&ceiling_db, &orders).await?;
    drop(ceiling_db);

    let (rate, first, last) = ingest_run(args, &orders, &[]).await?;
    report.ingest(
        &format!(
            "ingest, end to end ({} orders in the stream, INGEST_BATCH_SIZE=500)",
            plan.ingest_orders
        ),
        rate,
        ceiling,
        Verdict::all_of(&[
            Verdict::at_least(rate, 10_000.0),
            Verdict::at_least_ratio(rate, ceiling, 0.5),
        ]),
    );
    report.ingest_ceiling(plan.ingest_orders, ceiling);
    report.growth(
        "ingest rate, first vs last 10% of the run",
        first,
        last,
        "orders/s",
    );

    let few = &orders[..plan.per_message_orders as usize];
    let (single, _, _) = ingest_run(args, few, &[("INGEST_BATCH_SIZE", "1")]).await?;
    let (batched, _, _) = ingest_run(args, few, &[]).await?;
    report.batching(plan.per_message_orders, single, batched);
    Ok(())
}

/// Publishes `orders`, then starts the service and times until every one
/// is committed. Returns orders/s overall, over the first 10% and over the
/// last 10%.
async fn ingest_run(
    args: &Args,
    orders: &[serde_json::Value],
    env: &[(&str, &str)],
) -> anyhow::Result<(f64, f64, f64)> {
    let (stream, _js) = data::stream_with(orders).await?;
    let db = TestDb::not_yet_created();
    let mut svc = service(&args.service, &db, &stream, env);
    // The clock starts with the process: start-up (create the database,
    // migrate, open the consumer) is part of the time, as a user sees it.
    let total = orders.len() as i64;
    let tenth = (total / 10).max(1);
    let started = Instant::now();
    svc.start();
    let (mut first_from, mut first_at, mut last_from) = (None, None, None);
    loop {
        // The service creates the database; until then nothing is stored.
        let stored = stored_in(&db.url).await.unwrap_or(0);
        let now = started.elapsed();
        if first_from.is_none() && stored > 0 {
            first_from = Some(now);
        }
        if first_at.is_none() && stored >= tenth {
            first_at = Some(now);
        }
        if last_from.is_none() && stored >= total - tenth {
            last_from = Some(now);
        }
        if stored >= total {
            break;
        }
        if !svc.is_running() {
            bail!("order-service exited:\n{}", svc.log());
        }
        if now > Duration::from_secs(300) {
            bail!("only {stored} of {total} orders stored after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = started.elapsed();
    svc.terminate(Duration::from_secs(10));
    let per_second = |n: i64, d: Duration| n as f64 / d.as_secs_f64().max(1e-3);
    let first = per_second(
        tenth,
        first_at
            .unwrap_or(all)
            .saturating_sub(first_from.unwrap_or_default()),
    );
    let last = per_second(tenth, all.saturating_sub(last_from.unwrap_or_default()));
    Ok((per_second(total, all), first, last))
}

/// Warm-up time and memory with `warm_orders` in PostgreSQL, and lookup
/// latency with 1k vs all of them cached.
async fn warm_up(
    args: &Args,
    plan: &Plan,
    scratch: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Empty: the baseline RSS.
    let empty = data::migrated_db().await?;
    let stream = TestStream::new();
    let mut svc = service(&args.service, &empty, &stream, &[]);
    start_ready(&mut svc, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let empty_rss = rss_kib(svc.pid().context("pid")?)?;
    svc.terminate(Duration::from_secs(10));
    drop(empty);

    let db = data::migrated_db().await?;
    data::seed(&db, plan.warm_orders).await?;
    let mut svc = service(&args.service, &db, &stream, &[]);
    let ready = start_ready(&mut svc, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full_rss = rss_kib(svc.pid().context("pid")?)?;
    let one = get(
        svc.addr(),
        &format!("/order?order_uid={}", data::seeded_uid(0)),
    )
    .await;
    if one.0 != 200 {
        bail!("a seeded order is not answered: {}", one.0);
    }
    // Every seeded order has the same size as JSON (fixed-width uids).
    let json_bytes = one.1.len() as u64 * plan.warm_orders;
    report.warm_up(plan.warm_orders, ready);
    report.memory(
        plan.warm_orders,
        (full_rss.saturating_sub(empty_rss)) * 1024,
        json_bytes,
    );

    let all_uids = scratch.join("all.txt");
    write_uids(&all_uids, (0..plan.warm_orders).map(data::seeded_uid))?;
    let digits = plan.warm_orders.to_string().len() - 1;
    let all_prefix = "0".repeat(10 - digits);
    let many = lookup_p99(&svc, &all_prefix, &all_uids, plan, scratch)?;
    svc.terminate(Duration::from_secs(10));

    // The newest 1,000 only. quick_cache keeps a little less than its
    // capacity (970 of 1,000 here), so it gets room for 1,100: otherwise
    // some of the 1,000 would be read through and the p99 would measure
    // PostgreSQL.
    let mut svc = service(&args.service, &db, &stream, &[("CACHE_CAPACITY", "1100")]);
    start_ready(&mut svc, Duration::from_secs(300)).await?;
    let newest = scratch.join("newest.txt");
    write_uids(
        &newest,
        (plan.warm_orders - 1_000..plan.warm_orders).map(data::seeded_uid),
    )?;
    // The newest 1,000: uids (N - 1000)..N, i.e. the prefix of N - 1000
    // without its last three digits (N is a power of ten).
    let newest_prefix = data::seeded_uid(plan.warm_orders - 1_000)[1..8].to_owned();
    let few = lookup_p99(&svc, &newest_prefix, &newest, plan, scratch)?;
    svc.terminate(Duration::from_secs(10));
    report.growth(
        &format!(
            "lookup p99, 1k vs {} cached (oha -q 1000)",
            plan.warm_orders
        ),
        few.as_secs_f64() * 1e3,
        many.as_secs_f64() * 1e3,
        "ms",
    );
    Ok(())
}

/// Lookup p99 at a constant 1,000 requests/s (oha, on uids `b` + 10
/// digits starting with `prefix`), which is steadier than a closed loop's;
/// wrk's p99 where oha is missing (smoke).
fn lookup_p99(
    svc: &ServiceProcess,
    prefix: &str,
    uids: &Path,
    plan: &Plan,
    scratch: &Path,
) -> anyhow::Result<Duration> {
    if which("oha") {
        let free = 10 - prefix.len();
        let regex = format!(
            "http://{}/order\\?order_uid=b{prefix}[0-9]{{{free}}}",
            svc.addr()
        );
        // A short run first: the first requests of a fresh process pay for
        // connection set-up and cold caches, which is not what is compared.
        load::oha(&regex, 1_000, Duration::from_secs(2))?;
        return Ok(load::oha(&regex, 1_000, plan.run)?.p99);
    }
    Ok(load::wrk(svc.addr(), Some(uids), 32, plan.run, scratch)?.p99)
}

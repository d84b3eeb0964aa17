//! Cheap looks at a running service and at the machine: one counter from
//! `/metrics`, and CPU time per process name from /proc. Cheap matters:
//! on two cores, whatever the harness spends while it watches is taken
//! from the service or PostgreSQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET /metrics` and the value of the sample named exactly `name` (no
/// labels); `None` while the server does not answer.
pub async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = tokio::time::timeout(Duration::from_secs(2), fetch(addr, "/metrics"))
        .await
        .ok()??;
    parse_metric(&text, name)
}

/// Whether `GET /readyz` answers 200 now; false while the server does not answer.
pub async fn ready(addr: SocketAddr) -> bool {
    let answer = tokio::time::timeout(Duration::from_secs(2), fetch(addr, "/readyz")).await;
    matches!(answer, Ok(Some(text)) if text.split_whitespace().nth(1) == Some("200"))
}

async fn fetch(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    String::from_utf8(raw).ok()
}

fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// CPU seconds (user + system) spent so far by the processes of interest,
/// by name, and by the whole machine (busy and total).
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    by_name: HashMap<String, f64>,
    machine_busy: f64,
    machine_total: f64,
}

/// Process names whose CPU time the ingest rows report (`orders-bench` is
/// this harness: the client of the COPY and INSERT-alone rows, the poller
/// of the end-to-end ones).
const WATCHED: &[&str] = &["order-service", "postgres", "nats-server", "orders-bench"];

/// Clock ticks per second of /proc's counters (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS: f64 = 100.0;

impl Cpu {
    /// A snapshot. Processes that exit between two snapshots take their
    /// time with them, so the service's pooled connections (long-lived
    /// backends) are counted, short-lived ones may not be.
    pub fn now() -> Self {
        let mut by_name = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
                    continue;
                };
                if let Some((comm, seconds)) = parse_stat(&stat)
                    && WATCHED.contains(&comm)
                {
                    *by_name.entry(comm.to_owned()).or_insert(0.0) += seconds;
                }
            }
        }
        let (machine_busy, machine_total) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_machine(&s))
            .unwrap_or_default();
        Self {
            by_name,
            machine_busy,
            machine_total,
        }
    }

    /// What was spent between `earlier` and this snapshot, as text:
    /// `order-service 3.1 s, postgres 7.9 s, ...; machine 96% busy`.
    pub fn since(&self, earlier: &Self) -> String {
        let mut parts: Vec<String> = WATCHED
            .iter()
            .map(|name| {
                let now = self.by_name.get(*name).copied().unwrap_or(0.0);
                let then = earlier.by_name.get(*name).copied().unwrap_or(0.0);
                format!("{name} {:.1} s", (now - then).max(0.0))
            })
            .collect();
        let total = self.machine_total - earlier.machine_total;
        if total > 0.0 {
            let busy = (self.machine_busy - earlier.machine_busy) / total;
            parts.push(format!("all cores {:.0}% busy", busy * 100.0));
        }
        parts.join(", ")
    }
}

/// PostgreSQL's own counters, read at each tenth of an ingest run: what
/// explains a rate that falls as the tables grow (issue 15). Cumulative
/// counters are server-wide (bgwriter, WAL) or this database's; sizes are
/// this database's tables and indexes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgStats {
    values: [f64; PG_STATS.len()],
}

/// Each statistic: its name in the report, whether it is a cumulative
/// counter (reported as the change over a tenth) or a level (reported as
/// it stands at the end of the tenth), and the SQL that reads it.
const PG_STATS: [(&str, bool, &str); 10] = [
    ("WAL MB", true, "(SELECT wal_bytes / 1e6 FROM pg_stat_wal)"),
    (
        "full-page images",
        true,
        "(SELECT wal_fpi FROM pg_stat_wal)",
    ),
    (
        "checkpoints",
        true,
        "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)",
    ),
    (
        "buffers written by the checkpointer",
        true,
        "(SELECT buffers_checkpoint FROM pg_stat_bgwriter)",
    ),
    (
        "buffers written by the background writer",
        true,
        "(SELECT buffers_clean FROM pg_stat_bgwriter)",
    ),
    (
        "buffers written by backends to free one",
        true,
        "(SELECT buffers_backend FROM pg_stat_bgwriter)",
    ),
    (
        "blocks read from outside shared_buffers",
        true,
        "(SELECT blks_read FROM pg_stat_database WHERE datname = current_database())",
    ),
    (
        "autovacuum and autoanalyze runs",
        true,
        "(SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_user_tables)",
    ),
    (
        "tables MB",
        false,
        "(SELECT coalesce(sum(pg_table_size(relid)), 0) / 1e6 FROM pg_stat_user_tables)",
    ),
    (
        "indexes MB",
        false,
        "(SELECT coalesce(sum(pg_indexes_size(relid)), 0) / 1e6 FROM pg_stat_user_tables)",
    ),
];

impl PgStats {
    /// A snapshot over `client` (a connection to the measured database).
    /// An error (a server without `pg_stat_wal`, before PostgreSQL 14,
    /// say) ends the measure: `just bench-smoke` then fails in CI.
    pub async fn now(client: &tokio_postgres::Client) -> anyhow::Result<Self> {
        let columns: Vec<String> = PG_STATS
            .iter()
            .map(|(_, _, sql)| format!("{sql}::float8"))
            .collect();
        let row = client
            .query_one(&format!("SELECT {}", columns.join(", ")), &[])
            .await
            .context("reading PostgreSQL's statistics")?;
        let mut values = [0.0; PG_STATS.len()];
        for (k, value) in values.iter_mut().enumerate() {
            *value = row
                .try_get::<_, Option<f64>>(k)?
                .with_context(|| format!("no value for {}", PG_STATS[k].0))?;
        }
        Ok(Self { values })
    }

    /// One line per statistic over successive snapshots: `name: a, b, ...`,
    /// the change over each interval for counters, the level at its end
    /// for sizes.
    pub fn by_interval(snapshots: &[Self]) -> Vec<(&'static str, String)> {
        PG_STATS
            .iter()
            .enumerate()
            .map(|(k, (name, counter, _))| {
                let values: Vec<String> = snapshots
                    .windows(2)
                    .map(|w| {
                        let v = if *counter {
                            w[1].values[k] - w[0].values[k]
                        } else {
                            w[1].values[k]
                        };
                        format!("{v:.0}")
                    })
                    .collect();
                (*name, values.join(", "))
            })
            .collect()
    }
}

/// `(comm, utime + stime in seconds)` from a /proc/PID/stat line.
/// The CPU seconds (user and system, all threads) process `pid` has
/// spent so far; `None` once it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, seconds)| seconds)
}

fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS))
}

/// `(busy, total)` seconds of all cores from /proc/stat's `cpu` line.
fn parse_machine(stat: &str) -> Option<(f64, f64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user)
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(((total - idle) / TICKS, total / TICKS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_exact_name() {
        let text = "HTTP/1.1 200 OK\r\n\r\n# TYPE orders_messages_stored counter\n\
                    orders_messages_stored_total 1234\norders_messages_stored_total_x 9\n";
        assert_eq!(
            parse_metric(text, "orders_messages_stored_total"),
            Some(1234.0)
        );
        assert_eq!(parse_metric(text, "orders_missing_total"), None);
    }

    #[test]
    fn proc_stat_lines_are_read() {
        let stat = "42 (order-service) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(stat), Some(("order-service", 3.0)));
        let machine = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_machine(machine), Some((2.0, 10.0)));
    }

    #[test]
    fn postgres_counters_are_reported_as_changes_and_sizes_as_levels() {
        let at = |wal: f64, tables: f64| {
            let mut stats = PgStats::default();
            stats.values[0] = wal;
            stats.values[8] = tables;
            stats
        };
        let lines = PgStats::by_interval(&[at(100.0, 5.0), at(130.0, 7.0), at(190.0, 9.0)]);
        assert_eq!(lines[0], ("WAL MB", "30, 60".to_owned()));
        assert_eq!(lines[8], ("tables MB", "7, 9".to_owned()));
        assert_eq!(lines.len(), PG_STATS.len());
    }
}

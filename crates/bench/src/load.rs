//! The load generators: wrk (closed loop, most requests per second) and
//! oha (a constant rate, latency percentiles), run as processes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub requests_per_second: f64,
    /// The 99th percentile of latency.
    pub p99: Duration,
    /// Share of answers that were 2xx, 0 to 1.
    pub success: f64,
    /// The command line that took the measure (for the docs).
    pub command: String,
}

/// A command line as a shell would take it back.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{a}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// wrk with one thread and `connections` connections for `duration`,
/// requesting `GET /order?order_uid=<uid>` with uids drawn at random from
/// `uids` (a file, one per line), or `/` when there is none.
pub fn wrk(
    addr: SocketAddr,
    uids: Option<&Path>,
    connections: u32,
    duration: Duration,
    script_dir: &Path,
) -> anyhow::Result<Measured> {
    let draw = uids.map(|uids| ("/order?order_uid=", uids));
    wrk_drawn(addr, draw, connections, duration, script_dir)
}

/// [`wrk`] requesting `GET <prefix><value>`, with values drawn at random
/// from a file (one per line), for `draw = (prefix, file)`.
pub fn wrk_drawn(
    addr: SocketAddr,
    draw: Option<(&str, &Path)>,
    connections: u32,
    duration: Duration,
    script_dir: &Path,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs().max(1)),
        "--latency",
    ]);
    if let Some((prefix, values)) = draw {
        let script = script_dir.join("lookup.lua");
        std::fs::write(
            &script,
            format!(
                "local values = {{}}\n\
                 for line in io.lines(\"{}\") do values[#values + 1] = line end\n\
                 request = function()\n\
                 \x20 return wrk.format(\"GET\", \"{prefix}\" .. values[math.random(#values)])\n\
                 end\n\
                 done = function(summary, latency, requests)\n\
                 \x20 io.write(string.format(\"non-2xx: %d\\n\", summary.errors.status))\n\
                 end\n",
                values.display()
            ),
        )?;
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}/"));
    let out = cmd
        .output()
        .context("running wrk (apt-get install wrk; `just bench` does)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Measured {
        command: command_line(&cmd),
        ..parse_wrk(&text)?
    })
}

/// wrk on one fixed path, without a script.
pub fn wrk_path(
    addr: SocketAddr,
    path: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs().max(1)),
        "--latency",
        &format!("http://{addr}{path}"),
    ]);
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}");
    }
    Ok(Measured {
        command: command_line(&cmd),
        ..parse_wrk(&text)?
    })
}

fn parse_wrk(text: &str) -> anyhow::Result<Measured> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("wrk printed no Requests/sec")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| wrk_duration(v.trim()))
        .context("wrk printed no 99% latency")?;
    let requests = text
        .lines()
        .find_map(|l| {
            l.split_once(" requests in ")
                .map(|(n, _)| n.trim().to_owned())
        })
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    let non_2xx = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("non-2xx:")
                .or_else(|| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let success = if requests > 0.0 {
        1.0 - non_2xx / requests
    } else {
        0.0
    };
    Ok(Measured {
        requests_per_second: rps,
        p99,
        success,
        command: String::new(),
    })
}

/// `1.23ms`, `850.00us`, `1.02s`, `2.00m` as wrk prints them.
fn wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// oha at `rate` requests per second for `duration`, on URLs that match
/// `url_regex` (oha draws each request's URL from it).
pub fn oha(url_regex: &str, rate: u32, duration: Duration) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("oha");
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "-z",
        &format!("{}s", duration.as_secs().max(1)),
        "-q",
        &rate.to_string(),
        "-c",
        "64",
        "--rand-regex-url",
        url_regex,
    ]);
    let out = cmd
        .output()
        .context("running oha (cargo install --locked oha; `just bench` does)")?;
    if !out.status.success() {
        bail!(
            "oha failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Measured {
        command: command_line(&cmd),
        ..parse_oha(&out.stdout)?
    })
}

fn parse_oha(json: &[u8]) -> anyhow::Result<Measured> {
    let report: serde_json::Value = serde_json::from_slice(json).context("oha's JSON")?;
    let rps = report["summary"]["requestsPerSec"]
        .as_f64()
        .context("oha: summary.requestsPerSec")?;
    let p99 = report["latencyPercentiles"]["p99"]
        .as_f64()
        .context("oha: latencyPercentiles.p99")?;
    let codes = report["statusCodeDistribution"]
        .as_object()
        .context("oha: statusCodeDistribution")?;
    let total: f64 = codes.values().filter_map(serde_json::Value::as_f64).sum();
    let ok: f64 = codes
        .iter()
        .filter(|(code, _)| code.starts_with('2'))
        .filter_map(|(_, n)| n.as_f64())
        .sum();
    // Requests that got no answer (timeouts, refused) count as failures;
    // those oha itself cut off when the run's time was up do not.
    let errors: f64 = report["errorDistribution"]
        .as_object()
        .map(|e| {
            e.iter()
                .filter(|(kind, _)| !kind.contains("deadline"))
                .filter_map(|(_, n)| n.as_f64())
                .sum()
        })
        .unwrap_or(0.0);
    Ok(Measured {
        requests_per_second: rps,
        p99: Duration::from_secs_f64(p99),
        success: if total + errors > 0.0 {
            ok / (total + errors)
        } else {
            0.0
        },
        command: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n\
            \x20 Latency Distribution\n     50%  180.00us\n     99%    1.23ms\n\
            \x20 1000 requests in 10.00s, 1.00MB read\nRequests/sec:  100000.50\nnon-2xx: 10\n";
        let m = parse_wrk(text).expect("parsed");
        assert_eq!(m.requests_per_second, 100_000.5);
        assert_eq!(m.p99, Duration::from_micros(1230));
        assert!((m.success - 0.99).abs() < 1e-9);
        assert_eq!(wrk_duration("850.00us"), Some(Duration::from_micros(850)));
        assert_eq!(wrk_duration("1.02s"), Some(Duration::from_millis(1020)));
    }

    #[test]
    fn oha_json_is_read() {
        let json = br#"{"summary":{"requestsPerSec":999.5},
            "latencyPercentiles":{"p99":0.002},
            "statusCodeDistribution":{"200":98,"404":2},
            "errorDistribution":{"aborted due to deadline":3}}"#;
        let m = parse_oha(json).expect("parsed");
        assert_eq!(m.requests_per_second, 999.5);
        assert_eq!(m.p99, Duration::from_millis(2));
        assert!((m.success - 0.98).abs() < 1e-9);
    }
}

//! The table `bench` prints and writes, with the machine and the versions.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::load::Measured;

/// Whether a row meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target: a figure for reference.
    Info,
}

impl Verdict {
    pub fn at_least(value: f64, target: f64) -> Self {
        if value >= target {
            Self::Met
        } else {
            Self::Missed
        }
    }

    pub fn at_least_ratio(value: f64, ceiling: f64, ratio: f64) -> Self {
        Self::at_least(value, ceiling * ratio)
    }

    pub fn at_most_ratio(value: f64, ceiling: f64, ratio: f64) -> Self {
        if value <= ceiling * ratio {
            Self::Met
        } else {
            Self::Missed
        }
    }

    pub fn all_of(verdicts: &[Self]) -> Self {
        if verdicts.contains(&Self::Missed) {
            Self::Missed
        } else {
            Self::Met
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::Info => "",
        }
    }
}

struct Row {
    measure: String,
    how: String,
    result: String,
    ratio: String,
    target: String,
    verdict: Verdict,
}

pub struct Report {
    rows: Vec<Row>,
    /// (measure, the command or setup that reproduces it).
    commands: Vec<(String, String)>,
    smoke: bool,
    broken: bool,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `12,345`: a whole number with thousands separators.
pub fn count(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn new(smoke: bool) -> Self {
        Self {
            rows: Vec::new(),
            commands: Vec::new(),
            smoke,
            broken: false,
        }
    }

    fn push(
        &mut self,
        measure: &str,
        how: &str,
        result: String,
        ratio: String,
        target: &str,
        verdict: Verdict,
    ) {
        if result.contains("NaN") || result.is_empty() {
            self.broken = true;
        }
        self.rows.push(Row {
            measure: measure.to_owned(),
            how: how.to_owned(),
            result,
            ratio,
            target: target.to_owned(),
            verdict,
        });
    }

    pub fn speed(
        &mut self,
        measure: &str,
        how: &str,
        m: &Measured,
        ceiling: &Measured,
        verdict: Verdict,
        target: &str,
    ) {
        self.command(measure, &m.command);
        self.push(
            measure,
            how,
            format!(
                "{} req/s, p99 {}, {:.2}% 2xx",
                count(m.requests_per_second),
                ms(m.p99),
                m.success * 100.0
            ),
            format!(
                "{:.2}x ceiling",
                m.requests_per_second / ceiling.requests_per_second
            ),
            target,
            verdict,
        );
        if m.success < 1.0 && measure.contains("hit") {
            self.broken = true;
        }
    }

    pub fn ceiling(&mut self, measure: &str, how: &str, m: &Measured) {
        self.command(measure, &m.command);
        self.push(
            measure,
            how,
            format!("{} req/s, p99 {}", count(m.requests_per_second), ms(m.p99)),
            "1.00x".to_owned(),
            "",
            Verdict::Info,
        );
    }

    pub fn rate(&mut self, rate: u32, m: &Measured, ceiling: Option<&Measured>, verdict: Verdict) {
        let ratio = ceiling
            .map(|c| {
                format!(
                    "p99 {:.2}x ceiling's",
                    m.p99.as_secs_f64() / c.p99.as_secs_f64()
                )
            })
            .unwrap_or_default();
        let target = if ceiling.is_some() {
            "100% 2xx; p99 <= 1.2x ceiling's"
        } else {
            "100% 2xx"
        };
        let measure = format!("lookup at {} req/s", count(f64::from(rate)));
        self.command(&measure, &m.command);
        self.push(
            &measure,
            &format!("oha -q {rate} -c 64, random seeded uids (cache hits)"),
            format!(
                "{:.2}% 2xx, p99 {}, {} req/s",
                m.success * 100.0,
                ms(m.p99),
                count(m.requests_per_second)
            ),
            ratio,
            target,
            verdict,
        );
    }

    pub fn ceiling_rate(&mut self, rate: u32, m: &Measured) {
        let measure = format!("lookup ceiling at {} req/s", count(f64::from(rate)));
        self.command(&measure, &m.command);
        self.push(
            &measure,
            &format!("oha -q {rate} -c 64, the same random URLs"),
            format!("{:.2}% 2xx, p99 {}", m.success * 100.0, ms(m.p99)),
            "1.00x".to_owned(),
            "",
            Verdict::Info,
        );
    }

    /// Records how to reproduce `measure` (a command line or a setup).
    pub fn command(&mut self, measure: &str, command: &str) {
        if !command.is_empty() {
            self.commands
                .push((measure.to_owned(), placeholders(command)));
        }
    }

    /// A figure without a target (evidence for the analysis).
    pub fn info(&mut self, measure: &str, how: &str, result: String) {
        self.push(measure, how, result, String::new(), "", Verdict::Info);
    }

    pub fn skipped(&mut self, measure: &str, why: &str) {
        self.push(
            measure,
            why,
            "skipped".to_owned(),
            String::new(),
            "",
            Verdict::Info,
        );
    }

    pub fn ingest(&mut self, measure: &str, rate: f64, ceiling: f64, verdict: Verdict) {
        self.push(
            measure,
            "start the service on a stream already holding the orders; time until every one is committed",
            format!("{} orders/s", count(rate)),
            // Three decimals: a rounded 0.50x next to "missed" would puzzle.
            format!("{:.3}x ceiling", rate / ceiling),
            ">= 0.8x ceiling",
            verdict,
        );
    }

    pub fn ingest_ceiling(
        &mut self,
        measure: &str,
        orders: u64,
        connections: usize,
        rate: f64,
        ceiling: f64,
        cpu: &str,
    ) {
        self.push(
            measure,
            &format!(
                "COPY of the same {} orders into the four tables, {} transaction(s) at once",
                count(orders as f64),
                connections
            ),
            format!("{} orders/s; CPU: {cpu}", count(rate)),
            format!("{:.2}x", rate / ceiling),
            "",
            Verdict::Info,
        );
    }

    pub fn batching(&mut self, orders: u64, single: f64, batched: f64) {
        self.push(
            "ingest, per message vs batched",
            &format!(
                "{} orders, INGEST_BATCH_SIZE=1 vs 500",
                count(orders as f64)
            ),
            format!("{} vs {} orders/s", count(single), count(batched)),
            format!("batching {:.1}x", batched / single),
            "",
            Verdict::Info,
        );
    }

    /// `within`: the largest change that counts as flat (0.2: 20%).
    pub fn growth(&mut self, measure: &str, first: f64, last: f64, unit: &str, within: f64) {
        let change = (last - first) / first;
        self.push(
            measure,
            "same run",
            format!("{first:.2} vs {last:.2} {unit}"),
            format!("{:+.0}%", change * 100.0),
            &format!("flat within {:.0}%", within * 100.0),
            Verdict::at_most_ratio(change.abs(), 1.0, within),
        );
    }

    /// Ready (the newest 10,000 in memory, the database and the broker
    /// answering) and the whole cache loaded in the background.
    pub fn warm_up(&mut self, orders: u64, ready: Duration, whole: Duration) {
        self.push(
            "warm-up, ready",
            &format!(
                "{} orders in PostgreSQL; start to /readyz 200 (the newest 10,000 in memory)",
                count(orders as f64)
            ),
            format!("{:.2} s", ready.as_secs_f64()),
            String::new(),
            "<= 1 s",
            Verdict::at_most_ratio(ready.as_secs_f64(), 1.0, 1.0),
        );
        self.push(
            "warm-up, whole cache",
            "same start; until orders_cache_entries holds 95% of the orders \
             (or, having grown, stops growing for 3 s, minus those 3 s)",
            format!("{:.2} s", whole.as_secs_f64()),
            String::new(),
            "<= 5 s",
            Verdict::at_most_ratio(whole.as_secs_f64(), 5.0, 1.0),
        );
    }

    pub fn memory(&mut self, orders: u64, grown: u64, json: u64) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.push(
            "memory",
            &format!(
                "RSS with {} orders cached minus RSS empty",
                count(orders as f64)
            ),
            format!("{:.0} MiB for {:.0} MiB of JSON", mib(grown), mib(json)),
            format!("{:.2}x the JSON", grown as f64 / json as f64),
            "<= 2x the JSON bytes",
            Verdict::at_most_ratio(grown as f64, json as f64, 2.0),
        );
    }

    pub fn broken(&self) -> bool {
        self.broken
    }

    pub fn render(&self, took: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| measure | how | result | ratio | target | |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.measure,
                r.how,
                r.result,
                r.ratio,
                r.target,
                r.verdict.label()
            );
        }
        let _ = writeln!(
            out,
            "\n{} in {:.0} s{}.",
            if self.smoke { "Smoke run" } else { "Run" },
            took.as_secs_f64(),
            if self.smoke {
                " (tiny counts; the figures mean nothing)"
            } else {
                ""
            }
        );
        if !self.commands.is_empty() {
            let _ = writeln!(
                out,
                "\nCommands behind the rows (ADDR is the service's or the ceiling's \
                 address in that run, UIDS the seeded uids one a line, lookup.lua the \
                 script that draws one per request, a uid or for the search a track \
                 number):\n"
            );
            for (measure, command) in &self.commands {
                let _ = writeln!(out, "- {measure}: `{command}`");
            }
        }
        out
    }
}

/// A run's command with its ephemeral parts named: `127.0.0.1:PORT` as
/// `ADDR`, the scratch directory dropped (`lookup.lua` is written there).
fn placeholders(command: &str) -> String {
    let mut out = String::new();
    let mut rest = command;
    while let Some(at) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..at]);
        out.push_str("ADDR");
        rest = rest[at + "127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    let scratch = std::env::temp_dir().join("bench_");
    let scratch = scratch.to_string_lossy();
    while let Some(at) = out.find(scratch.as_ref()) {
        let name_from = at + scratch.len();
        let end = out[name_from..]
            .find('/')
            .map_or(out.len(), |slash| name_from + slash + 1);
        out.replace_range(at..end, "");
    }
    out
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "not found".to_owned())
}

fn machine(postgres: Option<&str>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let version = first_line(
        "psql",
        &[&crate::postgres_url(), "-tAc", "SHOW server_version"],
    );
    let setup = postgres.map_or_else(String::new, |p| format!("; {p}"));
    format!(
        "- machine: {cores} cores ({cpu}), {memory}; 1-minute load average {load} when the \
         run ended (the machine is shared: others build and test on it)\n\
         - rustc: {}\n- PostgreSQL: {version}{setup}\n- nats-server: {}\n- wrk: {}\n- oha: {}\n",
        first_line("rustc", &["--version"]),
        first_line("nats-server", &["--version"]),
        first_line("wrk", &["-v"]),
        first_line("oha", &["--version"]),
    )
}

/// Writes the table into `out` between markers, keeping the prose around it.
pub fn write(out: &Path, table: &str, postgres: Option<&str>) -> anyhow::Result<()> {
    const START: &str = "<!-- bench:start -->";
    const END: &str = "<!-- bench:end -->";
    let generated = format!(
        "{START}\n{}\n{table}\nReproduce: `just bench` (release build; the service against the \
         bench's own PostgreSQL and its own nats-server, each measure in a database and stream of \
         its own). Each row's `how` is the command or setup; the ceilings run in the same process \
         tree right before.\n{END}",
        machine(postgres)
    );
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let updated = match (text.find(START), text.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{generated}{}", &text[..a], &text[b + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{generated}\n"),
    };
    std::fs::write(out, updated)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_name_their_ephemeral_parts() {
        let scratch = std::env::temp_dir().join("bench_1_2_3");
        let command = format!(
            "wrk -t1 -s {}/lookup.lua http://127.0.0.1:4567/ x",
            scratch.display()
        );
        assert_eq!(
            super::placeholders(&command),
            "wrk -t1 -s lookup.lua http://ADDR/ x"
        );
    }
}

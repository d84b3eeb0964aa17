//! The monitoring files of deploy/ read as data: the Prometheus rules
//! (deploy/prometheus/rules), their promtool tests (deploy/prometheus/tests)
//! and the Grafana dashboard (deploy/grafana/dashboards), so tests check
//! every rule and every panel there is, including ones added later.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Debian's promtool (package `prometheus`).
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// The scrape job name the rules expect (`up{job="order-service"}`).
pub const JOB: &str = "order-service";

pub fn path(relative: &str) -> PathBuf {
    Path::new(ROOT).join(relative)
}

/// The files of `dir` (relative to the repository) ending in `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = path(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

/// deploy/prometheus/rules/*.rules.yml.
pub fn rule_files() -> Vec<PathBuf> {
    files("deploy/prometheus/rules", ".rules.yml")
}

/// deploy/prometheus/tests/*.yml: promtool's unit tests.
pub fn rule_test_files() -> Vec<PathBuf> {
    files("deploy/prometheus/tests", ".yml")
}

pub fn yaml(file: &Path) -> Value {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// One rule of a rules file.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The alert's or the recorded series' name.
    pub name: String,
    pub alert: bool,
    pub expr: String,
    /// The whole rule, for the fields a test looks at.
    pub raw: Value,
    pub file: PathBuf,
}

/// Every rule of every rules file.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for file in rule_files() {
        let doc = yaml(&file);
        for group in doc["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let (name, alert) = match (rule["alert"].as_str(), rule["record"].as_str()) {
                    (Some(alert), None) => (alert, true),
                    (None, Some(record)) => (record, false),
                    _ => panic!("{}: a rule that is neither: {rule}", file.display()),
                };
                rules.push(Rule {
                    name: name.to_owned(),
                    alert,
                    expr: rule["expr"].as_str().expect("an expr").to_owned(),
                    raw: rule.clone(),
                    file: file.clone(),
                });
            }
        }
    }
    rules
}

pub fn alerts() -> Vec<Rule> {
    rules().into_iter().filter(|r| r.alert).collect()
}

/// The dashboard (deploy/grafana/dashboards/order-service.json).
pub fn dashboard() -> Value {
    let file = path("deploy/grafana/dashboards/order-service.json");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every panel of the dashboard, those inside collapsed rows included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// Each PromQL query of the dashboard: the panel's title and the `expr`.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// `expr` with the dashboard's variables as Grafana would fill them in for
/// `job` and every instance (`$instance` is matched with `=~`).
pub fn substitute(expr: &str, job: &str) -> String {
    expr.replace("${job}", job)
        .replace("$job", job)
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
}

/// What promtool printed, for a failure message.
pub fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `promtool ARGS...`, or a failure saying how to install it.
pub fn promtool(args: &[&str], files: &[PathBuf]) -> std::process::Child {
    Command::new(PROMTOOL)
        .args(args)
        .args(files)
        .current_dir(ROOT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {PROMTOOL} ({e}): run `just prometheus` \
                 (or install the Debian package prometheus)"
            )
        })
}

/// The anchors GitHub gives the headings of a Markdown file (outside code
/// blocks): lower case, punctuation but `-` and `_` dropped, spaces as `-`.
pub fn heading_anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            !in_code
        })
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

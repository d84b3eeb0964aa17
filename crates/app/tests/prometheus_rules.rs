//! The alert and recording rules of deploy/prometheus as tested code:
//! promtool checks every rules file and runs every unit test in
//! deploy/prometheus/tests, and each alert is held to what an operator
//! needs of it (a `for`, a severity, a runbook that exists, a test that it
//! fires and one that it does not).
//!
//! Needs Debian's `prometheus` package for promtool (`just prometheus`
//! installs it). Without it the tests fail and say so.

mod support;

use std::collections::BTreeSet;

use std::path::PathBuf;

use support::monitoring::{
    alerts, files, heading_anchors, path, printed, promtool, rule_files, rule_test_files, yaml,
};

const OPERATIONS: &str = include_str!("../../../docs/operations.md");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

#[test]
fn every_rules_file_passes_promtool_check() {
    let files = rule_files();

    let out = promtool(&["check", "rules"], &files)
        .wait_with_output()
        .expect("promtool ran");

    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}",
        printed(&out)
    );
}

#[test]
fn the_compose_stacks_prometheus_configs_pass_promtool_check() {
    // The configs name the rules where the stacks mount them; here they are
    // read from deploy/prometheus/rules instead.
    let dir = std::env::temp_dir().join(orders_testkit::unique_name("prometheus-config"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let rules = format!("{}/", path("deploy/prometheus/rules").display());
    let configs: Vec<PathBuf> = files("deploy/prometheus", ".yml")
        .into_iter()
        .map(|config| {
            let text = std::fs::read_to_string(&config).expect("readable");
            let copy = dir.join(config.file_name().expect("a name"));
            std::fs::write(&copy, text.replace("/etc/prometheus/rules/", &rules)).expect("written");
            copy
        })
        .collect();

    let out = promtool(&["check", "config"], &configs)
        .wait_with_output()
        .expect("promtool ran");
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(configs.len(), 2, "{configs:?}");
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}",
        printed(&out)
    );
}

#[test]
fn every_promtool_unit_test_passes() {
    // One promtool a file, all at once: the burn-rate tests evaluate
    // days of samples and take seconds each.
    let running: Vec<_> = rule_test_files()
        .into_iter()
        .map(|file| {
            let child = promtool(&["test", "rules"], std::slice::from_ref(&file));
            (file, child)
        })
        .collect();

    let failed: Vec<String> = running
        .into_iter()
        .filter_map(|(file, child)| {
            let out = child.wait_with_output().expect("promtool ran");
            (!out.status.success()).then(|| format!("{}:\n{}", file.display(), printed(&out)))
        })
        .collect();

    assert!(
        failed.is_empty(),
        "promtool test rules failed:\n{}",
        failed.join("\n")
    );
}

/// The workspace's `repository` (Cargo.toml): runbook links point into
/// its docs/operations.md.
fn repository() -> &'static str {
    WORKSPACE_MANIFEST
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .map(|v| v.trim_matches('"'))
        .expect("Cargo.toml names the repository")
}

#[test]
fn every_alert_waits_has_a_severity_and_a_runbook_in_operations_md() {
    let anchors = heading_anchors(OPERATIONS);
    let runbooks = format!("{}/blob/main/docs/operations.md#", repository());

    for alert in alerts() {
        let name = &alert.name;
        let rule = &alert.raw;
        assert!(
            rule["for"].as_str().is_some(),
            "{name} has no `for:` (say how long, 0m included)"
        );
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{name}: severity {severity:?}, not page or ticket"
        );
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .strip_prefix(&runbooks)
            .unwrap_or_else(|| panic!("{name}: {url} is not under {runbooks}"));
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{name}: its runbook is its name"
        );
        assert!(
            anchors.iter().any(|a| a == anchor),
            "{name}: docs/operations.md has no heading for #{anchor}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{name} has no {annotation}"
            );
        }
    }
}

#[test]
fn the_alert_table_in_operations_md_names_every_alert() {
    let table: String = OPERATIONS
        .split("## What to alert on")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a \"What to alert on\" section")
        .to_owned();

    for alert in alerts() {
        assert!(
            table.contains(&format!("`{}`", alert.name)),
            "the alert table of docs/operations.md does not name {}",
            alert.name
        );
    }
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let mut fires = BTreeSet::new();
    let mut stays_quiet = BTreeSet::new();
    for file in rule_test_files() {
        let doc = yaml(&file);
        for case in doc["tests"].as_array().expect("tests") {
            for check in case["alert_rule_test"].as_array().into_iter().flatten() {
                let name = check["alertname"]
                    .as_str()
                    .expect("an alertname")
                    .to_owned();
                let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected > 0 {
                    fires.insert(name);
                } else {
                    stays_quiet.insert(name);
                }
            }
        }
    }

    let untested: Vec<String> = alerts()
        .iter()
        .flat_map(|alert| {
            let name = &alert.name;
            [
                (!fires.contains(name)).then(|| format!("{name} never expected to fire")),
                (!stays_quiet.contains(name)).then(|| format!("{name} never expected quiet")),
            ]
        })
        .flatten()
        .collect();
    assert!(
        untested.is_empty(),
        "deploy/prometheus/tests lacks: {untested:?}"
    );
    // Every test names an alert that exists.
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    let unknown: Vec<&String> = fires
        .union(&stays_quiet)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

//! The rules and the dashboard against a real Prometheus (Debian's
//! binary) scraping the real app: every query of the dashboard and every
//! recording rule returns data once orders went in and were looked up, every
//! alert parses, and the availability alerts go pending when PostgreSQL
//! stops and when the replica does. The expressions are read from
//! deploy/, so a panel or a rule added later is checked too.
//!
//! Needs Debian's `prometheus` package (`just prometheus` installs it).

mod support;

use std::time::Duration;

use orders_testkit::servers::{PgServer, PrometheusServer};
use orders_testkit::{TestDb, TestStream, eventually, get, order_json};
use serde_json::Value;
use support::monitoring::{self, JOB, dashboard, dashboard_queries, rule_files, rules};
use support::spawn_with;

/// Prometheus scrapes and evaluates every second: the test waits seconds,
/// not the minutes a production interval would take.
fn config(target: std::net::SocketAddr) -> String {
    let rule_files: String = rule_files()
        .iter()
        .map(|f| format!("  - {}\n", f.display()))
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n{rule_files}\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n"
    )
}

/// What `expr` gives now: `Ok(number of series)` or `Err(why not)`.
async fn series(prometheus: &PrometheusServer, expr: &str) -> Result<usize, String> {
    let answer = prometheus.api("query", &[("query", expr)]).await;
    if answer["status"] != "success" {
        return Err(format!("{}: {}", answer["errorType"], answer["error"]));
    }
    Ok(answer["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Every expression that should return data: each dashboard query (its
/// variables filled in), each variable's own query, each recording rule.
fn expressions_with_data() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut all: Vec<(String, String)> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(title, expr)| {
            (
                format!("panel {title:?}"),
                monitoring::substitute(&expr, JOB),
            )
        })
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        // label_values(SELECTOR, LABEL): the series it lists values from.
        let Some(query) = variable["query"].as_str() else {
            continue;
        };
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (selector, label) = args
                .rsplit_once(',')
                .expect("label_values(SELECTOR, LABEL)");
            all.push((
                format!("variable {}", variable["name"]),
                monitoring::substitute(&format!("count by ({}) ({selector})", label.trim()), JOB),
            ));
        }
    }
    all.extend(
        rules()
            .into_iter()
            .filter(|r| !r.alert)
            .map(|r| (format!("recording rule {}", r.name), r.expr)),
    );
    all
}

/// The state of alert `name` for this job and instance: `inactive` when
/// Prometheus lists no such alert.
async fn alert_state(prometheus: &PrometheusServer, name: &str, instance: &str) -> String {
    let answer = prometheus.api("alerts", &[]).await;
    answer["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| {
            a["labels"]["alertname"] == name
                && a["labels"]["job"] == JOB
                && a["labels"]["instance"] == instance
        })
        .and_then(|a| a["state"].as_str())
        .unwrap_or("inactive")
        .to_owned()
}

fn active(state: &str) -> bool {
    matches!(state, "pending" | "firing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_rules_see_the_service_and_the_readiness_alerts_fire() {
    // Setup: the app on a PostgreSQL of the test's own (so it can stop),
    // scraped by a Prometheus loading every rules file.
    let pg = PgServer::start();
    let db = TestDb::not_yet_created_on(&pg.admin_url());
    let app = spawn_with(db, TestStream::new(), |c| c).await;
    let prometheus = PrometheusServer::start(&config(app.addr));
    let instance = app.addr.to_string();

    // Orders, and lookups: found, unknown, malformed.
    let uids: Vec<String> = (0..20).map(|n| format!("prom{n:03}")).collect();
    for (n, uid) in uids.iter().enumerate() {
        app.publish(order_json(uid, n as u64), Some(uid)).await;
    }
    app.wait_stored(uids.len() as i64).await;
    for uid in &uids {
        assert_eq!(
            get(app.addr, &format!("/order?order_uid={uid}")).await.0,
            200
        );
    }
    assert_eq!(get(app.addr, "/order?order_uid=nosuchorder").await.0, 404);
    assert_eq!(get(app.addr, "/order?order_uid=bad!uid").await.0, 400);

    // Every expression parses and returns data (Prometheus needs a few
    // scrapes and evaluations first: poll, and report what still fails).
    let expressions = expressions_with_data();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let failing = loop {
        let mut failing = Vec::new();
        for (what, expr) in &expressions {
            match series(&prometheus, expr).await {
                Ok(0) => failing.push(format!("{what}: no data from {expr}")),
                Ok(_) => {}
                Err(why) => failing.push(format!("{what}: {why} in {expr}")),
            }
        }
        if failing.is_empty() || tokio::time::Instant::now() >= deadline {
            break failing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        failing.is_empty(),
        "after 60 s, {} of {} expressions:\n{}\n{}",
        failing.len(),
        expressions.len(),
        failing.join("\n"),
        prometheus.log_tail(10)
    );
    for alert in rules().into_iter().filter(|r| r.alert) {
        if let Err(why) = series(&prometheus, &alert.expr).await {
            panic!("alert {}: {why} in {}", alert.name, alert.expr);
        }
    }
    // Loaded, evaluated without errors, and quiet while all is well.
    let groups = prometheus.api("rules", &[]).await;
    let unhealthy: Vec<&Value> = groups["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter(|r| r["health"] != "ok")
        .collect();
    assert!(unhealthy.is_empty(), "rules failing: {unhealthy:?}");
    assert_eq!(
        alert_state(&prometheus, "OrdersNotReady", &instance).await,
        "inactive"
    );

    // Exec: PostgreSQL stops.
    pg.stop();

    // Check: the replica reports it, and the alert is on its way.
    let (p, i) = (&prometheus, instance.as_str());
    eventually(
        "orders_dependency_up{dependency=\"database\"} 0 in Prometheus",
        Duration::from_secs(30),
        || async move {
            let expr = format!(
                "orders_dependency_up{{job=\"{JOB}\", instance=\"{i}\", dependency=\"database\"}} == 0"
            );
            series(p, &expr).await == Ok(1)
        },
    )
    .await;
    eventually(
        "OrdersNotReady pending or firing",
        Duration::from_secs(30),
        || async move { active(&alert_state(p, "OrdersNotReady", i).await) },
    )
    .await;

    // Exec: the replica stops. Check: Prometheus cannot scrape it.
    let (_db, _stream, _stopped) = app.stop().await;
    eventually(
        "OrdersTargetDown pending or firing",
        Duration::from_secs(30),
        || async move { active(&alert_state(p, "OrdersTargetDown", i).await) },
    )
    .await;
}

//! A pg_auto_failover formation of this test's own: a monitor and two
//! PostgreSQL nodes, each run by a `pg_autoctl` process that creates its
//! PostgreSQL (`initdb` for the first, `pg_basebackup` from the primary for
//! the second), keeps it running, and does what the monitor decides: the
//! second becomes a synchronous standby, and it is promoted when the
//! primary is lost. The orchestrator's own failure detection and promotion
//! are what the test exercises; the test only kills.
//!
//! The monitor's timings are shortened (a health check every second, a
//! node unhealthy after 3 s, 3 s for a lost primary to drain) so a
//! fail-over takes about 10 s instead of about 50 s.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{ScratchDir, alter_system, free_port, is_root, kill_tree, pg_bin_dir, signal, tail};

/// The monitor's settings for a fast fail-over (milliseconds). The
/// defaults detect a lost primary after 20 s and give it 30 s to drain.
const MONITOR_TIMINGS: &[(&str, &str)] = &[
    ("pgautofailover.health_check_period", "1000"),
    ("pgautofailover.health_check_timeout", "1000"),
    ("pgautofailover.health_check_max_retries", "1"),
    ("pgautofailover.health_check_retry_delay", "500"),
    ("pgautofailover.node_considered_unhealthy_timeout", "3000"),
    ("pgautofailover.primary_demote_timeout", "3000"),
    ("pgautofailover.startup_grace_period", "1000"),
];

/// The states in which a node takes writes.
const PRIMARY_STATES: &[&str] = &["single", "wait_primary", "primary"];

/// A monitor and two nodes; the first starts as the primary.
#[derive(Debug)]
pub struct AutoFailover {
    monitor: Autoctl,
    nodes: Vec<Autoctl>,
    bin: PathBuf,
    as_postgres: bool,
    dir: ScratchDir,
}

/// One `pg_autoctl` process and the PostgreSQL it runs.
#[derive(Debug)]
struct Autoctl {
    name: String,
    port: u16,
    pgdata: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    killed: AtomicBool,
}

impl AutoFailover {
    /// Starts the monitor, then node 1 (it becomes the primary), then node 2
    /// (a copy of node 1 that becomes its synchronous standby), and waits
    /// until the monitor reports them `primary` and `secondary`.
    pub async fn start() -> Self {
        let bin = pg_bin_dir();
        let major = pg_major(&bin);
        let install = format!(
            "install the Debian package postgresql-{major}-auto-failover \
             (`just test` does on a fresh machine)"
        );
        let version = Command::new("pg_autoctl").arg("--version").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "pg_autoctl not found: {install}"
        );
        let share = Command::new(bin.join("pg_config"))
            .arg("--sharedir")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        assert!(
            std::path::Path::new(&share)
                .join("extension/pgautofailover.control")
                .exists(),
            "the pgautofailover extension for PostgreSQL {major} is missing: {install}"
        );
        let dir = ScratchDir::new("orders-pgaf");
        let as_postgres = is_root();
        for sub in ["config", "share", "run"] {
            std::fs::create_dir_all(dir.0.join(sub)).expect("a scratch dir");
        }
        if as_postgres {
            super::give_to_postgres(&dir.0);
        }
        let node = |name: &str| Autoctl {
            name: name.to_owned(),
            port: free_port(),
            pgdata: dir.0.join(name),
            log: dir.0.join(format!("{name}.log")),
            child: Mutex::new(None),
            killed: AtomicBool::new(false),
        };
        let formation = Self {
            monitor: node("monitor"),
            nodes: vec![node("node1"), node("node2")],
            bin,
            as_postgres,
            dir,
        };

        formation.spawn(&formation.monitor, &["create", "monitor"]);
        formation
            .wait(
                "the monitor to answer",
                Duration::from_secs(60),
                |f| async move {
                    f.monitor_query("SELECT count(*) FROM pgautofailover.formation")
                        .await
                        .is_some()
                },
            )
            .await;
        let monitor = formation
            .monitor_client()
            .await
            .expect("the monitor answers");
        for (name, value) in MONITOR_TIMINGS {
            monitor
                .batch_execute(&format!("ALTER SYSTEM SET {name} = {value}"))
                .await
                .unwrap_or_else(|e| panic!("setting {name} on the monitor: {e}"));
        }
        monitor
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reloading the monitor");

        formation.spawn_node(0);
        formation
            .wait(
                "node1 to run as a single primary",
                Duration::from_secs(60),
                |f| async move {
                    f.states().await.iter().any(|(n, reported, goal)| {
                        n == "node1" && reported == "single" && goal == "single"
                    })
                },
            )
            .await;
        formation.spawn_node(1);
        formation
            .wait(
                "node1 primary and node2 its secondary",
                Duration::from_secs(120),
                |f| async move {
                    let states = f.states().await;
                    let is = |node: &str, state: &str| {
                        states
                            .iter()
                            .any(|(n, r, g)| n == node && r == state && g == state)
                    };
                    is("node1", "primary") && is("node2", "secondary")
                },
            )
            .await;
        formation
    }

    /// A URL naming both nodes, for a client that must reach whichever
    /// takes writes: `target_session_attrs=read-write`.
    pub fn url(&self, database: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!(
            "postgres://postgres@{}/{database}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// A URL naming the nodes in the order of `nodes`, with no
    /// requirement on their role: for reads, the standby first.
    pub fn hosts_url(&self, nodes: &[usize], database: &str) -> String {
        let hosts: Vec<String> = nodes
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.nodes[i].port))
            .collect();
        format!("postgres://postgres@{}/{database}", hosts.join(","))
    }

    /// The URL of `database` on node `i` alone.
    pub fn node_url(&self, i: usize, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.nodes[i].port
        )
    }

    /// `ALTER SYSTEM SET name = 'value'` on node `i`, then a reload; waits
    /// until it applies. (pg_autoctl keeps its own settings in another
    /// file, which `postgresql.auto.conf` overrides.)
    pub async fn set(&self, i: usize, name: &str, value: &str) {
        alter_system(&self.node_url(i, "postgres"), name, value).await;
    }

    /// The node the monitor reports as taking writes, if one is settled in
    /// such a state.
    pub async fn primary(&self) -> Option<usize> {
        let states = self.states().await;
        self.nodes.iter().position(|node| {
            states.iter().any(|(n, reported, goal)| {
                *n == node.name && reported == goal && PRIMARY_STATES.contains(&reported.as_str())
            })
        })
    }

    /// Waits until the monitor reports node `i` as the one taking writes.
    pub async fn wait_for_primary(&self, i: usize, timeout: Duration) {
        let what = format!("{} to be promoted", self.nodes[i].name);
        self.wait(
            &what,
            timeout,
            |f| async move { f.primary().await == Some(i) },
        )
        .await;
    }

    /// Kills node `i` as the loss of its machine would: `pg_autoctl`, its
    /// PostgreSQL and every backend stopped at one instant, then SIGKILLed.
    pub fn kill_node(&self, i: usize) {
        self.kill(&self.nodes[i]);
    }

    /// What the monitor recorded, oldest first: one line per event.
    pub async fn events(&self) -> String {
        let rows = self
            .monitor_query(
                "SELECT to_char(eventtime, 'HH24:MI:SS.MS') || ' ' || nodename || ': ' \
                 || reportedstate || ' -> ' || goalstate || ' (' || description || ')' \
                 FROM pgautofailover.event ORDER BY eventid",
            )
            .await
            .unwrap_or_default();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn_node(&self, i: usize) {
        let monitor = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor.port
        );
        let node = &self.nodes[i];
        self.spawn(
            node,
            &[
                "create",
                "postgres",
                "--name",
                &node.name,
                "--listen",
                "127.0.0.1",
                "--monitor",
                &monitor,
            ],
        );
    }

    /// Runs `pg_autoctl ARGS... --run` for `node` in the background, as the
    /// postgres user under root, its configuration and state in the
    /// scratch directory.
    fn spawn(&self, node: &Autoctl, args: &[&str]) {
        let log = std::fs::File::create(&node.log).expect("a log file");
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", "env"]);
            cmd
        } else {
            Command::new("env")
        };
        cmd.arg(format!("PATH={path}"))
            .arg(format!(
                "XDG_CONFIG_HOME={}",
                self.dir.0.join("config").display()
            ))
            .arg(format!(
                "XDG_DATA_HOME={}",
                self.dir.0.join("share").display()
            ))
            .arg(format!(
                "XDG_RUNTIME_DIR={}",
                self.dir.0.join("run").display()
            ))
            .arg("pg_autoctl")
            .args(args)
            .arg("--pgdata")
            .arg(&node.pgdata)
            .args(["--pgport", &node.port.to_string()])
            .arg("--pgctl")
            .arg(self.bin.join("pg_ctl"))
            .args([
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--run",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pg_autoctl: {e}"));
        *node.child.lock().expect("lock") = Some(child);
    }

    fn kill(&self, node: &Autoctl) {
        if let Some(mut child) = node.child.lock().expect("lock").take() {
            kill_tree(child.id());
            let _ = child.wait();
            node.killed.store(true, Ordering::SeqCst);
        }
    }

    /// Stops a node the way its operator would (`pg_autoctl` stops its
    /// PostgreSQL with a fast shutdown), or kills it after 15 s.
    fn stop(&self, node: &Autoctl) {
        let Some(mut child) = node.child.lock().expect("lock").take() else {
            return;
        };
        if let Some(pid) = self.autoctl_pid(node) {
            signal(pid, "INT");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_tree(child.id());
        let _ = child.wait();
        node.killed.store(true, Ordering::SeqCst);
    }

    /// `pg_autoctl`'s pid file: its pid, then its data dir, versions, the
    /// System V semaphore it logs under, and its services.
    fn pid_file(&self, node: &Autoctl) -> Option<Vec<String>> {
        let relative = node.pgdata.strip_prefix("/").unwrap_or(&node.pgdata);
        let path = self
            .dir
            .0
            .join("run/pg_autoctl")
            .join(relative)
            .join("pg_autoctl.pid");
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    fn autoctl_pid(&self, node: &Autoctl) -> Option<u32> {
        self.pid_file(node)?.first()?.trim().parse().ok()
    }

    /// Removes what a killed node leaves behind: the semaphore
    /// `pg_autoctl` logs under and PostgreSQL's System V segment.
    fn release_ipc(&self, node: &Autoctl) {
        let semaphore = self
            .pid_file(node)
            .and_then(|l| l.get(4)?.trim().parse::<u64>().ok());
        let segment = std::fs::read_to_string(node.pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .nth(6)?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            });
        for (kind, id) in [("-s", semaphore), ("-m", segment)] {
            if let Some(id) = id {
                let _ = Command::new("ipcrm")
                    .args([kind, &id.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// (node, reported state, goal state) for every node the monitor knows.
    async fn states(&self) -> Vec<(String, String, String)> {
        self.monitor_query(
            "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node",
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }

    async fn monitor_client(&self) -> Option<tokio_postgres::Client> {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/pg_auto_failover",
            self.monitor.port
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    async fn monitor_query(&self, sql: &str) -> Option<Vec<tokio_postgres::Row>> {
        self.monitor_client().await?.query(sql, &[]).await.ok()
    }

    /// Polls `check` every 100 ms; fails with `what`, the monitor's events
    /// and the nodes' logs after `timeout`.
    async fn wait<'a, F, Fut>(&'a self, what: &str, timeout: Duration, check: F)
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check(self).await {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- monitor events ---\n{}\n{}",
                    self.events().await,
                    self.logs(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` of each process's log.
    pub fn logs(&self, lines: usize) -> String {
        std::iter::once(&self.monitor)
            .chain(&self.nodes)
            .map(|n| format!("--- {} ---\n{}", n.name, tail(&n.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The major version of the PostgreSQL in `bin` (`postgres --version`:
/// `postgres (PostgreSQL) 15.20 ...`).
fn pg_major(bin: &std::path::Path) -> String {
    Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let version = text.split_whitespace().nth(2)?.to_owned();
            Some(version.split('.').next()?.to_owned())
        })
        .unwrap_or_else(|| "15".to_owned())
}

impl Drop for AutoFailover {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(30));
        }
        for node in self.nodes.iter().chain(std::iter::once(&self.monitor)) {
            self.stop(node);
        }
        for node in self.nodes.iter().chain(std::iter::once(&self.monitor)) {
            if node.killed.load(Ordering::SeqCst) {
                self.release_ipc(node);
            }
        }
    }
}

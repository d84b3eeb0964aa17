//! Throwaway servers for fault tests: a PostgreSQL cluster (and streaming
//! standbys of it, which can be promoted), a JetStream `nats-server` and
//! the `order-service` binary, each a child process on a free loopback
//! port, each able to be stopped, killed (SIGKILL) and started again on the
//! same port and data; and a Prometheus to watch them. The machine's shared servers are never
//! touched. Everything is torn down when the value is dropped, also when the
//! test fails; a service's log is printed then, to say what it saw.
//!
//! A binary that is missing fails the test with what to install.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{admin_client, unique_name};

mod autofailover;

pub use autofailover::AutoFailover;

/// A port no one listens on now, from 20000-29999: below the kernel's
/// ephemeral range (32768 and up here), so a port a test frees while it
/// restarts a server on it is not handed to some other process's outgoing
/// connection or `bind(0)` meanwhile (seen: PostgreSQL could not bind its
/// own port again after a 5 s stop).
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7_001)) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-29999")
}

/// Whether something accepts TCP connections on the loopback `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A directory of this test's own under the system temp dir, removed on drop.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(prefix));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Makes the `postgres` user own `path` (the servers run as it under root).
fn give_to_postgres(path: &Path) {
    let owned = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        owned,
        "cannot give {} to the postgres user (is there one?)",
        path.display()
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The parent of each process, from `/proc/PID/stat` (its fourth field,
/// after the name in parentheses, which may hold spaces).
fn parents() -> Vec<(u32, u32)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let ppid = after_name.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// `root` and every process it started, directly or not.
fn tree(root: u32) -> std::collections::BTreeSet<u32> {
    let parents = parents();
    let mut found = std::collections::BTreeSet::from([root]);
    loop {
        let more: Vec<u32> = parents
            .iter()
            .filter(|(pid, ppid)| found.contains(ppid) && !found.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

/// Stops `root` and everything it started (SIGSTOP, again until no new
/// process appears, so none forks or writes past this instant), then
/// SIGKILLs them all.
fn kill_tree(root: u32) {
    let mut frozen = std::collections::BTreeSet::new();
    loop {
        let new: Vec<u32> = tree(root).difference(&frozen).copied().collect();
        if new.is_empty() {
            break;
        }
        signal_all(&new, "STOP");
        frozen.extend(new);
    }
    signal_all(&frozen.into_iter().collect::<Vec<_>>(), "KILL");
}

fn signal_all(pids: &[u32], signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------- PostgreSQL

/// `ALTER SYSTEM SET name = 'value'` on the server at `url`, then a reload,
/// and waits until a new session sees the value: the postmaster has then
/// reloaded and signalled every backend, so each applies it before its
/// next command (for `synchronous_standby_names`, commits already waiting
/// see it too).
pub async fn alter_system(url: &str, name: &str, value: &str) {
    let client = admin_client(url).await;
    let quoted = value.replace('\'', "''");
    // Two round trips: ALTER SYSTEM refuses to run in a transaction
    // block, which a multi-statement query is.
    for sql in [
        format!("ALTER SYSTEM SET {name} = '{quoted}'"),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {url}: {e:?}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: String = admin_client(url)
            .await
            .query_one("SELECT current_setting($1)", &[&name])
            .await
            .unwrap_or_else(|e| panic!("reading {name}: {e:?}"))
            .get(0);
        if seen == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is still {seen:?} 10 s after setting it to {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where PostgreSQL's server programs are: `PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` that has `initdb`, else `pg_config --bindir`.
fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists())
        .unwrap_or_else(|| {
            panic!(
                "initdb and pg_ctl not found (looked in PG_BIN, /usr/lib/postgresql/*/bin, \
                 pg_config --bindir): install the Debian package postgresql \
                 (`just test` does on a fresh machine)"
            )
        })
}

/// A PostgreSQL cluster of this test's own, with trust auth for `postgres`.
///
/// PostgreSQL refuses to run as root, so under root (as in CI) its programs
/// run as the `postgres` user, in a directory that user owns.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// Whether the server was killed and not started since: its pid file
    /// then names a dead process, which must not be signalled again.
    killed: AtomicBool,
    /// Settings given at every start after the defaults (`-c name=value`).
    settings: String,
    dir: ScratchDir,
}

impl PgServer {
    /// Creates a cluster (`initdb`) and starts it on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`PgServer::start`], with these settings over the defaults (which
    /// are tuned for tests: `fsync=off`; `("fsync", "on")` restores it).
    pub fn start_with(settings: &[(&str, &str)]) -> Self {
        let mut server = Self::unstarted();
        server.settings = settings
            .iter()
            .map(|(name, value)| format!(" -c {name}={value}"))
            .collect();
        let out = server
            .pg_command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("running initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_again();
        server
    }

    /// A streaming standby of `primary`, started on a free port: a copy
    /// taken with `pg_basebackup -R` (which writes `standby.signal` and the
    /// `primary_conninfo` to follow it), connecting as `application_name`
    /// `name`, the name `synchronous_standby_names` can list. Asynchronous
    /// until the primary lists it ([`PgServer::set`]); wait for it with
    /// [`PgServer::wait_for_standby`] on the primary.
    pub fn standby_of(primary: &PgServer, name: &str) -> Self {
        let server = Self::unstarted();
        let out = server
            .pg_command("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&server.data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .arg(format!("--dbname=application_name={name}"))
            .output()
            .unwrap_or_else(|e| panic!("running pg_basebackup: {e}"));
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.start_again();
        server
    }

    /// A scratch directory the server's user owns, a free port, no data yet.
    fn unstarted() -> Self {
        let bin = pg_bin_dir();
        let dir = ScratchDir::new("orders-pg");
        let as_postgres = is_root();
        if as_postgres {
            give_to_postgres(&dir.0);
        }
        Self {
            port: free_port(),
            data: dir.0.join("data"),
            bin,
            as_postgres,
            killed: AtomicBool::new(false),
            settings: String::new(),
            dir,
        }
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, for admin work.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// The URL of database `name` on this server (which may not exist yet).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (stopped) server again, on the same port and data, and
    /// waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200{}",
            self.port,
            self.dir.0.display(),
            self.settings,
        );
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.dir.0.join("server.log"))
            .arg("start")
            .output()
            .unwrap_or_else(|e| panic!("running pg_ctl start: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            self.log_tail()
        );
        self.killed.store(false, Ordering::SeqCst);
        wait_until("PostgreSQL to listen", Duration::from_secs(10), || {
            listening(self.port)
        });
    }

    /// Stops the server the way an operator would (fast shutdown: open
    /// connections are cut, the data is consistent).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
        wait_until(
            "PostgreSQL to stop listening",
            Duration::from_secs(10),
            || !listening(self.port),
        );
    }

    /// Kills the server as the loss of its machine would: the postmaster
    /// and every backend stopped at one instant (SIGSTOP), then SIGKILLed,
    /// so no backend finishes a commit or sends WAL after the others died.
    /// (Backends are session leaders of their own, so a process group
    /// signal would not reach them.)
    pub fn kill(&self) {
        if let Some(pid) = self.postmaster_pid() {
            kill_tree(pid);
        }
        self.killed.store(true, Ordering::SeqCst);
        wait_until(
            "PostgreSQL to stop listening",
            Duration::from_secs(10),
            || !listening(self.port),
        );
    }

    /// Ends recovery on this standby (`pg_ctl promote`), as a fail-over
    /// orchestrator would, and waits until it takes writes.
    pub fn promote(&self) {
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "promote"])
            .output()
            .unwrap_or_else(|e| panic!("running pg_ctl promote: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// `ALTER SYSTEM SET name = 'value'`, then a reload, and waits until a
    /// new session sees the value: see [`alter_system`].
    pub async fn set(&self, name: &str, value: &str) {
        alter_system(&self.admin_url(), name, value).await;
    }

    /// Waits until a standby connected as `name` streams from this server,
    /// as a synchronous one when `synchronous`.
    pub async fn wait_for_standby(&self, name: &str, synchronous: bool) {
        let url = self.admin_url();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = async {
                let client = admin_client(&url).await;
                let row = client
                    .query_opt(
                        "SELECT sync_state FROM pg_stat_replication \
                         WHERE application_name = $1 AND state = 'streaming'",
                        &[&name],
                    )
                    .await
                    .ok()??;
                row.get::<_, Option<String>>(0)
            }
            .await;
            let ready = match state.as_deref() {
                Some("sync" | "quorum") => true,
                Some(_) => !synchronous,
                None => false,
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "standby {name} is not streaming from port {} after 60 s (sync_state {state:?})\n{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-m", mode, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The System V shared memory id in `postmaster.pid` (its 7th line is
    /// the key and the id), while the file is there: after a kill.
    fn shared_memory_id(&self) -> Option<u64> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .nth(6)?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.0.join("server.log"), 20)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.killed.load(Ordering::SeqCst) {
            self.pg_ctl_stop("immediate");
            return;
        }
        // A killed server leaves its small System V segment behind (the
        // next start on this data would remove it; there is none).
        if let Some(id) = self.shared_memory_id() {
            let _ = Command::new("ipcrm")
                .args(["-m", &id.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------- NATS

/// A `nats-server -js` of this test's own, with its own store directory.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
    dir: ScratchDir,
}

impl NatsServer {
    /// A single server with JetStream on a free port.
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    /// A server on `port` with extra arguments (cluster name, routes...).
    pub fn start_with(port: u16, extra_args: Vec<String>) -> Self {
        let dir = ScratchDir::new("orders-nats");
        let mut args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-js".to_owned(),
            "-sd".to_owned(),
            dir.0.join("store").display().to_string(),
        ];
        args.extend(extra_args);
        let server = Self {
            port,
            args,
            child: Mutex::new(None),
            dir,
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(Child::id)
    }

    /// Starts the (stopped or killed) server again, on the same port and
    /// store, and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("server.log"))
            .expect("a log file");
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}): install the Debian package nats-server \
                     (`just test` does on a fresh machine)"
                )
            });
        *self.child.lock().expect("lock") = Some(child);
        wait_until("nats-server to listen", Duration::from_secs(10), || {
            listening(self.port)
        });
    }

    /// Stops the server with SIGTERM (it flushes its store) and waits.
    pub fn stop(&self) {
        self.end("TERM");
    }

    /// Kills the server with SIGKILL and waits.
    pub fn kill(&self) {
        self.end("KILL");
    }

    fn end(&self, how: &str) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            signal(child.id(), how);
            let _ = child.wait();
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.0.join("server.log"), lines)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- Prometheus

/// Debian's Prometheus server (package `prometheus`).
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus of this test's own (Debian's binary) on a free loopback
/// port, with the given config and its storage in a scratch directory.
#[derive(Debug)]
pub struct PrometheusServer {
    port: u16,
    child: Mutex<Option<Child>>,
    dir: ScratchDir,
}

impl PrometheusServer {
    /// Writes `config` (prometheus.yml) and starts the server on it; waits
    /// until it listens (`/-/ready` may still answer 503 while its storage
    /// opens).
    pub fn start(config: &str) -> Self {
        let dir = ScratchDir::new("orders-prometheus");
        let port = free_port();
        let config_file = dir.0.join("prometheus.yml");
        fs::write(&config_file, config).expect("writing prometheus.yml");
        let log = fs::File::create(dir.0.join("prometheus.log")).expect("a log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {PROMETHEUS} ({e}): run `just prometheus` \
                     (or install the Debian package prometheus)"
                )
            });
        let server = Self {
            port,
            child: Mutex::new(Some(child)),
            dir,
        };
        wait_until("Prometheus to listen", Duration::from_secs(30), || {
            listening(port)
        });
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `GET /api/v1/{endpoint}?params`: the whole JSON answer (`status`,
    /// `data`, or `errorType` and `error`), whatever the HTTP status.
    pub async fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let path = format!("/api/v1/{endpoint}?{query}");
        let (status, body) = crate::get_http10(self.addr(), &path).await;
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{path}: {status}, not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&body),
                self.log_tail(20)
            )
        })
    }

    /// The last lines the server logged.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.0.join("prometheus.log"), lines)
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log (last 20 lines) ---\n{}",
                self.log_tail(20)
            );
        }
    }
}

// ---------------------------------------------------------------- the service

/// The `order-service` binary as a child process on a fixed port, its log
/// kept in a file. Killed when dropped; its log is printed if the test is
/// failing then.
#[derive(Debug)]
pub struct ServiceProcess {
    bin: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    child: Option<Child>,
    starts: u32,
    dir: ScratchDir,
}

impl ServiceProcess {
    /// Prepares (does not start) the binary at `bin` with `env` (on top of
    /// `PATH` only) and `HTTP_ADDR` on a free port.
    pub fn new(bin: impl AsRef<Path>, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut all: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        all.push(("HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")));
        Self {
            bin: bin.as_ref().to_owned(),
            env: all,
            port,
            child: None,
            starts: 0,
            dir: ScratchDir::new("orders-svc"),
        }
    }

    /// The same, with one more variable set (or overridden).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again), appending to its log.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the service already runs");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("a log file");
        let child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL, as a crash or an OOM kill would; waits for the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; `None` if the
    /// process was still running then (it is killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running (it did not exit by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("service.log")
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- order-service log (last 40 lines) ---\n{}",
                tail(&self.log_path(), 40)
            );
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_free() {
        let port = free_port();
        assert!(!listening(port));
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let dir = ScratchDir::new("orders-tail");
        let path = dir.0.join("log");
        fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&path, 9), "a\nb\nc");
        drop(dir);
        assert_eq!(tail(&path, 2), "");
    }
}

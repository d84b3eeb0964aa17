//! What can be checked of deploy/ without a Docker engine: the compose file
//! parses and configures every variable the service reads, its `standby`
//! profile adds a streaming standby the service can fail over to, each
//! stack's Prometheus scrapes every replica and loads the rules and its
//! Grafana shows the dashboard, and the Dockerfile builds the workspace's
//! binaries from every crate.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use orders_app::Config;
use serde_json::Value;
use support::monitoring;

const COMPOSE: &str = include_str!("../../../deploy/docker-compose.yml");
const CLUSTER: &str = include_str!("../../../deploy/docker-compose.cluster.yml");
const NGINX: &str = include_str!("../../../deploy/nginx.conf");
const DOCKERFILE: &str = include_str!("../../../deploy/Dockerfile");
const STANDBY_SCRIPT: &str = include_str!("../../../deploy/postgres-standby.sh");
const POSTGRES_CONF: &str = include_str!("../../../deploy/postgres.conf");
const REPLICATION_SCRIPT: &str = include_str!("../../../deploy/postgres-replication.sh");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn compose() -> Value {
    serde_yaml_ng::from_str(COMPOSE).expect("deploy/docker-compose.yml parses")
}

/// The cluster stack, its YAML merge keys (`<<: *service-env`) resolved.
fn cluster() -> Value {
    let mut cluster: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(CLUSTER).expect("deploy/docker-compose.cluster.yml parses");
    cluster.apply_merge().expect("merge keys resolve");
    serde_json::to_value(cluster).expect("JSON-like")
}

/// Every environment variable `order-service` reads, from its own --help.
fn service_variables() -> BTreeSet<String> {
    Config::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn compose_sets_every_variable_the_service_reads() {
    let compose = compose();
    let env = compose["services"]["order-service"]["environment"]
        .as_object()
        .expect("order-service has an environment map");
    let set: BTreeSet<String> = env.keys().cloned().collect();

    let missing: Vec<_> = service_variables().difference(&set).cloned().collect();
    let unknown: Vec<_> = set.difference(&service_variables()).cloned().collect();

    assert!(missing.is_empty(), "compose does not set {missing:?}");
    let nofile = &compose["services"]["order-service"]["ulimits"]["nofile"];
    assert!(
        nofile["hard"].as_u64().is_some_and(|n| n >= 10_000 + 128),
        "the open-file limit carries MAX_CONNECTIONS: {nofile}"
    );
    assert!(
        unknown.is_empty(),
        "compose sets variables the service does not read: {unknown:?}"
    );
}

#[test]
fn compose_starts_the_service_only_once_its_dependencies_are_healthy() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for dependency in ["postgres", "nats"] {
        assert!(
            services[dependency]["healthcheck"]["test"].is_array(),
            "{dependency} has no healthcheck"
        );
        assert_eq!(
            compose["services"]["order-service"]["depends_on"][dependency]["condition"],
            "service_healthy"
        );
    }
    assert_eq!(
        compose["services"]["publisher"]["profiles"][0], "tools",
        "the publisher is a one-shot tool under a profile"
    );
    let volumes = compose["volumes"].as_object().expect("named volumes");
    assert!(volumes.contains_key("pgdata") && volumes.contains_key("natsdata"));
}

/// A service's `volumes`, as written.
fn mounts(service: &Value) -> Vec<&str> {
    service["volumes"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn every_postgres_runs_with_deploy_postgres_conf() {
    let (compose, cluster) = (compose(), cluster());
    for service in [
        &compose["services"]["postgres"],
        &compose["services"]["postgres-standby"],
        &cluster["services"]["postgres"],
    ] {
        assert!(
            mounts(service).contains(&"./postgres.conf:/etc/postgresql/postgresql.conf:ro"),
            "{service}"
        );
    }
    for service in [
        &compose["services"]["postgres"],
        &cluster["services"]["postgres"],
    ] {
        assert_eq!(
            service["command"],
            serde_json::json!([
                "postgres",
                "-c",
                "config_file=/etc/postgresql/postgresql.conf"
            ])
        );
    }
    // A config_file replaces the image's postgresql.conf, which is what lets
    // other containers connect.
    assert!(POSTGRES_CONF.contains("listen_addresses = '*'"));
    assert!(POSTGRES_CONF.contains("shared_buffers = 2GB"));
}

#[test]
fn the_standby_profile_adds_a_synchronous_standby_the_service_can_fail_over_to() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let standby = &services["postgres-standby"];

    assert_eq!(standby["profiles"][0], "standby", "the standby is optional");
    assert_eq!(
        standby["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert!(standby["healthcheck"]["test"].is_array());
    let entrypoint = standby["entrypoint"][0].as_str().expect("an entrypoint");
    assert!(
        mounts(standby).contains(&format!("./postgres-standby.sh:{entrypoint}:ro").as_str()),
        "the entrypoint is deploy/postgres-standby.sh"
    );
    assert!(mounts(standby).iter().any(|m| m.starts_with("pgstandby:")));
    for step in [
        "pg_basebackup -h postgres",
        "-R -X stream",
        "application_name=standby",
        "synchronous_standby_names = 'standby'",
        "exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf",
    ] {
        assert!(
            STANDBY_SCRIPT.contains(step),
            "postgres-standby.sh lacks {step:?}"
        );
    }
    // The primary lets it replicate.
    assert!(
        mounts(&services["postgres"])
            .iter()
            .any(|m| m.starts_with("./postgres-replication.sh:/docker-entrypoint-initdb.d/")),
        "the primary's pg_hba.conf does not allow replication"
    );
    assert!(REPLICATION_SCRIPT.contains("host replication all all scram-sha-256"));
    assert!(
        compose["volumes"]
            .as_object()
            .expect("volumes")
            .contains_key("pgstandby")
    );

    // The service names both nodes and writes only where writes are taken;
    // reads and the requirement are the operator's choice.
    let env = &services["order-service"]["environment"];
    let url = env["DATABASE_URL"].as_str().expect("DATABASE_URL");
    assert!(
        url.contains("@postgres:5432,postgres-standby:5432/orders")
            && url.contains("target_session_attrs=read-write"),
        "{url}"
    );
    orders_postgres::check_url(url).expect("a valid DATABASE_URL");
    assert_eq!(env["DATABASE_READ_URL"], "${DATABASE_READ_URL:-}");
    assert_eq!(
        env["REQUIRE_SYNC_STANDBY"],
        "${REQUIRE_SYNC_STANDBY:-false}"
    );
}

#[test]
fn the_cluster_stack_has_three_routed_nodes_and_two_replicas_behind_nginx() {
    let cluster = cluster();
    let services = cluster["services"].as_object().expect("services");

    let nodes = ["nats1", "nats2", "nats3"];
    for node in nodes {
        let args: Vec<&str> = services[node]["command"]
            .as_array()
            .expect("a command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&"-js"), "{node} runs without JetStream");
        let routes = args
            .iter()
            .position(|a| *a == "--routes")
            .and_then(|i| args.get(i + 1))
            .expect("--routes");
        for other in nodes.iter().filter(|n| **n != node) {
            assert!(
                routes.contains(&format!("nats://{other}:6222")),
                "{node} has no route to {other}"
            );
        }
        assert!(services[node]["healthcheck"]["test"].is_array());
    }

    let replicas = ["order-service-1", "order-service-2"];
    for replica in replicas {
        let env = services[replica]["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("{replica} has an environment map"));
        let set: BTreeSet<String> = env.keys().cloned().collect();
        assert_eq!(set, service_variables(), "{replica} sets other variables");
        assert_eq!(env["NATS_STREAM_REPLICAS"], "3");
        assert_eq!(env["NATS_DURABLE"], "order-service", "one shared consumer");
        for node in nodes {
            assert!(
                env["NATS_URL"]
                    .as_str()
                    .is_some_and(|u| u.contains(&format!("nats://{node}:4222"))),
                "{replica} does not know {node}"
            );
        }
        for dependency in ["postgres", "nats1", "nats2", "nats3"] {
            assert_eq!(
                services[replica]["depends_on"][dependency]["condition"],
                "service_healthy"
            );
        }
        assert!(
            NGINX.contains(&format!("server {replica}:8080")),
            "nginx does not balance over {replica}"
        );
    }
    assert_eq!(
        services["lb"]["ports"][0], "127.0.0.1:8080:8080",
        "the load balancer is the stack's one HTTP port"
    );
}

/// Behind nginx, each client has its own rate-limit bucket: nginx says who
/// the client is, and the replicas trust what the stack's network says.
#[test]
fn the_replicas_trust_the_stacks_network_and_nginx_names_the_client() {
    let cluster = cluster();
    let subnet = cluster["networks"]["default"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("the cluster's network has a fixed subnet");
    for replica in ["order-service-1", "order-service-2"] {
        let trusted = &cluster["services"][replica]["environment"]["TRUSTED_PROXIES"];
        assert_eq!(trusted, subnet, "{replica} trusts its network only");
        let parsed = Config::try_parse_from(["order-service", "--trusted-proxies", subnet]);
        assert!(parsed.is_ok(), "{subnet}: {:?}", parsed.err());
    }
    let proxying = NGINX.matches("proxy_pass ").count();
    assert!(proxying >= 2, "nginx proxies its locations");
    for (header, value) in [("X-Forwarded-For", "$remote_addr"), ("Forwarded", "\"\"")] {
        let line = format!("proxy_set_header {header} {value};");
        assert_eq!(
            NGINX.matches(&line).count(),
            proxying,
            "every location of nginx.conf that proxies sets {line}"
        );
    }
    // Nothing in front of the single-replica stack.
    let compose = compose();
    assert_eq!(
        compose["services"]["order-service"]["environment"]["TRUSTED_PROXIES"],
        "${TRUSTED_PROXIES:-}"
    );
}

/// A stack that serves orders without tokens publishes them on the host's
/// loopback only: the service's own start check cannot see past the
/// container, so this test holds the compose files to it.
#[test]
fn without_tokens_the_stacks_publish_their_port_on_loopback_only() {
    for (file, stack) in [("docker-compose.yml", compose()), ("cluster", cluster())] {
        let services = stack["services"].as_object().expect("services");
        for (name, service) in services {
            let anonymous = service["environment"]["ALLOW_ANONYMOUS"]
                .as_str()
                .is_some_and(|v| v.contains("true"));
            if anonymous {
                assert_eq!(
                    service["environment"]["API_TOKENS_FILE"], "${API_TOKENS_FILE:-}",
                    "{file}: {name}"
                );
            }
            let Some(ports) = service["ports"].as_array() else {
                continue;
            };
            for port in ports.iter().filter_map(Value::as_str) {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{file}: {name} publishes {port} beyond the host's loopback"
                );
            }
        }
    }
}

/// The file or directory of deploy/ that `service` mounts at `target`.
fn mounted_at(service: &Value, target: &str) -> Option<PathBuf> {
    mounts(service).into_iter().find_map(|mount| {
        let mut parts = mount.split(':');
        let (source, at) = (parts.next()?, parts.next()?);
        (at == target && source.starts_with("./"))
            .then(|| monitoring::path("deploy").join(&source[2..]))
    })
}

/// The services that run order-service (they set `HTTP_ADDR`; the
/// publisher does not), each as `name:port`, the address Prometheus
/// scrapes inside the stack.
fn replica_targets(stack: &Value) -> BTreeSet<String> {
    stack["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter_map(|(name, service)| {
            let addr = service["environment"]["HTTP_ADDR"].as_str()?;
            let port = addr.rsplit_once(':').expect("HOST:PORT").1;
            Some(format!("{name}:{port}"))
        })
        .collect()
}

fn stacks() -> [(&'static str, Value); 2] {
    [
        ("docker-compose.yml", compose()),
        ("docker-compose.cluster.yml", cluster()),
    ]
}

/// An image with a pinned version (`name:1.2.3` or `name:v1.2.3`), not
/// `latest` or a bare major.
fn pinned(image: &str, name: &str) -> bool {
    image
        .strip_prefix(&format!("{name}:"))
        .map(|tag| tag.trim_start_matches('v'))
        .is_some_and(|v| {
            v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok())
        })
}

#[test]
fn each_stack_runs_a_prometheus_that_scrapes_every_replica_and_loads_the_rules() {
    for (file, stack) in stacks() {
        let prometheus = &stack["services"]["prometheus"];
        let replicas = replica_targets(&stack);

        let image = prometheus["image"].as_str().unwrap_or_default();
        assert!(pinned(image, "prom/prometheus"), "{file}: image {image:?}");
        let config = mounted_at(prometheus, "/etc/prometheus/prometheus.yml")
            .unwrap_or_else(|| panic!("{file}: no Prometheus config mounted"));
        let config = monitoring::yaml(&config);
        let rules = mounted_at(prometheus, "/etc/prometheus/rules")
            .unwrap_or_else(|| panic!("{file}: the rules are not mounted"));
        let job = config["scrape_configs"]
            .as_array()
            .expect("scrape_configs")
            .iter()
            .find(|j| j["job_name"] == monitoring::JOB)
            .unwrap_or_else(|| panic!("{file}: no job {}", monitoring::JOB));
        let targets: BTreeSet<String> = job["static_configs"]
            .as_array()
            .expect("static_configs")
            .iter()
            .flat_map(|c| c["targets"].as_array().expect("targets"))
            .map(|t| t.as_str().expect("a target").to_owned())
            .collect();
        let loaded: BTreeSet<PathBuf> = config["rule_files"]
            .as_array()
            .expect("rule_files")
            .iter()
            .map(|f| {
                let f = f.as_str().expect("a path");
                let name = f
                    .strip_prefix("/etc/prometheus/rules/")
                    .unwrap_or_else(|| panic!("{file}: {f} is not in the mounted rules"));
                rules.join(name)
            })
            .collect();

        assert!(replicas.len() >= if file.contains("cluster") { 2 } else { 1 });
        assert_eq!(
            targets, replicas,
            "{file}: scraped vs the service's replicas"
        );
        assert_eq!(
            rules.canonicalize().ok(),
            monitoring::path("deploy/prometheus/rules")
                .canonicalize()
                .ok(),
            "{file}"
        );
        // Every rules file but the standby's (its standby is optional).
        let expected: BTreeSet<PathBuf> = monitoring::rule_files()
            .into_iter()
            .filter(|f| !f.ends_with("orders-standby.rules.yml"))
            .map(|f| rules.join(f.file_name().expect("a name")))
            .collect();
        assert_eq!(loaded, expected, "{file}: the rules Prometheus loads");
        for f in &loaded {
            assert!(f.is_file(), "{file}: {} is missing", f.display());
        }
    }
}

#[test]
fn each_stack_runs_a_grafana_provisioned_with_the_datasource_and_the_dashboard() {
    for (file, stack) in stacks() {
        let grafana = &stack["services"]["grafana"];

        let image = grafana["image"].as_str().unwrap_or_default();
        assert!(pinned(image, "grafana/grafana"), "{file}: image {image:?}");
        let provisioning = mounted_at(grafana, "/etc/grafana/provisioning")
            .unwrap_or_else(|| panic!("{file}: no provisioning mounted"));
        let datasources = monitoring::yaml(&provisioning.join("datasources/prometheus.yml"));
        let providers = monitoring::yaml(&provisioning.join("dashboards/orders.yml"));
        let source = &datasources["datasources"][0];
        let dashboards_at = providers["providers"][0]["options"]["path"]
            .as_str()
            .expect("a provider path");
        let dashboards = mounted_at(grafana, dashboards_at)
            .unwrap_or_else(|| panic!("{file}: nothing mounted at {dashboards_at}"));

        assert_eq!(source["type"], "prometheus");
        assert_eq!(source["url"], "http://prometheus:9090", "{file}");
        assert!(
            stack["services"]["prometheus"]["ports"][0]
                .as_str()
                .is_some_and(|p| p.ends_with(":9090"))
        );
        assert!(
            dashboards.join("order-service.json").is_file(),
            "{file}: the dashboard is not in {}",
            dashboards.display()
        );
        assert_eq!(
            grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
            format!("{dashboards_at}/order-service.json"),
            "{file}: the home dashboard"
        );
    }
}

/// Names like `instance:orders_messages_stored:rate1m` in an expression.
fn recorded_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.matches(':').count() == 2)
        .collect()
}

#[test]
fn the_dashboard_reads_the_recording_rules_for_one_job_from_its_datasource_variable() {
    let dashboard = monitoring::dashboard();
    let recorded: BTreeSet<String> = monitoring::rules()
        .into_iter()
        .filter(|r| !r.alert)
        .map(|r| r.name)
        .collect();
    let queries = monitoring::dashboard_queries(&dashboard);

    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance"]);
    let mut ids = BTreeSet::new();
    for panel in monitoring::panels(&dashboard) {
        let title = &panel["title"];
        assert!(ids.insert(panel["id"].as_u64()), "{title}: a repeated id");
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (title, expr) in &queries {
        assert!(expr.contains("$job"), "{title}: {expr} ignores $job");
        for function in ["rate(", "increase(", "irate("] {
            assert!(
                !expr.contains(function),
                "{title}: {expr} computes a rate a recording rule should"
            );
        }
        for name in recorded_names(expr) {
            assert!(
                recorded.contains(name),
                "{title}: {name} is recorded by no rule"
            );
        }
    }
    // What the dashboard is for: each of these is drawn somewhere.
    let all: String = queries.iter().map(|(_, e)| e.as_str()).collect();
    for metric in [
        "orders_messages_stored",
        "orders_ingest_lag_seconds_bucket",
        "orders_ingest_oldest_unsettled_seconds",
        "orders_messages_rejected",
        "orders_http_requests",
        "orders_http_request_duration_seconds_bucket",
        "orders_cache_hits",
        "orders_cache_misses",
        "orders_cache_entries",
        "orders_db_pool_waiting",
        "orders_consumer_pending",
        "orders_ready",
        "orders_dependency_up",
        "up{",
        "job:orders_lookup_errors",
        "job:orders_ingest_lag_over_5s",
    ] {
        assert!(all.contains(metric), "no panel draws {metric}");
    }
}

#[test]
fn the_dockerfile_builds_every_binary_from_every_crate() {
    let mut binaries = BTreeSet::new();
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/crates")).expect("crates/") {
        let dir = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let manifest =
            std::fs::read_to_string(format!("{ROOT}/crates/{dir}/Cargo.toml")).expect("a manifest");
        let manifest: toml_like::Manifest = toml_like::parse(&manifest);
        binaries.extend(manifest.bins);
        crates.push(dir);
    }

    for dir in &crates {
        assert!(
            DOCKERFILE.contains(&format!("COPY crates/{dir}/Cargo.toml crates/{dir}/")),
            "the Dockerfile's dependency layer lacks crates/{dir}"
        );
    }
    let build_lines: Vec<_> = DOCKERFILE
        .lines()
        .filter(|l| l.contains("cargo build"))
        .collect();
    assert_eq!(build_lines.len(), 2, "a dependency build and a final build");
    for line in build_lines {
        for bin in &binaries {
            assert!(
                line.contains(&format!("--bin {bin}")),
                "{line:?} does not build {bin}"
            );
        }
        assert!(
            line.contains("--release") && line.contains("--locked"),
            "{line:?}"
        );
    }
    assert_eq!(
        binaries,
        BTreeSet::from(["order-publisher".to_owned(), "order-service".to_owned()])
    );
    assert!(
        DOCKERFILE.contains("USER orders"),
        "the runtime runs as a non-root user"
    );
    assert!(
        DOCKERFILE.contains("HEALTHCHECK"),
        "the image has a healthcheck"
    );
}

/// Just enough of Cargo.toml: the names of `[[bin]]` targets.
mod toml_like {
    pub struct Manifest {
        pub bins: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut bins = Vec::new();
        let mut in_bin = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
                bins.push(name.trim_matches('"').to_owned());
            }
        }
        Manifest { bins }
    }
}

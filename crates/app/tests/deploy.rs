//! What can be checked of deploy/ without a Docker engine: the compose file
//! parses and configures every variable the service reads, and the
//! Dockerfile builds the workspace's binaries from every crate.

use std::collections::BTreeSet;

use clap::CommandFactory;
use orders_app::Config;
use serde_json::Value;

const COMPOSE: &str = include_str!("../../../deploy/docker-compose.yml");
const DOCKERFILE: &str = include_str!("../../../deploy/Dockerfile");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn compose() -> Value {
    serde_yaml_ng::from_str(COMPOSE).expect("deploy/docker-compose.yml parses")
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

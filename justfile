# The order service's commands. `just` lists them; the longer ones are
# scripts in scripts/ (sharing scripts/lib.sh).
#
# Without a Docker engine (as on the dev machines) everything runs natively
# against the local PostgreSQL and NATS, started here if they are down.

set shell := ["bash", "-euo", "pipefail", "-c"]

export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orders")
export NATS_URL := env_var_or_default("NATS_URL", "nats://127.0.0.1:4222")
export HTTP_ADDR := env_var_or_default("HTTP_ADDR", "127.0.0.1:8080")

# List the recipes.
default:
    @just --list

# Start the service: the compose stack where a Docker engine answers, else natively in the background.
up:
    @scripts/up.sh

# Stop what `just up` started (gracefully: SIGTERM, then wait).
down:
    @scripts/down.sh

# Start the cluster topology: the compose cluster stack where a Docker engine answers, else natively (three routed JetStream nodes on 4231-4233, two replicas on 8081 and 8082).
up-cluster:
    @scripts/up-cluster.sh

# Stop what `just up-cluster` started: the replicas gracefully, then the NATS nodes.
down-cluster:
    @scripts/down-cluster.sh

# Measure the cluster topology of `just up-cluster`: ingest and lookup throughput with 1 and then 2 replicas (prints a table for docs/scaling.md).
bench-cluster orders="30000":
    @scripts/bench-cluster.sh {{orders}}

# Measure speed and memory against ceilings taken in the same run; prints the table and writes docs/benchmarks.md (5-10 minutes).
bench: services
    @scripts/bench.sh

# The bench harness end to end in seconds, with tiny counts and a debug build (CI runs it; it writes nothing).
bench-smoke: services
    @scripts/bench-smoke.sh

# Run the service in the foreground (Ctrl-C stops it gracefully).
run *args: services
    cargo run --release --bin order-service -- {{args}}

# Publish an order file (default: the sample order) and wait for the broker's ack.
publish file="fixtures/model.json":
    cargo run --release --quiet --bin order-publisher -- --file {{file}}

# Publish N generated orders (valid, unique uids, 1-5 items, totals that add up).
demo count="100" *args:
    cargo run --release --quiet --bin order-publisher -- --count {{count}} {{args}}

# Make sure the local PostgreSQL and NATS (JetStream) answer; start or install them if not.
services:
    @scripts/services.sh

# Make sure headless Chromium and chromedriver (for the browser tests) are installed; apt-get them if not.
browser:
    @scripts/browser.sh

# Make sure pg_auto_failover (for the primary-loss fault tests) is installed; apt-get it if not.
failover:
    @scripts/failover.sh

# Make sure Prometheus and promtool (for the alert rule tests and the test against a real Prometheus) are installed; apt-get them if not.
prometheus:
    @scripts/prometheus.sh

# Run every test: unit tests with mocks, integration tests against real PostgreSQL and NATS, browser tests, and the alert rules' tests.
test: services browser failover prometheus
    cargo test --workspace --all-targets --locked
    cargo test --workspace --doc --locked

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

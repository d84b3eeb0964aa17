# The order service's commands. `just` lists them.
#
# Without a Docker engine (as on the dev machines) everything runs natively
# against the local PostgreSQL and NATS, started here if they are down.

set shell := ["bash", "-euo", "pipefail", "-c"]

export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orders")
export NATS_URL := env_var_or_default("NATS_URL", "nats://127.0.0.1:4222")
export HTTP_ADDR := env_var_or_default("HTTP_ADDR", "127.0.0.1:8080")

run_dir := justfile_directory() / ".run"

# List the recipes.
default:
    @just --list

# Start the service: the compose stack where a Docker engine answers, else natively in the background.
up:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker compose -f deploy/docker-compose.yml up -d --build --wait
        echo "order-service is up (compose) on http://127.0.0.1:8080"
        exit 0
    fi
    just services
    cargo build --release --bin order-service --bin order-publisher
    mkdir -p "{{run_dir}}"
    if [ -f "{{run_dir}}/order-service.pid" ] && kill -0 "$(cat "{{run_dir}}/order-service.pid")" 2>/dev/null; then
        echo "order-service already runs (pid $(cat "{{run_dir}}/order-service.pid")); 'just down' stops it"
        exit 0
    fi
    nohup target/release/order-service >"{{run_dir}}/order-service.log" 2>&1 &
    echo $! >"{{run_dir}}/order-service.pid"
    for _ in $(seq 1 150); do
        if curl -fsS "http://$HTTP_ADDR/readyz" >/dev/null 2>&1; then
            echo "order-service is up on http://$HTTP_ADDR (pid $(cat "{{run_dir}}/order-service.pid"), log {{run_dir}}/order-service.log)"
            exit 0
        fi
        if ! kill -0 "$(cat "{{run_dir}}/order-service.pid")" 2>/dev/null; then
            echo "order-service exited; its log:" >&2
            tail -n 30 "{{run_dir}}/order-service.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "order-service did not become ready in 30 s; see {{run_dir}}/order-service.log" >&2
    exit 1

# Stop what `just up` started (gracefully: SIGTERM, then wait).
down:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{run_dir}}/order-service.pid" ]; then
        pid=$(cat "{{run_dir}}/order-service.pid")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            echo "order-service (pid $pid) stopped"
        fi
        rm -f "{{run_dir}}/order-service.pid"
    fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker compose -f deploy/docker-compose.yml down
    fi

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
    #!/usr/bin/env bash
    set -euo pipefail
    up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    install() {
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            echo "missing: $1 (install the Debian package '$2', or run it elsewhere and set DATABASE_URL / NATS_URL)" >&2
            exit 1
        fi
        echo "installing $2 ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    }
    if ! up 5432; then
        command -v pg_ctlcluster >/dev/null || install PostgreSQL postgresql
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        echo "starting PostgreSQL $version ..."
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        for _ in $(seq 1 50); do up 5432 && break; sleep 0.2; done
        up 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
    fi
    if ! up 4222; then
        command -v nats-server >/dev/null || install nats-server nats-server
        echo "starting nats-server -js ..."
        mkdir -p /var/lib/nats-server
        nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/var/log/nats-server.log 2>&1 &
        for _ in $(seq 1 50); do up 4222 && break; sleep 0.2; done
        up 4222 || { echo "nats-server did not start on 127.0.0.1:4222" >&2; exit 1; }
    fi
    echo "PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222 answer"

# Make sure headless Chromium and chromedriver (for the browser tests) are installed; apt-get them if not.
browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing: /usr/bin/chromium or /usr/bin/chromedriver (install the Debian packages 'chromium' and 'chromium-driver')" >&2
        exit 1
    fi
    echo "installing chromium and chromium-driver ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

# Run every test: unit tests with mocks, integration tests against real PostgreSQL and NATS, and browser tests.
test: services browser
    cargo test --workspace --all-targets --locked
    cargo test --workspace --doc --locked

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

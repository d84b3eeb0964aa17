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

# Start the cluster topology: the compose cluster stack where a Docker engine answers, else natively (three routed JetStream nodes on 4231-4233, two replicas on 8081 and 8082).
up-cluster:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker compose -f deploy/docker-compose.cluster.yml up -d --build --wait
        echo "the cluster is up (compose): nginx on http://127.0.0.1:8080 in front of two replicas"
        exit 0
    fi
    just services
    command -v nats-server >/dev/null || { echo "missing: nats-server (Debian package nats-server)" >&2; exit 1; }
    cargo build --release --bin order-service --bin order-publisher
    dir="{{run_dir}}/cluster"
    mkdir -p "$dir"
    up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
    urls=""
    for i in 1 2 3; do
        urls="${urls:+$urls,}nats://127.0.0.1:$((4230 + i))"
        alive "$dir/nats$i.pid" && continue
        routes=""
        for j in 1 2 3; do
            [ "$j" = "$i" ] || routes="${routes:+$routes,}nats://127.0.0.1:$((6230 + j))"
        done
        mkdir -p "$dir/nats$i"
        nohup nats-server -a 127.0.0.1 -p $((4230 + i)) -js -sd "$dir/nats$i" \
            --server_name "nats$i" --cluster_name orders \
            --cluster "nats://127.0.0.1:$((6230 + i))" --routes "$routes" \
            >"$dir/nats$i.log" 2>&1 &
        echo $! >"$dir/nats$i.pid"
    done
    for i in 1 2 3; do
        for _ in $(seq 1 50); do up $((4230 + i)) && break; sleep 0.2; done
        up $((4230 + i)) || { echo "nats$i did not start; see $dir/nats$i.log" >&2; exit 1; }
    done
    for r in 1 2; do
        alive "$dir/replica$r.pid" && continue
        NATS_URL="$urls" NATS_STREAM_REPLICAS=3 HTTP_ADDR="127.0.0.1:$((8080 + r))" \
            nohup target/release/order-service >"$dir/replica$r.log" 2>&1 &
        echo $! >"$dir/replica$r.pid"
    done
    for r in 1 2; do
        ready=""
        for _ in $(seq 1 300); do
            if curl -fsS "http://127.0.0.1:$((8080 + r))/readyz" >/dev/null 2>&1; then ready=1; break; fi
            alive "$dir/replica$r.pid" || break
            sleep 0.2
        done
        [ -n "$ready" ] || { echo "replica $r is not ready; its log:" >&2; tail -n 30 "$dir/replica$r.log" >&2; exit 1; }
    done
    echo "the cluster is up: replicas on http://127.0.0.1:8081 and http://127.0.0.1:8082, NATS $urls (logs in $dir)"
    echo "publish to it:  NATS_URL=$urls NATS_STREAM_REPLICAS=3 just demo 1000"

# Stop what `just up-cluster` started: the replicas gracefully, then the NATS nodes.
down-cluster:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker compose -f deploy/docker-compose.cluster.yml down
    fi
    dir="{{run_dir}}/cluster"
    for name in replica1 replica2 nats1 nats2 nats3; do
        [ -f "$dir/$name.pid" ] || continue
        pid=$(cat "$dir/$name.pid")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            echo "$name (pid $pid) stopped"
        fi
        rm -f "$dir/$name.pid"
    done

# Measure the cluster topology of `just up-cluster`: ingest and lookup throughput with 1 and then 2 replicas (prints a table for docs/scaling.md).
bench-cluster orders="30000":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v wrk >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
        || { echo "missing: wrk (Debian package wrk)" >&2; exit 1; }
    just up-cluster >/dev/null
    dir="{{run_dir}}/cluster"
    urls="nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233"
    count() { psql "$DATABASE_URL" -tAc "SELECT count(*) FROM order_info"; }
    stop_replicas() {
        for r in 1 2; do
            [ -f "$dir/replica$r.pid" ] || continue
            pid=$(cat "$dir/replica$r.pid"); kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$dir/replica$r.pid"
        done
    }
    start_replicas() {
        for r in $(seq 1 "$1"); do
            NATS_URL="$urls" NATS_STREAM_REPLICAS=3 HTTP_ADDR="127.0.0.1:$((8080 + r))" RUST_LOG=warn \
                nohup target/release/order-service >>"$dir/replica$r.log" 2>&1 &
            echo $! >"$dir/replica$r.pid"
        done
    }
    cat >"$dir/lookup.lua" <<'LUA'
    local uids = {}
    for line in io.lines(os.getenv("UIDS")) do uids[#uids + 1] = line end
    request = function()
        return wrk.format("GET", "/order?order_uid=" .. uids[math.random(#uids)])
    end
    LUA
    echo "| replicas | ingest, orders/s | lookup, requests/s (wrk: 1 thread, 32 connections per replica, 10 s) |"
    echo "|---|---|---|"
    for n in 1 2; do
        stop_replicas
        before=$(count)
        NATS_URL="$urls" NATS_STREAM_REPLICAS=3 target/release/order-publisher \
            --count {{orders}} --seed "$(date +%s%N)" --quiet >/dev/null
        started=$(date +%s%N)
        start_replicas "$n"
        target=$((before + {{orders}}))
        until [ "$(count)" -ge "$target" ]; do sleep 0.05; done
        ingest=$(( {{orders}} * 1000000000 / ($(date +%s%N) - started) ))
        for r in $(seq 1 "$n"); do
            until curl -fsS "http://127.0.0.1:$((8080 + r))/readyz" >/dev/null 2>&1; do sleep 0.1; done
        done
        psql "$DATABASE_URL" -tAc "SELECT order_uid FROM order_info ORDER BY random() LIMIT 10000" >"$dir/uids.txt"
        pids=()
        for r in $(seq 1 "$n"); do
            UIDS="$dir/uids.txt" wrk -t1 -c32 -d10s -s "$dir/lookup.lua" "http://127.0.0.1:$((8080 + r))" >"$dir/wrk$r.txt" &
            pids+=($!)
        done
        wait "${pids[@]}"
        lookups=$(cat "$dir"/wrk[1-$n].txt | awk '/Requests\/sec/ {sum += $2} END {printf "%d", sum}')
        echo "| $n | $ingest | $lookups |"
    done
    stop_replicas
    start_replicas 2

# Measure speed and memory against ceilings taken in the same run; prints the table and writes docs/benchmarks.md (about 5 minutes).
bench: services
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v wrk >/dev/null; then
        [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null \
            || { echo "missing: wrk (Debian package wrk)" >&2; exit 1; }
        echo "installing wrk ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    if ! command -v oha >/dev/null; then
        echo "installing oha from crates.io (a few minutes, once) ..."
        cargo install --locked --quiet oha
    fi
    cargo build --release --bin order-service --bin orders-bench
    target/release/orders-bench

# The bench harness end to end in seconds, with tiny counts and a debug build (CI runs it; it writes nothing).
bench-smoke: services
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v wrk >/dev/null; then
        [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null \
            || { echo "missing: wrk (Debian package wrk)" >&2; exit 1; }
        echo "installing wrk ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
    cargo build --bin order-service --bin orders-bench
    target/debug/orders-bench --smoke --service target/debug/order-service

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

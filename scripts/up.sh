#!/usr/bin/env bash
# `just up`: the compose stack where a Docker engine answers, else the
# service natively in the background (pid and log in .run/), once ready.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if has_docker; then
    docker compose -f deploy/docker-compose.yml up -d --build --wait
    echo "order-service is up (compose) on http://127.0.0.1:8080; Prometheus on :9090, Grafana on :3000"
    exit 0
fi
scripts/services.sh
cargo build --release --bin order-service --bin order-publisher
mkdir -p "$RUN_DIR"
pid_file=$RUN_DIR/order-service.pid
log=$RUN_DIR/order-service.log
addr=${HTTP_ADDR:-127.0.0.1:8080}
if is_alive "$pid_file"; then
    echo "order-service already runs (pid $(cat "$pid_file")); 'just down' stops it"
    exit 0
fi
nohup "$TARGET_DIR/release/order-service" >"$log" 2>&1 &
echo $! >"$pid_file"
if wait_for_http_ok "http://$addr/readyz" 30 "$pid_file"; then
    echo "order-service is up on http://$addr (pid $(cat "$pid_file"), log $log)"
elif is_alive "$pid_file"; then
    die "order-service did not become ready in 30 s; see $log"
else
    die_with_log "order-service exited; its log:" "$log"
fi

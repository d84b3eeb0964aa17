#!/usr/bin/env bash
# `just up-cluster`: the compose cluster stack where a Docker engine answers,
# else natively: three routed JetStream nodes on 4231-4233 (routes on
# 6231-6233) and two replicas on 8081 and 8082, pid files and logs in
# .run/cluster/. What already runs is left as it is.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if has_docker; then
    docker compose -f deploy/docker-compose.cluster.yml up -d --build --wait
    echo "the cluster is up (compose): nginx on http://127.0.0.1:8080 in front of two replicas; Prometheus on :9090, Grafana on :3000"
    exit 0
fi
scripts/services.sh
ensure_tool nats-server nats-server
cargo build --release --bin order-service --bin order-publisher
dir=$RUN_DIR/cluster
mkdir -p "$dir"
urls=""
for i in 1 2 3; do
    urls="${urls:+$urls,}nats://127.0.0.1:$((4230 + i))"
    is_alive "$dir/nats$i.pid" && continue
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
    wait_for_port $((4230 + i)) || die "nats$i did not start; see $dir/nats$i.log"
done
for r in 1 2; do
    is_alive "$dir/replica$r.pid" && continue
    NATS_URL="$urls" NATS_STREAM_REPLICAS=3 HTTP_ADDR="127.0.0.1:$((8080 + r))" \
        nohup "$TARGET_DIR/release/order-service" >"$dir/replica$r.log" 2>&1 &
    echo $! >"$dir/replica$r.pid"
done
for r in 1 2; do
    wait_for_http_ok "http://127.0.0.1:$((8080 + r))/readyz" 60 "$dir/replica$r.pid" \
        || die_with_log "replica $r is not ready; its log:" "$dir/replica$r.log"
done
echo "the cluster is up: replicas on http://127.0.0.1:8081 and http://127.0.0.1:8082, NATS $urls (logs in $dir)"
echo "publish to it:  NATS_URL=$urls NATS_STREAM_REPLICAS=3 just demo 1000"

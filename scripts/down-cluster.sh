#!/usr/bin/env bash
# `just down-cluster`: stops what `just up-cluster` started, the replicas
# first (gracefully), then the NATS nodes.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if has_docker; then
    docker compose -f deploy/docker-compose.cluster.yml down
fi
for name in replica1 replica2 nats1 nats2 nats3; do
    stop_pid_file "$RUN_DIR/cluster/$name.pid"
done

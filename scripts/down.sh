#!/usr/bin/env bash
# `just down`: stops what `just up` started (SIGTERM, then waits for the exit).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid_file "$RUN_DIR/order-service.pid"
if has_docker; then
    docker compose -f deploy/docker-compose.yml down
fi

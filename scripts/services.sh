#!/usr/bin/env bash
# `just services`: makes the local PostgreSQL (127.0.0.1:5432) and NATS with
# JetStream (127.0.0.1:4222) answer, starting them, or installing them as root.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing_hint=", or run it elsewhere and set DATABASE_URL / NATS_URL"

if ! port_open 5432; then
    command -v pg_ctlcluster >/dev/null || apt_install PostgreSQL postgresql
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    echo "starting PostgreSQL $version ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for_port 5432 || die "PostgreSQL did not start on 127.0.0.1:5432"
fi
if ! port_open 4222; then
    ensure_tool nats-server nats-server
    echo "starting nats-server -js ..."
    mkdir -p /var/lib/nats-server
    nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/var/log/nats-server.log 2>&1 &
    wait_for_port 4222 || die "nats-server did not start on 127.0.0.1:4222"
fi
echo "PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222 answer"

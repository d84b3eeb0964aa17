#!/bin/sh
# The standby of deploy/docker-compose.yml's `standby` profile. On its first
# start it copies `postgres` with pg_basebackup -R (standby.signal and the
# primary_conninfo to follow it, as application_name `standby`); then it runs
# PostgreSQL in recovery, streaming from `postgres`. Once it accepts
# connections it makes `postgres` wait for it on every commit
# (synchronous_standby_names), so an order the service acks is on both.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    gosu postgres pg_basebackup -h postgres -U postgres -D "$PGDATA" \
        -R -X stream -c fast -d "application_name=standby"
fi
(
    until pg_isready -q -h 127.0.0.1 -U postgres; do sleep 1; done
    psql -h postgres -U postgres -d postgres \
        -c "ALTER SYSTEM SET synchronous_standby_names = 'standby'" \
        -c "SELECT pg_reload_conf()"
) &
exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf

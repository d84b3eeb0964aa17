#!/bin/sh
# Run once by the postgres image when it creates the database
# (/docker-entrypoint-initdb.d): lets a standby (deploy/postgres-standby.sh)
# connect for replication with the password. The image's own pg_hba.conf
# lets remote clients reach every database but not the replication
# protocol.
set -eu
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"

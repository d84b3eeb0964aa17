#!/usr/bin/env bash
# `just failover`: pg_auto_failover (pg_autoctl and the monitor's
# extension) for the newest PostgreSQL installed, for the primary-loss
# fault tests; installed with apt-get if missing.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
[ -n "$version" ] || die "PostgreSQL's server programs are not in /usr/lib/postgresql (just services installs them)"
if command -v pg_autoctl >/dev/null && [ -f "/usr/share/postgresql/$version/extension/pgautofailover.control" ]; then
    exit 0
fi
apt_install "pg_auto_failover for PostgreSQL $version" "postgresql-$version-auto-failover"

#!/usr/bin/env bash
# Stops the PostgreSQL started by start.sh (same PG_PORT / PG_DATA).
set -euo pipefail
port="${PG_PORT:-5432}"
data="${PG_DATA:-/var/tmp/amqp-gw-postgres-$port}"
[ -f "$data/PG_VERSION" ] || exit 0
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true

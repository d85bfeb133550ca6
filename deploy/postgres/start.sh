#!/usr/bin/env bash
# Starts a PostgreSQL (Debian's postgresql package) on loopback for the
# shared meta store, installing it if needed, and prints its URL. Idempotent.
# PostgreSQL refuses to run as root: as root it runs as the `postgres` user,
# with its data directory where that user can reach it.
#
#   PG_PORT  port (default 5432)
#   PG_DATA  data directory (default /var/tmp/amqp-gw-postgres-<port>)
#   PG_DB    database created for the gateway (default amqp_gateway)
set -euo pipefail
port="${PG_PORT:-5432}"
data="${PG_DATA:-/var/tmp/amqp-gw-postgres-$port}"
db="${PG_DB:-amqp_gateway}"

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
url="postgres://postgres@127.0.0.1:$port/$db"

if ! [ -f "$data/PG_VERSION" ]; then
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres: "$data"
  chmod 700 "$data"
  as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
fi
if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-on}" start >/dev/null
fi
if ! as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $db" >/dev/null
fi
echo "$url"

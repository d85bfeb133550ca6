#!/usr/bin/env bash
# Chaos under load (benches/chaos.py): starts its own stack on loopback
# (RocketMQ name server and broker, the gateway; ports 26772, 19906, 20966),
# kills and stops its parts ROUNDS times each while a pika publisher with
# confirms and a pika consumer with acks run, prints the figures, and stops
# the stack. Exit status 1 when a confirmed message was never delivered or a
# part did not recover.
#
#   benches/chaos.sh [ROUNDS] [chaos.py options...]
#   CHAOS_JSON=path   also write the figures there
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds="${1:-1}"
shift || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
export AMQP_GW_DATA="${CHAOS_DATA:-$CARGO_TARGET_DIR/chaos-stack}" AMQP_PORT=26772 \
  MANAGEMENT_PORT=26773 PROMETHEUS_PORT=26792 NAMESRV_PORT=19906 BROKER_PORT=20966
"$root/deploy/down.sh" >/dev/null 2>&1 || true
rm -rf "$AMQP_GW_DATA"
trap '"$root/deploy/down.sh" >/dev/null 2>&1 || true' EXIT
# Parts are restarted from a copy of today's binaries: a build made while
# this runs does not change what is measured.
mkdir -p "$AMQP_GW_DATA/bin"
built=$("$root/deploy/rocketmq/build.sh")
cp "$built"/amqp-gateway "$built"/rocketmq-namesrv-rust "$built"/rocketmq-broker-rust "$AMQP_GW_DATA/bin/"
export ROCKETMQ_BIN="$AMQP_GW_DATA/bin"
SMOKE_MESSAGES=0 "$root/deploy/up.sh" >/dev/null
python=$("$root/deploy/python-env.sh")
json=()
[ -n "${CHAOS_JSON:-}" ] && json=(--json "$CHAOS_JSON")
"$python" "$root/benches/chaos.py" --rounds "$rounds" "${json[@]}" "$@"

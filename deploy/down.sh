#!/usr/bin/env bash
# Stops what deploy/up.sh started: the gateway, then the broker and name server.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data="${AMQP_GW_DATA:-$root/data}"
if [ -f "$data/gateway.pid" ]; then
  pid=$(cat "$data/gateway.pid")
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o comm= | grep -q "^amqp-gateway"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "gateway stopped"
  fi
  rm -f "$data/gateway.pid"
fi
ROCKETMQ_DATA="$data/rocketmq" "$root/deploy/rocketmq/stop.sh"

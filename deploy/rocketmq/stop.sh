#!/usr/bin/env bash
# Stops the name server and broker started by start.sh (broker first), cleanly.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data="${ROCKETMQ_DATA:-$root/data/rocketmq}"
for name in broker namesrv; do
  pidfile="$data/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # A stale pid file (the machine or session went away) may name another process now.
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o comm= | grep -q "^rocketmq-"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$name did not stop in 10 s; killing" >&2; kill -KILL "$pid"; }
    echo "$name stopped"
  fi
  rm -f "$pidfile"
done

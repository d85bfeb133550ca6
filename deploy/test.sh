#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (against a real
# RocketMQ and a real PostgreSQL the harnesses start on their own ports) and
# the pika jobs on a stack of its own. Everything it starts, it stops.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
cd "$root"

rabbit_env=(RABBITMQ_DATA="$CARGO_TARGET_DIR/reference-rabbitmq" RABBIT_PORT=25674 RABBIT_DIST_PORT=25676 RABBIT_NODE=gwtest@localhost RABBIT_MANAGEMENT_PORT=25675)
smoke_env=(AMQP_GW_DATA="$CARGO_TARGET_DIR/smoke-stack" AMQP_PORT=25672 AMQPS_PORT=25671 MANAGEMENT_PORT=25673 PROMETHEUS_PORT=25692 NAMESRV_PORT=19886 BROKER_PORT=20941)
cleanup() {
  for d in "$CARGO_TARGET_DIR"/debug/test-rocketmq-*; do
    [ -d "$d" ] && ROCKETMQ_DATA="$d" "$root/deploy/rocketmq/stop.sh" >/dev/null 2>&1 || true
  done
  env "${smoke_env[@]}" "$root/deploy/down.sh" >/dev/null 2>&1 || true
  PG_PORT=15432 "$root/deploy/postgres/stop.sh" >/dev/null 2>&1 || true
  env "${rabbit_env[@]}" "$root/deploy/rabbitmq/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# Start from empty RocketMQ data: a store left by a killed run would make the
# broker start in recovery mode and the run depend on what happened before.
cleanup
rm -rf "$CARGO_TARGET_DIR"/debug/test-rocketmq-* "$CARGO_TARGET_DIR/smoke-stack" /var/tmp/amqp-gw-postgres-15432 "$CARGO_TARGET_DIR/reference-rabbitmq"

# Tools the tests drive, from Debian, on a fresh machine: rabbitmqadmin
# (package rabbitmq-server), promtool
# (package prometheus) and a headless chromium.
need() {
  command -v "$1" >/dev/null && return
  echo "== installing $2 (for $1)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need rabbitmqadmin rabbitmq-server
need promtool prometheus
need chromium chromium

echo "== building"
"$root/deploy/rocketmq/build.sh" >/dev/null

echo "== cargo test"
cargo test --locked

echo "== fuzzing, 20 s per target (fuzz/run.sh; the hour-long runs are in docs/reliability.md)"
"$root/fuzz/run.sh" 20

echo "== chaos, short mode: each part killed once under load (benches/chaos.sh; the long run is in docs/reliability.md)"
"$root/benches/chaos.sh" 1 --downtime 3

echo "== smoke job on its own stack"
env "${smoke_env[@]}" SMOKE_MESSAGES=0 "$root/deploy/up.sh"
python=$("$root/deploy/python-env.sh")
AMQP_URL="amqp://guest:guest@127.0.0.1:25672/%2F" "$python" "$root/conformance/smoke/topic_counts.py"

echo "== pika worker-queue example (publisher + two workers, prefetch 1, manual acks)"
AMQP_URL="amqp://guest:guest@127.0.0.1:25672/%2F" "$python" "$root/conformance/examples/worker_queue.py"

echo "== conformance, fast subset: py-amqp's own broker tests against the gateway, plain and over TLS"
"$python" "$root/conformance/run.py" --fast --targets gateway --gateway-port 25672 --gateway-tls-port 25671

echo "== the management API side by side with RabbitMQ 3.10's (same traffic, same requests)"
env "${rabbit_env[@]}" "$root/deploy/rabbitmq/start.sh"
"$python" "$root/conformance/management_compare.py" --gateway 25672,25673 --rabbitmq 25674,25675

#!/usr/bin/env bash
# Brings the whole stack up on this machine and shows it working:
#   1. builds RocketMQ's name server and broker (rocketmq-rust 1.0.0) and the
#      gateway, once (cached under ~/.cache/amqp-gw);
#   2. starts the name server and broker on loopback;
#   3. starts the gateway on 127.0.0.1:5672 with its meta store in a SQLite file;
#   4. runs the smoke job: an unmodified pika client publishes 10,000 persistent
#      messages with confirms to a topic exchange bound to two queues, and checks
#      each queue's message_count.
# The stack keeps running afterwards; deploy/down.sh stops it.
#
#   AMQP_GW_DATA   data directory (default <repo>/data)
#   AMQP_PORT      gateway port (default 5672)
#   MANAGEMENT_PORT  RabbitMQ's management HTTP API (default 15672)
#   PROMETHEUS_PORT  Prometheus /metrics and /health (default 15692)
#   NAMESRV_PORT, BROKER_PORT, FLUSH: see deploy/rocketmq/start.sh
#   SMOKE_MESSAGES messages the smoke job publishes (default 10000; 0 skips it)
#   AMQPS_PORT     also serve AMQP over TLS on this port, with the test
#                  certificates of proxy/tests/certs (a CA, a certificate for
#                  localhost; client certificates of that CA verified). For
#                  trying TLS and for the conformance runs; use your own
#                  certificates in production (docs/operations.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
data="${AMQP_GW_DATA:-$root/data}"
amqp_port="${AMQP_PORT:-5672}"
management_port="${MANAGEMENT_PORT:-15672}"
prometheus_port="${PROMETHEUS_PORT:-15692}"
export NAMESRV_PORT="${NAMESRV_PORT:-9876}" BROKER_PORT="${BROKER_PORT:-10911}"
export ROCKETMQ_DATA="$data/rocketmq"
mkdir -p "$data/logs"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

echo "== building (first run on a fresh machine: about 15 minutes on 2 cores)"
# ROCKETMQ_BIN: binaries built before (benches/chaos.sh restarts parts with
# the binaries it started with, whatever is being built meanwhile).
bin="${ROCKETMQ_BIN:-}"
[ -n "$bin" ] || bin=$("$root/deploy/rocketmq/build.sh")

echo "== starting RocketMQ"
ROCKETMQ_BIN="$bin" "$root/deploy/rocketmq/start.sh"

echo "== starting the gateway"
if answers "$amqp_port"; then
  echo "something already answers on 127.0.0.1:$amqp_port; using it"
else
  tls=()
  if [ -n "${AMQPS_PORT:-}" ]; then
    certs="$root/proxy/tests/certs"
    tls=(AMQP_GATEWAY_TLS_LISTEN="127.0.0.1:$AMQPS_PORT" AMQP_GATEWAY_TLS_CERTIFICATE="$certs/server.pem"
         AMQP_GATEWAY_TLS_KEY="$certs/server.key" AMQP_GATEWAY_TLS_CA="$certs/ca.pem")
  fi
  env "${tls[@]}" \
  AMQP_GATEWAY_LISTEN="127.0.0.1:$amqp_port" \
  AMQP_GATEWAY_MANAGEMENT_LISTEN="127.0.0.1:$management_port" \
  AMQP_GATEWAY_PROMETHEUS_LISTEN="127.0.0.1:$prometheus_port" \
  AMQP_GATEWAY_META_URL="sqlite:$data/meta.db" \
  AMQP_GATEWAY_NAME_SERVER="127.0.0.1:$NAMESRV_PORT" \
  RUST_LOG="${RUST_LOG:-info,rocketmq=warn}" \
    nohup "$bin/amqp-gateway" >"$data/logs/gateway.log" 2>&1 &
  echo $! >"$data/gateway.pid"
  for _ in $(seq 1 300); do
    answers "$amqp_port" && break
    kill -0 "$(cat "$data/gateway.pid")" 2>/dev/null || { tail -n 20 "$data/logs/gateway.log" >&2; exit 1; }
    sleep 0.1
  done
  answers "$amqp_port" || { echo "gateway did not start; see $data/logs/gateway.log" >&2; exit 1; }
  echo "gateway listening on 127.0.0.1:$amqp_port (pid $(cat "$data/gateway.pid"), meta $data/meta.db, log $data/logs/gateway.log)"
fi

if [ "${SMOKE_MESSAGES:-10000}" != 0 ]; then
  echo "== smoke job: pika, ${SMOKE_MESSAGES:-10000} persistent messages with confirms"
  python=$("$root/deploy/python-env.sh")
  AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp_port/%2F" "$python" "$root/conformance/smoke/topic_counts.py"
fi
echo "== the stack is up: amqp://guest:guest@127.0.0.1:$amqp_port/  management API http://127.0.0.1:$management_port/api/ (guest/guest; rabbitmqadmin -P $management_port)  metrics http://127.0.0.1:$prometheus_port/metrics  (stop it with deploy/down.sh)"

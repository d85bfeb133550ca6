#!/usr/bin/env bash
# The benchmark, one invocation: builds the gateway and the load generator
# with optimisations, starts on loopback a RocketMQ (name server + broker),
# the gateway on it, a second gateway on the null upstream, and RabbitMQ 3.10,
# a second gateway on the same RocketMQ and meta store (scenario 6),
# runs every scenario on every target one after the other, writes
# benches/results/report.md and chart.svg, and stops what it started.
#
#   SECONDS_PER_RUN  how long each run publishes (default 10); in scenario 5, the time
#                    budget of its idle trials and again of its busy trials
#   ONLY             scenarios, e.g. "1,2" (1 publish, 2 end to end, 3 fan-out to 4 and 16,
#                    4 many connections, 5 first delivery to a new consumer, 6 one queue
#                    served by two gateways)
#   QUEUES_PER_TOPIC message queues per queue topic on the RocketMQ gateways (default 1)
#   TARGETS          e.g. "gateway,rabbitmq" (default: all four)
#   CONNECTIONS      connections in scenario 4 (default 1000)
#   KEEP=1           leave the stacks running afterwards
#   SCRAPE_EVERY     seconds between Prometheus scrapes of the RocketMQ gateway's
#                    /metrics during the runs (default: none); a gateway's management
#                    API answers on its AMQP port + 20000, /metrics on + 21000
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
data="${BENCH_DATA:-$HOME/.cache/amqp-gw/bench-data}"
out="${BENCH_OUT:-$root/benches/results}"
export NAMESRV_PORT=19986 BROKER_PORT=20986 ROCKETMQ_DATA="$data/rocketmq"
gateway_port=5682 null_port=5683 second_port=5684 rabbit_port=5693
export RABBIT_NODE=gwbench@localhost RABBITMQ_DATA="$data/rabbitmq" RABBIT_PORT=$rabbit_port
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

echo "== building (release profile for the gateway and the load generator)"
bin=$("$root/deploy/rocketmq/build.sh")
(cd "$root" && cargo build --release --locked -q -p proxy --bin amqp-gateway -p benches --bin bench)
release="$CARGO_TARGET_DIR/release"

# Fresh stores every time: earlier runs' backlogs would weigh on this one.
for pidfile in "$data"/gateway-*.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
NAMESRV_PORT=$NAMESRV_PORT BROKER_PORT=$BROKER_PORT ROCKETMQ_DATA="$ROCKETMQ_DATA" \
  "$root/deploy/rocketmq/stop.sh" >/dev/null 2>&1 || true
"$root/deploy/rabbitmq/stop.sh" >/dev/null 2>&1 || true
rm -rf "$data"
mkdir -p "$data/logs"
cleanup() {
  [ -n "${scraper:-}" ] && kill "$scraper" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && return
  for pidfile in "$data"/gateway-*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  "$root/deploy/rocketmq/stop.sh" >/dev/null 2>&1 || true
  "$root/deploy/rabbitmq/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== starting RocketMQ, three gateways and RabbitMQ"
ROCKETMQ_BIN="$bin" "$root/deploy/rocketmq/start.sh"
start_gateway() { # name port upstream [meta store name]
  AMQP_GATEWAY_LISTEN="127.0.0.1:$2" \
  AMQP_GATEWAY_MANAGEMENT_LISTEN="127.0.0.1:$(($2 + 20000))" \
  AMQP_GATEWAY_PROMETHEUS_LISTEN="127.0.0.1:$(($2 + 21000))" \
  AMQP_GATEWAY_META_URL="sqlite:$data/meta-${4:-$1}.db" \
  AMQP_GATEWAY_QUEUES_PER_TOPIC="${QUEUES_PER_TOPIC:-1}" \
  AMQP_GATEWAY_NAME_SERVER="127.0.0.1:$NAMESRV_PORT" \
  AMQP_GATEWAY_UPSTREAM="$3" \
  AMQP_GATEWAY_HEALTH_LISTEN="127.0.0.1:$(($2 + 10000))" \
  RUST_LOG="${RUST_LOG:-warn}" \
    nohup "$release/amqp-gateway" >"$data/logs/gateway-$1.log" 2>&1 &
  echo $! >"$data/gateway-$1.pid"
  for _ in $(seq 1 300); do
    answers "$2" && { echo "gateway ($3) on 127.0.0.1:$2, pid $(cat "$data/gateway-$1.pid")"; return; }
    sleep 0.1
  done
  echo "gateway ($3) did not start; see $data/logs/gateway-$1.log" >&2
  tail -n 20 "$data/logs/gateway-$1.log" >&2
  exit 1
}
start_gateway rocketmq "$gateway_port" rocketmq
start_gateway rocketmq-2 "$second_port" rocketmq rocketmq
start_gateway null "$null_port" null
"$root/deploy/rabbitmq/start.sh"
rabbit_pid=$(cat "$data/rabbitmq/rabbitmq.pid")

machine="Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), \
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); \
$(date -u +%Y-%m-%d); gateway $(git -C "$root" rev-parse --short HEAD) (release), \
rocketmq-rust 1.0.0 (ASYNC_FLUSH), RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null)."
echo "== $machine"
if [ -n "${SCRAPE_EVERY:-}" ]; then
  echo "== scraping http://127.0.0.1:$((gateway_port + 21000))/metrics every ${SCRAPE_EVERY} s"
  (while sleep "$SCRAPE_EVERY"; do
     curl -s -o /dev/null "http://127.0.0.1:$((gateway_port + 21000))/metrics"
   done) &
  scraper=$!
fi
"$release/bench" \
  --gateway "127.0.0.1:$gateway_port" --gateway-pids "$(cat "$data/gateway-rocketmq.pid")" \
  --gateway2 "127.0.0.1:$second_port" --gateway2-pids "$(cat "$data/gateway-rocketmq-2.pid")" \
  --rocketmq-pids "$(cat "$ROCKETMQ_DATA/broker.pid"),$(cat "$ROCKETMQ_DATA/namesrv.pid")" \
  --null "127.0.0.1:$null_port" --null-pids "$(cat "$data/gateway-null.pid")" \
  --rabbitmq "127.0.0.1:$rabbit_port" --rabbitmq-pids "$rabbit_pid" \
  --name-server "127.0.0.1:$NAMESRV_PORT" \
  --seconds "${SECONDS_PER_RUN:-10}" --connections "${CONNECTIONS:-1000}" \
  --only "${ONLY:-1,2,3,4,5,6}" ${TARGETS:+--targets "$TARGETS"} \
  --machine "$machine" --out "$out"

#!/usr/bin/env bash
# Publish-only comparison, one invocation, same machine: the gateway (on the
# real RocketMQ) and RabbitMQ 3.10, 1 KB persistent messages with confirms,
# windows 1 / 100 / 1000. Prints a markdown table with msg/s, confirm latency,
# server CPU per message (from /proc) and the gateway/RabbitMQ ratio.
# The full harness (end-to-end, fan-out, many connections, direct RocketMQ,
# null upstream, chart) is the benchmarks issue; this is its first row.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
messages="${MESSAGES:-10000}"
cargo build --locked -q -p benches --bin publish-probe
probe="$CARGO_TARGET_DIR/debug/publish-probe"
source "$root/benches/common.sh"

run() { # name url window "front pids" "store pids"
  local name=$1 url=$2 window=$3 front=$4 store=$5
  local n=$messages; [ "$window" = 1 ] && n=$((messages / 5))
  local f0 s0 f1 s1 line
  f0=$(ticks $front); s0=$(ticks $store)
  line=$("$probe" --url "$url" --messages "$n" --window "$window" --queue "bench.compare" 2>/dev/null)
  f1=$(ticks $front); s1=$(ticks $store)
  local rate p50 p99
  rate=$(field msg_per_s "$line")
  p50=$(field confirm_p50_ms "$line")
  p99=$(field confirm_p99_ms "$line")
  echo "$name|$window|$rate|$p50|$p99|$(per_msg $((f1 - f0)) "$n")|$(per_msg $((s1 - s0)) "$n")"
}

echo "| target | window | msg/s | confirm p50 ms | confirm p99 ms | front CPU µs/msg | store CPU µs/msg |"
echo "|---|---|---|---|---|---|---|"
declare -A rates
for w in 1 100 1000; do
  g=$(run gateway "$gateway_url" "$w" "${gateway_pids[*]}" "${rocketmq_pids[*]}")
  r=$(run rabbitmq "$rabbit_url" "$w" "${rabbit_pids[*]}" "")
  for row in "$g" "$r"; do
    IFS='|' read -r n win rate p50 p99 front store <<<"$row"
    echo "| $n | $win | $rate | $p50 | $p99 | $front | $store |"
    rates[$n$w]=$rate
  done
done
echo
for w in 1 100 1000; do
  awk -v g="${rates[gateway$w]}" -v r="${rates[rabbitmq$w]}" -v w="$w" 'BEGIN{printf "window %s: gateway/RabbitMQ = %.2f\n", w, g / r}'
done
echo "(front CPU: the gateway process, or RabbitMQ's Erlang VM; store CPU: RocketMQ's broker and name server)"

#!/usr/bin/env bash
# Consume comparison, one invocation, same machine: the gateway (on the real
# RocketMQ) and RabbitMQ 3.10 each drain a queue pre-filled with 1 KB
# persistent messages, one consumer acking every message, prefetch 1 / 100 /
# 1000, then no-ack. Prints a markdown table with deliveries/s, server CPU per
# delivery (from /proc, around the drain only) and the gateway/RabbitMQ ratio.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
messages="${MESSAGES:-20000}"
cargo build --locked -q -p benches --bin consume-probe
probe="$CARGO_TARGET_DIR/debug/consume-probe"
source "$root/benches/common.sh"

run() { # name url prefetch no_ack "front pids" "store pids"
  local name=$1 url=$2 prefetch=$3 no_ack=$4 front=$5 store=$6
  local n=$messages; [ "$prefetch" = 1 ] && n=$((messages / 4))
  local flags=(--url "$url" --messages "$n" --prefetch "$prefetch" --queue bench.consume)
  [ "$no_ack" = yes ] && flags+=(--no-ack)
  local f0 s0 f1 s1 line
  "$probe" "${flags[@]}" --fill-only >/dev/null 2>&1
  sleep 0.3 # stored messages become readable a moment after their confirm
  f0=$(ticks $front); s0=$(ticks $store)
  line=$("$probe" "${flags[@]}" --drain-only 2>/dev/null)
  f1=$(ticks $front); s1=$(ticks $store)
  echo "$name|$prefetch|$no_ack|$(field deliveries_per_s "$line")|$(per_msg $((f1 - f0)) "$n")|$(per_msg $((s1 - s0)) "$n")"
}

echo "| target | prefetch | no-ack | deliveries/s | front CPU µs/msg | store CPU µs/msg |"
echo "|---|---|---|---|---|---|"
declare -A rates
for case in "1 no" "100 no" "1000 no" "1000 yes"; do
  read -r p a <<<"$case"
  g=$(run gateway "$gateway_url" "$p" "$a" "${gateway_pids[*]}" "${rocketmq_pids[*]}")
  r=$(run rabbitmq "$rabbit_url" "$p" "$a" "${rabbit_pids[*]}" "")
  for row in "$g" "$r"; do
    IFS='|' read -r n pf na rate front store <<<"$row"
    echo "| $n | $pf | $na | $rate | $front | $store |"
    rates[$n$p$a]=$rate
  done
done
echo
for case in "1 no" "100 no" "1000 no" "1000 yes"; do
  read -r p a <<<"$case"
  awk -v g="${rates[gateway$p$a]}" -v r="${rates[rabbitmq$p$a]}" -v c="prefetch $p no-ack $a" \
    'BEGIN{printf "%s: gateway/RabbitMQ = %.2f\n", c, g / r}'
done
echo "(front CPU: the gateway process, or RabbitMQ's Erlang VM; store CPU: RocketMQ's broker and name server)"

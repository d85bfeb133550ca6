#!/usr/bin/env bash
# Profiles the gateway process while one scenario runs: starts run.sh for
# that scenario on the gateway alone, records `perf` for PERF_SECONDS
# once the scenario is under way, and prints the hottest functions (self time,
# then inclusive), and a flamegraph if inferno is installed. The recording
# stays in $out/perf.data for `perf report`.
#
#   benches/profile.sh 2          # end to end (scenario numbers as in run.sh)
#   TARGET=gateway-null benches/profile.sh 1
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scenario="${1:-2}"
target="${TARGET:-gateway}"
data="${BENCH_DATA:-$HOME/.cache/amqp-gw/bench-data}"
out="${PROFILE_OUT:-/tmp/amqp-gw-profile}"
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}" ONLY="$scenario" TARGETS="$target" \
  BENCH_OUT="$out" "$root/benches/run.sh" >"$out/run.log" 2>&1 &
runner=$!
# The load starts with the first progress line of the scenario.
until grep -q " on $target: " "$out/run.log" 2>/dev/null; do
  kill -0 "$runner" 2>/dev/null || { tail -n 20 "$out/run.log" >&2; exit 1; }
  sleep 0.5
done
pidfile="$data/gateway-rocketmq.pid"
[ "$target" = gateway-null ] && pidfile="$data/gateway-null.pid"
perf record -F 499 --call-graph dwarf,16384 -p "$(cat "$pidfile")" -o "$out/perf.data" -- sleep "${PERF_SECONDS:-8}" 2>/dev/null
wait "$runner" || true
set +o pipefail # head ends the reports early
echo "== self time"
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | cut -c1-150 | head -30
echo "== inclusive (children)"
perf report -i "$out/perf.data" --children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | grep -E 'proxy|rocketmq|tokio::net|codec' | sed -E 's/ +- +- *$//' | cut -c1-150 | head -30
# A flamegraph when inferno is installed (cargo install inferno).
PATH="$PATH:$HOME/.cache/amqp-gw/tools/bin:$HOME/.cargo/bin"
if command -v inferno-flamegraph >/dev/null && command -v inferno-collapse-perf >/dev/null; then
  perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$out/flamegraph.svg"
  echo "flamegraph: $out/flamegraph.svg"
else
  echo "(no flamegraph: cargo install inferno)"
fi
echo "(run log: $out/run.log)"

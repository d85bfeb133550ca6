#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (README's test command: 20 s each),
# installing cargo-fuzz if needed. A crash fails the run and leaves its input
# in fuzz/artifacts/<target>/. New inputs found go to a scratch corpus, not
# to the committed seeds.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds="${1:-20}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames field_tables content connection)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/amqp-gw/fuzz-target}"
scratch="${FUZZ_SCRATCH:-$CARGO_TARGET_DIR/corpus}"
cd "$here"
cargo fuzz build -s none -O
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  out=$(cargo fuzz run -s none -O "$target" "$scratch/$target" "corpus/$target" -- \
          -max_total_time="$seconds" -print_final_stats=1 2>&1) || { echo "$out" | tail -n 40; exit 1; }
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' <<<"$out" | grep -oE '[0-9]+$')
  echo "fuzz $target: $runs executions in ${seconds} s, no crash"
done

#!/usr/bin/env bash
# Builds the rocketmq-rust 1.0.0 name server and broker (pinned in Cargo.lock)
# inside this workspace, so they share every common dependency with the
# gateway's RocketMQ client, and builds the gateway in the same run.
# Prints the directory holding the binaries on stdout; cargo's output goes to stderr.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amqp-gw/target}"
cd "$root"
cargo build --locked -p rocketmq-servers -p rocketmq-namesrv -p rocketmq-broker -p proxy --lib --bins >&2
echo "$CARGO_TARGET_DIR/debug"

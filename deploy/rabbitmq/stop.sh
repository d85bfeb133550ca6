#!/usr/bin/env bash
# Stops the RabbitMQ started by start.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data="${RABBITMQ_DATA:-$root/data/rabbitmq}"
# No data directory: nothing of ours runs (and rabbitmqctl could not write its cookie there).
[ -d "$data" ] || exit 0
export HOME="$data"
# rabbitmqctl leaves an erl_crash.dump in the working directory when no node answers.
export ERL_CRASH_DUMP="${TMPDIR:-/tmp}/rabbitmqctl-erl_crash.dump"
/usr/lib/rabbitmq/bin/rabbitmqctl -n "${RABBIT_NODE:-gwref@localhost}" stop >/dev/null 2>&1 && echo "RabbitMQ stopped" || true

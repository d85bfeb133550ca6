#!/usr/bin/env bash
# Stops the RabbitMQ started by start.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data="${RABBITMQ_DATA:-$root/data/rabbitmq}"
export HOME="$data"
/usr/lib/rabbitmq/bin/rabbitmqctl -n "${RABBIT_NODE:-gwref@localhost}" stop >/dev/null 2>&1 && echo "RabbitMQ stopped" || true

#!/usr/bin/env bash
# Starts a RabbitMQ 3.10 (Debian's rabbitmq-server) on loopback as the
# reference for behaviour and speed, installing it if needed. Idempotent.
#
#   RABBITMQ_DATA  data directory (default <repo>/data/rabbitmq)
#   RABBIT_PORT    AMQP port (default 5673, beside the gateway's 5672)
#   RABBIT_NODE    Erlang node name (default gwref@localhost)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data="${RABBITMQ_DATA:-$root/data/rabbitmq}"
port="${RABBIT_PORT:-5673}"
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
if answers "$port"; then
  echo "RabbitMQ already answers on 127.0.0.1:$port"
  exit 0
fi
mkdir -p "$data"/{mnesia,log}
export HOME="$data" RABBITMQ_NODENAME="${RABBIT_NODE:-gwref@localhost}" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + 20000)) ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_MNESIA_BASE="$data/mnesia" RABBITMQ_LOG_BASE="$data/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$data/enabled_plugins" RABBITMQ_PID_FILE="$data/rabbitmq.pid"
echo "[]." >"$data/enabled_plugins"
nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$data/log/stdout.log" 2>&1 &
for _ in $(seq 1 600); do
  answers "$port" && { echo "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server) on 127.0.0.1:$port"; exit 0; }
  sleep 0.1
done
echo "RabbitMQ did not start; see $data/log" >&2
tail -n 20 "$data/log/stdout.log" >&2
exit 1

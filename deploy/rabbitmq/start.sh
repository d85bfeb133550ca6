#!/usr/bin/env bash
# Starts a RabbitMQ 3.10 (Debian's rabbitmq-server) on loopback as the
# reference for behaviour and speed, installing it if needed. Idempotent.
#
#   RABBITMQ_DATA  data directory (default <repo>/data/rabbitmq)
#   RABBIT_PORT    AMQP port (default 5673, beside the gateway's 5672)
#   RABBIT_DIST_PORT  Erlang distribution port (default RABBIT_PORT + 20000;
#                  keep it below the ephemeral range, 32768 on Linux, or a
#                  client socket that happens to hold it stops the start)
#   RABBIT_NODE    Erlang node name (default gwref@localhost)
#   RABBIT_MANAGEMENT_PORT  with it, the management and Prometheus plugins
#                  are on: the API on this port, /metrics on RABBIT_PROMETHEUS_PORT
#                  (default the API's port + 20)
#   RABBIT_TLS_PORT with it, an amqps listener on this port with the test
#                  certificates of proxy/tests/certs (client certificates of
#                  their CA verified, not required), as the gateway's AMQPS_PORT
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
  RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="${RABBIT_DIST_PORT:-$((port + 20000))}" ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_MNESIA_BASE="$data/mnesia" RABBITMQ_LOG_BASE="$data/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$data/enabled_plugins" RABBITMQ_PID_FILE="$data/rabbitmq.pid"
: >"$data/rabbitmq.conf"
if [ -n "${RABBIT_MANAGEMENT_PORT:-}" ]; then
  echo "[rabbitmq_management,rabbitmq_prometheus]." >"$data/enabled_plugins"
  cat >>"$data/rabbitmq.conf" <<CONF
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MANAGEMENT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = ${RABBIT_PROMETHEUS_PORT:-$((RABBIT_MANAGEMENT_PORT + 20))}
CONF
  wait_for=$RABBIT_MANAGEMENT_PORT
else
  echo "[]." >"$data/enabled_plugins"
  wait_for=$port
fi
if [ -n "${RABBIT_TLS_PORT:-}" ]; then
  certs="$root/proxy/tests/certs"
  cat >>"$data/rabbitmq.conf" <<CONF
listeners.ssl.1 = 127.0.0.1:$RABBIT_TLS_PORT
ssl_options.cacertfile = $certs/ca.pem
ssl_options.certfile = $certs/server.pem
ssl_options.keyfile = $certs/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
fi
export RABBITMQ_CONFIG_FILE="$data/rabbitmq.conf"
nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$data/log/stdout.log" 2>&1 &
for _ in $(seq 1 600); do
  answers "$port" && answers "$wait_for" && { [ -z "${RABBIT_TLS_PORT:-}" ] || answers "$RABBIT_TLS_PORT"; } && { echo "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server) on 127.0.0.1:$port"; exit 0; }
  sleep 0.1
done
echo "RabbitMQ did not start; see $data/log" >&2
tail -n 20 "$data/log/stdout.log" >&2
exit 1

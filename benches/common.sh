# Shared by the compare-*.sh scripts: bring both targets up and read CPU time.
# Sourced, not run. Expects $root and $CARGO_TARGET_DIR.

SMOKE_MESSAGES=0 "$root/deploy/up.sh" >/dev/null
"$root/deploy/rabbitmq/start.sh" >/dev/null

ticks() { # summed utime+stime of the given pids, in clock ticks
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
gateway_pids=("$(cat "$root/data/gateway.pid")")
rocketmq_pids=("$(cat "$root/data/rocketmq/broker.pid")" "$(cat "$root/data/rocketmq/namesrv.pid")")
rabbit_pids=("$(cat "${RABBITMQ_DATA:-$root/data/rabbitmq}/rabbitmq.pid")")
gateway_url="amqp://guest:guest@127.0.0.1:5672/%2f"
rabbit_url="amqp://guest:guest@127.0.0.1:5673/%2f"

per_msg() { awk -v d="$1" -v hz="$hz" -v n="$2" 'BEGIN{printf "%.0f", d / hz * 1e6 / n}'; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/" <<<"$2"; }

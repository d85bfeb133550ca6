#!/usr/bin/env bash
# Starts the rocketmq-rust name server and broker on loopback, each once:
# a server already answering on its port is left as it is.
#
#   ROCKETMQ_DATA   data directory (default: <repo>/data/rocketmq)
#   NAMESRV_PORT    name server port (default 9876)
#   BROKER_PORT     broker port (default 10911; it also uses BROKER_PORT+1 for HA)
#   FLUSH           async (default, RocketMQ's default) or sync (fsync before confirming)
#   ROCKETMQ_BIN    directory holding already-built binaries (skips build.sh)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
data="${ROCKETMQ_DATA:-$root/data/rocketmq}"
namesrv_port="${NAMESRV_PORT:-9876}"
broker_port="${BROKER_PORT:-10911}"
flush="${FLUSH:-async}"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port, seconds, log, pid
  for _ in $(seq 1 $(( $2 * 10 ))); do
    answers "$1" && return 0
    if ! kill -0 "$4" 2>/dev/null; then
      echo "the process for 127.0.0.1:$1 exited; last lines of $3:" >&2
      tail -n 30 "$3" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1 after $2 s; last lines of $3:" >&2
  tail -n 30 "$3" >&2 || true
  return 1
}

bin="${ROCKETMQ_BIN:-}"
[ -n "$bin" ] || bin=$("$here/build.sh")
mkdir -p "$data/home" "$data/store" "$data/logs"

if answers "$namesrv_port"; then
  echo "name server already answers on 127.0.0.1:$namesrv_port"
else
  ROCKETMQ_HOME="$data/home" nohup "$bin/rocketmq-namesrv-rust" \
    --rocketmqHome "$data/home" --bindAddress 127.0.0.1 --listenPort "$namesrv_port" \
    >"$data/logs/namesrv.log" 2>&1 &
  echo $! >"$data/namesrv.pid"
  wait_for "$namesrv_port" 60 "$data/logs/namesrv.log" "$(cat "$data/namesrv.pid")"
  echo "name server started on 127.0.0.1:$namesrv_port (pid $(cat "$data/namesrv.pid"))"
fi

if answers "$broker_port"; then
  echo "broker already answers on 127.0.0.1:$broker_port"
else
  if [ "$flush" = sync ]; then flush_type=SYNC_FLUSH; else flush_type=ASYNC_FLUSH; fi
  # bindAddress stays unset: setting it to 127.0.0.1 makes this broker fail to
  # start. brokerIP1/2 and haListenAddress keep clients and HA on loopback.
  cat >"$data/broker.conf" <<CONF
brokerClusterName=AmqpGatewayCluster
brokerName=broker-a
brokerId=0
namesrvAddr=127.0.0.1:$namesrv_port
listenPort=$broker_port
haListenPort=$((broker_port + 1))
brokerIP1=127.0.0.1
brokerIP2=127.0.0.1
haListenAddress=127.0.0.1
storePathRootDir=$data/store
autoCreateTopicEnable=true
autoCreateSubscriptionGroup=true
flushDiskType=$flush_type
# 128 MiB bodies (RabbitMQ's limit) plus room for properties. The broker
# refuses to start unless its timer pipeline can hold one such message.
# (Its dispatch once copied this much per 64 messages when behind: fixed by
# patches/rocketmq-store-1.0.0/reput-window.patch, see build.sh.)
# ROCKETMQ_MAX_MESSAGE_SIZE changes it, for experiments.
maxMessageSize=${ROCKETMQ_MAX_MESSAGE_SIZE:-135266304}
timerPipelineQueueBytes=$((2 * ${ROCKETMQ_MAX_MESSAGE_SIZE:-135266304}))
enablePropertyFilter=true
enableLmq=true
enableMultiDispatch=true
# After taking a send, the commit log's append worker waits this long for
# more to write together; tokio's timer rounds the wait up to a whole
# millisecond, so with RocketMQ's default of 50 every send waited ~1 ms when
# sends come one at a time. 0 writes what is queued at once (one-at-a-time
# publishing 4x faster, docs/benchmarks.md, "A single send").
commitLogMicroBatchMaxWaitMicros=${COMMITLOG_BATCH_WAIT_US:-0}
# One read may carry 256 messages (RocketMQ's default is 32 when they are in
# memory, 8 from disk): a queue is read one request at a time, so the batch
# size bounds a consumer's rate (docs/benchmarks.md).
maxTransferCountOnMessageInMemory=256
maxTransferBytesOnMessageInMemory=1048576
maxTransferCountOnMessageInDisk=64
maxTransferBytesOnMessageInDisk=262144
CONF
  ROCKETMQ_HOME="$data/home" nohup "$bin/rocketmq-broker-rust" -c "$data/broker.conf" \
    >"$data/logs/broker.log" 2>&1 &
  echo $! >"$data/broker.pid"
  wait_for "$broker_port" 120 "$data/logs/broker.log" "$(cat "$data/broker.pid")"
  # The broker answers before it has registered with the name server.
  for _ in $(seq 1 100); do
    grep -qi "started successfully\|register broker.*success" "$data/logs/broker.log" && break
    sleep 0.2
  done
  echo "broker started on 127.0.0.1:$broker_port (pid $(cat "$data/broker.pid"), flush $flush_type)"
fi

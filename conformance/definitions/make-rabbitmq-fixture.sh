#!/usr/bin/env bash
# Builds rabbitmq-3.10.json: a realistic topology created on a real RabbitMQ
# 3.10 (Debian package, deploy/rabbitmq/start.sh) with rabbitmqctl and pika,
# then exported with `rabbitmqctl export_definitions`. The import/export test
# reads the result; re-run this to regenerate it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data="${RABBITMQ_DATA:-$root/data/rabbitmq}"
"$root/deploy/rabbitmq/start.sh" >/dev/null
ctl() { HOME="$data" /usr/lib/rabbitmq/bin/rabbitmqctl -n gwref@localhost -q "$@"; }

for vhost in shop billing; do ctl add_vhost "$vhost" 2>/dev/null || true; done
ctl add_user orders s3cret-orders 2>/dev/null || true
ctl add_user billing-app b1lling 2>/dev/null || true
ctl add_user auditor read-only 2>/dev/null || true
ctl set_user_tags auditor monitoring
ctl set_permissions -p shop orders '^(orders|shop)\..*' '^(orders|shop)\..*' '.*'
ctl set_permissions -p billing billing-app '.*' '.*' '.*'
ctl set_permissions -p shop auditor '^$' '^$' '.*'
ctl set_permissions -p shop guest '.*' '.*' '.*'
ctl set_permissions -p billing guest '.*' '.*' '.*'
ctl set_policy -p shop audit-limit '^orders\.audit$' '{"max-length-bytes":1048576}' --apply-to queues

python=$("$root/deploy/python-env.sh")
"$python" - <<'PY'
import pika

def channel(vhost):
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:5673/{vhost}")
    return pika.BlockingConnection(params).channel()

ch = channel("%2F")
for q in ("bench.consume", "bench.compare", "bench.publish"):  # left by benchmarks
    ch.queue_delete(q)

ch = channel("shop")
ch.exchange_declare("shop.events", "topic", durable=True)
ch.exchange_declare("shop.fanout", "fanout", durable=True)
ch.exchange_declare("shop.direct", "direct", durable=True)
ch.exchange_declare("shop.headers", "headers", durable=True)
ch.exchange_declare("shop.internal", "topic", durable=True, internal=True)
ch.exchange_declare("shop.dlx", "direct", durable=True)
ch.exchange_bind("shop.internal", "shop.events", "orders.#")
ch.queue_declare("orders.created", durable=True,
                 arguments={"x-dead-letter-exchange": "shop.dlx", "x-dead-letter-routing-key": "dead.orders",
                            "x-message-ttl": 600000})
ch.queue_declare("orders.audit", durable=True, arguments={"x-max-length": 10000, "x-queue-type": "classic"})
ch.queue_declare("orders.dead", durable=True)
ch.queue_declare("shop.notifications", durable=False, auto_delete=False, arguments={"x-expires": 3600000})
ch.queue_bind("orders.created", "shop.events", "orders.created.*")
ch.queue_bind("orders.audit", "shop.internal", "orders.#")
ch.queue_bind("orders.dead", "shop.dlx", "dead.orders")
ch.queue_bind("shop.notifications", "shop.fanout", "")
ch.queue_bind("shop.notifications", "shop.headers", "",
              arguments={"x-match": "any", "kind": "email", "priority": 5})
ch.queue_bind("orders.created", "shop.direct", "created")

ch = channel("billing")
ch.exchange_declare("invoices", "direct", durable=True)
ch.queue_declare("invoices.pdf", durable=True, arguments={"x-queue-type": "quorum"})
ch.queue_bind("invoices.pdf", "invoices", "pdf")
PY
ctl export_definitions "$root/conformance/definitions/rabbitmq-3.10.json"
echo "wrote conformance/definitions/rabbitmq-3.10.json"

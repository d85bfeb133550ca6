"""Smoke job with an unmodified pika client.

Publishes N persistent 1 KB messages with publisher confirms to a topic
exchange bound to two queues, then checks that each queue's message_count
(queue.declare-ok, passive) is exactly the number routed to it.
Exit status 0 only if every publish was confirmed and both counts are exact.
"""
import os
import sys
import time

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
N = int(os.environ.get("SMOKE_MESSAGES", "10000"))
EXCHANGE = "smoke.orders"
QUEUES = {"smoke.all-orders": "orders.#", "smoke.eu-orders": "orders.*.eu"}
KEYS = ["orders.created.eu", "orders.created.us", "orders.paid.eu", "orders.paid.us.late"]


def routed(key, pattern):
    words, pat = key.split("."), pattern.split(".")

    def match(w, p):
        if not p:
            return not w
        if p[0] == "#":
            return any(match(w[i:], p[1:]) for i in range(len(w) + 1))
        return bool(w) and (p[0] == "*" or p[0] == w[0]) and match(w[1:], p[1:])

    return match(words, pat)


def main():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, "topic", durable=True)
    for queue, pattern in QUEUES.items():
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, EXCHANGE, pattern)
        ch.queue_purge(queue)
    ch.confirm_delivery()
    expected = {q: 0 for q in QUEUES}
    body = b"x" * 1024
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/octet-stream")
    started = time.time()
    for i in range(N):
        key = KEYS[i % len(KEYS)]
        # With confirms on, basic_publish returns only after the gateway's ack
        # and raises on a nack: every message below was stored in RocketMQ.
        ch.basic_publish(EXCHANGE, key, body, props)
        for queue, pattern in QUEUES.items():
            expected[queue] += routed(key, pattern)
        if (i + 1) % 2000 == 0:
            print(f"  {i + 1} published and confirmed", flush=True)
    elapsed = time.time() - started
    print(f"{N} persistent messages confirmed in {elapsed:.1f} s ({N / elapsed:.0f} msg/s, one at a time)")
    ok = True
    for queue in QUEUES:
        count = None
        for _ in range(40):
            count = ch.queue_declare(queue, durable=True, passive=True).method.message_count
            if count == expected[queue]:
                break
            time.sleep(0.05)
        status = "exact" if count == expected[queue] else "WRONG"
        ok &= count == expected[queue]
        print(f"  {queue:<20} routed {expected[queue]:>6}  message_count {count:>6}  {status}")
    conn.close()
    print("smoke: 1 passed, 0 failed" if ok else "smoke: 0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

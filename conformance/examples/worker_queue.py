"""RabbitMQ's "work queues" pattern with an unmodified pika client.

A publisher sends N persistent tasks with publisher confirms to a durable
queue; two worker processes consume it with prefetch_count=1 and manual acks,
exactly as in RabbitMQ's tutorial 2 (new_task.py / worker.py): each "works" a
little per task, then acks. Checks that every task was done exactly once and
that both workers shared the load fairly (prefetch 1: whoever is free gets
the next task). Works against any AMQP 0-9-1 broker (AMQP_URL).
Exit status 0 only if all checks pass.
"""
import multiprocessing
import os
import sys
import time
import uuid

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TASKS = int(os.environ.get("WORKER_TASKS", "400"))
IDLE = 3.0  # a worker stops after this long without a task


def worker(name, queue, results):
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    ch.basic_qos(prefetch_count=1)
    done = []
    last = [time.monotonic()]

    def callback(ch, method, properties, body):
        # One dot = one millisecond of "work", as the tutorial's sleep per dot.
        time.sleep(body.count(b".") / 1000)
        done.append(body.split(b" ")[0].decode())
        last[0] = time.monotonic()
        ch.basic_ack(delivery_tag=method.delivery_tag)

    ch.basic_consume(queue=queue, on_message_callback=callback)
    while time.monotonic() - last[0] < IDLE:
        conn.process_data_events(time_limit=0.2)
    conn.close()
    results.put((name, done))


def main():
    queue = f"task_queue.{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    results = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=worker, args=(f"worker-{i}", queue, results))
        for i in (1, 2)
    ]
    for w in workers:
        w.start()
    time.sleep(0.5)  # both workers subscribed before the first task

    ch.confirm_delivery()
    started = time.monotonic()
    for i in range(TASKS):
        body = f"{i} " + "." * (1 + i % 3)
        ch.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    published = time.monotonic() - started

    per_worker = dict(results.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=10)
    ch.queue_delete(queue=queue)
    conn.close()

    everything = [t for done in per_worker.values() for t in done]
    counts = {name: len(done) for name, done in per_worker.items()}
    print(f"{TASKS} tasks published with confirms in {published:.2f} s; done per worker: {counts}")
    failures = []
    if sorted(everything, key=int) != [str(i) for i in range(TASKS)]:
        missing = set(map(str, range(TASKS))) - set(everything)
        twice = len(everything) - len(set(everything))
        failures.append(f"tasks missing: {len(missing)}, done twice: {twice}")
    if min(counts.values()) < TASKS // 4:
        failures.append(f"unfair split with prefetch 1: {counts}")
    for f in failures:
        print("FAIL:", f)
    print("worker queue:", "PASS" if not failures else "FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

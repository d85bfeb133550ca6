#!/usr/bin/env python3
"""Kills parts of a running stack under load and counts what clients saw.

A pika publisher sends persistent messages with confirms, each with a unique
id, and sends again whatever was not confirmed (at-least-once, as careful
applications do); a pika consumer acks each delivery. Meanwhile faults are
injected one after another: kill -9 of the gateway, of the RocketMQ broker,
of the name server, and SIGSTOP of the broker for a few seconds; each killed
process is started again by the stack's own scripts.

Reported: messages confirmed but never delivered (must be 0), duplicates
delivered, nacks and closed channels the publisher saw, and per fault the
seconds from the restarted part listening again to the first confirmed
publish and to the first delivery.

It drives the stack deploy/up.sh started (same environment: AMQP_GW_DATA,
AMQP_PORT, NAMESRV_PORT, BROKER_PORT, ...); benches/chaos.sh sets one up.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
# Reconnection attempts wait this long between tries.
RETRY = 0.1
# A part that is not confirming again this long after its restart fails the run.
RECOVERY_BOUND = 90.0


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.confirmed = {}  # id -> confirm time
        self.delivered = {}  # id -> times delivered
        self.deliveries = []  # delivery times (monotonic)
        self.confirm_times = []
        self.nacks = 0
        self.publish_failures = 0
        self.consume_failures = 0
        self.errors = {}

    def error(self, side, e):
        key = f"{side}: {type(e).__name__}: {str(e)[:80]}"
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1


def connect(url):
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 60
    params.heartbeat = 10
    return pika.BlockingConnection(params)


def publisher(url, queue, tally, stop):
    seq = 0
    pending = None  # the id not confirmed yet, sent again after a failure
    while not stop.is_set():
        try:
            conn = connect(url)
            ch = conn.channel()
            ch.queue_declare(queue, durable=True)
            ch.confirm_delivery()
            while not stop.is_set():
                if pending is None:
                    seq += 1
                    pending = seq
                try:
                    ch.basic_publish("", queue, str(pending).encode(),
                                     pika.BasicProperties(delivery_mode=2, message_id=str(pending)),
                                     mandatory=True)
                except pika.exceptions.NackError:
                    with tally.lock:
                        tally.nacks += 1
                    time.sleep(RETRY)
                    continue
                now = time.monotonic()
                with tally.lock:
                    tally.confirmed[pending] = now
                    tally.confirm_times.append(now)
                pending = None
            conn.close()
        except Exception as e:  # any failure: connect again, send the pending id again
            tally.error("publisher", e)
            with tally.lock:
                tally.publish_failures += 1
            time.sleep(RETRY)


def consumer(url, queue, tally, stop):
    while not stop.is_set():
        try:
            conn = connect(url)
            ch = conn.channel()
            ch.queue_declare(queue, durable=True)
            ch.basic_qos(prefetch_count=100)
            for method, props, body in ch.consume(queue, inactivity_timeout=0.5):
                if stop.is_set():
                    break
                if method is None:
                    continue
                mid = int(body)
                with tally.lock:
                    tally.delivered[mid] = tally.delivered.get(mid, 0) + 1
                    tally.deliveries.append(time.monotonic())
                ch.basic_ack(method.delivery_tag)
            conn.close()
        except Exception as e:
            tally.error("consumer", e)
            with tally.lock:
                tally.consume_failures += 1
            time.sleep(RETRY)


def answers(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Stack:
    """The parts of the stack deploy/up.sh started, by their pid files."""

    def __init__(self):
        self.data = Path(os.environ["AMQP_GW_DATA"])
        self.env = dict(os.environ, SMOKE_MESSAGES="0", ROCKETMQ_DATA=str(self.data / "rocketmq"))
        self.ports = {"gateway": int(os.environ["AMQP_PORT"]), "broker": int(os.environ["BROKER_PORT"]),
                      "namesrv": int(os.environ["NAMESRV_PORT"])}
        self.pidfiles = {"gateway": self.data / "gateway.pid",
                         "broker": self.data / "rocketmq" / "broker.pid",
                         "namesrv": self.data / "rocketmq" / "namesrv.pid"}

    def pid(self, part):
        return int(self.pidfiles[part].read_text())

    def kill(self, part, sig=signal.SIGKILL):
        pid = self.pid(part)
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and answers(self.ports[part]):
                time.sleep(0.05)

    def start(self, part):
        script = ROOT / "deploy" / ("up.sh" if part == "gateway" else "rocketmq/start.sh")
        subprocess.run([str(script)], env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=300)


def first_after(times, t):
    for x in times:
        if x > t:
            return x - t
    return None


def wait_steady(tally, since, seconds=60):
    """Until confirms and deliveries both happen after `since` (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with tally.lock:
            ok = (tally.confirm_times and tally.confirm_times[-1] > since
                  and tally.deliveries and tally.deliveries[-1] > since)
        if ok:
            return True
        time.sleep(0.1)
    return False


def inject(stack, tally, fault, pause, downtime):
    """One fault; returns its recovery figures."""
    part = {"kill-gateway": "gateway", "kill-broker": "broker", "kill-namesrv": "namesrv",
            "stop-broker": "broker"}[fault]
    hit = time.monotonic()
    if fault == "stop-broker":
        stack.kill(part, signal.SIGSTOP)
        time.sleep(pause)
        stack.kill(part, signal.SIGCONT)
    else:
        stack.kill(part)
        time.sleep(downtime)
        stack.start(part)
    back = time.monotonic()
    deadline = back + RECOVERY_BOUND
    publish = deliver = None
    while time.monotonic() < deadline and (publish is None or deliver is None):
        time.sleep(0.05)
        with tally.lock:
            publish = first_after(tally.confirm_times, back)
            deliver = first_after(tally.deliveries, back)
    return {"fault": fault, "down_s": round(back - hit, 2),
            "publish_s": None if publish is None else round(publish, 2),
            "deliver_s": None if deliver is None else round(deliver, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="faults of each kind")
    ap.add_argument("--faults", default="kill-gateway,kill-broker,kill-namesrv,stop-broker")
    ap.add_argument("--gap", type=float, default=3.0, help="seconds of steady traffic between faults")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds a stopped broker stays stopped")
    ap.add_argument("--downtime", type=float, default=5.0,
                    help="seconds a killed part stays down before it is started again (a big store's recovery)")
    ap.add_argument("--drain", type=float, default=60.0, help="bound on the final drain, seconds")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    stack = Stack()
    url = f"amqp://guest:guest@127.0.0.1:{stack.ports['gateway']}/%2F"
    queue = f"chaos-{int(time.time())}"
    tally, stop_publishing, stop_consuming = Tally(), threading.Event(), threading.Event()
    threads = [threading.Thread(target=publisher, args=(url, queue, tally, stop_publishing), daemon=True),
               threading.Thread(target=consumer, args=(url, queue, tally, stop_consuming), daemon=True)]
    for t in threads:
        t.start()
    results = []
    faults = args.faults.split(",")
    if not wait_steady(tally, time.monotonic()):
        sys.exit("no steady traffic to begin with")
    for r in range(args.rounds):
        for fault in faults:
            time.sleep(args.gap)
            result = inject(stack, tally, fault, args.pause, args.downtime)
            results.append(result)
            print(json.dumps(result), flush=True)
            if result["publish_s"] is None or result["deliver_s"] is None:
                print(f"not recovered within {RECOVERY_BOUND} s", file=sys.stderr)
                break
        else:
            continue
        break
    stop_publishing.set()
    threads[0].join(timeout=30)
    # Drain: until everything confirmed arrived, or nothing arrived for a while.
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        with tally.lock:
            missing = [m for m in tally.confirmed if m not in tally.delivered]
            last = tally.deliveries[-1] if tally.deliveries else 0
        if not missing or time.monotonic() - last > 15:
            break
        time.sleep(0.2)
    stop_consuming.set()
    threads[1].join(timeout=10)
    with tally.lock:
        lost = sorted(m for m in tally.confirmed if m not in tally.delivered)
        dups = sum(n - 1 for n in tally.delivered.values())
        summary = {
            "confirmed": len(tally.confirmed), "delivered": len(tally.delivered),
            "confirmed_lost": len(lost), "lost_ids": lost[:20],
            "duplicates": dups, "duplicate_pct": round(100.0 * dups / max(1, len(tally.delivered)), 2),
            "nacks": tally.nacks, "publisher_reconnects": tally.publish_failures,
            "consumer_reconnects": tally.consume_failures, "errors": tally.errors,
        }
    for fault in faults:
        mine = [r for r in results if r["fault"] == fault]
        for key in ("publish_s", "deliver_s"):
            values = sorted(r[key] for r in mine if r[key] is not None)
            if values:
                summary[f"{fault} {key}"] = {"n": len(values), "min": values[0],
                                             "median": values[len(values) // 2], "max": values[-1]}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "faults": results}, indent=1))
    recovered = all(r["publish_s"] is not None and r["deliver_s"] is not None for r in results)
    sys.exit(0 if not lost and recovered and len(results) == args.rounds * len(faults) else 1)


if __name__ == "__main__":
    main()

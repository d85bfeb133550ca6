#!/usr/bin/env python3
"""What the management API and the Prometheus endpoint cost: declares N
queues on a running gateway, then asks for /api/queues (every queue with its
counts, as rabbitmqadmin and monitoring tools do), /api/overview and
/metrics/per-object one request after another for a fixed time, and prints
requests per second and the mean time per request.

  api_cost.py --amqp 5682 --api 25682 --metrics 26682 --queues 1000 --seconds 20
"""
import argparse
import base64
import time
import urllib.request

import pika


def timed(url, seconds, auth):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    done, size, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with urllib.request.urlopen(request, timeout=60) as response:
            size = len(response.read())
        done += 1
    elapsed = time.perf_counter() - start
    return done / elapsed, elapsed / done * 1000, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amqp", type=int, required=True)
    ap.add_argument("--api", type=int, required=True)
    ap.add_argument("--metrics", type=int, required=True)
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", args.amqp))
    ch = conn.channel()
    for i in range(args.queues):
        ch.queue_declare(f"api-cost-{i:04}", durable=True)
    conn.close()
    print(f"| request ({args.queues} queues) | requests/s | ms per request | response bytes |")
    print("|---|---|---|---|")
    for label, url, auth in [
        ("GET /api/queues", f"http://127.0.0.1:{args.api}/api/queues", True),
        ("GET /api/overview", f"http://127.0.0.1:{args.api}/api/overview", True),
        ("GET /metrics (aggregated)", f"http://127.0.0.1:{args.metrics}/metrics", False),
        ("GET /metrics/per-object", f"http://127.0.0.1:{args.metrics}/metrics/per-object", False),
    ]:
        rate, ms, size = timed(url, args.seconds, auth)
        print(f"| {label} | {rate:,.1f} | {ms:,.1f} | {size:,} |")


if __name__ == "__main__":
    main()

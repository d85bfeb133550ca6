#!/usr/bin/env python3
"""The management API side by side with RabbitMQ 3.10's.

The same AMQP traffic goes to RabbitMQ (with its management plugin) and to
the gateway; then the same API requests go to both. For each object tools
read (../shared/operator-surface.md: rabbitmqadmin, the Rust client, Flower,
KEDA, ServiceControl) it compares which fields RabbitMQ gives that the
gateway does not, or gives with another JSON type, and the counts after the
traffic. Exit status 1 if a field tools need is missing or typed otherwise,
or a count differs.

  management_compare.py --gateway 5672,15672 --rabbitmq 5673,15673
"""
import argparse
import base64
import http.client
import json
import sys
import time
import urllib.error
import urllib.request

import pika

QUEUE = "compare-q"
CONNECTION = "compare-connection"

# Fields tools need (they fail without them), per object.
REQUIRED = {
    "overview": ["rabbitmq_version", "product_version", "cluster_name", "node",
                 "queue_totals.messages", "queue_totals.messages_ready",
                 "queue_totals.messages_unacknowledged", "object_totals.queues",
                 "object_totals.connections", "object_totals.channels",
                 "object_totals.consumers", "object_totals.exchanges", "listeners",
                 "message_stats"],
    "queue": ["name", "vhost", "type", "durable", "auto_delete", "exclusive", "arguments",
              "messages", "messages_ready", "messages_unacknowledged", "consumers",
              "state", "node"],
    "connection": ["name", "node", "protocol", "user", "vhost", "connected_at",
                   "client_properties", "peer_host", "peer_port", "channels"],
    "channel": ["number", "name", "connection_details.name", "connection_details.peer_host",
                "connection_details.peer_port", "vhost", "state", "consumer_count", "confirm",
                "prefetch_count", "messages_unacknowledged", "messages_unconfirmed"],
    "consumer": ["consumer_tag", "queue.name", "queue.vhost", "channel_details.name",
                 "channel_details.connection_name", "ack_required", "prefetch_count"],
    "exchange": ["name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"],
    "binding": ["source", "vhost", "destination", "destination_type", "routing_key",
                "arguments", "properties_key"],
    "node": ["name", "type", "running"],
    "vhost": ["name"],
    "user": ["name", "tags"],
    "permission": ["user", "vhost", "configure", "write", "read"],
    "whoami": ["name", "tags"],
}


def api(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}")
    request.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    # A freshly started RabbitMQ once dropped the first /api/connections
    # without an answer (its stats collector starting): asked again, it answers.
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except (http.client.RemoteDisconnected, ConnectionResetError):
            if attempt == 2:
                raise
            print(f"  port {port} dropped /api/{path} without an answer; asking again")
            time.sleep(2)


def traffic(amqp_port):
    """5 messages published with confirms, 2 of them held unacked by a
    consumer with prefetch 2; an idle second channel. Returns the open
    connection (closing it would requeue)."""
    params = pika.ConnectionParameters(
        "127.0.0.1", amqp_port, credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": CONNECTION})
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_delete(QUEUE)
    ch.queue_declare(QUEUE, durable=True)
    ch.queue_bind(QUEUE, "amq.direct", routing_key=QUEUE)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", QUEUE, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=2)
    held = []
    consumer.basic_consume(QUEUE, lambda c, m, p, b: held.append(m.delivery_tag), consumer_tag="compare-tag")
    deadline = time.time() + 10
    while len(held) < 2 and time.time() < deadline:
        conn.process_data_events(time_limit=0.2)
    return conn


def get(value, path):
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return KeyError
        value = value[part]
    return value


def fields(value, prefix=""):
    """Every field path of an object, one level into nested objects."""
    out = {}
    for key, v in (value or {}).items():
        out[prefix + key] = v
        if isinstance(v, dict) and not prefix and key not in ("arguments", "client_properties", "capabilities"):
            out.update(fields(v, key + "."))
    return out


def json_type(v):
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}[type(v)]


def objects(ports):
    """The objects of both targets' answers that the traffic made."""
    def one(items, test):
        return next((i for i in items if test(i)), None)
    connections = api(ports, "connections")
    ours = one(connections, lambda c: get(c, "client_properties.connection_name") == CONNECTION)
    channels = api(ports, "channels")
    channel = one(channels, lambda ch: ours and get(ch, "connection_details.name") == ours["name"]
                  and ch.get("consumer_count") == 1)
    return {
        "overview": api(ports, "overview"),
        "queue": api(ports, f"queues/%2F/{QUEUE}"),
        "connection": ours,
        "channel": channel,
        "consumer": one(api(ports, "consumers"), lambda c: c.get("consumer_tag") == "compare-tag"),
        "exchange": one(api(ports, "exchanges"), lambda x: x.get("name") == "amq.direct"),
        "binding": one(api(ports, "bindings"), lambda b: b.get("destination") == QUEUE and b.get("source") == "amq.direct"),
        "node": (api(ports, "nodes") or [None])[0],
        "vhost": one(api(ports, "vhosts"), lambda v: v.get("name") == "/"),
        "user": one(api(ports, "users"), lambda u: u.get("name") == "guest"),
        "permission": one(api(ports, "permissions"), lambda p: p.get("user") == "guest" and p.get("vhost") == "/"),
        "whoami": api(ports, "whoami"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway", required=True, help="amqp_port,api_port")
    ap.add_argument("--rabbitmq", required=True, help="amqp_port,api_port")
    args = ap.parse_args()
    targets = {}
    conns = []
    for name in ("rabbitmq", "gateway"):
        amqp, http = (int(p) for p in getattr(args, name).split(","))
        conns.append(traffic(amqp))
        time.sleep(6 if name == "rabbitmq" else 1)  # RabbitMQ's stats are emitted every 5 s
        targets[name] = objects(http)
    failures = []
    rows = []
    for kind, required in REQUIRED.items():
        ref, gw = targets["rabbitmq"][kind], targets["gateway"][kind]
        if ref is None or gw is None:
            failures.append(f"{kind}: not found on {'RabbitMQ' if ref is None else 'the gateway'}")
            continue
        ref_fields, gw_fields = fields(ref), fields(gw)
        missing = [f for f in ref_fields if f not in gw_fields]
        retyped = [f for f in ref_fields if f in gw_fields and ref_fields[f] is not None
                   and gw_fields[f] is not None and json_type(ref_fields[f]) != json_type(gw_fields[f])]
        for f in required:
            r, g = get(ref, f), get(gw, f)
            if r is KeyError:
                continue
            if g is KeyError:
                failures.append(f"{kind}.{f}: RabbitMQ gives it, the gateway does not")
            elif r is not None and g is not None and json_type(r) != json_type(g):
                failures.append(f"{kind}.{f}: {json_type(r)} on RabbitMQ, {json_type(g)} on the gateway")
        rows.append((kind, len(ref_fields), len(ref_fields) - len(missing) - len(retyped), missing, retyped))
    for f in ("messages", "messages_ready", "messages_unacknowledged", "consumers"):
        r, g = targets["rabbitmq"]["queue"].get(f), targets["gateway"]["queue"].get(f)
        if r != g:
            failures.append(f"queue.{f}: {r} on RabbitMQ, {g} on the gateway")
    for f in ("messages_unacknowledged", "consumer_count", "prefetch_count"):
        r, g = ((targets[t]["channel"] or {}).get(f) for t in ("rabbitmq", "gateway"))
        if r != g:
            failures.append(f"channel.{f}: {r} on RabbitMQ, {g} on the gateway")
    print("| object | fields RabbitMQ gives | of them, the gateway gives with the same type | not given by the gateway |")
    print("|---|---|---|---|")
    for kind, total, same, missing, retyped in rows:
        shown = ", ".join(missing[:8]) + (f" … (+{len(missing) - 8})" if len(missing) > 8 else "")
        print(f"| {kind} | {total} | {same} | {shown}{' ; typed otherwise: ' + ', '.join(retyped) if retyped else ''} |")
    for c in conns:
        c.close()
    if failures:
        print("\nFields tools need, or counts, that differ:")
        for f in failures:
            print(f"- {f}")
        return 1
    print("\nEvery field tools need is there with RabbitMQ's type; counts agree.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

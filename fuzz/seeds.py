#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/): well-formed AMQP frames
and field tables for libFuzzer to mutate. Run it again to rewrite them."""
import struct
from pathlib import Path

def shortstr(s): return bytes([len(s)]) + s
def longstr(s): return struct.pack(">I", len(s)) + s

def table(entries):
    body = b"".join(shortstr(k) + v for k, v in entries)
    return body

def framed_table(entries):
    body = table(entries)
    return struct.pack(">I", len(body)) + body

def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"

def method(channel, cls, mid, args):
    return frame(1, channel, struct.pack(">HH", cls, mid) + args)

ARGS = [(b"x-max-length", b"I" + struct.pack(">i", 10)),
        (b"x-message-ttl", b"l" + struct.pack(">q", 60000)),
        (b"x-dead-letter-exchange", b"S" + longstr(b"dlx")),
        (b"nested", b"F" + framed_table([(b"a", b"t\x01")])),
        (b"list", b"A" + struct.pack(">I", 6) + b"b\x01" + b"s" + struct.pack(">h", 2) + b"V"),
        (b"f", b"d" + struct.pack(">d", 1.5)), (b"ts", b"T" + struct.pack(">Q", 1700000000)),
        (b"dec", b"D\x02" + struct.pack(">I", 314)), (b"bytes", b"x" + longstr(b"\x00\x01"))]

publish = method(1, 60, 40, struct.pack(">H", 0) + shortstr(b"amq.direct") + shortstr(b"key") + b"\x00")
props = struct.pack(">H", 0x8000 | 0x4000 | 0x2000 | 0x1000) + shortstr(b"text/plain") + shortstr(b"utf-8") \
    + framed_table(ARGS[:3]) + b"\x02"
header = frame(2, 1, struct.pack(">HHQ", 60, 0, 11) + props)
bodies = frame(3, 1, b"hello") + frame(3, 1, b" world")
declare = method(1, 50, 10, struct.pack(">H", 0) + shortstr(b"q") + b"\x02" + framed_table(ARGS))
seeds = {
    "frames": {
        "publish": publish + header + bodies,
        "declare": declare,
        "heartbeat": frame(8, 0, b""),
        "open": method(0, 10, 40, shortstr(b"/") + shortstr(b"") + b"\x00"),
        "empty-body": publish + frame(2, 1, struct.pack(">HHQH", 60, 0, 0, 0)),
    },
    "field_tables": {f"table-{i}": table(ARGS[i:]) for i in range(len(ARGS))},
}
seeds["content"] = dict(seeds["frames"])

# After the handshake (the connection target sends it itself): a channel's
# life through the classes a client uses, each ending differently.
channel_open = method(1, 20, 10, shortstr(b""))
def consume(queue, tag, bits): return method(1, 60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr(tag) + bytes([bits]) + framed_table([]))
to_queue = method(1, 60, 40, struct.pack(">H", 0) + shortstr(b"") + shortstr(b"q") + b"\x00")
seeds["connection"] = {
    "publish-consume-ack": channel_open + declare + to_queue + header + bodies + consume(b"q", b"c1", 0)
        + method(1, 60, 80, struct.pack(">QB", 1, 0)) + method(1, 20, 40, struct.pack(">HHH", 200, 0, 0) + shortstr(b"")),
    "confirm-publish": channel_open + method(1, 85, 10, b"\x00") + publish + header + bodies,
    "tx": channel_open + method(1, 90, 10, b"") + to_queue + header + bodies + method(1, 90, 20, b""),
    "get-nack": channel_open + declare + to_queue + header + bodies
        + method(1, 60, 70, struct.pack(">H", 0) + shortstr(b"q") + b"\x00") + method(1, 60, 120, struct.pack(">QB", 1, 2)),
    "topology": channel_open + method(1, 40, 10, struct.pack(">H", 0) + shortstr(b"x") + shortstr(b"topic") + b"\x00" + framed_table([]))
        + declare + method(1, 50, 20, struct.pack(">H", 0) + shortstr(b"q") + shortstr(b"x") + shortstr(b"a.#") + b"\x00" + framed_table([]))
        + method(1, 50, 40, struct.pack(">H", 0) + shortstr(b"q") + b"\x00"),
    "qos-recover-close": channel_open + method(1, 60, 10, struct.pack(">IHB", 0, 10, 0)) + method(1, 60, 110, b"\x01")
        + method(0, 10, 50, struct.pack(">H", 200) + shortstr(b"bye") + struct.pack(">HH", 0, 0)),
    "exclusive-consume-cancel": channel_open + method(1, 50, 10, struct.pack(">H", 0) + shortstr(b"") + b"\x0c" + framed_table([]))
        + consume(b"", b"c2", 2) + method(1, 60, 30, shortstr(b"c2") + b"\x00"),
}
root = Path(__file__).parent / "corpus"
for target, files in seeds.items():
    (root / target).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / target / name).write_bytes(data)
print("seeds written:", {t: len(f) for t, f in seeds.items()})

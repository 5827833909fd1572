"""permessage-deflate with Python's `websockets` (issue 17).

Starts the real roomcast binary (ROOMCAST_BIN, default
target/release/roomcast) with --compression on an ephemeral loopback port,
then: a websockets client that negotiates compression and one that does
not join a room; a message published by a third reaches both with the same
data, the first one compressed (the broker's compressed-delivery counter
says so); a compressed publish from the first is read by the others.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install websockets==15.0.1
    ROOMCAST_BIN=target/release/roomcast /tmp/venv/bin/python tests/python/compression_test.py
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import unittest
import urllib.request

from websockets.asyncio.client import connect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, os.environ.get("ROOMCAST_BIN", "target/release/roomcast"))
TIMEOUT = 10


class Broker:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--log-level", "error", *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        m = re.match(r"^roomcast listening on (\S+)$", line.strip())
        if not m:
            self.proc.kill()
            raise RuntimeError(f"roomcast did not start: {line!r}")
        self.addr = m.group(1)

    def metric(self, name):
        text = urllib.request.urlopen(f"http://{self.addr}/metrics", timeout=TIMEOUT).read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1))

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


async def client(broker, compress):
    # websockets offers permessage-deflate by default; None turns it off.
    ws = await connect(
        f"ws://{broker.addr}/ws",
        compression="deflate" if compress else None,
        open_timeout=TIMEOUT,
    )
    welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert welcome["op"] == "welcome", welcome
    return ws


async def until(ws, op):
    while True:
        v = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if v["op"] == op:
            return v


class Compression(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.broker = Broker("--compression")

    async def asyncTearDown(self):
        self.broker.stop()

    async def test_members_with_and_without_compression_read_the_same(self):
        zipped = await client(self.broker, True)
        plain = await client(self.broker, False)
        publisher = await client(self.broker, False)
        agreed = zipped.response.headers.get("Sec-WebSocket-Extensions", "")
        self.assertIn("permessage-deflate", agreed)
        self.assertIn("server_no_context_takeover", agreed)
        self.assertNotIn("Sec-WebSocket-Extensions", plain.response.headers)
        for ws in (zipped, plain):
            await ws.send(json.dumps({"op": "join", "room": "py", "id": 1}))
            await until(ws, "ack")

        text = "a message that compresses well, " * 40
        await publisher.send(json.dumps({"op": "publish", "room": "py", "data": {"text": text}}))
        a = await until(zipped, "message")
        b = await until(plain, "message")
        self.assertEqual(a, b)
        self.assertEqual(a["data"]["text"], text)
        self.assertEqual(self.broker.metric("roomcast_compressed_deliveries_total"), 1.0)

        # websockets compresses what it sends: the broker inflates it.
        await zipped.send(json.dumps({"op": "publish", "room": "py", "data": {"text": text * 2}}))
        c = await until(plain, "message")
        self.assertEqual(c["data"]["text"], text * 2)
        for ws in (zipped, plain, publisher):
            await ws.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

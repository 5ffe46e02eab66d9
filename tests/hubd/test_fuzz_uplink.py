"""Fuzzing what hubd takes from the bridge for the LTE uplink: uplink_state, uplink_ack and DATA
payloads, well-formed and not, with a stream open and without. Each is taken or refused with a
typed reason (counted under inputs.BRIDGE), never raised; the channel's bounds hold (never more
than WINDOW outstanding, never more than MAX_INBOUND held for paho), and afterwards a fresh stream
still carries bytes both ways. The inputs come from a seeded generator: the same on every run.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket

from hubd import inputs
from hubd.link.bridge import Bridge
from hubd.link.uplink import MAX_INBOUND, Channel, LteBytes
from tests.fixtures import LINK_KEY
from tests.waiting import until
from wire import frame, link, messages
from wire import uplink as wire_uplink

ROUNDS = 3000
WHYS = list(messages.UPLINK_WHY) + [None, "", "bogus", 7, True, "x" * 300]
STATES = ["open", "closed", "opened", "", None, 1, ["open"]]
NS = [0, 1, -1, 511, 2048, 2049, 2 ** 31, -(2 ** 31), True, "5", None, 1.5]


class _Peer:
    """The bridge's link engine, sans-IO: carries hubd's messages away so its queue never fills."""

    def __init__(self, bridge: Bridge) -> None:
        self.hub = bridge.link.engine
        self.peer = link.Link(frame.ROLE_BRIDGE, "fw-fuzz", 0, LINK_KEY)
        self.now = 0
        self.stream = bytearray()  # the uplink's bytes hubd sent (DATA payloads)
        self.pump(3000)
        assert self.hub.state == link.UP

    def pump(self, ms: int = 50) -> None:
        for _ in range(ms // 10):
            self.now += 10
            for src, dst in ((self.hub, self.peer), (self.peer, self.hub)):
                while data := src.poll(self.now):
                    dst.feed(data, self.now)
            for kind, value in self.peer.events():
                if kind == link.EV_DATA and wire_uplink.is_data(value):
                    self.stream += wire_uplink.chunk(value)
            self.hub.events()


def _hostile(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return json.dumps({"m": "uplink_state", "state": rng.choice(STATES), "why": rng.choice(WHYS)}).encode()
    if kind == 1:
        return json.dumps({"m": "uplink_ack", "n": rng.choice(NS + [rng.randrange(1, 600)])}).encode()
    if kind == 2:
        return json.dumps({"m": "uplink_ack"}).encode()
    if kind in (3, 4):
        return b"\x01" + rng.randbytes(rng.choice([0, 1, rng.randrange(1, 512), 511, 600]))
    if kind == 5:
        return rng.randbytes(rng.randrange(0, 80))
    if kind == 6:
        return messages.make(messages.UPLINK_STATE, "closed", rng.choice(messages.UPLINK_WHY))
    return messages.make(messages.UPLINK_ACK, rng.randrange(1, 3000))


async def _open(bridge: Bridge, channel: Channel, peer: _Peer) -> socket.socket:
    task = asyncio.create_task(channel.open("broker.example", 8883, 10))
    await asyncio.sleep(0)
    peer.pump()
    bridge._on_payload(messages.make(messages.UPLINK_STATE, "open", None))
    return await task


async def test_uplink_inputs_are_taken_or_refused_never_raised(tmp_path) -> None:
    guard = inputs.Inputs()
    bridge = Bridge(str(tmp_path / "no-port"), LINK_KEY, guard=guard)
    peer = _Peer(bridge)
    channel = Channel(bridge, LteBytes(tmp_path / LteBytes.FILE))
    rng = random.Random(16)
    paho_end: socket.socket | None = None
    for i in range(ROUNDS):
        if not channel.is_open and rng.random() < 0.2:
            if paho_end is not None:
                paho_end.close()
            paho_end = await _open(bridge, channel, peer)
            paho_end.setblocking(False)
            if rng.random() < 0.5:  # paho writes: the channel sends within its window
                paho_end.send(rng.randbytes(rng.randrange(1, 6000)))
                await asyncio.sleep(0)
        bridge._on_payload(_hostile(rng))
        assert 0 <= channel._unacked <= wire_uplink.WINDOW
        assert len(channel._inbound) <= MAX_INBOUND
        if i % 50 == 0:
            peer.pump()
            await asyncio.sleep(0)
    refused = guard.snapshot()[inputs.BRIDGE]
    assert refused.get(inputs.CRASHED, 0) == 0, refused
    assert refused["seen"] >= ROUNDS  # every payload counted (and the opens' answers)
    assert refused.get("bad_message", 0) > 0 and refused.get("uplink_ack", 0) > 0
    assert refused.get("uplink_data", 0) > 0  # empty chunks, or none open

    # A fresh stream still carries bytes both ways.
    if paho_end is not None:
        paho_end.close()
    paho_end = await _open(bridge, channel, peer)
    bridge._on_payload(wire_uplink.data(b"CONNACK-ish"))
    paho_end.settimeout(5)
    assert await asyncio.to_thread(paho_end.recv, 100) == b"CONNACK-ish"
    peer.stream.clear()
    paho_end.sendall(b"PUBLISH-ish")
    await until(lambda: (peer.pump(), bytes(peer.stream))[1] == b"PUBLISH-ish", "paho's bytes on the link")
    paho_end.close()
    await until(lambda: not channel.is_open, "paho's close to end the stream")

"""hubd's Bluetooth proxy backend (hubd/ble) against a SCRIPTED bridge end of the serial link.

A scripted link peer stands in for the bridge here only for what the real firmware cannot be
made to produce: answers to no request, discovery results after their answer, a discovery whose
count does not match, malformed answers, notifications for no connection, an answer that never
comes while the link stays up, a late `ok` for a connect hubd gave up on; and for what happens in
hubd alone (a listener that raises, a write too long to send, pairing, no proxy installed); and
the link judged down by hubd only (each end judges it by its own silence: with the simulated
serial line that is a race, here it is made on purpose). Each
must be dropped and counted, or end its request with hubd's own status, and never end a task
(docs/architecture.md, "Robustness"). Everything the real firmware can do (ATT errors, the link
cut, watches, disconnects) is proved against it in tests/hubd/test_ble_proxy_client.py.

The link itself is real (wire.link engines on both ends, sans-IO, a simulated clock): frames are
authenticated and acknowledged as on the serial line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from hubd import inputs
from hubd.ble import (
    BleProxy,
    PairingUnsupported,
    ProxyClient,
    ProxyDevice,
    ProxyScanner,
    ProxyTimeout,
    WriteUnknown,
)
from hubd.ble import client as client_module
from hubd.ble import errors
from hubd.link.bridge import Bridge
from hubd.link.serial_port import _now_ms
from tests.fixtures import LINK_KEY
from tests.waiting import until
from wire import frame, link, lockproto, messages
from wire.messages import make

ADDR = "C0:FF:EE:00:00:01"
SERVICE = lockproto.uuid128_le(lockproto.SERVICE_UUID).hex()
CONTROL = lockproto.uuid128_le(lockproto.CONTROL_UUID).hex()
EVENT = lockproto.uuid128_le(lockproto.EVENT_UUID).hex()
CCCD = "0229"


class ScriptedBridge:
    """The bridge's end of the link, driven by the test: it hears hubd's requests (``asked``)
    and says what the test tells it to (``say``)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.now = _now_ms()
        self.peer = link.Link(frame.ROLE_BRIDGE, "scripted", self.now, LINK_KEY)
        self.asked: list[dict[str, Any]] = []
        self.unheard = False  # nothing from the bridge reaches hubd (hubd's frames still arrive)

    def pump(self, ms: int = 10) -> None:
        hub = self.bridge.link.engine
        self.now += ms
        for src, dst in ((hub, self.peer), (self.peer, hub)):
            while data := src.poll(self.now):
                if not (self.unheard and src is self.peer):
                    dst.feed(data, self.now)
        self.bridge.link._dispatch()
        for kind, value in self.peer.events():
            if kind == link.EV_DATA:
                self.asked.append(messages.decode(value))

    def say(self, kind: str, *fields: Any) -> None:
        self.peer.send(make(kind, *fields))

    async def request(self, kind: str) -> dict[str, Any]:
        """The next request of ``kind`` hubd sent (waits for it)."""
        await until(lambda: any(m["m"] == kind for m in self.asked), f"hubd's {kind}")
        msg = next(m for m in self.asked if m["m"] == kind)
        self.asked.remove(msg)
        return msg


@pytest.fixture
async def scripted(tmp_path: Any) -> AsyncIterator[tuple[ScriptedBridge, BleProxy]]:
    bridge = Bridge(str(tmp_path / "no-port"), LINK_KEY)
    peer = ScriptedBridge(bridge)
    proxy = BleProxy(bridge, margin_s=0.2)

    async def drive() -> None:
        while True:
            peer.pump()
            await asyncio.sleep(0.005)

    driver = asyncio.create_task(drive())
    await until(lambda: bridge.is_up, "the link up")
    yield peer, proxy
    driver.cancel()
    await asyncio.wait([driver])
    proxy.close()


def _device(proxy: BleProxy) -> BLEDevice:
    return BLEDevice(ADDR, "Front door", ProxyDevice(proxy, 0))


def _discovered(peer: ScriptedBridge, rid: int) -> None:
    """The bridge's answer to discovery ``rid``: the lock's service, its two characteristics,
    the event's CCCD, and the done with their count."""
    peer.say(messages.BLE_SERVICE, rid, SERVICE, 1, 6)
    peer.say(messages.BLE_CHAR, rid, CONTROL, 3, 0x08, 1)
    peer.say(messages.BLE_CHAR, rid, EVENT, 5, 0x10, 1)
    peer.say(messages.BLE_DESC, rid, CCCD, 6, 5)
    peer.say(messages.BLE_DONE, rid, "ok", None, None, None, 4)


async def _connecting(peer: ScriptedBridge, proxy: BleProxy,
                      **kwargs: Any) -> tuple[BleakClient, asyncio.Task[None], int]:
    """A BleakClient's connect through the scripted bridge to a lock-shaped peer, answered
    (conn 7) up to its discovery: (the client, its connect, the discovery's rid)."""
    client = BleakClient(_device(proxy), backend=ProxyClient, **kwargs)
    connecting = asyncio.create_task(client.connect())
    rid = (await peer.request(messages.BLE_CONNECT))["rid"]
    peer.say(messages.BLE_DONE, rid, "ok", 7, None, 185)
    return client, connecting, (await peer.request(messages.BLE_DISCOVER))["rid"]


async def _connected(peer: ScriptedBridge, proxy: BleProxy, **kwargs: Any) -> BleakClient:
    """A BleakClient connected through the scripted bridge to a lock-shaped peer (conn 7)."""
    client, connecting, rid = await _connecting(peer, proxy, **kwargs)
    _discovered(peer, rid)
    await connecting
    return client


def _refused(proxy: BleProxy, reason: str) -> int:
    return proxy.bridge._guard.refused[inputs.BRIDGE][reason]


async def test_an_answer_to_no_request_is_dropped_and_counted_and_the_real_one_still_lands(scripted) -> None:
    peer, proxy = scripted
    client = await _connected(peer, proxy)
    reading = asyncio.create_task(client.read_gatt_char(lockproto.CONTROL_UUID))
    rid = (await peer.request(messages.BLE_READ))["rid"]
    peer.say(messages.BLE_DONE, rid + 1000, "ok", None, "dead")
    peer.say(messages.BLE_DONE, rid, "ok", None, "beef")
    assert await reading == bytearray(b"\xbe\xef")
    assert proxy.dropped["done_for_no_request"] == 1
    assert _refused(proxy, "done_for_no_request") == 1


async def test_discovery_results_after_their_answer_and_orphans_are_dropped_and_counted(scripted) -> None:
    peer, proxy = scripted
    client = await _connected(peer, proxy)
    peer.say(messages.BLE_CHAR, 2, CONTROL, 9, 0x08, 1)  # rid 2 was the discovery, done already
    peer.say(messages.BLE_NOTIFY, 99, 5, "00")  # no such connection
    peer.say(messages.BLE_LOST, 99, "peer")
    await until(lambda: proxy.dropped["lost_for_no_conn"] == 1, "the stray ble_lost counted")
    assert proxy.dropped["discovery_unexpected"] == 1 and proxy.dropped["notify_for_no_conn"] == 1
    assert [c.handle for c in client.services.characteristics.values()] == [3, 5]
    assert client.is_connected


async def test_a_discovery_whose_count_is_wrong_fails_the_connect_and_frees_the_connection(scripted) -> None:
    peer, proxy = scripted
    client, connecting, rid = await _connecting(peer, proxy)
    peer.say(messages.BLE_SERVICE, rid, SERVICE, 1, 6)
    peer.say(messages.BLE_SERVICE, rid, "abc", 7, 9)  # a UUID of 1.5 bytes: left out, counted
    peer.say(messages.BLE_DONE, rid, "ok", None, None, None, 5)  # 5 announced, 2 came
    disconnect = await peer.request(messages.BLE_DISCONNECT)
    assert disconnect["conn"] == 7
    peer.say(messages.BLE_DONE, disconnect["rid"], "ok")
    with pytest.raises(errors.ProxyError) as failed:
        await connecting
    assert failed.value.status == errors.BAD_ANSWER
    assert not client.is_connected
    assert proxy.dropped["bad_done"] == 1


async def test_a_discovery_waiting_behind_the_bridges_others_is_waited_for(scripted, monkeypatch) -> None:
    # The bridge discovers one connection at a time (docs/ble-proxy.md, "Discovery"): the first
    # message of one may come after MAX_SLOTS - 1 others' discoveries, later than a step's time.
    monkeypatch.setattr(client_module, "STEP_MS", 1000)  # a step 1.0 s, hubd's margin 0.2 s
    peer, proxy = scripted
    client, connecting, rid = await _connecting(peer, proxy)
    await asyncio.sleep(1.6)  # past one step and the margin, within MAX_SLOTS steps
    assert not connecting.done()
    _discovered(peer, rid)
    await connecting
    assert client.is_connected and [c.handle for c in client.services.characteristics.values()] == [3, 5]


async def test_a_malformed_connect_answer_is_a_bad_answer_not_a_crash(scripted) -> None:
    peer, proxy = scripted
    client = BleakClient(_device(proxy), backend=ProxyClient)
    connecting = asyncio.create_task(client.connect())
    rid = (await peer.request(messages.BLE_CONNECT))["rid"]
    peer.say(messages.BLE_DONE, rid, "ok", None, None, None)  # ok, but no conn
    with pytest.raises(errors.ProxyError, match="broke the proxy protocol"):
        await connecting
    assert proxy.dropped["bad_done"] == 1


async def test_a_write_the_bridge_never_answers_is_unknown_and_sent_once(scripted) -> None:
    peer, proxy = scripted
    # The bridge's own time (ms) and hubd's margin pass with no answer.
    client = await _connected(peer, proxy, gatt_timeout=0.05)
    with pytest.raises(WriteUnknown) as unknown:
        await client.write_gatt_char(lockproto.CONTROL_UUID, b"\x02" * 42, response=True)
    assert unknown.value.status == errors.NO_ANSWER
    peer.pump()
    peer.pump()
    writes = [m for m in peer.asked if m["m"] == messages.BLE_WRITE]
    assert len(writes) == 1, "a write is never repeated"


async def test_a_read_the_bridge_never_answers_times_out_on_hubds_side(scripted) -> None:
    peer, proxy = scripted
    client = await _connected(peer, proxy, gatt_timeout=0.05)
    with pytest.raises(ProxyTimeout) as late:
        await client.read_gatt_char(lockproto.CONTROL_UUID)
    assert isinstance(late.value, TimeoutError) and late.value.status == errors.NO_ANSWER


async def test_a_connect_that_succeeds_after_hubd_gave_up_is_disconnected_at_once(scripted) -> None:
    peer, proxy = scripted
    client = BleakClient(_device(proxy), backend=ProxyClient, timeout=0.05)
    with pytest.raises(ProxyTimeout):
        await client.connect()
    rid = (await peer.request(messages.BLE_CONNECT))["rid"]
    peer.say(messages.BLE_DONE, rid, "ok", 4, None, 185)
    assert (await peer.request(messages.BLE_DISCONNECT))["conn"] == 4
    assert proxy.late_answers == {messages.BLE_CONNECT: 1} and not proxy.dropped


async def test_a_listener_that_raises_stops_neither_the_others_nor_the_link(scripted) -> None:
    peer, proxy = scripted
    heard: list[str] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("a library's bug")

    proxy.on_advert(broken)
    proxy.on_advert(lambda addr, *_: heard.append(addr))
    advert = "0201060909466f6f"
    peer.say(messages.BLE_ADV, ADDR, 0, -60, advert, None)
    peer.say(messages.BLE_ADV, "not an address", 0, -60, advert, None)
    peer.say(messages.BLE_ADV, "C0:FF:EE:00:00:02", 0, -60, advert, None)
    await until(lambda: len(heard) == 2, "both good adverts heard")
    assert heard == [ADDR, "C0:FF:EE:00:00:02"] and proxy.dropped["bad_adv"] == 1


async def test_a_pairing_with_mitm_protection_says_the_bridge_cannot_make_one(scripted) -> None:
    # (Pairing itself is tested against the real firmware: tests/hubd/test_ble_bonding.py.)
    peer, proxy = scripted
    with pytest.raises(PairingUnsupported, match="Just Works"):
        await BleakClient(_device(proxy), backend=ProxyClient).pair(protection_level=3)
    assert not peer.asked, "nothing was sent"


async def test_a_backend_without_a_proxy_names_the_fix() -> None:
    with pytest.raises(BleakError, match="BleProxy"):
        BleakScanner(backend=ProxyScanner)


async def test_a_write_longer_than_one_att_write_is_refused_before_it_is_sent(scripted) -> None:
    peer, proxy = scripted
    client = await _connected(peer, proxy)  # MTU 185: bounded to MAX_DATA + 3
    assert client.mtu_size == messages.MAX_DATA + 3
    with pytest.raises(errors.ProxyError) as refused:
        await client.write_gatt_char(lockproto.CONTROL_UUID, bytes(messages.MAX_DATA + 1), response=True)
    assert refused.value.status == "refused"
    peer.pump()
    assert not [m for m in peer.asked if m["m"] == messages.BLE_WRITE]


async def test_connections_dropped_with_a_link_only_hubd_saw_go_down_are_disconnected_when_it_is_back(
        scripted) -> None:
    peer, proxy = scripted
    lost: list[BleakClient] = []
    client = await _connected(peer, proxy, disconnected_callback=lost.append)
    peer.unheard = True
    peer.pump(4000)  # hubd hears nothing for longer than the link's dead_ms; the bridge hears hubd
    await until(lambda: not proxy.is_up and lost == [client], "hubd to drop the link and the connection")
    assert peer.peer.state == link.UP, "the bridge's end never saw the link go down"
    peer.unheard = False
    disconnect = await peer.request(messages.BLE_DISCONNECT)
    assert disconnect["conn"] == 7  # the bridge still held it: hubd asks it to let go
    peer.say(messages.BLE_DONE, disconnect["rid"], "ok")
    await until(lambda: proxy.late_answers[messages.BLE_DISCONNECT] == 1, "its answer, taken as late")
    assert not proxy.dropped

"""The bridge as a Bluetooth proxy (docs/ble-proxy.md), through the real firmware: the simulated
home's radio and locks, the bridge in MicroPython, and hubd's end of the serial link played by
the test with ble_* messages.

The bridge drives no lock of its own: whatever happens on the locks' radio links is the proxy's
doing.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import pytest

from hubd.link.serial_port import SerialLink
from simulator.home import SimulatedHome
from simulator.locks import InsideTurnerLock
from simulator.radio import (FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE,
                             Characteristic, Peripheral, Service)
from tests.waiting import until
from wire import link, messages
from wire import lockproto as lp
from wire import lockside

# The proxy's passive scan windows several times a second, for watches.
FAST = {"scan_every_ms": 200, "scan_ms": 150}
ADDRS = ["C0:FF:EE:00:01:0%d" % i for i in range(1, 6)]


def _lock(i: int) -> InsideTurnerLock:
    return InsideTurnerLock("lock-%d" % i, ADDRS[i], None)


class Gadget(Peripheral):
    """A peripheral with one characteristic that takes writes without response and is read
    back, and one that cannot be read."""

    def __init__(self, address: str) -> None:
        self.value = Characteristic(0xFFF1, FLAG_READ | FLAG_WRITE_NO_RESPONSE | FLAG_WRITE,
                                    b"\x00")
        self.sealed = Characteristic(0xFFF2, 0)
        super().__init__(address, "gadget", [Service(0xFFF0, [self.value, self.sealed])])


class Hub:
    """hubd's end of the serial link, speaking the proxy's messages and keeping every message
    the bridge sends."""

    def __init__(self, port: str, key: bytes) -> None:
        self.received: list[dict[str, Any]] = []
        self.link = SerialLink(port, 115200, "test-hub", key, self._on_event)
        self._rids = itertools.count(1)

    def _on_event(self, kind: str, value: Any) -> None:
        if kind == link.EV_DATA:
            self.received.append(messages.decode(value))

    def ask(self, kind: str, *values: Any) -> int:
        """Send a request; return its rid."""
        rid = next(self._rids)
        self.link.send(messages.make(kind, rid, *values))
        return rid

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [m for m in self.received if m["m"] == kind
                and all(m[k] == v for k, v in match.items())]

    async def done(self, rid: int, timeout: float = 30) -> dict[str, Any]:
        """The request's ble_done, once it came; exactly one comes."""
        await until(lambda: self.of(messages.BLE_DONE, rid=rid), f"ble_done of request {rid}",
                    timeout)
        found = self.of(messages.BLE_DONE, rid=rid)
        assert len(found) == 1, found
        return found[0]

    async def call(self, kind: str, *values: Any) -> dict[str, Any]:
        return await self.done(self.ask(kind, *values))

    async def connect(self, addr: str, ms: int = 3000) -> int:
        done = await self.call(messages.BLE_CONNECT, addr, 0, ms)
        assert done["status"] == "ok", done
        return done["conn"]


@pytest.fixture
async def homes():
    """Starts a home and hubd's end of its link; stops them whatever happened."""
    started: list[tuple[SimulatedHome, Hub]] = []

    async def start(tmp_path: Path, **kw: Any) -> tuple[SimulatedHome, Hub]:
        home = SimulatedHome(tmp_path, **kw)
        await home.start()
        hub = Hub(home.port, home.link_key)
        started.append((home, hub))
        await hub.link.start()
        await until(lambda: hub.link.state == link.UP, "the host link")
        return home, hub

    yield start
    for home, hub in started:
        await asyncio.sleep(0.2)  # hubd.link.serial_port's close must not race a message (3.11)
        await hub.link.close()
        await home.stop()


def _hex_le(uuid: str | int) -> str:
    return (uuid.to_bytes(2, "little") if isinstance(uuid, int) else lp.uuid128_le(uuid)).hex()


async def test_a_lock_is_connected_discovered_subscribed_written_notified_read_and_disconnected(
        tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    done = await hub.call(messages.BLE_CONNECT, ADDRS[1], 0, 3000)
    assert done["status"] == "ok" and done["mtu"] == messages.MAX_DATA + 1, done
    conn = done["conn"]
    assert len(lock.links) == 1 and lock.links[0].mtu == messages.MAX_DATA + 1

    rid = hub.ask(messages.BLE_DISCOVER, conn)
    done = await hub.done(rid)
    found = [m for m in hub.received if m.get("rid") == rid]
    assert [m["m"] for m in found] == ["ble_service", "ble_char", "ble_char", "ble_desc",
                                       "ble_done"]
    service, control, events, cccd = found[:4]
    assert (service["uuid"], service["start"], service["end"]) == (
        _hex_le(lp.SERVICE_UUID), lock.services[0].start_handle, lock.services[0].end_handle)
    assert (control["uuid"], control["handle"], control["props"], control["service"]) == (
        _hex_le(lp.CONTROL_UUID), lock.control.value_handle, FLAG_WRITE, service["start"])
    assert (events["uuid"], events["handle"], events["props"]) == (
        _hex_le(lp.EVENT_UUID), lock.events.value_handle, 0x10)
    assert (cccd["uuid"], cccd["handle"], cccd["char"]) == (
        "0229", lock.events.cccd_handle, lock.events.value_handle)
    assert done["status"] == "ok" and done["count"] == 4

    assert (await hub.call(messages.BLE_SUBSCRIBE, conn, cccd["handle"], 1))["status"] == "ok"
    assert lock.events.value_handle in lock.links[0].subscribed
    done = await hub.call(messages.BLE_WRITE, conn, control["handle"],
                          lp.encode_challenge_request().hex(), True, 2000)
    assert done["status"] == "ok", done
    await until(lambda: hub.of(messages.BLE_NOTIFY, conn=conn), "the lock's challenge")
    note = hub.of(messages.BLE_NOTIFY, conn=conn)[0]
    assert note["handle"] == events["handle"]
    nonce = lp.decode_challenge(bytes.fromhex(note["data"]))
    assert bytes.fromhex(note["data"]) == lockside.encode_challenge(nonce)

    done = await hub.call(messages.BLE_READ, conn, cccd["handle"], 2000)
    assert (done["status"], done["data"]) == ("ok", "0100")
    assert (await hub.call(messages.BLE_SUBSCRIBE, conn, cccd["handle"], 0))["status"] == "ok"
    assert (await hub.call(messages.BLE_READ, conn, cccd["handle"], 2000))["data"] == "0000"

    assert (await hub.call(messages.BLE_DISCONNECT, conn))["status"] == "ok"
    assert not lock.links
    # hubd asked: its ble_done said so, no ble_lost; and the connection is gone for requests.
    assert (await hub.call(messages.BLE_READ, conn, cccd["handle"], 2000))["status"] == "no_conn"
    assert not hub.of(messages.BLE_LOST)


async def test_a_write_without_response_is_taken_in_order_and_a_refused_read_is_a_gatt_error(
        tmp_path, homes):
    gadget = Gadget(ADDRS[1])
    home, hub = await homes(tmp_path, locks=[])
    home.radio.add(gadget)
    conn = await hub.connect(ADDRS[1])
    # Queued on the connection behind each other: the read sees the write before it.
    first = hub.ask(messages.BLE_WRITE, conn, gadget.value.value_handle, "c0ffee", False, 2000)
    read = hub.ask(messages.BLE_READ, conn, gadget.value.value_handle, 2000)
    assert (await hub.done(first))["status"] == "ok"
    assert (await hub.done(read))["data"] == "c0ffee"
    assert gadget.value.value == bytes.fromhex("c0ffee")
    done = await hub.call(messages.BLE_READ, conn, gadget.sealed.value_handle, 2000)
    assert (done["status"], done["att"]) == ("gatt_error", 0x02)  # read not permitted
    # A write without response the peer refuses cannot be told: the stack took it.
    done = await hub.call(messages.BLE_WRITE, conn, gadget.sealed.value_handle, "01", False, 2000)
    assert done["status"] == "ok"
    done = await hub.call(messages.BLE_WRITE, conn, gadget.sealed.value_handle, "01", True, 2000)
    assert (done["status"], done["att"]) == ("gatt_error", 0x03)  # write not permitted


class Safe(Peripheral):
    """A peripheral whose characteristic notifies and needs an encrypted link, as a lock's."""

    def __init__(self, address: str) -> None:
        self.box = Characteristic(0xFFE1, FLAG_READ | FLAG_WRITE | FLAG_NOTIFY, b"\x07",
                                  encrypted=True)
        super().__init__(address, "safe", [Service(0xFFE0, [self.box])])


async def test_pairing_opens_an_encrypted_characteristic_and_the_decommission_wipes_the_bond(
        tmp_path, homes):
    safe = Safe(ADDRS[2])
    home, hub = await homes(tmp_path, locks=[])
    home.radio.add(safe)
    bond_file = home.workdir / "bridge-flash" / "ble_bonds.bin"
    conn = await hub.connect(ADDRS[2])
    done = await hub.call(messages.BLE_SUBSCRIBE, conn, safe.box.cccd_handle, 1)
    assert (done["status"], done["att"]) == ("gatt_error", 0x05)  # insufficient authentication
    done = await hub.call(messages.BLE_PAIR, conn, 5000)
    assert done["status"] == "ok" and done["count"] == (messages.BLE_SEC_ENCRYPTED
                                                        | messages.BLE_SEC_BONDED), done
    assert bond_file.exists(), "saved before the answer"
    assert (await hub.call(messages.BLE_SUBSCRIBE, conn, safe.box.cccd_handle, 1))["status"] == "ok"
    safe.links[0].notify(safe.box, b"\x08")
    await until(lambda: hub.of(messages.BLE_NOTIFY, conn=conn), "the notification")
    assert (await hub.call(messages.BLE_DISCONNECT, conn))["status"] == "ok"

    hub.link.send(messages.make(messages.WIPE))
    await until(lambda: hub.of(messages.WIPED), "wiped")
    await until(lambda: not bond_file.exists(), "the bond file deleted")


async def test_requests_on_one_connection_are_answered_in_the_order_they_came(tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    conn = await hub.connect(ADDRS[1])
    lock.response_delay_s = 0.1  # each answer comes late: the requests wait in line
    cccd = lock.events.cccd_handle
    rids = [hub.ask(messages.BLE_SUBSCRIBE, conn, cccd, 1),
            hub.ask(messages.BLE_READ, conn, cccd, 2000),
            hub.ask(messages.BLE_SUBSCRIBE, conn, cccd, 0),
            hub.ask(messages.BLE_READ, conn, cccd, 2000),
            hub.ask(messages.BLE_SUBSCRIBE, conn, cccd, 2)]
    await hub.done(rids[-1])
    dones = hub.of(messages.BLE_DONE)
    assert [d["rid"] for d in dones if d["rid"] in rids] == rids
    assert [hub.of(messages.BLE_DONE, rid=r)[0]["data"] for r in rids[1:4:2]] == ["0100", "0000"]


async def test_a_connect_beyond_the_slots_is_busy_until_one_is_free(tmp_path, homes):
    locks = [_lock(i) for i in range(1, 5)]
    home, hub = await homes(tmp_path, locks=locks)
    conns = [await hub.connect(addr) for addr in ADDRS[1:4]]  # the default three slots
    assert (await hub.call(messages.BLE_CONNECT, ADDRS[4], 0, 3000))["status"] == "busy"
    assert not locks[3].links, "refused at once, not tried"
    assert (await hub.call(messages.BLE_DISCONNECT, conns[0]))["status"] == "ok"
    assert (await hub.call(messages.BLE_CONNECT, ADDRS[4], 0, 3000))["status"] == "ok"
    assert len(locks[3].links) == 1


async def test_bridge_json_sets_the_slots(tmp_path, homes):
    home, hub = await homes(tmp_path, locks=[_lock(1), _lock(2)], proxy={"slots": 1})
    await hub.connect(ADDRS[1])
    assert (await hub.call(messages.BLE_CONNECT, ADDRS[2], 0, 3000))["status"] == "busy"


async def test_unknown_addresses_connections_and_bad_values_are_answered_not_dropped(
        tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    assert (await hub.call(messages.BLE_CONNECT, "C0:FF:EE:99:99:99", 0, 500))["status"] \
        == "unreachable"
    for kind, values in ((messages.BLE_READ, (7, 3, 1000)), (messages.BLE_DISCOVER, (7,)),
                         (messages.BLE_WRITE, (7, 3, "00", True, 1000)),
                         (messages.BLE_SUBSCRIBE, (7, 6, 1))):
        assert (await hub.call(kind, *values))["status"] == "no_conn", kind
    assert (await hub.call(messages.BLE_DISCONNECT, 7))["status"] == "ok"  # gone is gone
    conn = await hub.connect(ADDRS[1])
    for kind, values in ((messages.BLE_CONNECT, ("C0:FF:EE", 0, 1000)),
                         (messages.BLE_CONNECT, (ADDRS[1], 2, 1000)),
                         (messages.BLE_CONNECT, (ADDRS[1], 0, 0)),
                         (messages.BLE_CONNECT, (ADDRS[1], 0, 60001)),
                         (messages.BLE_READ, (conn, 0, 1000)),
                         (messages.BLE_READ, (conn, 0x10000, 1000)),
                         (messages.BLE_READ, (conn, 3, -5)),
                         (messages.BLE_WRITE, (conn, 3, "00", True, 0)),
                         (messages.BLE_SUBSCRIBE, (conn, 6, 3)),
                         (messages.BLE_WATCH, ("c0ffee", True)),
                         (messages.BLE_SCAN, (0, True)), (messages.BLE_SCAN, (30001, True))):
        assert (await hub.call(kind, *values))["status"] == "refused", (kind, values)
    assert lock.commands == [] and len(lock.links) == 1


async def test_hostile_messages_amid_requests_are_dropped_and_every_request_is_still_answered(
        tmp_path, homes):
    # What hubd's end of the link could carry if it were broken or hostile (authentic frames,
    # so the link takes them): no JSON, unknown kinds, ble_* requests with wrong or missing
    # fields, the bridge's own messages, the old lock messages. Sent between and during real
    # requests on a connection: each of those is answered once, the bridge never resets, and
    # the junk is counted as bad messages.
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock], health={"health_ms": 60000})
    junk = [b"", b"{", b"\xff\xfe", b"[]", b'"ble_read"', b'{"m": 5}', b'{"m": "nope"}',
            b'{"m": "ble_read", "rid": "1", "conn": 1, "handle": 3, "ms": 100}',
            b'{"m": "ble_write", "rid": 1, "conn": 1, "handle": 3, "data": "zz", "response": true,'
            b' "ms": 100}',
            b'{"m": "ble_connect", "rid": 1}', b'{"m": "ble_done", "rid": 1, "status": "ok"}',
            b'{"m": "ble_scan", "rid": 1, "ms": 1000, "active": true, "x": [[[[[[[[[[1]]]]]]]]]]}',
            b'{"m": "op", "rid": 1, "lock": "front-door", "action": "unlock", "cmd": "c",'
            b' "ttl": 5000}',
            b'{"m": "ble_read", "rid": 99999999999999999999, "conn": 1, "handle": 3, "ms": 1}',
            b"x" * 400]
    async def flood() -> None:
        for payload in junk:
            await until(lambda: hub.link.engine.pending() < 16, "room on the link")
            hub.link.send(payload)

    conn = await hub.connect(ADDRS[1])
    await flood()
    rid = hub.ask(messages.BLE_DISCOVER, conn)
    await flood()
    assert (await hub.done(rid))["status"] == "ok"
    assert (await hub.call(messages.BLE_SUBSCRIBE, conn, lock.events.cccd_handle, 1))[
        "status"] == "ok"
    rids = []
    for _ in range(3):
        rids.append(hub.ask(messages.BLE_WRITE, conn, lock.control.value_handle,
                            lp.encode_challenge_request().hex(), True, 2000))
        await flood()
    for rid in rids:
        assert (await hub.done(rid))["status"] == "ok"
    await until(lambda: len(hub.of(messages.BLE_NOTIFY, conn=conn)) == 3, "three challenges")
    hub.link.send(messages.make(messages.HEALTH_REQUEST))
    await until(lambda: hub.of(messages.HEALTH), "health")
    health = hub.of(messages.HEALTH)[-1]
    # Most of the junk is no message at all (a few are valid messages the bridge ignores).
    assert health["link"]["bad_messages"] >= 4 * (len(junk) - 5), health["link"]
    assert home.bridge.boots == 1 and home.bridge.resets == 0
    assert len(lock.links) == 1 and lock.commands == []  # the old "op" moved nothing


async def test_a_lock_that_drops_the_link_is_lost_at_once_and_a_waiting_request_is_disconnected(
        tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    conn = await hub.connect(ADDRS[1])
    lock.response_delay_s = 30  # the read waits on the lock, the subscribe behind it
    read = hub.ask(messages.BLE_READ, conn, lock.events.cccd_handle, 20000)
    queued = hub.ask(messages.BLE_SUBSCRIBE, conn, lock.events.cccd_handle, 1)
    before = lock.links[0].last_activity
    await until(lambda: lock.links[0].last_activity != before, "the read at the lock")
    lock.links[0].disconnect()
    assert (await hub.done(read, timeout=10))["status"] == "disconnected"
    assert (await hub.done(queued, timeout=10))["status"] == "disconnected"
    await until(lambda: hub.of(messages.BLE_LOST, conn=conn), "ble_lost", timeout=10)
    assert [m["reason"] for m in hub.of(messages.BLE_LOST)] == ["peer"]
    assert (await hub.call(messages.BLE_READ, conn, 3, 1000))["status"] == "no_conn"


async def test_a_procedure_that_times_out_drops_the_connection(tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    conn = await hub.connect(ADDRS[1])
    lock.response_delay_s = 30
    assert (await hub.call(messages.BLE_READ, conn, lock.events.cccd_handle, 300))["status"] \
        == "timeout"
    await until(lambda: hub.of(messages.BLE_LOST, conn=conn), "ble_lost")
    assert [m["reason"] for m in hub.of(messages.BLE_LOST)] == ["timeout"]
    await until(lambda: not lock.links, "the link dropped at the lock")


async def test_a_cut_serial_link_drops_every_proxy_connection_and_hubd_hears_it_when_back(
        tmp_path, homes):
    locks = [_lock(1), _lock(2)]
    home, hub = await homes(tmp_path, locks=locks)
    conns = [await hub.connect(ADDRS[1]), await hub.connect(ADDRS[2])]
    home.line.cut = True
    # The bridge finds the link dead (dead_ms of silence) and drops both connections.
    await until(lambda: not locks[0].links and not locks[1].links, "the locks' links dropped")
    home.line.cut = False
    await until(lambda: hub.link.state == link.UP, "the host link again")
    # Queued while the link was down, delivered to the same hubd once it is back.
    await until(lambda: len(hub.of(messages.BLE_LOST)) == 2, "both ble_lost")
    assert sorted((m["conn"], m["reason"]) for m in hub.of(messages.BLE_LOST)) == sorted(
        (c, "host_link") for c in conns)
    assert (await hub.call(messages.BLE_READ, conns[0], 3, 1000))["status"] == "no_conn"


async def test_a_scan_forwards_the_locks_advert_with_its_raw_data_and_scan_response(
        tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock])
    # Long enough for the scan response to go out too, a second after the first sighting.
    rid = hub.ask(messages.BLE_SCAN, 3000, True)
    done = await hub.done(rid)
    adverts = hub.of(messages.BLE_ADV, addr=ADDRS[1])
    assert adverts and done["status"] == "ok" and done["count"] == len(hub.of(messages.BLE_ADV))
    assert all(a["data"] == lock.advertising_data().hex() and a["addr_type"] == 0
               and a["rssi"] == lock.rssi for a in adverts)
    assert adverts[-1]["resp"] == lock.scan_response().hex()
    # Once heard and unchanged, an advertiser is not sent again (its scan response aside).
    assert len(adverts) <= 2
    # A passive scan hears no scan response; the advertiser is new to it. The scan is long
    # enough to hear one advert whatever its phase: the lock's advertising interval, the most
    # advDelay and one of the bridge's scan intervals (on the realistic air 1.0 s + 10 ms +
    # 30 ms; a scan of 1 s missed the lock now and then, as it may on hardware).
    n = len(adverts)
    air = home.radio.timing
    passive_s = air.adv_interval_of(lock.adv_interval_s) + air.adv_delay_max_s + air.scan_interval_s
    done = await hub.call(messages.BLE_SCAN, max(1000, math.ceil(passive_s * 1000)), False)
    adverts = hub.of(messages.BLE_ADV, addr=ADDRS[1])
    assert done["count"] == len(adverts) - n == 1 and adverts[-1]["resp"] is None


async def test_a_watch_forwards_the_watched_locks_adverts_and_not_the_others(tmp_path, homes):
    watched, other = _lock(1), _lock(2)
    home, hub = await homes(tmp_path, locks=[watched, other], proxy=FAST)
    assert (await hub.call(messages.BLE_WATCH, ADDRS[1], True))["status"] == "ok"
    await until(lambda: hub.of(messages.BLE_ADV, addr=ADDRS[1]), "the watched lock's advert")
    assert hub.of(messages.BLE_ADV)[0]["data"] == watched.advertising_data().hex()
    watched.set_battery(42)  # its advert changes: sent again
    await until(lambda: hub.of(messages.BLE_ADV, data=watched.advertising_data().hex()),
                "the changed advert")
    other.set_battery(41)
    watched.set_battery(40)
    await until(lambda: hub.of(messages.BLE_ADV, data=watched.advertising_data().hex()),
                "the next change")
    assert not hub.of(messages.BLE_ADV, addr=ADDRS[2])
    # Unwatched: no more of its adverts, however it changes.
    assert (await hub.call(messages.BLE_WATCH, ADDRS[1], False))["status"] == "ok"
    assert (await hub.call(messages.BLE_WATCH, ADDRS[2], True))["status"] == "ok"
    n = len(hub.of(messages.BLE_ADV, addr=ADDRS[1]))
    watched.set_battery(30)
    other.set_battery(31)
    await until(lambda: hub.of(messages.BLE_ADV, addr=ADDRS[2],
                               data=other.advertising_data().hex()),
                "the newly watched lock's advert")
    assert len(hub.of(messages.BLE_ADV, addr=ADDRS[1])) == n


async def test_at_most_eight_addresses_are_watched(tmp_path, homes):
    home, hub = await homes(tmp_path, locks=[])
    addrs = ["C0:FF:EE:00:02:%02X" % i for i in range(messages.MAX_WATCH + 1)]
    for addr in addrs[:-1]:
        assert (await hub.call(messages.BLE_WATCH, addr, True))["status"] == "ok"
    assert (await hub.call(messages.BLE_WATCH, addrs[0], True))["status"] == "ok"  # again
    assert (await hub.call(messages.BLE_WATCH, addrs[-1], True))["status"] == "refused"
    assert (await hub.call(messages.BLE_WATCH, addrs[0], False))["status"] == "ok"
    assert (await hub.call(messages.BLE_WATCH, addrs[-1], True))["status"] == "ok"


async def test_a_stack_restarted_by_its_watchdog_loses_the_connection_as_ble_restart(
        tmp_path, homes):
    lock = _lock(1)
    home, hub = await homes(tmp_path, locks=[lock], health={"ble_stuck_ms": 2000})
    conn = await hub.connect(ADDRS[1])
    home.radio.wedge()  # the stack hangs: the read is never answered
    done = await hub.call(messages.BLE_READ, conn, lock.events.cccd_handle, 20000)
    assert done["status"] == "disconnected", done
    await until(lambda: hub.of(messages.BLE_LOST), "ble_lost")
    assert [(m["conn"], m["reason"]) for m in hub.of(messages.BLE_LOST)] == [(conn, "ble_restart")]
    assert any("BLE stack stuck (silent)" in line for line in home.bridge.log)
    # The restarted stack connects again.
    assert (await hub.call(messages.BLE_CONNECT, ADDRS[1], 0, 3000))["status"] == "ok"

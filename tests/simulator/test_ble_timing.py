"""The realistic air (simulator/ble_timing.py, simulator/radio.py) as a hub's own adapter meets
it (simulator/air_central.py): never kinder than the figures in docs/ble-timing.md.

- a connect waits for the lock's next advert, then for the link's first events and the MTU
  exchange; each ATT exchange costs at least a connection interval; discovery at the default
  MTU takes its extra rounds; a pairing and a re-encryption take their events;
- a scan hears each peripheral at its own advertising interval;
- at a weak RSSI packets are lost and sent again (late, never missing); a link that loses
  everything drops after its supervision timeout.

Times are asserted from below only (what the air must cost at least): nothing here bounds a
time from above, so a loaded machine cannot fail them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator

import pytest

from simulator import air_central as air
from simulator import ble_timing
from simulator.locks import EntranceDoorLock, InsideTurnerLock
from simulator.radio import Radio

ADDR = "C0:FF:EE:00:00:01"
ADDR_BYTES = bytes.fromhex(ADDR.replace(":", ""))
TIMEOUT = 60.0  # a hang guard
REALISTIC = ble_timing.realistic()
INTERVAL = REALISTIC.conn_interval_s


@pytest.fixture
async def radio() -> AsyncIterator[Radio]:
    path = os.path.join(tempfile.mkdtemp(prefix="air-"), "radio.sock")
    radio = Radio(path, timing=REALISTIC, seed=17)
    await radio.start()
    yield radio
    await radio.stop()
    os.rmdir(os.path.dirname(path))


@pytest.fixture
def lock(radio: Radio) -> InsideTurnerLock:
    lock = InsideTurnerLock("front-door", ADDR, os.urandom(32), idle_timeout_s=None)
    radio.add(lock)
    return lock


@pytest.fixture
async def central(radio: Radio) -> AsyncIterator[air.AirCentral]:
    central = air.AirCentral(radio.socket_path)
    await central.start()
    yield central
    await central.close()


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_the_realistic_model_is_picked_by_name_and_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ble_timing.ENV, "realistic")
    assert ble_timing.from_env() == REALISTIC
    monkeypatch.setenv(ble_timing.ENV, "fast")
    assert ble_timing.from_env().instant
    monkeypatch.setenv(ble_timing.ENV, "kind")
    with pytest.raises(ValueError):
        ble_timing.from_env()
    assert Radio("unused", timing=REALISTIC, supervision_timeout_s=1.0).supervision_timeout_s == 1.0


async def test_a_connect_waits_for_the_next_advert_then_the_links_first_events(
        radio: Radio, lock: InsideTurnerLock, central: air.AirCentral) -> None:
    async with asyncio.timeout(TIMEOUT):
        start = now()
        advert = radio.advert_after(lock, start)  # the lock's schedule: every initiator's
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10)
        took = now() - start
    # The advert, the transmit window, the link layer's set-up and the MTU exchange's round.
    assert took >= (advert - start) + (REALISTIC.setup_events + 1) * INTERVAL
    assert advert - start <= lock.adv_interval_s + REALISTIC.adv_delay_max_s
    await conn.disconnect()


async def test_each_att_exchange_costs_a_connection_event_and_discovery_its_rounds(
        lock: InsideTurnerLock, central: air.AirCentral) -> None:
    lock.att_mtu = 23  # a lock that keeps ATT's default MTU: one 128-bit entry an answer
    async with asyncio.timeout(TIMEOUT):
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10)
        assert conn.mtu == 23
        start = now()
        db = await conn.discover()
        discovery = now() - start
        # services: 1 + the round that finds none; characteristics: 2 + 1; the CCCD: 1 + 1.
        assert discovery >= 7 * INTERVAL
        cccd = db.descriptors[0].handle
        start = now()
        for _ in range(4):
            await conn.write(cccd, b"\x01\x00", response=True)  # subscribe, four times
        assert now() - start >= 4 * INTERVAL
        await conn.disconnect()


async def test_pairing_and_re_encryption_take_their_connection_events(
        lock: InsideTurnerLock, central: air.AirCentral) -> None:
    async with asyncio.timeout(TIMEOUT):
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10)
        start = now()
        assert await conn.pair()
        assert now() - start >= (REALISTIC.pair_events + REALISTIC.encrypt_events) * INTERVAL \
            + REALISTIC.pair_compute_s
        await conn.disconnect()
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10)
        start = now()
        assert await conn.pair()  # with the bond: the link layer's encryption alone
        assert now() - start >= REALISTIC.encrypt_events * INTERVAL
        await conn.disconnect()


async def test_a_scan_hears_each_peripheral_at_its_own_interval(
        radio: Radio, lock: InsideTurnerLock, central: air.AirCentral) -> None:
    door = EntranceDoorLock("entrance", "C0:FF:EE:00:00:02", os.urandom(32))
    radio.add(door)
    heard: list[bytes] = []
    central.on_advert(lambda result: heard.append(bytes(result.address)))
    stop = central.start_scan(active=False)
    start = now()
    async with asyncio.timeout(TIMEOUT):
        while heard.count(ADDR_BYTES) < 3:
            await asyncio.sleep(0.05)
    stop()
    took = now() - start
    # Three adverts of the lock need two of its intervals at least; the door, five times as
    # often, is heard more in that time.
    assert took >= 2 * lock.adv_interval_s
    assert heard.count(door.address) > heard.count(ADDR_BYTES)
    assert heard.count(ADDR_BYTES) <= took / lock.adv_interval_s + 2


async def test_a_weak_link_retransmits_late_but_loses_nothing(
        radio: Radio, lock: InsideTurnerLock, central: air.AirCentral) -> None:
    async with asyncio.timeout(TIMEOUT):
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10, gatt_timeout_s=30)
        db = await conn.discover()
        assert radio.retransmissions == 0  # -60 dBm: a room's distance
        lock.rssi = -90  # at the edge: half the packets lost
        events = now()
        for _ in range(3):
            await conn.read(db.descriptors[0].handle)
        assert radio.retransmissions > 0
        assert now() - events >= 3 * INTERVAL
        assert conn.connected
        await conn.disconnect()


async def test_a_link_that_loses_everything_drops_after_its_supervision_timeout(
        lock: InsideTurnerLock, central: air.AirCentral) -> None:
    async with asyncio.timeout(TIMEOUT):
        conn = await central.connect(ADDR_BYTES, 0, timeout_s=10, gatt_timeout_s=30)
        db = await conn.discover()
        lost: list[str] = []
        conn.on_lost = lost.append
        lock.rssi = -130  # nothing gets through
        start = now()
        with pytest.raises(air.Disconnected):
            await conn.read(db.descriptors[0].handle)
        assert now() - start >= REALISTIC.supervision_timeout_s
        assert not lock.links

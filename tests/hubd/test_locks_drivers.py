"""hubd's lock drivers as the daemon wires them (hubd/locks/drivers.py): a key turned by hand while
nobody was connected reaches the retained lock state as a manual turn, polls reach it as ``poll``,
a lock out of range goes unavailable in the device registry and comes back, and everything stops
with hubd; through the REAL bridge firmware as a Bluetooth proxy, a real SQLite state database,
against the simulated locks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubapi import topics
from hubapi.models import DeviceState, LockState
from hubd.access.lockstate import LockStates
from hubd.ble import BleProxy
from hubd.config import AbsentConfig, DevicesConfig
from hubd.devices.registry import Devices
from hubd.link.bridge import Bridge
from hubd.locks import Timings, UpkeepTimings
from hubd.locks.drivers import LockDrivers
from hubd.store.audit import AuditLog
from hubd.store.database import Store
from hubd.store.outbox import Outbox
from simulator.locks import EntranceDoorLock, InsideTurnerLock
from simulator.home import SimulatedHome, paired
from tests.waiting import until

HUB = "hub-drivers"
TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
# Short attempts: a poll of a lock out of range gives up after connect_s + 2 gatt_s.
TIMINGS = Timings(connect_s=1.0, gatt_s=1.0, deadline_s=10.0, settle_s=0.5, idle_s=0.5)
ABSENT_S = 6.0


class Recorder:
    """A publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, payload, retain))

    def lock_states(self, lock: str) -> list[LockState]:
        return [LockState.model_validate_json(p) for t, p, _ in self.sent
                if t == topics.lock_state(HUB, lock)]

    def device_states(self, device: str) -> list[DeviceState]:
        return [DeviceState.model_validate_json(p) for t, p, _ in self.sent
                if t == topics.device_state(HUB, device)]


@dataclass
class Hub:
    home: SimulatedHome
    drivers: LockDrivers
    devices: Devices
    published: Recorder
    stack: contextlib.AsyncExitStack


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    locks = [InsideTurnerLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32)),
             EntranceDoorLock("entrance", "C0:FF:EE:00:00:04", os.urandom(32), release_s=0.2)]
    home = SimulatedHome(tmp_path / "home", locks=locks,
                         policy={"scan_every_ms": 500, "scan_ms": 400})
    await home.start()
    store = Store.open(tmp_path / "state")
    published = Recorder()
    kinds = {lk.lock_id: lk.kind for lk in locks}
    lock_states = LockStates(store, AuditLog(store, Outbox(store), HUB), HUB, kinds, published)
    devices = Devices(store, Outbox(store), HUB, published,
                      devices=DevicesConfig(absent_s=AbsentConfig(inside_turner=ABSENT_S,
                                                                  entrance_door=ABSENT_S)))
    for lock_id, kind in kinds.items():
        devices.expect(lock_id, kind, "mains" if kind == "entrance_door" else "reference")
    stack = contextlib.AsyncExitStack()
    bridge = await Bridge.open(home.port, home.link_key)
    stack.push_async_callback(bridge.close)
    bridge.on_link_change(devices.bridge_link)
    devices.bridge_link(bridge.is_up)
    try:
        assert await bridge.wait_up(TIMEOUT)
        proxy = BleProxy(bridge)
        stack.callback(proxy.close)
        drivers = await LockDrivers.open(
            proxy, {lk.lock_id: paired(lk) for lk in locks}, lock_states, devices, stack,
            timings=TIMINGS, upkeep=UpkeepTimings(poll_s=0.5, news_gap_s=0.2,
                                                  news_gap_max_s=0.2))
        yield Hub(home, drivers, devices, published, stack)
    finally:
        await stack.aclose()
        await home.stop()
        store.close()


def _available(hub: Hub, device: str) -> bool:
    state = hub.devices.state(device)
    return state is not None and state.available


async def test_a_manual_turn_and_polls_reach_the_retained_lock_state(hub: Hub) -> None:
    lock = hub.home.locks["front-door"]
    await until(lambda: any(s.source == "poll" for s in hub.published.lock_states("front-door")),
                "the poll at start in the retained state", TIMEOUT)
    lock.turn_manually("unlocked")
    await until(lambda: any((s.state, s.source) == ("unlocked", "manual")
                            for s in hub.published.lock_states("front-door")),
                "the manual turn in the retained state", TIMEOUT)
    # Only one poll with nothing new reaches the state (LockStates drops the rest).
    sources = [s.source for s in hub.published.lock_states("front-door")]
    assert sources[0] == "poll" and "manual" in sources
    assert lock.motor_moves == 0
    await until(lambda: _available(hub, "front-door") and _available(hub, "entrance"),
                "both locks heard: the registry takes hubd's sightings", TIMEOUT)


async def test_a_lock_out_of_range_goes_unavailable_and_comes_back(hub: Hub) -> None:
    lock = hub.home.locks["front-door"]
    await until(lambda: _available(hub, "front-door") and _available(hub, "entrance"),
                "both locks heard", TIMEOUT)
    lock.in_range = False
    await until(lambda: (hub.devices.tick(), not _available(hub, "front-door"))[1],
                "the lock out of range to go unavailable", TIMEOUT)
    why = hub.devices.state("front-door").why  # type: ignore[union-attr]
    assert why == f"not heard from for over {ABSENT_S:g} s"
    assert _available(hub, "entrance"), "the lock in range stays available"
    lock.in_range = True
    await until(lambda: (hub.devices.tick(), _available(hub, "front-door"))[1],
                "the lock back in range to be available again", TIMEOUT)
    published = [s.available for s in hub.published.device_states("front-door")]
    assert published[-1] is True and False in published


async def test_everything_stops_with_hubd(hub: Hub) -> None:
    lock = hub.home.locks["front-door"]
    upkeep = hub.drivers.locks.upkeep
    assert upkeep is not None
    await until(lambda: lock.connections >= 1, "a poll", TIMEOUT)
    await hub.stack.aclose()
    assert upkeep._task is None  # noqa: SLF001 - stopped, not merely forgotten
    await until(lambda: not lock.links, "hubd's connection to the lock dropped", TIMEOUT)

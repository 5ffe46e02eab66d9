"""A dKey in hubd's lock drivers as the daemon wires them (hubd/locks/drivers.py), in direct mode
(DirectRadio on the simulated radio), with a real SQLite state database and device registry:

- the lock's device takes the battery model ``dkey`` though hubd's start expected it as
  ``reference``; its advert is a sighting (signal, no battery);
- the poll at start reads the state (source ``poll``) and a battery below the lock's warning:
  the raw reading reaches the registry, which warns ``low``;
- a turn by hand while the connection is kept reaches the retained lock state as ``manual``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubapi import topics
from hubapi.models import BatteryWarning, LockState
from hubd.access.lockstate import LockStates
from hubd.ble.direct import DirectRadio
from hubd.devices.registry import Devices
from hubd.locks import PairedLock, UpkeepTimings
from hubd.locks.dkey import DkeyTimings
from hubd.locks.drivers import LockDrivers
from hubd.locks.transport import battery_model
from hubd.store.audit import AuditLog
from hubd.store.database import Store
from hubd.store.outbox import Outbox
from simulator.dkey import DKeyLock
from tests.hubd.test_locks_dkey import ADDR, LOCK, associate, dkey, radio  # noqa: F401
from tests.waiting import until
from wire import lockkinds

HUB = "hub-dkey"
TIMEOUT = 60.0  # a hang guard
QUIET = 3600.0  # a poll that never comes due again within a test


class Recorder:
    """A publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, payload, retain))

    def lock_states(self) -> list[LockState]:
        return [LockState.model_validate_json(p) for t, p, _ in self.sent
                if t == topics.lock_state(HUB, LOCK)]


@dataclass
class Hub:
    lock: DKeyLock
    drivers: LockDrivers
    devices: Devices
    published: Recorder
    outbox: Outbox

    def warning(self) -> BatteryWarning | None:
        """The first battery warning the registry put in the durable outbox, if any."""
        oldest = self.outbox.oldest()
        if oldest is None or oldest[1] != topics.device_battery(HUB, LOCK):
            return None
        return BatteryWarning.model_validate_json(oldest[2])


@pytest.fixture
async def hub(tmp_path: Path, radio: DirectRadio, dkey: DKeyLock) -> AsyncIterator[Hub]:  # noqa: F811
    association = await associate(radio, dkey)
    dkey.set_battery(18)  # below the lock's warning (20), above critical (17)
    dkey.turn_by_hand(locked=False)  # nobody connected: seen at the poll
    store = Store.open(tmp_path / "state")
    published = Recorder()
    outbox = Outbox(store)
    kinds = {LOCK: lockkinds.IN_CYLINDER}
    lock_states = LockStates(store, AuditLog(store, outbox, HUB), HUB, kinds, published)
    devices = Devices(store, outbox, HUB, published)
    # As hubd's start does (hubd.__main__._lock_drivers), from the lock's pairing.
    devices.expect(LOCK, lockkinds.IN_CYLINDER, battery_model(lockkinds.IN_CYLINDER, lockkinds.DKEY))
    devices.bridge_link(True)  # direct mode: no bridge's link to wait for
    stack = contextlib.AsyncExitStack()
    try:
        drivers = await LockDrivers.open(
            radio, {LOCK: PairedLock(lockkinds.IN_CYLINDER, ADDR, association,
                                     protocol=lockkinds.DKEY)},
            lock_states, devices, stack, upkeep=UpkeepTimings(poll_s=QUIET),
            dkey_timings=DkeyTimings(deadline_s=10.0, result_s=5.0, settle_s=0.3, idle_s=30.0))
        yield Hub(dkey, drivers, devices, published, outbox)
    finally:
        await stack.aclose()
        store.close()
    assert dkey.faults == []


async def test_the_poll_reads_the_state_and_a_low_battery_warns(hub: Hub) -> None:
    state = hub.devices.state(LOCK)
    assert state is not None and state.model == "dkey"
    await until(hub.warning, "the battery warning", TIMEOUT)
    warning = hub.warning()
    assert warning is not None and (warning.event.value, warning.model) == ("low", "dkey")
    level = hub.devices.state(LOCK).battery  # type: ignore[union-attr]
    assert level is not None and (level.reading, level.percent, level.unit.value) == (18, 18, "raw")
    await until(lambda: any((s.state, s.source) == ("unlocked", "poll")
                            for s in hub.published.lock_states()), "the polled state", TIMEOUT)


async def test_its_advert_is_a_sighting_with_signal(hub: Hub) -> None:
    await until(lambda: not hub.lock.links, "the poll's connection to go", TIMEOUT)
    await until(lambda: (hub.devices.state(LOCK) or hub).rssi == hub.lock.rssi,  # type: ignore[union-attr]
                "the advert's signal in the registry", TIMEOUT)
    assert hub.devices.state(LOCK).available  # type: ignore[union-attr]


async def test_a_turn_by_hand_while_connected_reaches_the_lock_state(hub: Hub) -> None:
    await until(lambda: not hub.lock.links, "the poll's connection to go", TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        result = await hub.drivers.locks.operate(LOCK, "lock", "cmd", lambda: None, TIMEOUT)
    assert (result.outcome, result.state, result.battery) == ("succeeded", "locked", 18)
    hub.lock.turn_by_hand(locked=False)
    await until(lambda: any((s.state, s.source) == ("unlocked", "manual")
                            for s in hub.published.lock_states()), "the manual turn", TIMEOUT)

"""hubd's dKey driver (hubd/locks/dkey.py) through hubd's lock transport and the bridge's Bluetooth
proxy: the unmodified py-dormakaba-dkey on hubd's radio (hubd.ble.vendor puts its own client on
the proxy), the REAL bridge firmware in MicroPython, the simulated dKey on the simulated radio.
The path hil uses; tests/hubd/test_locks_dkey.py covers the rest in direct mode.

- unlock and lock succeed with state and battery, ``on_written`` once each, the motor once each;
  their connection skips discovery (the association's database, kept by the proxy);
- a link lost before the write's answer, or after the lock took the command: ``incomplete``
  (``link_lost``), the state read back, the lock took the command ONCE and the motor moved once,
  ``on_written`` once;
- with the serial link to the bridge down: ``failed``/``bridge_unavailable``, nothing written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from py_dormakaba_dkey import DKEYLock

from hubd.ble import BleProxy, vendor
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, PairedLock
from hubd.locks.dkey import DkeyTimings
from simulator.dkey import DKeyLock
from simulator.home import SimulatedHome
from tests.waiting import until
from wire import lockkinds, messages
from wire import outcomes as oc

ADDR = "F0:94:0A:00:0D:01"
CODE = "BCDF2345"
LOCK = "front-door"
TIMEOUT = 90.0  # a hang guard for what the simulated home does on its own time
TIMINGS = DkeyTimings(deadline_s=30.0, gatt_s=5.0, command_s=10.0, result_s=15.0, settle_s=0.5,
                      readback_s=30.0, idle_s=1.0)


@dataclass
class Rig:
    home: SimulatedHome
    bridge: Bridge
    lock: DKeyLock
    locks: BleLocks


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    home = SimulatedHome(tmp_path / "home", locks=[])
    await home.start()
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.2)
    home.radio.call(home.radio.add, lock)
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    locks = None
    try:
        assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
        vendor.install()
        async with asyncio.timeout(TIMEOUT):
            client = DKEYLock(proxy.ble_device(ADDR))
            with vendor.on_radio(proxy, addr_type=0, gatt_timeout=5.0):
                data = await client.associate(CODE)
                await client.disconnect()
            await until(lambda: not lock.links, "the lock to be free")
        locks = BleLocks(proxy, {LOCK: PairedLock(lockkinds.IN_CYLINDER, ADDR,
                                                  data.key_holder_id + data.secret,
                                                  protocol=lockkinds.DKEY)},
                         dkey_timings=TIMINGS)
        yield Rig(home, bridge, lock, locks)
    finally:
        if locks is not None:
            await locks.close()
        proxy.close()
        await bridge.close()
        await home.stop()
    assert lock.faults == []


async def test_unlock_and_lock_through_the_bridge(rig: Rig) -> None:
    written: list[str] = []
    async with asyncio.timeout(2 * TIMEOUT):
        unlocked = await rig.locks.operate(LOCK, "unlock", "cmd-1",
                                           lambda: written.append("unlock"), TIMEOUT)
        locked = await rig.locks.operate(LOCK, "lock", "cmd-2",
                                         lambda: written.append("lock"), TIMEOUT)
    assert (unlocked.outcome, unlocked.state, unlocked.battery) == (oc.SUCCEEDED, "unlocked", 100)
    assert (locked.outcome, locked.state, locked.battery) == (oc.SUCCEEDED, "locked", 100)
    assert written == ["unlock", "lock"]
    assert rig.lock.move_commands == 2 and rig.lock.motor_moves == 2 and rig.lock.locked
    assert rig.home.radio.centrals == 1, "the bridge is the only central on the air"
    # The association's connection discovered; the commands' reconnect used the database the
    # proxy kept (hubd/ble/gatt_cache.py): one ble_discover on the serial line in all.
    assert rig.lock.connections >= 2
    assert _discoveries(rig.home) == 1


def _discoveries(home: SimulatedHome) -> int:
    """The ble_discover requests on the serial line (its transcript, as a logic analyser on the
    cable would see it)."""
    bodies = [c.body for c in home.line.frames() if c.body and c.body.startswith(b"{")]
    return sum(1 for body in bodies if json.loads(body).get("m") == messages.BLE_DISCOVER)


@pytest.mark.parametrize("knob", ["drop_link_before_write_answer", "drop_link_after_command"])
async def test_a_link_lost_around_the_command_through_the_bridge_is_sent_once(
        rig: Rig, knob: str) -> None:
    written: list[str] = []
    setattr(rig.lock, knob, True)
    async with asyncio.timeout(2 * TIMEOUT):
        result = await rig.locks.operate(LOCK, "unlock", "cmd", lambda: written.append("w"),
                                         TIMEOUT)
    assert (result.outcome, result.reason) == (oc.INCOMPLETE, oc.LINK_LOST)
    assert result.state == "unlocked", "read back once the lock settled"
    assert written == ["w"]
    assert rig.lock.move_commands == 1, "the lock took the command once"
    assert rig.lock.motor_moves == 1 and not rig.lock.locked


async def test_with_the_bridges_link_down_nothing_is_written_bridge_unavailable(
        rig: Rig) -> None:
    proxy = rig.locks.radio
    assert isinstance(proxy, BleProxy)
    short = BleLocks(proxy, {LOCK: PairedLock(lockkinds.IN_CYLINDER, ADDR, bytes(36),
                                              protocol=lockkinds.DKEY)},
                     dkey_timings=DkeyTimings(deadline_s=1.0))  # the link stays down past it
    rig.home.line.cut = True  # the serial line to the bridge goes silent: the link goes down
    await until(lambda: not proxy.is_up, "the link to the bridge to go down", TIMEOUT)
    written: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            result = await short.operate(LOCK, "unlock", "cmd", lambda: written.append("w"),
                                         TIMEOUT)
    finally:
        await short.close()
        rig.home.line.cut = False
    assert (result.outcome, result.reason, result.state) == (oc.FAILED, oc.BRIDGE_UNAVAILABLE,
                                                             None)
    assert written == [] and rig.lock.connections == 1  # the association's only

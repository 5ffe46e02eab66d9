"""hubd's lock transport on bleak (hubd/locks/transport.py): lock ids to their drivers, one
operation at a time per lock, different locks in parallel; and the locks' sightings in their
adverts (hubd/locks/sightings.py); through the REAL bridge firmware as a Bluetooth proxy, against
the simulated locks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hubd.access.transport import LockTransport, OpResult
from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, Timings
from hubd.locks.sightings import LockSightings
from simulator.locks import InsideTurnerLock, ReferenceProtocolLock
from simulator.radio import Link
from simulator.home import SimulatedHome, every_kind, paired
from tests.waiting import until
from wire import lockkinds
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
TIMINGS = Timings(deadline_s=30.0, result_s=TIMEOUT, settle_s=0.5, idle_s=1.0)


class GatedTurner(InsideTurnerLock):
    """An inside turner whose motor starts only once the test opens ``gate``: an operation on it
    stays out, after its COMMAND was written, for as long as the test needs."""

    def __init__(self, lock_id: str, address: str) -> None:
        super().__init__(lock_id, address, os.urandom(32), travel_time_s=0.0)
        self.gate = asyncio.Event()
        self.held: list[str] = []  # the actions that reached the motor

    async def _run_motor(self, link: Link, tag: bytes, action: str) -> None:
        self.held.append(action)
        await self.gate.wait()
        await super()._run_motor(link, tag, action)


async def _open(locks: list[ReferenceProtocolLock], tmp_path: Path
                ) -> tuple[SimulatedHome, Bridge, BleProxy, BleLocks]:
    home = SimulatedHome(tmp_path / "home", locks=locks)
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge)
    transport = BleLocks(proxy, {lk.lock_id: paired(lk) for lk in locks}, TIMINGS)
    return home, bridge, proxy, transport


@pytest.fixture
async def opened(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[SimulatedHome, BleLocks]]:
    home, bridge, proxy, transport = await _open(request.param(), tmp_path)
    yield home, transport
    await transport.close()
    proxy.close()
    await bridge.close()
    await home.stop()


def _gated_and_plain() -> list[ReferenceProtocolLock]:
    return [GatedTurner("front-door", "C0:FF:EE:00:00:01"),
            InsideTurnerLock("back-door", "C0:FF:EE:00:00:02", os.urandom(32), travel_time_s=0.0)]


def _written(into: list[str], what: str, also: Callable[[], None] = lambda: None) -> Callable[[], None]:
    def on_written() -> None:
        into.append(what)
        also()
    return on_written


GATED = pytest.mark.parametrize("opened", [_gated_and_plain], indirect=True, ids=["gated"])


@GATED
async def test_two_locks_run_at_once_and_both_succeed(opened: tuple[SimulatedHome, BleLocks]) -> None:
    home, transport = opened
    front = home.locks["front-door"]
    assert isinstance(front, GatedTurner)
    assert isinstance(transport, LockTransport)
    written: list[str] = []
    async with asyncio.timeout(2 * TIMEOUT):
        held = asyncio.create_task(transport.operate("front-door", "unlock", "cmd-front",
                                                     _written(written, "front"), TIMEOUT))
        await until(lambda: front.held == ["unlock"], "the front door's COMMAND to reach its motor",
                    TIMEOUT)
        other = await transport.operate("back-door", "unlock", "cmd-back",
                                         _written(written, "back"), TIMEOUT)
        assert (other.outcome, other.state) == (oc.SUCCEEDED, "unlocked")
        assert not held.done(), "the back door did not wait for the front door's operation"
        front.gate.set()
        result = await held
    assert (result.outcome, result.state) == (oc.SUCCEEDED, "unlocked")
    assert written == ["front", "back"]
    assert front.moves == ["unlock"] and home.locks["back-door"].moves == ["unlock"]


@GATED
async def test_two_operations_on_one_lock_run_one_after_the_other(
        opened: tuple[SimulatedHome, BleLocks]) -> None:
    home, transport = opened
    front = home.locks["front-door"]
    assert isinstance(front, GatedTurner)
    written: list[str] = []
    first_done_when_second_written: list[bool] = []
    async with asyncio.timeout(2 * TIMEOUT):
        first = asyncio.create_task(transport.operate("front-door", "unlock", "cmd-1",
                                                      _written(written, "unlock"), TIMEOUT))
        second = asyncio.create_task(transport.operate(
            "front-door", "lock", "cmd-2",
            _written(written, "lock", lambda: first_done_when_second_written.append(first.done())),
            TIMEOUT))
        await until(lambda: front.held == ["unlock"], "the first COMMAND to reach the motor", TIMEOUT)
        assert written == ["unlock"] and not second.done()
        front.gate.set()
        results: list[OpResult] = [await first, await second]
    assert [(r.outcome, r.state) for r in results] == [(oc.SUCCEEDED, "unlocked"), (oc.SUCCEEDED, "locked")]
    assert first_done_when_second_written == [True], "the second was written only after the first ended"
    assert front.moves == ["unlock", "lock"]
    assert ("lock", "busy") not in front.commands


@pytest.mark.parametrize("opened", [every_kind], indirect=True, ids=["every_kind"])
async def test_every_kind_opens_at_once_each_lock_moving_once(
        opened: tuple[SimulatedHome, BleLocks]) -> None:
    home, transport = opened
    actions = {lock_id: "unlatch" if lk.kind == lockkinds.ENTRANCE_DOOR else "unlock"
               for lock_id, lk in home.locks.items()}
    async with asyncio.timeout(2 * TIMEOUT):
        results = await asyncio.gather(*(transport.operate(lock_id, action, f"cmd-{lock_id}",
                                                           lambda: None, TIMEOUT)
                                         for lock_id, action in actions.items()))
    assert [r.outcome for r in results] == [oc.SUCCEEDED] * len(actions)
    assert {lock_id: lk.moves for lock_id, lk in home.locks.items()} == \
        {lock_id: [action] for lock_id, action in actions.items()}


@GATED
async def test_an_unknown_lock_or_an_action_its_kind_lacks_fails_before_anything_is_sent(
        opened: tuple[SimulatedHome, BleLocks]) -> None:
    home, transport = opened
    written: list[str] = []
    unknown = await transport.operate("garage", "unlock", "cmd-x", _written(written, "x"), TIMEOUT)
    unlatch = await transport.operate("back-door", "unlatch", "cmd-y", _written(written, "y"), TIMEOUT)
    assert (unknown.outcome, unknown.reason) == (oc.FAILED, oc.UNKNOWN_LOCK)
    assert (unlatch.outcome, unlatch.reason) == (oc.FAILED, oc.UNSUPPORTED_ACTION)
    assert written == [] and home.locks["back-door"].connections == 0


@GATED
async def test_is_up_and_wait_up_follow_the_link_to_the_bridge(
        opened: tuple[SimulatedHome, BleLocks]) -> None:
    home, transport = opened
    assert transport.is_up
    home.line.cut = True
    await until(lambda: not transport.is_up, "hubd to see the link down", TIMEOUT)
    assert not await transport.wait_up(0.1)
    home.line.cut = False
    assert await transport.wait_up(TIMEOUT)


async def test_the_locks_adverts_are_sightings_with_battery_and_signal_without_a_connection(
        tmp_path: Path) -> None:
    lock = InsideTurnerLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32), travel_time_s=0.0)
    home = SimulatedHome(tmp_path / "home", locks=[lock], policy={"scan_every_ms": 1000, "scan_ms": 500})
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    seen: list[tuple[str, int, int]] = []
    sightings = LockSightings(proxy, {"front-door": paired(lock)},
                              lambda *sighting: seen.append(sighting))
    try:
        assert await bridge.wait_up(TIMEOUT)
        await sightings.start()
        await until(lambda: any(s[:2] == ("front-door", 100) for s in seen),
                    "the lock's advert", TIMEOUT)
        assert all(-127 <= rssi <= 20 for *_, rssi in seen)
        lock.set_battery(41)
        await until(lambda: seen[-1][:2] == ("front-door", 41), "the new battery in the advert", TIMEOUT)
        assert lock.connections == 0
    finally:
        sightings.stop()
        proxy.close()
        await bridge.close()
        await home.stop()

"""A visit's next door held (hubd/locks/visit.py, through hubd/locks/transport.py and
hubd/locks/kept.py): the connection to the route's next door opened when the door before it
opened, kept alive under the lock's own idle drop by reads that move nothing, taken by the
door's command, ended by any other command, another assignment or its time, and connected
again once at most when the lock drops it; through the REAL bridge firmware as a Bluetooth
proxy, against the simulated locks.

Every wait is on a condition; the times below only keep the test short.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, Timings
from hubd.locks.visit import VisitHold, VisitRoute
from simulator.home import SimulatedHome, paired
from simulator.locks import EntranceDoorLock, InsideTurnerLock
from simulator.radio import Link
from tests.waiting import until
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
TIMINGS = Timings(deadline_s=30.0, result_s=TIMEOUT, settle_s=0.0, idle_s=0.5)
#: The turner's own idle drop: a held connection outlives it only by the keep-alive reads.
LOCK_IDLE_S = 1.5
ROUTE = VisitRoute(("entrance", "front-door"), hold_s=TIMEOUT, keepalive_s=0.2)


class CountingTurner(InsideTurnerLock):
    """An inside turner that counts the READ_REPORTS it is sent (a connection can carry many)."""

    reads = 0

    def _on_read_reports(self, link: Link, data: bytes) -> None:
        self.reads += 1
        super()._on_read_reports(link, data)


@dataclass
class Rig:
    home: SimulatedHome
    locks: BleLocks
    visits: VisitHold
    turner: CountingTurner
    reports: list[tuple]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    turner = CountingTurner("front-door", "C0:FF:EE:00:00:01", os.urandom(32),
                            travel_time_s=0.0, idle_timeout_s=LOCK_IDLE_S)
    entrance = EntranceDoorLock("entrance", "C0:FF:EE:00:00:02", os.urandom(32))
    home = SimulatedHome(tmp_path / "home", locks=[turner, entrance])
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    reports: list[tuple] = []
    locks = BleLocks(proxy, {lk.lock_id: paired(lk) for lk in (turner, entrance)}, TIMINGS,
                     on_report=lambda *report: reports.append(report))
    visits = VisitHold(locks, ROUTE)
    try:
        assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
        yield Rig(home, locks, visits, turner, reports)
    finally:
        await visits.close()
        await locks.close()
        proxy.close()
        await bridge.close()
        await home.stop()


async def _held(rig: Rig, connections: int) -> None:
    await until(lambda: rig.turner.connections == connections and rig.turner.links
                and rig.locks.connected("front-door"), "the held connection", TIMEOUT)


async def test_the_next_door_is_held_for_the_visit_and_let_go_by_any_other_command(rig: Rig) -> None:
    turner, visits = rig.turner, rig.visits
    loop = asyncio.get_running_loop()

    # The entrance opened for visit-1: the front door's connection is made before its command.
    visits.succeeded("entrance", "visit-1")
    assert visits.holding == "front-door"
    await _held(rig, 1)
    held_at = loop.time()
    # Kept past the lock's own idle drop by reads that move nothing, on the one connection.
    await until(lambda: loop.time() > held_at + LOCK_IDLE_S + 0.5 and turner.reads >= 3,
                "keep-alive reads past the lock's idle drop", TIMEOUT)
    assert turner.connections == 1 and turner.links, "the keep-alive kept the connection"
    assert turner.commands == [] and turner.moves == [], "the hold never writes a COMMAND"

    # The visit's command for the front door takes that connection: it made none of its own.
    visits.accepted("front-door", "visit-1")
    assert visits.holding is None
    result = await rig.locks.operate("front-door", "unlock", "cmd-1", lambda: None, TIMEOUT)
    assert (result.outcome, result.state) == (oc.SUCCEEDED, "unlocked")
    assert turner.connections == 1, "the command found the held connection"
    assert turner.commands == [("unlock", "ok")]
    await until(lambda: not turner.links, "the connection dropped idle_s after the command",
                TIMEOUT)

    # A command for another door ends a hold at once, and its connection goes idle_s after.
    visits.succeeded("entrance", "visit-2")
    await _held(rig, 2)
    visits.accepted("entrance", "visit-2")
    assert visits.holding is None
    await until(lambda: not turner.links, "the hold's connection let go", TIMEOUT)

    # Another assignment's command ends it too (at most one hold: never two visits').
    visits.succeeded("entrance", "visit-3")
    await _held(rig, 3)
    visits.accepted("front-door", "visit-4")
    await until(lambda: not turner.links, "the hold let go for another visit", TIMEOUT)

    # A key turned by hand on the held door is passed on as it comes, not by the next read (a
    # hold keeps the connection between reads: the lock's news on it is not an operation's).
    # No keep-alive falls due here and the lock does not drop the link: only the news can tell.
    turner.idle_timeout_s = None
    visits.route = VisitRoute(ROUTE.route, hold_s=4 * TIMEOUT, keepalive_s=2 * TIMEOUT)
    reads = turner.reads
    visits.succeeded("entrance", "visit-4b")
    await _held(rig, 4)
    await until(lambda: turner.reads > reads, "the hold's first read", TIMEOUT)
    reads = turner.reads
    turner.turn_manually("unlocked")
    await until(lambda: any(r[0] == "front-door" and r[5] == "manual" for r in rig.reports),
                "the manual turn reported", TIMEOUT)
    assert turner.reads == reads, "reported as it came, not by a read"
    visits.accepted("entrance", "visit-4c")
    turner.idle_timeout_s = LOCK_IDLE_S
    await until(lambda: not turner.links, "that hold let go", TIMEOUT)

    # A hold nobody uses ends by its time.
    visits.route = VisitRoute(ROUTE.route, hold_s=0.5, keepalive_s=0.2)
    visits.succeeded("entrance", "visit-5")
    await until(lambda: visits.holding is None, "the hold's time to end it", TIMEOUT)
    await until(lambda: not turner.links, "the expired hold's connection dropped", TIMEOUT)
    # A door the visit asked for already (both commands sent at once) is not held after.
    visits.accepted("entrance", "visit-6")
    visits.accepted("front-door", "visit-6")
    visits.succeeded("entrance", "visit-6")
    assert visits.holding is None
    assert visits.counts == {"held": 5, "used": 1, "ended": 3, "expired": 1, "lost": 0}
    assert turner.commands == [("unlock", "ok")], "no hold wrote anything"
    assert turner.connections == 5, "each hold one connection"


async def test_a_lock_that_drops_the_held_connection_is_connected_again_once_only(
        rig: Rig) -> None:
    turner, visits = rig.turner, rig.visits
    visits.succeeded("entrance", "visit-1")
    await _held(rig, 1)
    for link in list(turner.links):
        link.disconnect()
    await _held(rig, 2)  # connected again, once
    for link in list(turner.links):
        link.disconnect()
    await until(lambda: visits.holding is None, "the hold to end after the second loss", TIMEOUT)
    assert visits.counts["lost"] == 1
    assert turner.connections == 2, "no third connection: no storm"
    assert turner.commands == []


"""hubd's background work for its locks (hubd/locks/upkeep.py through hubd/locks/transport.py):
polls, the reports a lock kept while nobody was connected read when its advert's counter moves,
reports a kind cannot make dropped, a forged counter rate-limited; through the REAL bridge
firmware as a Bluetooth proxy, against the simulated locks.

Every wait is on a condition; the times below only keep the tests short.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, Timings
from hubd.locks.sightings import LockSightings
from hubd.locks.upkeep import UpkeepTimings
from simulator.locks import InsideTurnerLock, ReferenceProtocolLock
from simulator.radio import Link, Peripheral
from simulator.home import SimulatedHome, address, paired
from tests.waiting import until
from wire import lockproto as lp
from wire import lockside
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
TIMINGS = Timings(deadline_s=30.0, result_s=TIMEOUT, settle_s=0.5, idle_s=0.5)
SCANS = {"scan_every_ms": 500, "scan_ms": 400}  # the bridge's passive scans for watched adverts
QUIET = 3600.0  # a poll or news gap that never comes due within a test


@dataclass
class Rig:
    """A home whose bridge is only a proxy, and hubd's transport with its upkeep and sightings;
    what hubd was told, in order."""

    home: SimulatedHome
    bridge: Bridge
    proxy: BleProxy
    locks: BleLocks
    sightings: LockSightings
    reports: list[tuple[str, str, str | None, str, int, str]] = field(default_factory=list)
    heard: list[tuple[str, int | None]] = field(default_factory=list)
    counters: list[tuple[str, int]] = field(default_factory=list)

    def of(self, lock_id: str, source: str | None = None) -> list[tuple[str, str | None, str, str]]:
        """(what, name, state, source) of each report of ``lock_id`` (only ``source``'s)."""
        return [(what, name, state, src) for lock, what, name, state, _, src in self.reports
                if lock == lock_id and (source is None or src == source)]


@pytest.fixture
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """``request.param``: (the locks, their UpkeepTimings)."""
    locks, upkeep = request.param()
    home = SimulatedHome(tmp_path / "home", locks=locks, policy=SCANS)
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    reports: list[tuple[str, str, str | None, str, int, str]] = []
    heard: list[tuple[str, int | None]] = []
    counters: list[tuple[str, int]] = []
    transport = BleLocks(proxy, {lk.lock_id: paired(lk) for lk in locks}, TIMINGS,
                         on_report=lambda *r: reports.append(r), upkeep=upkeep,
                         on_heard=lambda *h: heard.append(h))

    def counted(lock_id: str, counter: int) -> None:
        counters.append((lock_id, counter))
        transport.advertised(lock_id, counter)

    sightings = LockSightings(proxy, {lk.lock_id: paired(lk) for lk in locks},
                              lambda *_: None, counted)
    try:
        assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
        await sightings.start()
        transport.start()
        yield Rig(home, bridge, proxy, transport, sightings, reports, heard, counters)
    finally:
        sightings.stop()
        await transport.close()
        proxy.close()
        await bridge.close()
        await home.stop()


def _turner(lock_id: str = "front-door", n: int = 1, **kw: object) -> InsideTurnerLock:
    return InsideTurnerLock(lock_id, f"C0:FF:EE:00:00:0{n}", os.urandom(32), travel_time_s=0.0,
                            **kw)  # type: ignore[arg-type]


def _one_turner_news_soon() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [_turner()], UpkeepTimings(poll_s=QUIET, news_gap_s=0.2, news_gap_max_s=0.2)


def _one_turner_polled_often() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [_turner()], UpkeepTimings(poll_s=0.3, news_gap_s=0.2)


def _two_turners_polled_often() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [GatedTurner("front-door", 1), _turner("back-door", 2)], \
        UpkeepTimings(poll_s=0.3, news_gap_s=0.2)


class CountingTurner(InsideTurnerLock):
    """An inside turner that counts the READ_REPORTS it is sent (a connection can carry many)."""

    reads = 0

    def _on_read_reports(self, link: Link, data: bytes) -> None:
        self.reads += 1
        super()._on_read_reports(link, data)


def _one_turner_news_gap_long() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [CountingTurner("front-door", "C0:FF:EE:00:00:01", os.urandom(32))], UpkeepTimings(poll_s=QUIET, news_gap_s=QUIET, news_gap_max_s=QUIET)


def _one_turner_backing_off() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [_turner()], UpkeepTimings(poll_s=QUIET, news_gap_s=0.1, news_gap_max_s=0.8)


async def _idle(lock: ReferenceProtocolLock) -> None:
    """Wait until nobody is connected to ``lock`` (hubd's idle connection dropped)."""
    await until(lambda: not lock.links, f"{lock.lock_id}'s connections to be dropped", TIMEOUT)


def _statuses_only(lock: ReferenceProtocolLock) -> bool:
    return all(action == "status" for action, _ in lock.commands)


@pytest.mark.parametrize("rig", [_one_turner_news_soon], indirect=True)
async def test_a_key_turned_by_hand_while_nobody_is_connected_reaches_hubd_as_a_manual_turn(
        rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: rig.of("front-door", "poll"), "the poll at start", TIMEOUT)
    assert rig.of("front-door") == [("state", None, "locked", "poll")]
    await _idle(lock)
    connections = lock.connections
    assert connections == 1, "the poll at start is one connection"

    lock.turn_manually("unlocked")  # nobody connected: only its backlog and its advert know
    await until(lambda: ("state", None, "unlocked", "manual") in rig.of("front-door"),
                "the manual turn to reach hubd", TIMEOUT)
    assert rig.of("front-door") == [("state", None, "locked", "poll"),
                                    ("state", None, "unlocked", "manual")]
    assert ("front-door", lock.status_counter & 0xFFFF) in rig.counters, "its advert told"
    assert lock.connections == connections + 1, "one connection read the backlog"
    assert lock.motor_moves == 0 and _statuses_only(lock)

    # The counter is kept across connections: the next turn is read after the last one.
    await _idle(lock)
    lock.turn_manually("locked")
    await until(lambda: ("state", None, "locked", "manual") in rig.of("front-door"),
                "the second manual turn", TIMEOUT)
    assert [r for r in rig.of("front-door") if r[3] == "manual"] == \
        [("state", None, "unlocked", "manual"), ("state", None, "locked", "manual")]
    assert rig.locks.driver("front-door").report_counter == lock.status_counter  # type: ignore[union-attr]


@pytest.mark.parametrize("rig", [_one_turner_polled_often], indirect=True)
async def test_polls_read_state_and_battery_with_source_poll_and_move_nothing(rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: len(rig.of("front-door", "poll")) >= 2, "two polls", TIMEOUT)
    lock.set_battery(37)
    lock.state = "unlocked"  # changed and not reported (a lock that lost a report): a poll finds it
    await until(lambda: ("front-door", "state", None, "unlocked", 37, "poll") in rig.reports,
                "a poll to find the new state and battery", TIMEOUT)
    assert ("front-door", 37) in rig.heard, "an authentic answer is a sighting with its battery"
    assert lock.motor_moves == 0 and lock.moves == []
    assert lock.commands and _statuses_only(lock), "a poll writes only status COMMANDs"
    assert all(src == "poll" for *_, src in rig.of("front-door"))


class GatedTurner(InsideTurnerLock):
    """An inside turner whose motor starts only once the test opens ``gate``; its status reads
    show the state from before a move for ``stale_s`` after it, as real locks do."""

    def __init__(self, lock_id: str, n: int) -> None:
        super().__init__(lock_id, f"C0:FF:EE:00:00:0{n}", os.urandom(32), travel_time_s=0.0,
                         stale_s=0.4)
        self.gate = asyncio.Event()
        self.held: list[str] = []
        self.log: list[str] = []  # what reached the lock: connect, a COMMAND's action, motor

    def on_connect(self, link: Link) -> None:
        super().on_connect(link)
        self.log.append("connect")

    def _on_command(self, link: Link, data: bytes) -> None:
        self.log.append(lp.action_name(lockside.decode_command(data)[0]))
        super()._on_command(link, data)

    async def _run_motor(self, link: Link, tag: bytes, action: str) -> None:
        self.held.append(action)
        self.log.append("motor")
        await self.gate.wait()
        await super()._run_motor(link, tag, action)
        self.log.append("moved")


@pytest.mark.parametrize("rig", [_two_turners_polled_often], indirect=True)
async def test_a_poll_never_overlaps_a_command_on_the_same_lock_nor_reads_before_it_settled(
        rig: Rig) -> None:
    front, back = rig.home.locks["front-door"], rig.home.locks["back-door"]
    assert isinstance(front, GatedTurner)
    await until(lambda: rig.of("front-door", "poll"), "the front door's first poll", TIMEOUT)
    written: list[str] = []
    op = asyncio.create_task(rig.locks.operate("front-door", "unlock", "cmd-1",
                                               lambda: written.append("unlock"), TIMEOUT))
    await until(lambda: front.held == ["unlock"], "the COMMAND to reach the motor", TIMEOUT)
    during = len(front.log)
    back_polls = len(rig.of("back-door", "poll"))
    # The other lock's polls go on meanwhile: the upkeep did run.
    await until(lambda: len(rig.of("back-door", "poll")) >= back_polls + 3,
                "the back door polled while the front door's operation is out", TIMEOUT)
    assert front.log[during:] == [], "nothing reached the front door during its operation"
    front.gate.set()
    result = await op
    assert (result.outcome, result.state) == (oc.SUCCEEDED, "unlocked")
    before = len(rig.of("front-door", "poll"))
    # Polls are due all along (poll_s 0.3 s), but the lock answers the old state for 0.4 s after
    # the move (stale_s) and hubd waits settle_s (0.5 s): every poll after it reads the new one.
    await until(lambda: len(rig.of("front-door", "poll")) >= before + 2, "polls after the move",
                TIMEOUT)
    assert [state for _, _, state, _ in rig.of("front-door", "poll")[before:]] == \
        ["unlocked"] * (len(rig.of("front-door", "poll")) - before)
    after = front.log[front.log.index("moved"):]
    assert "status" in after and "unlock" not in after
    assert front.moves == ["unlock"] and written == ["unlock"] and back.moves == []


class AdvertForger(Peripheral):
    """Someone nearby advertising under a lock's address, its report counter moving with every
    advert, with no report behind it: it cannot be connected to (the real lock answers)."""

    def __init__(self, lock: ReferenceProtocolLock) -> None:
        super().__init__(lock.address, "forger", connectable=False)
        self.kind = lock.kind
        self.counter = 40000
        self.sent: set[int] = set()

    def advertising_data(self) -> bytes:
        self.counter += 1
        self.sent.add(self.counter)
        return lockside.encode_advert(self.kind, 99, self.counter)


def _forged(rig: Rig) -> list[int]:
    forger = next(p for p in rig.home.radio.peripherals if isinstance(p, AdvertForger))
    return [c for lock, c in rig.counters if lock == "front-door" and c in forger.sent]


@pytest.mark.parametrize("rig", [_one_turner_news_gap_long], indirect=True)
async def test_a_forged_advert_counter_costs_at_most_one_connection_per_news_gap(rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: rig.of("front-door", "poll"), "the poll at start", TIMEOUT)
    await _idle(lock)
    rig.home.radio.add(AdvertForger(lock))
    await until(lambda: len(_forged(rig)) >= 6, "hubd to hear six forged counters", TIMEOUT)
    assert isinstance(lock, CountingTurner)
    assert lock.connections <= 2 and lock.reads <= 2, \
        f"{lock.connections} connections, {lock.reads} reads: the poll at start and at most " \
        "one read for news"
    assert rig.of("front-door") == [("state", None, "locked", "poll")], "nothing was made up"
    assert _statuses_only(lock) and lock.motor_moves == 0


@pytest.mark.parametrize("rig", [_one_turner_backing_off], indirect=True)
async def test_reads_for_news_that_is_not_there_back_off_and_real_news_still_comes(
        rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: rig.of("front-door", "poll"), "the poll at start", TIMEOUT)
    rig.home.radio.add(AdvertForger(lock))
    upkeep = rig.locks.upkeep
    assert upkeep is not None
    watch = upkeep._watches["front-door"]  # noqa: SLF001 - the schedule is what is under test
    await until(lambda: watch.gap >= 0.8, "the gap to double up to its maximum", TIMEOUT)
    assert watch.gap == 0.8, "and no further"
    # Real news in the middle of the forgery still comes (one maximum gap later at the latest).
    lock.turn_manually("unlocked")
    await until(lambda: ("state", None, "unlocked", "manual") in rig.of("front-door"),
                "the real manual turn", TIMEOUT)
    assert lock.motor_moves == 0 and _statuses_only(lock)


def _turner_with_impossible_reports() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [_turner()], UpkeepTimings(poll_s=QUIET, news_gap_s=0.2, news_gap_max_s=0.2)


@pytest.mark.parametrize("rig", [_turner_with_impossible_reports], indirect=True)
async def test_reports_the_locks_kind_cannot_make_are_dropped_and_the_rest_passed_on(
        rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: rig.of("front-door", "poll"), "the poll at start", TIMEOUT)
    await _idle(lock)
    # Authentic (MACed with the lock's secret) but impossible for an inside turner.
    rig.home.radio.call(lock.report_event, "key_taken", "manual")
    rig.home.radio.call(lock.report_state, "unlocked", "handle")
    lock.turn_manually("locked")
    await until(lambda: ("state", None, "locked", "manual") in rig.of("front-door"),
                "the possible report", TIMEOUT)
    assert rig.of("front-door") == [("state", None, "locked", "poll"),
                                    ("state", None, "locked", "manual")]
    assert rig.locks.driver("front-door").report_counter == lock.status_counter  # type: ignore[union-attr]

    # Live, over a kept connection: the same.
    result = await rig.locks.operate("front-door", "status", "cmd-s", lambda: None, TIMEOUT)
    assert result.outcome == oc.SUCCEEDED and lock.links
    rig.home.radio.call(lock.report_event, "box_opened", "manual")
    rig.home.radio.call(lock.report_state, "unlocked", "motor")  # motor: remote, possible
    await until(lambda: ("state", None, "unlocked", "remote") in rig.of("front-door"),
                "the live report", TIMEOUT)
    assert [r for r in rig.of("front-door") if r[0] == "event"] == []


def _two_turners_quiet() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    return [_turner("front-door", 1), _turner("back-door", 2)], \
        UpkeepTimings(poll_s=0.3, news_gap_s=0.2, news_gap_max_s=0.2)


@pytest.mark.parametrize("rig", [_two_turners_quiet], indirect=True)
async def test_added_and_removed_locks_start_and_stop_their_background_work(rig: Rig) -> None:
    front, back = rig.home.locks["front-door"], rig.home.locks["back-door"]
    await until(lambda: rig.of("back-door", "poll"), "the back door's first poll", TIMEOUT)
    await rig.locks.remove("back-door")
    await rig.sightings.remove("back-door")
    assert rig.locks.driver("back-door") is None
    await _idle(back)
    connections = back.connections
    polled = len(rig.of("front-door", "poll"))
    back.turn_manually("unlocked")
    await until(lambda: len(rig.of("front-door", "poll")) >= polled + 3,
                "the front door's polls to go on", TIMEOUT)
    assert back.connections == connections, "a removed lock is neither polled nor read"
    assert address(back) not in rig.proxy.watches
    assert not rig.of("back-door", "manual")

    rig.locks.add("back-door", paired(back))
    await rig.sightings.add("back-door", paired(back))
    await until(lambda: len(rig.of("back-door", "poll")) >= 2, "the added lock's poll", TIMEOUT)
    assert rig.of("back-door", "poll")[-1][2] == "unlocked"
    assert front.motor_moves == 0 and back.motor_moves == 0


@pytest.mark.parametrize("rig", [_one_turner_news_soon], indirect=True)
async def test_a_manual_turn_while_the_link_to_the_bridge_is_down_is_read_once_it_is_back(
        rig: Rig) -> None:
    lock = rig.home.locks["front-door"]
    await until(lambda: rig.of("front-door", "poll"), "the poll at start", TIMEOUT)
    await _idle(lock)
    rig.home.line.cut = True
    await until(lambda: not rig.locks.is_up, "hubd to see the link down", TIMEOUT)
    lock.turn_manually("unlocked")
    rig.home.line.cut = False
    # The bridge forgot its watches with the link; the proxy asks again, the advert comes.
    await until(lambda: ("state", None, "unlocked", "manual") in rig.of("front-door"),
                "the manual turn once the link is back", TIMEOUT)
    assert lock.motor_moves == 0 and _statuses_only(lock)


class LoggedTurner(InsideTurnerLock):
    """An inside turner that writes its connections' comings and goings into a log it shares
    with its neighbours: how many of them are connected at once, seen from the locks' side."""

    def __init__(self, n: int, log: list[int]) -> None:
        super().__init__(f"lock-{n}", f"C0:FF:EE:00:00:0{n}", os.urandom(32), travel_time_s=0.0)
        self.log = log

    def on_connect(self, link: Link) -> None:
        super().on_connect(link)
        self.log.append(+1)

    def on_disconnect(self, link: Link) -> None:
        super().on_disconnect(link)
        self.log.append(-1)


_SHARED_LOG: list[int] = []


def _three_logged_turners() -> tuple[list[ReferenceProtocolLock], UpkeepTimings]:
    _SHARED_LOG.clear()
    return [LoggedTurner(n, _SHARED_LOG) for n in (1, 2, 3)], UpkeepTimings(poll_s=0.2)


@pytest.mark.parametrize("rig", [_three_logged_turners], indirect=True)
async def test_background_reads_hold_one_connection_at_a_time_across_the_hub(rig: Rig) -> None:
    # Polled in turn: one lock's polls do not starve the others'.
    await until(lambda: all(len(rig.of(f"lock-{n}", "poll")) >= 3 for n in (1, 2, 3)),
                "three polls of each lock", TIMEOUT)
    assert sum(1 for lock, *_ in rig.heard) >= 9
    open_at_once = [sum(_SHARED_LOG[:i + 1]) for i in range(len(_SHARED_LOG))]
    assert max(open_at_once) == 1, f"connections open at once, over time: {open_at_once}"
    assert all(lk.motor_moves == 0 for lk in rig.home.locks.values())

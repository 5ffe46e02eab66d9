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
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from hubapi import signing, topics
from hubapi.models import Actor, Answer, CommandClaims, RejectReason, Role, Status
from hubd.access.commands import Commands
from hubd.access.journal import Journal
from hubd.access.lockstate import LockStates
from hubd.access.verify import Verifier
from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, Timings
from hubd.locks.dkey import DkeyTimings
from hubd.locks.visit import VisitHold, VisitRoute
from hubd.mqtt import Inbound
from hubd.store.audit import AuditLog
from hubd.store.database import Store
from hubd.store.outbox import Outbox
from simulator.dkey import DKeyLock
from simulator.home import SimulatedHome, dkey_paired, paired, paired_dkey
from simulator.locks import EntranceDoorLock, InsideTurnerLock
from simulator.radio import Link
from tests.fixtures import BackendKey
from tests.waiting import until
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
TIMINGS = Timings(deadline_s=30.0, result_s=TIMEOUT, settle_s=0.0, idle_s=0.5)
#: The turner's own idle drop: a held connection outlives it only by the keep-alive reads.
LOCK_IDLE_S = 1.5
ROUTE = VisitRoute(("entrance", "front-door"), hold_s=TIMEOUT, keepalive_s=0.2)
DKEY_TIMINGS = DkeyTimings(deadline_s=10.0, gatt_s=2.0, command_s=5.0, result_s=5.0,
                           settle_s=0.0, readback_s=5.0, idle_s=0.5, retry_pause_s=0.1)


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
    dkey: DKeyLock  # in the home, driven only once the command path's fixture adds it


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    turner = CountingTurner("front-door", "C0:FF:EE:00:00:01", os.urandom(32),
                            travel_time_s=0.0, idle_timeout_s=LOCK_IDLE_S)
    entrance = EntranceDoorLock("entrance", "C0:FF:EE:00:00:02", os.urandom(32))
    dkey = paired_dkey("F0:94:0A:00:00:09")
    home = SimulatedHome(tmp_path / "home", locks=[turner, entrance], dkeys={"dkey-door": dkey})
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    reports: list[tuple] = []
    locks = BleLocks(proxy, {lk.lock_id: paired(lk) for lk in (turner, entrance)}, TIMINGS,
                     on_report=lambda *report: reports.append(report))
    visits = VisitHold(locks, ROUTE)
    try:
        assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
        yield Rig(home, locks, visits, turner, reports, dkey)
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
    assert visits.counts == {"held": 5, "used": 1, "ended": 3, "expired": 1, "lost": 0, "refused": 0}
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



# -- prepare: a visit's first door held before the tap (a signed command, no route needed) ------

HUB = "hub-visit"
NURSE = Actor(id="nurse-7", role=Role.STAFF)


class Answers:
    """The command path's publisher: every answer it publishes, decoded (a broker's part)."""

    def __init__(self) -> None:
        self.got: list[Answer] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if topic.startswith(topics.answers(HUB)):
            self.got.append(Answer.model_validate_json(payload))

    async def wait_connected(self, timeout: float | None = None) -> None:
        return None

    async def publish_acked(self, topic: str, payload: bytes, timeout: float) -> None:
        self.publish(topic, payload)

    def of(self, command_id: str) -> list[Answer]:
        return [a for a in self.got if a.id == command_id]


@dataclass
class Served:
    """hubd's command path (verify, journal, audit, the lock's queue) over the rig's locks, its
    visit hold without a route."""

    commands: Commands
    visits: VisitHold
    answers: Answers
    audit: AuditLog
    key: BackendKey
    journal: Journal
    restarted: Callable[[], Commands]  # hubd's command path as a restart makes it

    def send(self, token: str) -> None:
        self.commands.handle(Inbound(topics.commands(HUB), token.encode(), retain=False))

    def claims(self, lock: str, action: str, **kwargs: object) -> CommandClaims:
        return CommandClaims.new(hub=HUB, lock=lock, action=action, actor=NURSE,
                                 assignment="visit-1", **kwargs)  # type: ignore[arg-type]

    async def final(self, claims: CommandClaims) -> Answer:
        """Send ``claims`` signed; its final answer (after exactly one ``accepted``)."""
        self.send(self.key.sign(claims))
        return await self.ended(claims.id)

    async def ended(self, command_id: str) -> Answer:
        await until(lambda: any(a.is_final for a in self.answers.of(command_id)),
                    f"{command_id}'s final answer", TIMEOUT)
        got = self.answers.of(command_id)
        assert [a.status for a in got] == [Status.ACCEPTED, got[-1].status], got
        return got[-1]


@pytest.fixture
async def served(rig: Rig, tmp_path: Path) -> AsyncIterator[Served]:
    # An unreachable lock (on no radio) with short tries: its prepare waits one read, 1 s.
    away = InsideTurnerLock("away", "C0:FF:EE:00:00:09", os.urandom(32))
    kept = rig.locks.timings
    rig.locks.timings = Timings(connect_s=0.5, gatt_s=0.25)
    rig.locks.add("away", paired(away))
    rig.locks.timings = kept
    # The home's dKey, its driver's times short (its own idle drop stays the real 30 s).
    rig.locks.dkey_timings = DKEY_TIMINGS
    rig.locks.add("dkey-door", dkey_paired(rig.dkey))
    store = Store.open(tmp_path / "hubd-state")
    answers = Answers()
    audit = AuditLog(store, Outbox(store), HUB)
    journal = Journal(store, audit)
    key = BackendKey("backend-test", signing.generate_private_key())
    verifier = Verifier(hub_id=HUB, keys={key.kid: key.private.public_key()},
                        locks=dict(rig.locks.kinds), clock_skew_s=5, max_validity_s=300,
                        seen=journal, protocols=rig.locks.protocols)
    visits = VisitHold(rig.locks, VisitRoute((), hold_s=TIMEOUT, keepalive_s=0.2))
    made: list[Commands] = []

    def command_path() -> Commands:
        made.append(Commands(hub_id=HUB, verifier=verifier, transport=rig.locks,
                             publisher=answers, journal=journal, audit=audit,
                             lock_states=LockStates(store, audit, HUB, rig.locks.kinds, answers),
                             command_timeout_s=TIMEOUT, visits=visits))
        return made[-1]

    try:
        yield Served(command_path(), visits, answers, audit, key, journal, command_path)
    finally:
        for commands in made:
            await commands.close()
        await visits.close()
        store.close()


async def test_a_prepare_holds_the_first_door_for_the_visits_command_and_moves_nothing(
        rig: Rig, served: Served) -> None:
    turner, visits = rig.turner, served.visits
    loop = asyncio.get_running_loop()

    # The backend knows the visit is coming: a prepare is answered once the connection is up.
    prepare = served.claims("front-door", "prepare")
    answer = await served.final(prepare)
    assert (answer.status, answer.reason, answer.state) == (Status.SUCCEEDED, None, None)
    assert visits.holding == "front-door" and turner.connections == 1 and turner.links
    assert turner.commands == [] and turner.moves == [], "a prepare moves nothing"
    # Held past the lock's own idle drop by reads that move nothing, on the one connection.
    held_at, reads = loop.time(), turner.reads
    await until(lambda: loop.time() > held_at + LOCK_IDLE_S + 0.5 and turner.reads >= reads + 3,
                "keep-alive reads past the lock's idle drop", TIMEOUT)
    # A prepare of the door held already: answered at once, on that connection.
    assert (await served.final(served.claims("front-door", "prepare"))).status is Status.SUCCEEDED
    assert turner.connections == 1

    # The visit's unlock takes the held connection: it makes none of its own.
    answer = await served.final(served.claims("front-door", "unlock"))
    assert (answer.status, answer.state) == (Status.SUCCEEDED, "unlocked")
    assert turner.connections == 1, "the unlock found the prepared connection"
    assert turner.commands == [("unlock", "ok")] and visits.holding is None
    assert visits.counts["used"] == 1

    # Prepared again, then a command for another door (any: a status read here): the hold
    # ends, its connection goes.
    assert (await served.final(served.claims("front-door", "prepare"))).status is Status.SUCCEEDED
    assert visits.holding == "front-door"
    assert (await served.final(served.claims("entrance", "status"))).status is Status.SUCCEEDED
    assert visits.holding is None
    await until(lambda: not turner.links, "the ended hold's connection let go", TIMEOUT)
    # A prepare a later command overtakes (both in one breath) holds nothing: superseded.
    late = served.claims("front-door", "prepare")
    served.send(served.key.sign(late))
    answer = await served.final(served.claims("entrance", "status"))
    assert answer.status is Status.SUCCEEDED
    answer = await served.ended(late.id)
    assert (answer.status, answer.reason) == (Status.FAILED, oc.SUPERSEDED)

    # A newer prepare of another door ends the hold: one hold across the hub.
    assert (await served.final(served.claims("front-door", "prepare"))).status is Status.SUCCEEDED
    assert (await served.final(served.claims("entrance", "prepare"))).status is Status.SUCCEEDED
    assert visits.holding == "entrance"
    await until(lambda: not turner.links, "the front door let go for the newer prepare", TIMEOUT)

    # A lock out of reach: timed out, with the driver's reason; nothing held.
    answer = await served.final(served.claims("away", "prepare"))
    assert (answer.status, answer.reason) == (Status.TIMED_OUT, oc.UNREACHABLE)
    assert visits.holding is None
    # A dKey: connected and authenticated (the dear part of a command), moving nothing; held
    # without keep-alives (none would keep it), and its unlock finds that session.
    dkey = rig.dkey
    answer = await served.final(served.claims("dkey-door", "prepare"))
    assert (answer.status, answer.reason) == (Status.SUCCEEDED, None)
    assert visits.holding == "dkey-door" and rig.locks.connected("dkey-door")
    assert dkey.connections == 1 and dkey.move_commands == 0 and dkey.motor_moves == 0
    answer = await served.final(served.claims("dkey-door", "unlock"))
    assert (answer.status, answer.state) == (Status.SUCCEEDED, "unlocked")
    assert dkey.connections == 1, "the unlock found the prepared session"
    assert dkey.move_commands == 1 and visits.holding is None
    await until(lambda: not dkey.links, "the dKey's session dropped idle_s after", TIMEOUT)
    # As a route's next door: held the same way, one connection, nothing moved.
    route = visits.route
    visits.route = VisitRoute(("entrance", "dkey-door"), hold_s=TIMEOUT, keepalive_s=0.2)
    visits.succeeded("entrance", "visit-2")  # (visit-1 asked for the dKey already)
    assert visits.holding == "dkey-door"
    await until(lambda: rig.locks.connected("dkey-door"), "the dKey's held session", TIMEOUT)
    assert dkey.connections == 2 and dkey.move_commands == 1
    visits.accepted("entrance", "visit-3")
    await until(lambda: not dkey.links, "the dKey let go for another visit", TIMEOUT)
    visits.route = route
    # Its session lasts held_s after its traffic, under the lock's own drop; then one more
    # connection, then the hold ends: hubd let go each time before the lock ended the link.
    driver = rig.locks.driver("dkey-door")
    driver.timings = dataclasses.replace(DKEY_TIMINGS, held_s=0.5)
    dkey.session_idle_s = 3.0
    held, expired = visits.counts["held"], visits.counts["expired"]
    assert (await served.final(served.claims("dkey-door", "prepare"))).status is Status.SUCCEEDED
    await until(lambda: visits.holding is None, "the dKey's two sessions to run out", TIMEOUT)
    assert visits.counts["held"] == held + 1 and visits.counts["expired"] == expired + 1
    assert dkey.connections == 4, "two sessions, no third"
    assert dkey.idle_disconnects == 0, "the lock never had to end a held session"
    assert dkey.move_commands == 1, "no prepare or hold moved the dKey"
    # Prepared again while the hold's second session is up (the nurse is late): that prepare
    # has two sessions of its own, not the first one's spent budget (which ended the hold with
    # the second session, and answered a prepare that came as it ended unreachable).
    assert (await served.final(served.claims("dkey-door", "prepare"))).status is Status.SUCCEEDED
    await until(lambda: dkey.connections == 6 and rig.locks.connected("dkey-door"),
                "the prepare's second session", TIMEOUT)
    assert (await served.final(served.claims("dkey-door", "prepare"))).status is Status.SUCCEEDED
    await until(lambda: visits.holding is None, "the last prepare's sessions to run out", TIMEOUT)
    assert dkey.connections == 8 and dkey.idle_disconnects == 0 and dkey.move_commands == 1

    # Refused as any command: another key's signature, expired, staff without an assignment.
    other = BackendKey(served.key.kid, signing.generate_private_key())
    forged = served.claims("front-door", "prepare")
    expired = served.claims("front-door", "prepare", now=time.time() - 120)
    unassigned = served.claims("front-door", "prepare").model_dump(mode="json", exclude_none=True)
    del unassigned["assignment"]
    served.send(other.sign(forged))
    served.send(served.key.sign(expired))
    served.send(jws.serialize_compact({"alg": signing.ALGORITHM, "kid": served.key.kid},
                                      json.dumps(unassigned),
                                      OKPKey.import_key(served.key.private),
                                      registry=signing.REGISTRY))
    for command_id, reason in ((forged.id, RejectReason.BAD_SIGNATURE),
                               (expired.id, RejectReason.EXPIRED),
                               (unassigned["id"], RejectReason.MALFORMED)):
        assert [(a.status, a.reason) for a in served.answers.of(command_id)] == \
            [(Status.REJECTED, reason)], command_id
    assert visits.holding is None and not turner.links, "no refused prepare holds anything"
    assert turner.commands == [("unlock", "ok")], "no prepare wrote a COMMAND"

    # A prepare hubd was running when it died: answered at the next start, nothing tried.
    cut = served.claims("front-door", "prepare")
    served.journal.accept(cut, served.key.kid, topics.answers(HUB), until=cut.exp + 5)
    connections = turner.connections
    assert served.restarted().recover() == 1
    await until(lambda: served.answers.of(cut.id), "the cut prepare's answer", TIMEOUT)
    assert [(a.status, a.reason) for a in served.answers.of(cut.id)] == \
        [(Status.FAILED, oc.HUBD_RESTARTED)]
    assert turner.connections == connections and visits.holding is None

    # Audited as every command: accepted, then its outcome, with who asked and why.
    entries, _ = served.audit.read(1, 200)
    mine = [(e.outcome.value, e.reason) for e in entries if e.command == prepare.id]
    assert mine == [("accepted", None), ("succeeded", None)]
    entry = next(e for e in entries if e.command == prepare.id)
    assert (entry.action, entry.actor, entry.role, entry.assignment, entry.lock, entry.source) \
        == ("prepare", "nurse-7", "staff", "visit-1", "front-door", "remote")


async def test_hubds_stop_waits_for_the_holds_read_under_way(rig: Rig, served: Served) -> None:
    """The hold's end never cancels its read (a command may be waiting for that connection), but
    hubd's stop does not leave it running past the drivers: close() returns with it ended."""
    visits = served.visits
    ready = visits.prepare("away", "visit-9", visits.announced("away"), asyncio.get_running_loop().time())
    await until(lambda: visits._hold is not None and visits._hold.reading is not None,
                "the hold's read under way", TIMEOUT)
    hold = visits._hold
    assert hold is not None and hold.reading is not None and not hold.reading.done()
    await visits.close()
    assert hold.reading.done(), "the read was left running past hubd's stop"
    assert ready.done() and ready.result() == oc.SHUTTING_DOWN


async def test_a_lock_is_held_its_daily_allowance_at_most_whatever_asks(rig: Rig, served: Served) -> None:
    """A backend that prepares in a loop cannot keep a lock's radio busy all day: the hold ends
    when the lock's daily allowance does, and a prepare after it is answered ``failed``
    ``daily_hold_spent`` with no connection made, as is a route's next door; other locks and
    the commands themselves are not touched."""
    visits, turner = served.visits, rig.turner
    visits.route = VisitRoute(("entrance", "front-door"), hold_s=TIMEOUT, keepalive_s=0.2)
    answer = await served.final(served.claims("front-door", "prepare"))
    assert answer.status is Status.SUCCEEDED and visits.holding == "front-door"
    # The allowance spent while it holds (here: made smaller than the hold's time so far).
    visits.route = dataclasses.replace(visits.route, daily_hold_s=0.1)
    await until(lambda: visits.holding is None, "the allowance to end the hold", TIMEOUT)
    assert visits.counts["expired"] == 1
    await until(lambda: not turner.links, "the connection let go", TIMEOUT)
    connections = turner.connections
    answer = await served.final(served.claims("front-door", "prepare"))
    assert (answer.status, answer.reason) == (Status.FAILED, oc.DAILY_HOLD_SPENT)
    visits.succeeded("entrance", "visit-7")  # a route's next door: not held either
    assert visits.holding is None and visits.counts["refused"] == 2
    assert turner.connections == connections, "no connection made for a refused hold"
    answer = await served.final(served.claims("front-door", "unlock"))
    assert (answer.status, answer.state) == (Status.SUCCEEDED, "unlocked"), "the command works"
    answer = await served.final(served.claims("dkey-door", "prepare"))
    assert answer.status is Status.SUCCEEDED, "another lock has its own allowance"


class _LinkDown:
    """BleLocks as VisitHold sees it with the link to the bridge down."""

    is_up = False

    def driver(self, lock: str) -> object:
        return object()

    def hold(self, lock: str, on: bool) -> bool:
        return True

    def keeps_alive(self, lock: str) -> bool:
        return True

    def connected(self, lock: str) -> bool:
        return False

    async def read(self, lock: str, *, connections: int) -> str:
        raise AssertionError("nothing is read with the link down")


async def test_a_prepare_waiting_while_the_bridge_link_is_down_hears_so_at_once() -> None:
    """The link went down between the command path's wait for it and the hold: the prepare is
    answered bridge_unavailable, not left waiting out hold_s."""
    visits = VisitHold(_LinkDown(), VisitRoute((), hold_s=TIMEOUT, keepalive_s=0.2))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    ready = visits.prepare("front-door", "visit-1", visits.announced("front-door"), loop.time())
    async with asyncio.timeout(TIMEOUT / 2):
        assert await ready == oc.BRIDGE_UNAVAILABLE
    assert visits.holding is None and visits.counts["lost"] == 1

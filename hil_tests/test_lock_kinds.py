"""Every lock kind through the whole hub: what it can do, what it refuses, what it reports by
itself, and how each failure of a real lock is answered.

The scenarios share one hub (``shared_home``, hil_tests/conftest.py SharedHub): none restarts or
damages hubd, the bridge or the broker, and each starts from the home as built, which the reset
before it checks (every lock at rest, locked, its knobs as built, hubd holding no connection),
reading only its own part of the audit trail (``hub.audit_from`` on). One has a home of its own on
the realistic air in every run, with hubd's timings as shipped: each kind opened on a connection
made for it, and a link lost after the move (docs/ble-timing.md, "The suite")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hil_tests.harness import HubUnderTest, audit_log, first_reads, retained
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import AuditEntry, LockState
from simulator.locks import LOW_BATTERY_PERCENT
from tests.waiting import until
from wire import lockkinds

# Report manual operations fast (the proxy scans for the locks' adverts every 300 ms, hubd drops
# idle connections after 300 ms and reads a lock's news at once) and give up on an unreachable or
# silent lock sooner than in a home (the locks here are instant).
FAST_SCAN = {"scan_every_ms": 300, "scan_ms": 200}
FAST = """[lock_timing]
idle_s = 0.3
settle_s = 0.5
connect_s = 1
deadline_s = 3
result_s = 2

[lock_upkeep]
news_gap_s = 0.2
news_gap_max_s = 1
"""
pytestmark = [pytest.mark.home(locks="every_kind", policy=FAST_SCAN, hubd=FAST),
              pytest.mark.shared_home]

EXPECTED_STATE = {"unlock": "unlocked", "lock": "locked", "unlatch": ("unlatched", "unlocked")}
MOVES = [(kind, action) for kind in lockkinds.KINDS for action in lockkinds.ACTIONS[kind]
         if action != "status"]
REFUSED = [(kind, action) for kind in lockkinds.KINDS for action in ("unlock", "lock", "unlatch")
           if not lockkinds.supports(kind, action)]


def _sim_lock(hub: HubUnderTest, lock: str):  # noqa: ANN202 - a simulator lock model
    return hub.sim.home.locks[lock]


async def _wait_for(hub: HubUnderTest, backend: BackendClient,
                    found: Callable[[list[AuditEntry]], bool], timeout: float = 15) -> list[AuditEntry]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        trail = await audit_log(hub, backend, from_seq=hub.audit_from)
        if found(trail):
            return trail
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not in the audit trail within {timeout} s: {trail[-6:]}")
        await asyncio.sleep(0.3)


@pytest.mark.parametrize(("kind", "action"), MOVES, ids=lambda v: v)
async def test_each_kind_does_what_it_supports(kind: str, action: str, hub: HubUnderTest,
                                               backend: BackendClient) -> None:
    lock = hub.lock_of_kind(kind)
    if action == "lock":  # start from unlocked, so locking is a real move
        assert (await hub.command(backend, "unlock", lock))[-1].status == "succeeded"
    answers = await hub.command(backend, action, lock)
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    expected = EXPECTED_STATE[action]
    assert answers[-1].state in (expected if isinstance(expected, tuple) else (expected,))
    assert hub.sim.call(lambda: _sim_lock(hub, lock).moves)[-1] == action
    trail = [e for e in await audit_log(hub, backend, from_seq=hub.audit_from)
             if e.command == answers[0].id]
    assert [e.outcome for e in trail] == ["accepted", "written", "succeeded"]
    assert {e.actor for e in trail} == {"nurse-0042"} and all(e.verified for e in trail)


@pytest.mark.parametrize(("kind", "action"), REFUSED, ids=lambda v: v)
async def test_each_kind_refuses_what_it_cannot_do(kind: str, action: str, hub: HubUnderTest,
                                                   backend: BackendClient) -> None:
    lock = hub.lock_of_kind(kind)
    answers = await hub.command(backend, action, lock)
    assert [(a.status, a.reason) for a in answers] == [("rejected", "unsupported_action")]
    assert hub.sim.call(lambda: _sim_lock(hub, lock).motor_moves) == 0


async def test_a_manual_turn_of_the_inside_turner_is_audited_and_retained(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.lock_of_kind(lockkinds.INSIDE_TURNER)
    hub.sim.call(lambda: _sim_lock(hub, lock).turn_manually("unlocked"))
    trail = await _wait_for(hub, backend, lambda t: any(
        e.lock == lock and e.source == "manual" and e.state == "unlocked" for e in t))
    entry = next(e for e in trail if e.lock == lock and e.source == "manual")
    assert entry.outcome == "reported" and entry.actor is None
    state = LockState.model_validate_json(await retained(hub.broker, topics.lock_state(hub.hub_id, lock)))
    assert (state.state, state.source) == ("unlocked", "manual")


async def test_the_in_cylinder_handle_opens_and_the_lock_relocks_by_itself(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.lock_of_kind(lockkinds.IN_CYLINDER)
    hub.sim.call(lambda: _sim_lock(hub, lock).open_with_handle())
    await _wait_for(hub, backend, lambda t: any(
        e.lock == lock and e.event == "door_opened" for e in t))
    hub.sim.call(lambda: _sim_lock(hub, lock).close_door())
    trail = await _wait_for(hub, backend, lambda t: any(
        e.lock == lock and e.source == "auto" and e.state == "locked" for e in t))
    mine = [(e.source, e.state, e.event) for e in trail if e.lock == lock]
    assert ("handle", "unlocked", None) in mine
    assert ("manual", None, "door_closed") in [(s, None if ev else st, ev) for s, st, ev in mine]


async def test_the_key_box_reports_its_lid_and_the_key(hub: HubUnderTest,
                                                      backend: BackendClient) -> None:
    box = hub.lock_of_kind(lockkinds.KEY_BOX)
    assert (await hub.command(backend, "unlock", box))[-1].status == "succeeded"
    model = _sim_lock(hub, box)
    for step in (model.open_lid, model.take_key, model.return_key, model.close_lid):
        hub.sim.call(step)
    trail = await _wait_for(hub, backend, lambda t: [e.event for e in t if e.lock == box and e.event]
                            == ["box_opened", "key_taken", "key_returned", "box_closed"])
    assert all(e.outcome == "reported" for e in trail if e.lock == box and e.event)


async def test_the_entrance_door_relocks_after_its_release(hub: HubUnderTest,
                                                          backend: BackendClient) -> None:
    door = hub.lock_of_kind(lockkinds.ENTRANCE_DOOR)
    answers = await hub.command(backend, "unlatch", door)
    assert answers[-1].status == "succeeded"
    await _wait_for(hub, backend, lambda t: any(
        e.lock == door and e.source == "auto" and e.state == "locked" for e in t))


FAILURES: list[tuple[str, Callable[[object], None], str, str]] = [
    ("out_of_range", lambda lk: setattr(lk, "in_range", False), "timed_out", "unreachable"),
    ("adverts_stop", lambda lk: setattr(lk, "advertising", False), "timed_out", "unreachable"),
    ("busy", lambda lk: setattr(lk, "held_by_other", True), "failed", "busy"),
    ("jammed", lambda lk: setattr(lk, "jammed", True), "failed", "jammed"),
    ("low_battery", lambda lk: setattr(lk, "battery_level", LOW_BATTERY_PERCENT - 1),
     "failed", "low_battery"),
    ("auth_failed", lambda lk: setattr(lk, "secret", bytes(32)), "failed", "auth_failed"),
]


@pytest.mark.parametrize("kind", lockkinds.KINDS)
@pytest.mark.parametrize(("name", "fault", "status", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_each_failure_of_each_kind_gets_its_outcome_and_nothing_moves(
        kind: str, name: str, fault: Callable[[object], None], status: str, reason: str,
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.lock_of_kind(kind)
    action = "unlatch" if kind == lockkinds.ENTRANCE_DOOR else "unlock"
    hub.sim.call(lambda: fault(_sim_lock(hub, lock)))
    answers = await hub.command(backend, action, lock)
    assert [(a.status, a.reason) for a in answers] == [("accepted", None), (status, reason)], answers
    assert hub.sim.call(lambda: _sim_lock(hub, lock).motor_moves) == 0
    trail = [e for e in await audit_log(hub, backend, from_seq=hub.audit_from)
             if e.command == answers[0].id]
    assert (trail[-1].outcome, trail[-1].reason) == (status, reason)


@pytest.mark.parametrize("kind", lockkinds.KINDS)
async def test_a_lost_result_is_incomplete_with_the_state_read_back_and_one_move(
        kind: str, hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.lock_of_kind(kind)
    action = "unlatch" if kind == lockkinds.ENTRANCE_DOOR else "unlock"
    hub.sim.call(lambda: setattr(_sim_lock(hub, lock), "lose_next_result", True))
    answers = await hub.command(backend, action, lock)
    assert [a.status for a in answers] == ["accepted", "incomplete"], answers
    # The state is read back, never guessed. The entrance door's strike has relocked by then.
    expected = {"locked"} if kind == lockkinds.ENTRANCE_DOOR else {"unlocked", "unlatched"}
    assert answers[-1].state in expected, answers[-1]
    await asyncio.sleep(0.5)
    assert hub.sim.call(lambda: _sim_lock(hub, lock).moves) == [action]


@pytest.mark.long(30)
@pytest.mark.home(locks="every_kind", air="realistic")
async def test_each_kind_opens_on_a_new_connection_and_a_link_lost_after_the_move_on_the_realistic_air(
        hub: HubUnderTest, backend: BackendClient) -> None:
    # The realistic air (simulator/ble_timing.py): each command waits for its lock's next advert
    # (every 1.0 s; the entrance door's 0.2 s), the connection's set-up, and an event or two for
    # every GATT round trip, with hubd's own timings as shipped (no FAST here). hubd's first
    # reads at start are done first, and each lock's connection from them let go (idle_s), so
    # each command makes a connection of its own, as a nurse's first command of a visit does.
    await asyncio.to_thread(first_reads, hub)
    for kind in lockkinds.KINDS:
        lock = hub.lock_of_kind(kind)
        model = _sim_lock(hub, lock)
        await until(lambda: not hub.sim.call(lambda: model.links), f"hubd to let go of {lock}", 60)
        connections = hub.sim.call(lambda: model.connections)
        action = "unlatch" if kind == lockkinds.ENTRANCE_DOOR else "unlock"
        answers = await hub.command(backend, action, lock)
        assert [a.status for a in answers] == ["accepted", "succeeded"], (kind, answers)
        assert hub.sim.call(lambda: (model.moves, model.connections)) == ([action], connections + 1)
    # A link lost once the lock moved (the RESULT never sent): incomplete, the state read back on
    # a new connection, never a second unlatch.
    lock = hub.lock_of_kind(lockkinds.IN_CYLINDER)
    model = _sim_lock(hub, lock)
    hub.sim.call(lambda: setattr(model, "drop_link_after_move", True))
    answers = await hub.command(backend, "unlatch", lock)
    assert [a.status for a in answers] == ["accepted", "incomplete"], answers
    assert answers[-1].state in ("unlatched", "unlocked"), "the state must be read back"
    assert hub.sim.call(lambda: model.moves) == ["unlock", "unlatch"], "an unlatch is never sent twice"

"""A visit's first door made ready before the tap, end to end: the backend's signed ``prepare``
over MQTT makes hubd (its own process, no ``[visit] route``) connect to the lock and hold the
connection, moving nothing; the visit's unlock then finds that connection and makes none of its
own (docs/mqtt-api.md, "`prepare`"; docs/ble-timing.md, "A visit's first door prepared")."""

from __future__ import annotations

import pytest

from hil_tests.harness import HubUnderTest
from hubapi.client import BackendClient
from tests.waiting import until


async def test_a_prepared_door_is_held_and_its_unlock_makes_no_connection_of_its_own(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.sim.home.locks[hub.locks[0]]
    answers = await hub.command(backend, "prepare")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state is None, "a prepare reads no state"
    connections, up = hub.sim.call(lambda: (lock.connections, bool(lock.links)))
    assert up, "the prepared door's connection is held"
    # (hubd's start-up poll reads the state with a status COMMAND; nothing else was written)
    assert lock.motor_moves == 0 and {c[0] for c in lock.commands} <= {"status"}, \
        "a prepare moves nothing"

    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    assert hub.sim.call(lambda: lock.connections) == connections, \
        "the unlock found the prepared connection"
    assert lock.motor_moves == 1


@pytest.mark.home(hubd="[visit]\ndaily_hold_s = 0.2\n")
async def test_a_lock_held_its_daily_allowance_is_not_held_again_and_its_unlock_still_works(
        hub: HubUnderTest, backend: BackendClient) -> None:
    """hubd.toml's ``[visit] daily_hold_s`` bounds how long a lock is held a day, whatever the
    backend asks: once spent, a prepare is answered ``failed`` ``daily_hold_spent`` with no
    connection made; the unlock is not bounded by it."""
    lock = hub.sim.home.locks[hub.locks[0]]
    first = await hub.command(backend, "prepare")
    # 0.2 s a day: its connection may be up within it (succeeded) or not (the allowance ended it).
    assert (first[-1].status, first[-1].reason) in (("succeeded", None), ("failed", "daily_hold_spent")), first
    await until(lambda: f"visit: let go of {hub.locks[0]}" in hub.log_text(), "the hold's end", 30)
    connections = hub.sim.call(lambda: lock.connections)
    second = await hub.command(backend, "prepare")
    assert [(a.status, a.reason) for a in second] == [("accepted", None), ("failed", "daily_hold_spent")]
    assert hub.sim.call(lambda: lock.connections) == connections, "no connection for a refused hold"
    assert "the hub's daily allowance for a lock" in hub.log_text()
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert lock.motor_moves == 1

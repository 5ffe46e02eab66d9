"""A visit's first door made ready before the tap, end to end: the backend's signed ``prepare``
over MQTT makes hubd (its own process, no ``[visit] route``) connect to the lock and hold the
connection, moving nothing; the visit's unlock then finds that connection and makes none of its
own (docs/mqtt-api.md, "`prepare`"; docs/ble-timing.md, "A visit's first door prepared")."""

from __future__ import annotations

from hil_tests.harness import HubUnderTest
from hubapi.client import BackendClient


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

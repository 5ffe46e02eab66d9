"""The walking skeleton end to end: an MQTT command opens the door through the real firmware."""

from __future__ import annotations

import asyncio
import json

import pytest

from hil_tests.harness import HubUnderTest, retained
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import Answer, LockState
from simulator.serial_line import TO_BRIDGE, TO_HUB
from wire import frame, lockproto, messages


def statuses(answers: list[Answer]) -> list[str]:
    return [a.status for a in answers]


async def test_unlock_is_accepted_succeeds_and_leaves_the_retained_state_unlocked(
        hub: HubUnderTest, backend: BackendClient) -> None:
    answers = await hub.command(backend, "unlock")
    assert statuses(answers) == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, hub.locks[0])))
    assert state.state == "unlocked"
    lock = hub.sim.home.locks[hub.locks[0]]
    assert lock.state == "unlocked"
    assert lock.motor_moves == 1


async def test_lock_after_unlock_turns_the_lock_back(hub: HubUnderTest,
                                                     backend: BackendClient) -> None:
    assert statuses(await hub.command(backend, "unlock"))[-1] == "succeeded"
    answers = await hub.command(backend, "lock")
    assert statuses(answers) == ["accepted", "succeeded"]
    assert answers[-1].state == "locked"
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, hub.locks[0])))
    assert state.state == "locked"
    assert hub.sim.home.locks[hub.locks[0]].motor_moves == 2


@pytest.mark.home(via="bridge")
async def test_damaged_serial_frames_are_rejected_by_crc_and_retransmitted(
        hub: HubUnderTest, backend: BackendClient) -> None:
    line = hub.sim.home.line
    # The next DATA frame to the bridge (a proxy request of the operation) arrives corrupted,
    # the next one back (the bridge's answer) arrives cut short: both must be dropped by the CRC
    # check and resent.
    hub.sim.call(lambda: line.damage_next(TO_BRIDGE, "corrupt", ftype=frame.T_DATA))
    hub.sim.call(lambda: line.damage_next(TO_HUB, "truncate", ftype=frame.T_DATA))
    answers = await hub.command(backend, "unlock")
    assert statuses(answers) == ["accepted", "succeeded"]
    assert hub.sim.home.locks[hub.locks[0]].motor_moves == 1, "a retransmission moved it twice"

    crossings = hub.sim.call(lambda: list(line.transcript))
    for direction in (TO_BRIDGE, TO_HUB):
        seen = [c for c in crossings if c.direction == direction]
        damaged = [i for i, c in enumerate(seen) if c.damage is not None]
        assert len(damaged) == 1, f"{direction}: expected one damaged frame"
        first = damaged[0]
        assert seen[first].ftype is None, "the damaged frame must no longer pass its CRC"
        # The same DATA frame crosses intact later: the sender's retransmission.
        resent = [c for c in seen[first + 1:] if c.ftype == frame.T_DATA]
        assert resent, f"{direction}: no DATA frame followed the damaged one"
    to_bridge = [messages.decode(c.body) for c in crossings
                 if c.direction == TO_BRIDGE and c.ftype == frame.T_DATA]
    pdus = [bytes.fromhex(m["data"]) for m in to_bridge if m["m"] == messages.BLE_WRITE]
    unlocks = [p for p in pdus if p[0] == lockproto.OP_COMMAND
               and lockproto.action_name(p[1]) == "unlock"]  # not a poll's status COMMAND
    assert len(unlocks) == 1, "the lock's unlock COMMAND must reach the bridge exactly once intact"


async def test_malformed_payload_is_rejected_and_hubd_keeps_serving(
        hub: HubUnderTest, backend: BackendClient) -> None:
    async with backend.watch(topics.answers(hub.hub_id)) as queue:
        await backend.publish(topics.commands(hub.hub_id), b"\xff{not a signed command")
        rejection = Answer.model_validate_json((await queue.get()).payload)
    assert rejection.status == "rejected"
    assert rejection.reason == "malformed"
    assert hub.hubd_alive()
    answers = await hub.command(backend, "unlock")
    assert statuses(answers) == ["accepted", "succeeded"]
    assert "malformed" in hub.log_text()


async def test_online_state_is_retained_for_late_subscribers(hub: HubUnderTest) -> None:
    online = json.loads(await retained(hub.broker, topics.online(hub.hub_id)))
    assert online["status"] == "online"
    assert online["hub"] == hub.hub_id


async def test_the_retained_state_is_published_before_the_answer_that_names_it(
        hub: HubUnderTest, backend: BackendClient) -> None:
    # A backend that reads the retained state once it has the final answer finds that state:
    # hubd publishes the state first, on the same connection, so the broker has it first.
    claims = hub.claims("unlock")
    state_topic = topics.lock_state(hub.hub_id, hub.locks[0])
    order: list[str] = []
    async with backend.watch(f"hubs/{hub.hub_id}/v1/#") as everything:
        await backend.publish(topics.commands(hub.hub_id), hub.key.sign(claims))
        while "final" not in order:
            message = await asyncio.wait_for(everything.get(), 60)
            if message.topic == state_topic and b'"unlocked"' in message.payload:
                order.append("state")
            elif message.topic.startswith(topics.answers(hub.hub_id)):
                answer = Answer.model_validate_json(message.payload)
                if answer.id == claims.id and answer.is_final:
                    order.append("final")
    assert order == ["state", "final"]

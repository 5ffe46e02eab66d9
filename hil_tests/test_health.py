"""The hub's health over MQTT: a status request returns the full snapshot; a bridge that dies shows
in the retained status within the link's dead time; every device has its retained state."""

from __future__ import annotations

import asyncio

import pytest

from hil_tests.harness import HubUnderTest, ask_status
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import Answer, DeviceState, HubStatus
from wire import link

# hubd's link goes down after 3.5 s of silence; the retained status follows at once. The margin
# is for a loaded CI machine, not a speed requirement.
LINK_DEAD_S = 3.5


async def retained_status(backend: BackendClient, hub: HubUnderTest, check, timeout: float) -> HubStatus:
    """The retained status as it changes, until ``check(status)`` holds."""
    async with backend.watch(topics.status(hub.hub_id)) as queue:
        async with asyncio.timeout(timeout):
            while True:
                status = HubStatus.model_validate_json((await queue.get()).payload)
                if check(status):
                    return status


@pytest.mark.home(alarms=True)
async def test_a_status_request_returns_the_whole_snapshot(hub: HubUnderTest, backend: BackendClient) -> None:
    status = await ask_status(backend, hub)
    assert status.hub == hub.hub_id and status.broker_connected
    assert status.bridge.link_up and status.bridge.firmware
    assert status.bridge.protocol == f"{link.PROTOCOL_MAJOR}.{link.PROTOCOL_MINOR}"
    assert status.bridge.link["auth_errors"] == status.bridge.link["replays"] == 0
    assert status.bridge.link["frames_rx"] > 0
    assert {d.device for d in status.devices} >= {*hub.locks, "bridge"}
    # No alarm centre runs here: hubd's own "bridge link restored" waits unhandled, not yet overdue.
    assert status.alarms.depth >= 1 and status.alarms.oldest_at is not None and status.alarms_overdue == 0
    assert (status.outbox.depth == 0) == (status.outbox.oldest_at is None)
    # hubd asks the bridge for its own report when the link comes up.
    for _ in range(50):
        if status.bridge.health is not None:
            break
        await asyncio.sleep(0.2)
        status = await ask_status(backend, hub)
    health = status.bridge.health
    assert health is not None, "the bridge never sent its health report"
    assert 0 < health.heap_min <= health.heap_free
    # The largest block that could be allocated: a part of what is free, and never zero on a
    # bridge that runs (measured at each report by the firmware, docs/serial-link.md).
    assert 0 < health.heap_blk <= health.heap_free
    assert health.reset == "power_on", "a bridge booted once, from power on"
    assert health.journals.alarms == 0, "nobody pressed anything: no alarm waits on its flash"
    assert health.unit is not None and health.lte is not None, "this home has an alarm unit and LTE"
    # hubd gives the bridge its clock (the alarm flow stamps alarms with it); they agree.
    for _ in range(50):
        if status.bridge.clock_offset_s is not None:
            break
        await asyncio.sleep(0.2)
        status = await ask_status(backend, hub)
    assert status.bridge.clock_offset_s is not None and abs(status.bridge.clock_offset_s) <= 2
    # The alarm unit is a device once the bridge has passed on its first heartbeat (every 0.5 s
    # here), which a snapshot asked for right after hubd came online may precede.
    unit = hub.sim.home.alarm_unit.unit_name
    for _ in range(50):
        if unit in {d.device for d in status.devices}:
            break
        await asyncio.sleep(0.2)
        status = await ask_status(backend, hub)
    assert {d.device for d in status.devices} >= {unit}


async def test_a_bridge_that_dies_shows_in_the_retained_status_and_every_device_goes_unavailable(
        hub: HubUnderTest, backend: BackendClient) -> None:
    first = await ask_status(backend, hub)
    assert first.bridge.link_up
    hub.sim.run(hub.sim.home.bridge.stop(hard=True))  # power cut: the bridge says nothing more
    down = await retained_status(backend, hub, lambda s: not s.bridge.link_up, timeout=LINK_DEAD_S + 10)
    assert down.bridge.since > first.at and down.bridge.health is None
    async with backend.watch(topics.device_states(hub.hub_id)) as states:
        seen: dict[str, DeviceState] = {}
        async with asyncio.timeout(10):
            while not (seen.keys() >= {*hub.locks, "bridge"} and not any(s.available for s in seen.values())):
                state = DeviceState.model_validate_json((await states.get()).payload)
                seen[state.device] = state
    assert seen["bridge"].why == "bridge link down"
    assert all(seen[lock].why == "bridge link down" for lock in hub.locks)
    hub.sim.run(hub.sim.home.bridge.start())  # power back
    up = await retained_status(backend, hub, lambda s: s.bridge.link_up, timeout=30)
    assert up.bridge.since >= down.bridge.since


@pytest.mark.home(hubd_top="bridge_wait_s = 60", via="bridge")  # the bridge's boot on a loaded machine, not luck
async def test_a_command_sent_while_the_bridge_is_down_waits_for_it_and_opens_the_door(
        hub: HubUnderTest, backend: BackendClient) -> None:
    # A bridge rebooting (or a hubd just started) has no link for a second or two; nothing is
    # written yet, so the command waits for the link instead of failing bridge_unavailable.
    hub.sim.run(hub.sim.home.bridge.stop(hard=True))
    await retained_status(backend, hub, lambda s: not s.bridge.link_up, timeout=LINK_DEAD_S + 10)
    async with backend.watch(topics.answers(hub.hub_id)) as seen:
        running = asyncio.create_task(hub.command(backend, "unlock"))
        first = Answer.model_validate_json((await asyncio.wait_for(seen.get(), 30)).payload)
        assert first.status == "accepted"
        async with asyncio.timeout(30):
            while "waiting up to" not in hub.log_text():
                await asyncio.sleep(0.05)
        assert hub.sim.call(lambda: hub.sim.home.locks[hub.locks[0]].motor_moves) == 0
        hub.sim.run(hub.sim.home.bridge.start())  # power back while the command waits
        answers = await running
    assert [(a.status, a.reason) for a in answers] == [("accepted", None), ("succeeded", None)], answers
    assert hub.sim.call(lambda: hub.sim.home.locks[hub.locks[0]].motor_moves) == 1


async def test_a_malformed_status_request_is_refused_and_hubd_keeps_answering(
        hub: HubUnderTest, backend: BackendClient) -> None:
    async with backend.watch(topics.status_replies(hub.hub_id) + "/#") as replies:
        await backend.publish(topics.status_request(hub.hub_id), b"{not json")
        await backend.publish(topics.status_request(hub.hub_id), b'{"v": 1, "id": "x", "reply_to": "hubs/other/v1/commands"}')
        # hubd takes them in order: once the second is answered, an answer to the garbage would
        # have come first. It was answered on the hub's own replies topic, not the foreign one.
        answer = await asyncio.wait_for(replies.get(), 30)
        assert HubStatus.model_validate_json(answer.payload).request_id == "x"
        assert answer.topic == topics.status_replies(hub.hub_id)
    status = await ask_status(backend, hub)
    assert status.bridge.link_up
    assert status.inputs["status_requests"]["invalid"] == 1, status.inputs
    assert status.inputs["status_requests"]["seen"] >= 3

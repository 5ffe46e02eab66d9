"""hubd's uplink through the bridge's LTE modem (issue 16, docs/second-path.md "The uplink"), as
the backend and the alarm centre see it: a home without broadband, broadband cut during a visit
and back, and the modem losing its socket mid-command.

The home (``home(uplink=...)``, hil_tests/conftest.py) has a broadband router between hubd and
the broker (simulator/router.py) and a BG95 model on the bridge's UART 3 whose network reaches the
broker whatever the router does, on the realistic LTE-M model (simulator/lte_network.py: a
150-250 ms round trip, 16 kB/s, 1 % of segments a second late). hubd runs as its own process
with ``[uplink]`` timings of seconds (conftest.UPLINK_TIMINGS), so each scenario is quick. The
path a session took is what hubd's retained ``online`` says (hubapi.models.Online.uplink); what
crossed the modem is the model's own count. Simulator only: each scenario cuts the router or
drops the modem's socket, and skips loudly on a bench.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hil_tests.harness import (HubUnderTest, _retained_until, answers_of, audit_log,
                               next_answer, retained)
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import Answer, Online
from simulator.alarm_centre import PRIMARY, AlarmCentre
from simulator.router import BLACKHOLE
from wire import alarms

#: The uplink's connect id on the modem (docs/second-path.md: the second path keeps 0).
UPLINK_ID = 1


def _online(payload: bytes) -> Online | None:
    try:
        return Online.model_validate_json(payload)
    except ValueError:
        return None


async def online_over(hub: HubUnderTest, path: str, since: float = 0.0, timeout: float = 60) -> Online:
    """hubd's retained ``online``, once it says ``path`` ("broadband" or "lte") and was said at
    or after ``since`` (wall clock)."""
    def says(payload: bytes) -> bool:
        online = _online(payload)
        return (online is not None and online.status == "online" and online.uplink == path
                and (online.at or 0) >= since)

    try:
        payload = await asyncio.to_thread(_retained_until, hub.broker, topics.online(hub.hub_id),
                                          timeout, f"hubd's online saying {path}", says)
    except AssertionError as exc:
        now = await retained(hub.broker, topics.online(hub.hub_id))
        raise AssertionError(f"{exc}; the retained online is {now!r}") from None
    online = _online(payload)
    assert online is not None
    return online


def _moves(hub: HubUnderTest, lock: str | None = None) -> list[str]:
    return hub.sim.call(lambda: list(hub.sim.home.locks[lock or hub.locks[0]].moves))


def _uplink_opens(hub: HubUnderTest) -> int:
    """How many times the bridge opened the uplink's socket on the modem."""
    return hub.sim.call(lambda: sum(1 for c in hub.sim.home.modem.commands
                                    if c.startswith(f'AT+QIOPEN=1,{UPLINK_ID},')))


def _carried(hub: HubUnderTest) -> tuple[int, int]:
    """The bytes the uplink's socket on the modem took to send and gave the bridge to read."""
    def count() -> tuple[int, int]:
        sock = hub.sim.home.modem.sockets.get(UPLINK_ID)
        return (sock.sent, sock.read) if sock is not None else (0, 0)
    return hub.sim.call(count)


def _press(hub: HubUnderTest) -> tuple[int, str]:
    unit = hub.sim.home.alarm_unit
    event_id = hub.sim.call(lambda: unit.press(alarms.BUTTON, "pendant"))
    return event_id, unit.alarm_id(event_id)


async def _heard(hub: HubUnderTest, event_id: int, what: str, timeout: float = 60) -> list[str]:
    unit = hub.sim.home.alarm_unit
    async with asyncio.timeout(timeout):
        while what not in (heard := hub.sim.call(lambda: list(unit.heard.get(event_id, [])))):
            await asyncio.sleep(0.1)
    return heard


def _final(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != "accepted"]


@pytest.mark.home(uplink="lte", broadband=False, alarms=True, travel_time_s=0.5)
async def test_a_home_without_broadband_opens_the_door_and_its_alarm_is_handled_over_lte(
        hub: HubUnderTest, backend: BackendClient, centre: AlarmCentre) -> None:
    online = await online_over(hub, "lte")
    assert online.status == "online"
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert _moves(hub) == ["unlock"]

    event_id, alarm_id = _press(hub)
    await centre.wait_for(lambda c: alarm_id in c.alarms and c.alarms[alarm_id].handled_at, timeout=60)
    heard = await _heard(hub, event_id, "help_on_the_way")
    assert heard[:2] == ["ack", "alarm_received"]
    record = centre.alarms[alarm_id]
    assert set(record.copies) == {PRIMARY}, "it came over MQTT (through LTE), not the second path"
    assert alarm_id not in centre.dc09.alarm_ids()
    # All of it crossed the modem's uplink socket; the broadband router forwarded nothing.
    sent, read = _carried(hub)
    assert sent > 0 and read > 0, (sent, read)
    assert hub.sim.call(lambda: hub.sim.home.router.accepted) == 0


@pytest.mark.long(25)  # a black hole is noticed by paho's keepalive (1.5 x 5 s), then fallback_s
@pytest.mark.home(uplink="auto", travel_time_s=0.5)
async def test_broadband_cut_during_a_visit_the_next_command_goes_over_lte(
        hub: HubUnderTest, backend: BackendClient) -> None:
    await online_over(hub, "broadband")
    answers = await hub.command(backend, "unlock")  # the nurse lets herself in
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert _uplink_opens(hub) == 0, "broadband carried the visit so far"
    # The broadband goes silent (a black hole: nothing says so); the nurse locks up on leaving.
    cut_at = time.time()
    hub.sim.call(lambda: hub.sim.home.router.cut(BLACKHOLE))
    answers = await hub.command(backend, "lock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    online = await online_over(hub, "lte", since=cut_at)
    assert online.at is not None and online.at >= cut_at
    assert hub.sim.call(lambda: hub.sim.home.router.cut_as) == BLACKHOLE, "still cut: it came over LTE"
    assert _uplink_opens(hub) >= 1 and min(_carried(hub)) > 0
    assert _moves(hub) == ["unlock", "lock"]


@pytest.mark.home(uplink="auto", broadband=False, alarms=True, travel_time_s=0.5)
async def test_broadband_back_the_hub_fails_back_and_loses_nothing(
        hub: HubUnderTest, backend: BackendClient, centre: AlarmCentre) -> None:
    # Broadband was down when the hub started: auto fell back to LTE.
    await online_over(hub, "lte")
    restored_at = time.time()
    hub.sim.call(lambda: hub.sim.home.router.restore())
    # While hubd moves back: commands one after another, and an alarm.
    event_id, alarm_id = _press(hub)
    commands: list[tuple[str, list[Answer]]] = []
    for action in ("unlock", "lock", "unlock", "lock"):
        claims = hub.claims(action)
        answers = await backend.command(claims, hub.key.sign(claims), timeout=60)
        commands.append((claims.id, answers))
    await online_over(hub, "broadband", since=restored_at)
    assert hub.sim.call(lambda: "AT+QICLOSE=1" in hub.sim.home.modem.commands), \
        "the LTE socket closed on the move back"
    for command_id, answers in commands:
        assert [a.status for a in answers] == ["accepted", "succeeded"], (command_id, answers)
    assert _moves(hub) == ["unlock", "lock", "unlock", "lock"]
    # The alarm reached the centre over MQTT, was handled and the resident heard so.
    await centre.wait_for(lambda c: alarm_id in c.alarms and c.alarms[alarm_id].handled_at, timeout=60)
    await _heard(hub, event_id, "help_on_the_way")
    assert set(centre.alarms[alarm_id].copies) == {PRIMARY}
    # The audit trail is whole: each command's entries, and no gap in the chain's seq.
    trail = await audit_log(hub, backend)
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    for command_id, _ in commands:
        outcomes = [e.outcome for e in trail if e.command == command_id]
        assert outcomes[0] == "accepted" and outcomes[-1] == "succeeded", (command_id, outcomes)


@pytest.mark.home(uplink="lte", broadband=False, travel_time_s=2.0)
async def test_the_modem_dropping_the_socket_mid_command_gives_one_final_answer_and_one_move(
        hub: HubUnderTest, backend: BackendClient) -> None:
    await online_over(hub, "lte")
    lock = hub.locks[0]
    opens = _uplink_opens(hub)
    claims = hub.claims("unlock")
    answers: list[Answer] = []
    async with answers_of(backend, hub, claims.id) as queue:
        await backend.publish(topics.commands(hub.hub_id), hub.key.sign(claims))
        answers.append(await next_answer(queue))
        assert answers[0].status == "accepted"
        async with asyncio.timeout(60):
            while hub.sim.call(lambda: hub.sim.home.locks[lock].state) != "moving":
                await asyncio.sleep(0.02)
        dropped_at = time.time()
        hub.sim.call(lambda: hub.sim.home.modem.drop_socket(UPLINK_ID))  # the network drops it
        answers.append(await next_answer(queue))
        # hubd reconnected over LTE (a new socket on the modem) and said so.
        await online_over(hub, "lte", since=dropped_at)
        await asyncio.sleep(3.0)  # a second run would have finished its 2 s travel by now
        while not queue.empty():
            answers.append(queue.get_nowait())
    final = _final(answers)
    assert final and final[0].status == "succeeded", answers
    # One final answer. QoS 1 may deliver the same answer twice (a PUBACK lost with the socket):
    # a copy, never a second outcome.
    assert {a.model_dump_json() for a in final} == {final[0].model_dump_json()}, answers
    assert _moves(hub, lock) == ["unlock"]
    assert _uplink_opens(hub) > opens, "the uplink was opened again"
    trail = [e.outcome for e in await audit_log(hub, backend) if e.command == claims.id]
    assert trail == ["accepted", "written", "succeeded"], trail

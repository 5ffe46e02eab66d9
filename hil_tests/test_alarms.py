"""Safety alarms end to end: the unit, the real firmware, hubd, the broker, the alarm centre, and
the LTE second path to a real SIA DC-09 receiver (pysiaalarm)."""

from __future__ import annotations

import asyncio
import random

import pytest

from hil_tests.harness import HubUnderTest, ask_status
from hubapi.client import BackendClient
from simulator.alarm_centre import HUB_OFFLINE, HUB_ONLINE, PRIMARY, SECOND_PATH, AlarmCentre
from wire import alarms

ALARMS = pytest.mark.home(alarms=True)


def _press(hub: HubUnderTest, event: str = alarms.BUTTON) -> tuple[int, str]:
    unit = hub.sim.home.alarm_unit
    event_id = hub.sim.call(lambda: unit.press(event, "pendant"))
    return event_id, unit.alarm_id(event_id)


async def _heard(hub: HubUnderTest, event_id: int, what: str, timeout: float = 30) -> list[str]:
    unit = hub.sim.home.alarm_unit
    for _ in range(int(timeout / 0.1)):
        heard = hub.sim.call(lambda: list(unit.heard.get(event_id, [])))
        if what in heard:
            return heard
        await asyncio.sleep(0.1)
    raise AssertionError(f"the unit never heard {what!r} for event {event_id}")


async def _over_dc09(centre: AlarmCentre, alarm_id: str, timeout: float = 30) -> None:
    """Wait for the centre's DC-09 receiver to have the alarm."""
    await centre.wait_for(lambda c: alarm_id in c.alarms and c.alarms[alarm_id].copies[SECOND_PATH],
                          timeout=timeout)


async def _restart_hubd_and_catch_up(hub: HubUnderTest, backend: BackendClient,
                                     timeout: float = 60) -> str:
    """Restart hubd and wait until it has the bridge's first health report: the bridge offers
    its pending alarms as soon as the link is up, before it can answer hubd's health request on
    the same ordered link, so by then the new hubd has been offered all it will be. Returns the
    new hubd's log so far."""
    offset = hub.hubd_log.stat().st_size
    await asyncio.to_thread(hub.restart_hubd)
    async with asyncio.timeout(timeout):
        while (await ask_status(backend, hub)).bridge.health_at is None:
            await asyncio.sleep(0.2)
    with hub.hubd_log.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


async def _bridge_logged(hub: HubUnderTest, needle: str, timeout: float = 30) -> list[str]:
    """The bridge's log lines holding ``needle``, once there is one."""
    for _ in range(int(timeout / 0.1)):
        lines = hub.sim.call(lambda: [ln for ln in hub.sim.home.bridge.log if needle in ln])
        if lines:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"the bridge never logged {needle!r}")


@ALARMS
async def test_a_press_reaches_the_centre_over_mqtt_is_handled_and_the_resident_hears_it(
        hub: HubUnderTest, centre: AlarmCentre) -> None:
    event_id, alarm_id = _press(hub)
    await centre.wait_for(lambda c: alarm_id in c.alarms and c.alarms[alarm_id].handled_at,
                          timeout=30)
    record = centre.alarms[alarm_id]
    assert record.first is not None and record.first.event == alarms.BUTTON
    assert record.first.priority == 1 and record.first.test is False
    heard = await _heard(hub, event_id, "help_on_the_way")
    assert heard[:2] == ["ack", "alarm_received"]
    assert set(record.copies) == {PRIMARY}, "it came over MQTT only"
    assert alarm_id not in centre.dc09.alarm_ids(), "a confirmed alarm must not also go over the second path"


@ALARMS
async def test_with_the_broker_down_the_press_goes_over_lte_and_the_late_copy_is_a_duplicate(
        hub: HubUnderTest, centre: AlarmCentre) -> None:
    hub.broker.stop()
    event_id, alarm_id = _press(hub)
    await _over_dc09(centre, alarm_id)
    await _heard(hub, event_id, "help_on_the_way")
    hub.broker.start()
    # hubd still holds the alarm in its outbox and delivers it when the broker is back: the
    # centre sees the same id a second time and knows it for a duplicate.
    await centre.wait_for(lambda c: c.alarms[alarm_id].copies.get(PRIMARY, 0) >= 1, timeout=60)
    record = centre.alarms[alarm_id]
    assert record.first_path == SECOND_PATH
    assert record.copies[SECOND_PATH] == 1
    assert record.duplicates >= 1, "the MQTT copy is the same alarm, known by its id"


@ALARMS
async def test_with_hubd_killed_the_press_still_reaches_the_centre_over_lte(
        hub: HubUnderTest, centre: AlarmCentre, backend: BackendClient) -> None:
    await centre.wait_for(lambda c: c.hub_state(hub.hub_id) == HUB_ONLINE)
    hub.kill_hubd()
    # The centre learns that the hub is gone from its last will, before anyone presses anything.
    await centre.wait_for(lambda c: c.hub_state(hub.hub_id) == HUB_OFFLINE)
    event_id, alarm_id = _press(hub)
    await _over_dc09(centre, alarm_id)
    heard = await _heard(hub, event_id, "help_on_the_way")
    assert heard[:2] == ["ack", "alarm_received"]
    # Confirmed over LTE, the alarm left the bridge's journal: the restarted hubd is not offered
    # it again (the bridge offers pending alarms as soon as the link is up).
    new_log = await _restart_hubd_and_catch_up(hub, backend)
    assert f"alarm {alarm_id} stored" not in new_log
    assert centre.alarms[alarm_id].copies.get(PRIMARY, 0) == 0


@ALARMS
async def test_alarms_queued_for_a_killed_hubd_go_over_lte_and_the_next_hubd_is_not_offered_them(
        hub: HubUnderTest, centre: AlarmCentre, backend: BackendClient) -> None:
    # The interleaving behind a failure seen once under load: hubd dies with the bridge's link
    # window full, so alarms wait in the link's queue behind it. The bridge carries them over
    # LTE; the restarted hubd must not get the queued copies (they would reach the centre twice).
    await centre.wait_for(lambda c: c.hub_state(hub.hub_id) == HUB_ONLINE)
    boots = hub.sim.call(lambda: hub.sim.home.bridge.boots)
    hub.kill_hubd()
    pressed = [_press(hub) for _ in range(6)]  # the link's window holds 4: two wait behind
    for event_id, alarm_id in pressed:
        await _over_dc09(centre, alarm_id)
        await _heard(hub, event_id, "help_on_the_way")
    new_log = await _restart_hubd_and_catch_up(hub, backend)
    assert not [a for _, a in pressed if f"alarm {a} stored" in new_log], new_log
    copies = {alarm_id: dict(centre.alarms[alarm_id].copies) for _, alarm_id in pressed}
    assert all(c.get(PRIMARY, 0) == 0 for c in copies.values()), copies
    dropped = await _bridge_logged(hub, "queued message(s) were for the old hubd")
    assert hub.sim.call(lambda: hub.sim.home.bridge.boots) == boots, "the bridge rebooted"
    assert int(dropped[-1].split("restarted; ")[1].split()[0]) >= 2, \
        f"the alarms did not wait in the link's queue, so this run proves nothing: {dropped}"


# The fault run: the faults the alarm chain must ride through, each once per run, at random moments
# (a failure names the seed, and FAULT_SEED replays the run: see fault_rng in conftest.py).
FAULTS = ("kill_hubd", "reboot_bridge", "restart_broker", "damage_unit_frames", "stop_broker_briefly")


async def _fault(hub: HubUnderTest, fault: str, rng: random.Random) -> None:
    unit = hub.sim.home.alarm_unit
    if fault == "kill_hubd":
        hub.kill_hubd()
        await asyncio.sleep(rng.uniform(0.5, 4.0))  # past the bridge's hub_down deadline, sometimes
        await asyncio.to_thread(hub.restart_hubd)
    elif fault == "reboot_bridge":
        await asyncio.to_thread(hub.sim.run, hub.sim.home.bridge.reboot())
    elif fault == "restart_broker":
        await asyncio.to_thread(hub.broker.restart)
    elif fault == "damage_unit_frames":
        hub.sim.call(lambda: unit.damage_next(rng.choice(("corrupt", "drop", "truncate")), 2))
    elif fault == "stop_broker_briefly":
        await asyncio.to_thread(hub.broker.stop)
        await asyncio.sleep(rng.uniform(0.5, 5.0))
        await asyncio.to_thread(hub.broker.start)


@ALARMS
async def test_a_burst_of_alarms_through_kills_reboots_outages_and_line_noise_loses_nothing(
        hub: HubUnderTest, centre: AlarmCentre, fault_rng: random.Random) -> None:
    rng = fault_rng
    unit = hub.sim.home.alarm_unit
    pressed: list[tuple[int, str]] = []
    faults = list(FAULTS)
    rng.shuffle(faults)
    for fault in faults:
        for _ in range(rng.randint(2, 4)):
            pressed.append(_press(hub, rng.choice((alarms.BUTTON, alarms.FALL, alarms.PULL_CORD))))
            await asyncio.sleep(rng.uniform(0.0, 0.3))
        await _fault(hub, fault, rng)
    ids = [alarm_id for _, alarm_id in pressed]
    try:
        await centre.wait_for(lambda c: all(i in c.alarms for i in ids), timeout=120)
    except TimeoutError:
        bridge_log = "\n".join(hub.sim.call(lambda: hub.sim.home.bridge.log[-60:]))
        raise AssertionError(f"lost alarms {[i for i in ids if i not in centre.alarms]} of {ids} "
                             f"(faults {faults}); the bridge's last words:\n{bridge_log}") from None
    for event_id, _ in pressed:
        await _heard(hub, event_id, "help_on_the_way", timeout=120)
    # The centre's own count: every press arrived, each id is one alarm however many copies.
    units = [r for r in centre.alarms.values() if r.id.startswith(unit.unit_name)]
    copies = {path: sum(r.copies[path] for r in units) for path in (PRIMARY, SECOND_PATH)}
    print(f"pressed {len(ids)}, at the centre {len(units)} alarms from {sum(copies.values())} copies "
          f"({copies[PRIMARY]} over MQTT, {copies[SECOND_PATH]} over DC-09), "
          f"{sum(r.duplicates for r in units)} duplicates recognised by id; "
          f"the bridge booted {hub.sim.call(lambda: hub.sim.home.bridge.boots)} times")
    lost = [i for i in ids if i not in centre.alarms]
    assert lost == [], f"lost alarms {lost}"
    assert sorted(r.id for r in units) == sorted(ids), "the centre has an alarm nobody pressed"
    assert all(unit.heard[e][:2] == ["ack", "alarm_received"] for e, _ in pressed)


@pytest.mark.home(alarms=True, locks="every_kind")
async def test_a_four_lock_home_takes_commands_while_alarms_go_out(
        hub: HubUnderTest, centre: AlarmCentre, backend: BackendClient) -> None:
    # Every lock kind driven by hubd through the bridge's proxy while the resident presses the
    # pendant again and again: each command gets its answer, each alarm reaches the centre and
    # the resident hears help is on the way; the link never starves the alarms.
    actions = {lock: ("unlatch" if kind == "entrance_door" else "unlock")
               for lock, kind in hub.kinds.items()}

    async def relocked(lock: str) -> None:
        model = hub.sim.home.locks[lock]
        async with asyncio.timeout(60):
            while hub.sim.call(lambda: model.state) != "locked":
                await asyncio.sleep(0.1)

    async def commands(lock: str) -> list[str]:
        finals = []
        for action in (actions[lock], "lock", actions[lock]):
            if action == "lock" and hub.kinds[lock] == "entrance_door":
                await relocked(lock)  # it relocks by itself after its release
                continue
            answers = await hub.command(backend, action, lock)
            finals.append(answers[-1].status)
        return finals

    async def presses() -> list[tuple[int, str]]:
        pressed = []
        for _ in range(3):
            pressed.append(_press(hub))
            await asyncio.sleep(0.5)
        return pressed

    results = await asyncio.gather(*(commands(lock) for lock in hub.locks), presses())
    *finals, pressed = results
    assert all(status == "succeeded" for lock_finals in finals for status in lock_finals), finals
    for event_id, alarm_id in pressed:
        await centre.wait_for(lambda c, a=alarm_id: a in c.alarms and c.alarms[a].handled_at,
                              timeout=60)
        assert "help_on_the_way" in await _heard(hub, event_id, "help_on_the_way")
    for lock, kind in hub.kinds.items():
        moves = hub.sim.call(lambda lock=lock: list(hub.sim.home.locks[lock].moves))
        expected = 2 if kind == "entrance_door" else 3
        assert len(moves) == expected, (lock, moves)

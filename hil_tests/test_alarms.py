"""Safety alarms end to end: the unit, the real firmware, hubd, the broker, the alarm centre, and
the LTE second path to a real SIA DC-09 receiver (pysiaalarm)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hil_tests.harness import HubUnderTest
from simulator.alarm_centre import PRIMARY, SECOND_PATH, AlarmCentre
from tests.mosquitto import Mosquitto
from wire import alarms

ALARMS = pytest.mark.home(alarms=True)


@pytest_asyncio.fixture
async def centre(mosquitto: Mosquitto) -> AsyncIterator[AlarmCentre]:
    """The alarm centre's MQTT side: records every alarm by id and confirms it handled."""
    async with AlarmCentre(mosquitto.host, mosquitto.port) as c:
        yield c


def _press(hub: HubUnderTest) -> tuple[int, str]:
    unit = hub.sim.home.alarm_unit
    event_id = hub.sim.call(lambda: unit.press(alarms.BUTTON, "pendant"))
    return event_id, unit.alarm_id(event_id)


async def _heard(hub: HubUnderTest, event_id: int, what: str, timeout: float = 30) -> list[str]:
    unit = hub.sim.home.alarm_unit
    for _ in range(int(timeout / 0.1)):
        heard = hub.sim.call(lambda: list(unit.heard.get(event_id, [])))
        if what in heard:
            return heard
        await asyncio.sleep(0.1)
    raise AssertionError(f"the unit never heard {what!r} for event {event_id}")


async def _over_dc09(hub: HubUnderTest, centre: AlarmCentre, alarm_id: str,
                     timeout: float = 30) -> None:
    """Wait for the DC-09 receiver to have the alarm, and hand it to the centre's records."""
    receiver = hub.receiver
    for _ in range(int(timeout / 0.1)):
        if hub.sim.call(lambda: any(e.x_data == f"I{alarm_id}" for e in receiver.events)):
            centre.received_over_dc09(alarm_id)
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{alarm_id} never reached the DC-09 receiver")


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
    assert not hub.sim.call(lambda: [e for e in hub.receiver.events
                                     if e.x_data == f"I{alarm_id}"]), \
        "a confirmed alarm must not also go over the second path"


@ALARMS
async def test_with_the_broker_down_the_press_goes_over_lte_and_the_late_copy_is_a_duplicate(
        hub: HubUnderTest, centre: AlarmCentre) -> None:
    hub.broker.stop()
    event_id, alarm_id = _press(hub)
    await _over_dc09(hub, centre, alarm_id)
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
        hub: HubUnderTest, centre: AlarmCentre) -> None:
    hub.kill_hubd()
    event_id, alarm_id = _press(hub)
    await _over_dc09(hub, centre, alarm_id)
    heard = await _heard(hub, event_id, "help_on_the_way")
    assert heard[:2] == ["ack", "alarm_received"]
    await asyncio.to_thread(hub.restart_hubd)
    # Confirmed over LTE, the alarm left the bridge's journal: the restarted hubd is not offered
    # it again (the bridge offers pending alarms as soon as the link is up).
    await asyncio.sleep(3)
    assert centre.alarms[alarm_id].copies.get(PRIMARY, 0) == 0

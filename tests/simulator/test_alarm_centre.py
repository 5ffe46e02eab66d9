"""The reference alarm centre (simulator/alarm_centre.py) against a real Mosquitto, driven by a
hand-rolled hub publishing AlarmEvents."""

from __future__ import annotations

import asyncio
import time

import pytest

from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import AlarmEvent, AlarmHandled, HubHeartbeat, Online
from simulator.alarm_centre import (HUB_HEARD, HUB_OFFLINE, HUB_ONLINE, HUB_SILENT, PRIMARY, SECOND_PATH,
                                    AlarmCentre)
from tests.sia_receiver import ACCOUNT, KEY, KEY_B, require_pysiaalarm
from wire import dc09

HUB = "hub-centre"


def event(alarm_id: str, attempt: int = 1, hub: str = HUB) -> bytes:
    now = time.time()
    return AlarmEvent(id=alarm_id, hub=hub, resident="r-1", device="unit-1", event="button", priority=1,
                      test=False, unit_at=int(now), bridge_at=int(now), received_at=now, published_at=now,
                      attempt=attempt, lte=None).model_dump_json().encode()


@pytest.fixture
async def hub_and_centre(mosquitto):
    hub = BackendClient(mosquitto.host, mosquitto.port, client_id="fake-hub")
    await hub.connect()
    centre = AlarmCentre(mosquitto.host, mosquitto.port)
    await centre.start()
    yield hub, centre
    await centre.stop()
    await hub.close()


async def test_an_alarm_is_confirmed_once_and_its_copies_are_duplicates(hub_and_centre):
    hub, centre = hub_and_centre
    async with hub.watch(topics.alarms_confirmed(HUB)) as confirmations:
        await hub.publish(topics.alarms_raised(HUB), event("u-1", 1))
        first = AlarmHandled.model_validate_json((await asyncio.wait_for(confirmations.get(), 10)).payload)
        assert (first.id, first.hub, first.operator) == ("u-1", HUB, "operator-sim")
        await hub.publish(topics.alarms_raised(HUB), event("u-1", 2))  # the hub missed the confirmation
        again = AlarmHandled.model_validate_json((await asyncio.wait_for(confirmations.get(), 10)).payload)
        assert again.id == "u-1"
    record = centre.alarms["u-1"]
    assert (record.duplicates, record.copies[PRIMARY], centre.duplicates()) == (1, 2, 1)
    assert list(centre.alarms) == ["u-1"]


async def test_stop_confirming_receives_but_confirms_nothing_until_resumed(hub_and_centre):
    hub, centre = hub_and_centre
    centre.stop_confirming()
    async with hub.watch(topics.alarms_confirmed(HUB)) as confirmations:
        await hub.publish(topics.alarms_raised(HUB), event("u-2"))
        await centre.wait_for(lambda c: "u-2" in c.alarms)
        assert centre.alarms["u-2"].handled_at is None and confirmations.empty()
        centre.resume_confirming()
        handled = AlarmHandled.model_validate_json((await asyncio.wait_for(confirmations.get(), 10)).payload)
    assert handled.id == "u-2"
    await centre.wait_for(lambda c: c.alarms["u-2"].handled_at is not None)


async def test_a_handling_delay_confirms_late(hub_and_centre):
    hub, centre = hub_and_centre
    centre.handling_delay_s = 0.5
    await hub.publish(topics.alarms_raised(HUB), event("u-3"))
    await centre.wait_for(lambda c: c.alarms.get("u-3") and c.alarms["u-3"].handled_at)
    record = centre.alarms["u-3"]
    assert record.handled_at - record.arrived_at >= 0.5


async def test_bogus_payloads_are_refused_and_recorded(hub_and_centre):
    hub, centre = hub_and_centre
    await hub.publish(topics.alarms_raised(HUB), b"{not json")
    await hub.publish(topics.alarms_raised(HUB), event("u-4", hub="another-hub"))  # on the wrong hub's topic
    await centre.wait_for(lambda c: len(c.refused) == 2)
    assert centre.alarms == {}


async def test_heartbeats_are_recorded(hub_and_centre):
    hub, centre = hub_and_centre
    beat = HubHeartbeat(hub=HUB, at=time.time(), interval_s=60, pending=0, overdue=0, bridge_link=True)
    await hub.publish(topics.alarms_heartbeat(HUB), beat.model_dump_json())
    await centre.wait_for(lambda c: len(c.heartbeats) == 1)
    assert centre.heartbeats[0][1] == beat


async def test_a_copy_over_either_path_after_the_first_is_a_duplicate_and_the_report_has_the_hops(hub_and_centre):
    hub, centre = hub_and_centre
    centre.received_over_dc09("u-5")
    await hub.publish(topics.alarms_raised(HUB), event("u-5"))
    await centre.wait_for(lambda c: c.alarms["u-5"].handled_at is not None)
    record = centre.alarms["u-5"]
    assert (record.first_path, record.copies[SECOND_PATH], record.copies[PRIMARY], record.duplicates) == (
        SECOND_PATH, 1, 1, 1)
    (row,) = centre.report()
    assert row["id"] == "u-5" and row["event"] == "button"
    assert None not in (row["unit_at"], row["bridge_at"], row["received_at"], row["published_at"],
                        row["arrived_at"], row["handled_at"])


async def test_a_hub_missing_two_heartbeats_is_silent_until_heard_and_its_last_will_is_recorded(
        hub_and_centre):
    hub, centre = hub_and_centre

    async def beat() -> None:
        await hub.publish(topics.alarms_heartbeat(HUB), HubHeartbeat(
            hub=HUB, at=time.time(), interval_s=1, pending=0, overdue=0, bridge_link=True).model_dump_json())

    await hub.publish(topics.online(HUB), Online(hub=HUB, status="online", at=time.time()).model_dump_json(),
                      retain=True)
    await beat()
    await centre.wait_for(lambda c: len(c.heartbeats) == 1)
    await asyncio.sleep(1.0)
    assert centre.hub_state(HUB) == HUB_ONLINE, "one interval late is not yet silence"
    await centre.wait_for(lambda c: c.hub_state(HUB) == HUB_SILENT, timeout=5)
    await beat()
    await centre.wait_for(lambda c: c.hub_state(HUB) == HUB_HEARD)
    await hub.publish(topics.online(HUB), Online(hub=HUB, status="offline").model_dump_json(), retain=True)
    await centre.wait_for(lambda c: c.hub_state(HUB) == HUB_OFFLINE)
    assert [what for _, h, what in centre.hub_events if h == HUB] == [
        HUB_ONLINE, HUB_SILENT, HUB_HEARD, HUB_OFFLINE]
    await hub.publish(topics.online(HUB), b"", retain=True)  # clear the retained state for other tests


async def test_the_dc09_side_files_an_alarm_with_its_mqtt_copies_by_id(mosquitto):
    require_pysiaalarm()
    async with AlarmCentre(mosquitto.host, mosquitto.port, dc09_accounts={ACCOUNT: KEY}) as centre, \
            BackendClient(mosquitto.host, mosquitto.port, client_id="fake-hub-2") as hub:
        now = int(time.time())
        (answer,) = await centre.dc09.exchange(dc09.alarm_frame(1, ACCOUNT, "button", "u-6", now, key=KEY_B))
        assert dc09.parse_answer(answer, 1, ACCOUNT, KEY_B)[0] == dc09.ACK
        await hub.publish(topics.alarms_raised(HUB), event("u-6"))
        await centre.wait_for(lambda c: c.alarms["u-6"].copies[PRIMARY] == 1)
        record = centre.alarms["u-6"]
        assert (record.first_path, record.copies[SECOND_PATH], record.duplicates) == (SECOND_PATH, 1, 1)
        assert list(centre.alarms) == ["u-6"] and centre.dc09.alarm_ids() == ["u-6"]

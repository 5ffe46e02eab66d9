"""hubd's alarm outbox (hubd/alarms/delivery.py): a real Bridge on a real link (pty), a real Mosquitto, a real
SQLite store, the reference alarm centre (simulator/alarm_centre.py), and the bridge's end of the
link driven by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import time
import tty
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hubd.technician import control
from hubd.alarms.delivery import Alarms
from hubd.inputs import Inputs
from hubd.mqtt import HubMqtt
from hubd.link.bridge import Bridge
from hubd.config import AlarmsConfig, MqttConfig
from hubd.store.database import DB_NAME, Store
from hubd.technician.trial_alarm import TrialAlarms
from tests.mosquitto import Mosquitto
from tests.waiting import until
from wire import frame, link, messages

import pytest

from hubapi.models import AlarmEvent, AlarmHandled
from simulator.alarm_centre import AlarmCentre
from wire import alarms
from tests.fixtures import LINK_KEY

HUB = "hub-alarm"


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class BridgeEnd:
    """The bridge's end of the serial link: a wire.link engine on a pty master.

    It records every message hubd sends (``received``) and can fall silent (the link goes down on
    hubd's side after the link's dead time) and speak again.
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.engine = link.Link(frame.ROLE_BRIDGE, "fw-alarm-test", _now_ms(), LINK_KEY)
        self.received: list[dict[str, Any]] = []
        self.silent = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        self._task = asyncio.create_task(self._pump())

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        os.close(self._master)
        os.close(self._slave)

    def send(self, payload: bytes) -> None:
        self.engine.send(payload)

    def of_kind(self, kind: str, alarm_id: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received if m["m"] == kind and (alarm_id is None or m.get("id") == alarm_id)]

    async def wait_for(self, kind: str, alarm_id: str | None = None, count: int = 1, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while len(self.of_kind(kind, alarm_id)) < count:
                self._changed.clear()
                await self._changed.wait()

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        if self.silent:
            return  # a bridge that hangs hears nothing either
        self.engine.feed(data, _now_ms())
        self._drain()

    async def _pump(self) -> None:
        while True:
            if not self.silent:
                out = b"".join(iter(lambda: self.engine.poll(_now_ms()), b""))
                self._drain()
                if out:
                    os.write(self._master, out)
            await asyncio.sleep(0.01)

    def _drain(self) -> None:
        for kind, value in self.engine.events():
            if kind == link.EV_DATA:
                self.received.append(messages.decode(value))
                self._changed.set()


class HubdAlarms:
    """hubd's alarm side in-process: Bridge, HubMqtt, Store, Alarms and the confirmation route of
    hubd/__main__.py, started and stopped (or abandoned, like a crash) by the test."""

    def __init__(self, state_dir: Path, broker: Mosquitto, bridge_port: str, **alarm_settings: Any) -> None:
        self.state_dir = state_dir
        self.broker = broker
        self.bridge_port = bridge_port
        self.config = AlarmsConfig(**{"resend_s": 1, "heartbeat_s": 60, **alarm_settings})
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.store = Store.open(self.state_dir)
        self.bridge = await Bridge.open(self.bridge_port, LINK_KEY)
        self.mqtt = HubMqtt(MqttConfig(host=self.broker.host, port=self.broker.port), hub_id=HUB,
                            client_id=f"hubd-{HUB}")
        self.alarms = Alarms(self.store, HUB, self.config, self.bridge, self.mqtt)
        self.mqtt.route(self.alarms.route())
        self.inputs = Inputs()
        self.bridge.on_message(messages.ALARM, self.alarms.received)
        self.bridge.on_message(messages.ALARM_LTE, self.alarms.lte_reported)
        self.bridge.on_link_change(self.alarms.link_changed)
        await self.mqtt.start()
        await self.mqtt.wait_connected(10)
        self._tasks = [asyncio.create_task(coro) for coro in
                       (self.mqtt.dispatch(self.inputs), self.alarms.deliver(), self.alarms.heartbeat(),
                        self.alarms.clock())]

    async def stop(self) -> None:
        """A clean stop, as hubd/__main__.py does it."""
        self.alarms.close()
        await self._cancel()
        await self.mqtt.stop()
        await self.bridge.close()
        self.store.close()

    async def crash(self) -> None:
        """Stop as a kill -9 would: no last words to the broker or the bridge, the database left
        as the last commit left it (synchronous=FULL: committed is on disk)."""
        await self._cancel()
        self.mqtt._client.socket().close()  # the broker sees a dropped connection, not a DISCONNECT
        await asyncio.to_thread(self.mqtt._client.loop_stop)
        self.bridge.link._close_port()
        self.store.conn.close()

    async def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def row(self, alarm_id: str) -> dict[str, Any] | None:
        """The alarm's row as another process would read it (a second connection: committed only)."""
        conn = sqlite3.connect(self.state_dir / DB_NAME)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
            return None if row is None else dict(row)
        finally:
            conn.close()


def alarm(alarm_id: str, event: str = "button", device: str = "unit-1", unit_at: int | None = None,
          bridge_at: int | None = None) -> bytes:
    """An `alarm` link message as the bridge sends it."""
    now = int(time.time())
    return messages.make(messages.ALARM, alarm_id, event, device,
                         now if unit_at is None else unit_at,
                         now if bridge_at is None else bridge_at)


def raw(obj: dict[str, Any]) -> bytes:
    """A link payload built by hand (for malformed messages)."""
    return json.dumps(obj).encode()


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture
async def rig(tmp_path, mosquitto):
    end = BridgeEnd()
    await end.start()
    hubd = HubdAlarms(tmp_path / "state", mosquitto, end.port)
    await hubd.start()
    assert await hubd.bridge.wait_up(10)
    centre = AlarmCentre(mosquitto.host, mosquitto.port)
    await centre.start()
    yield end, hubd, centre
    await centre.stop()
    with contextlib.suppress(Exception):
        await hubd.stop()
    await end.close()


def events_by_first_arrival(centre: AlarmCentre) -> list[str]:
    return [record.first.event for record in centre.alarms.values() if record.first is not None]


def copies_of(centre: AlarmCentre, alarm_id: str) -> list[AlarmEvent]:
    return [event for _, event in centre.copies if event.id == alarm_id]


async def test_an_alarm_is_stored_before_alarm_stored_and_published_with_every_field(rig):
    end, hubd, centre = rig
    committed_when_told: list[bool] = []
    send_stored = hubd.bridge.send_alarm_stored

    def spy(alarm_id: str) -> bool:
        committed_when_told.append(hubd.row(alarm_id) is not None)
        return send_stored(alarm_id)

    hubd.bridge.send_alarm_stored = spy  # type: ignore[method-assign]
    end.send(alarm("unit-1-7", "fall", "unit-1", unit_at=1767225600, bridge_at=1767225601))
    await end.wait_for(messages.ALARM_STORED, "unit-1-7")
    assert committed_when_told == [True]
    await centre.wait_for(lambda c: c.alarms.get("unit-1-7") and c.alarms["unit-1-7"].handled_at)
    event = copies_of(centre, "unit-1-7")[0]
    assert (event.hub, event.device, event.event, event.priority, event.test) == (HUB, "unit-1", "fall", 1, False)
    assert (event.unit_at, event.bridge_at, event.attempt) == (1767225600, 1767225601, 1)
    assert event.received_at <= event.published_at
    await end.wait_for(messages.ALARM_HANDLED, "unit-1-7")
    assert hubd.row("unit-1-7")["handled_at"] is not None


async def test_a_test_alarm_is_marked_as_a_test_with_its_priority(rig):
    end, hubd, centre = rig
    end.send(alarm("unit-1-8", "test"))
    await centre.wait_for(lambda c: "unit-1-8" in c.alarms)
    event = copies_of(centre, "unit-1-8")[0]
    assert (event.test, event.priority) == (True, 3)


async def test_resent_with_the_same_id_until_handled_and_a_puback_does_not_end_it(rig):
    end, hubd, centre = rig
    centre.stop_confirming()
    end.send(alarm("unit-1-9"))
    await centre.wait_for(lambda c: len(copies_of(c, "unit-1-9")) >= 3)
    assert [e.attempt for e in copies_of(centre, "unit-1-9")][:3] == [1, 2, 3]
    row = hubd.row("unit-1-9")
    # PUBACKed (the attempt count rises only after the broker's PUBACK), and still pending.
    assert row["handled_at"] is None and row["attempts"] >= 2
    assert end.of_kind(messages.ALARM_HANDLED) == []
    assert centre.alarms["unit-1-9"].duplicates >= 2  # the centre sees one alarm, copies by id

    centre.resume_confirming()
    await end.wait_for(messages.ALARM_HANDLED, "unit-1-9")
    assert hubd.row("unit-1-9")["handled_at"] is not None
    assert [r for r in hubd.alarms.pending() if r["id"] == "unit-1-9"] == []
    sent = len(copies_of(centre, "unit-1-9"))
    await asyncio.sleep(3 * hubd.config.resend_s)
    assert len(copies_of(centre, "unit-1-9")) == sent  # handled: no more resends


async def test_alarms_go_out_in_arrival_order(rig):
    end, hubd, centre = rig
    ids = [f"unit-2-{n}" for n in range(1, 6)]
    for n, alarm_id in enumerate(ids):
        end.send(alarm(alarm_id, "low_battery" if n % 2 else "button", "unit-2"))
    await centre.wait_for(lambda c: all(i in c.alarms and c.alarms[i].handled_at for i in ids))
    firsts = [event.id for _, event in centre.copies if event.attempt == 1 and event.id in ids]
    assert firsts == ids


async def test_an_alarm_taken_while_the_broker_is_down_arrives_when_it_is_back(rig, mosquitto):
    end, hubd, centre = rig
    mosquitto.stop()
    end.send(alarm("unit-3-1"))
    await end.wait_for(messages.ALARM_STORED, "unit-3-1")  # hubd holds it, broker or not
    assert hubd.row("unit-3-1")["attempts"] == 0
    mosquitto.start()
    await centre.wait_for(lambda c: "unit-3-1" in c.alarms and c.alarms["unit-3-1"].handled_at, timeout=40)
    await end.wait_for(messages.ALARM_HANDLED, "unit-3-1", timeout=20)


async def test_pending_alarms_survive_a_hubd_crash_and_go_out_again_with_the_same_id(rig):
    end, hubd, centre = rig
    centre.stop_confirming()
    end.send(alarm("unit-4-1"))
    await centre.wait_for(lambda c: "unit-4-1" in c.alarms)
    await hubd.crash()
    restarted = HubdAlarms(hubd.state_dir, hubd.broker, end.port)
    await restarted.start()
    try:
        # The centre confirms only once the restarted hubd has sent the alarm again: a
        # confirmation of the first copy that reaches the restarted hubd before its resend
        # (resend_s after the first publish) rightly ends the alarm without one; under load this
        # test lost that race twice.
        await centre.wait_for(lambda c: c.alarms["unit-4-1"].duplicates >= 1, timeout=30)
        centre.resume_confirming()
        await end.wait_for(messages.ALARM_HANDLED, "unit-4-1", timeout=30)
        assert restarted.row("unit-4-1")["handled_at"] is not None
        assert [i for i in centre.alarms if not i.startswith(HUB)] == ["unit-4-1"]
    finally:
        await restarted.stop()


async def test_the_same_alarm_from_the_bridge_twice_is_one_alarm_and_answered_twice(rig):
    end, hubd, centre = rig
    end.send(alarm("unit-5-1"))
    await end.wait_for(messages.ALARM_HANDLED, "unit-5-1")
    end.send(alarm("unit-5-1"))  # a bridge that missed the answers sends its journal again
    await end.wait_for(messages.ALARM_STORED, "unit-5-1", count=2)
    await end.wait_for(messages.ALARM_HANDLED, "unit-5-1", count=2)
    count = hubd.store.conn.execute("SELECT count(*) FROM alarms WHERE id = 'unit-5-1'").fetchone()[0]
    assert count == 1


async def test_an_lte_ack_is_recorded_and_the_alarm_still_waits_for_the_handled_confirmation(rig):
    end, hubd, centre = rig
    centre.stop_confirming()
    end.send(alarm("unit-6-1"))
    await centre.wait_for(lambda c: "unit-6-1" in c.alarms)
    end.send(messages.make(messages.ALARM_LTE, "unit-6-1", "ack"))
    await centre.wait_for(lambda c: any(e.lte == "ack" for e in copies_of(c, "unit-6-1")))
    assert hubd.row("unit-6-1")["handled_at"] is None
    centre.resume_confirming()
    await end.wait_for(messages.ALARM_HANDLED, "unit-6-1")


async def test_heartbeats_arrive_with_the_hubs_state(tmp_path, mosquitto):
    end = BridgeEnd()
    await end.start()
    hubd = HubdAlarms(tmp_path / "state", mosquitto, end.port, heartbeat_s=1)
    centre = AlarmCentre(mosquitto.host, mosquitto.port)
    await centre.start()
    await hubd.start()
    try:
        assert await hubd.bridge.wait_up(10)
        await centre.wait_for(lambda c: len(c.heartbeats) >= 2)
        beat = centre.heartbeats[-1][1]
        assert (beat.hub, beat.interval_s, beat.pending, beat.bridge_link) == (HUB, 1, 0, True)
    finally:
        await hubd.stop()
        await centre.stop()
        await end.close()


async def test_losing_and_regaining_the_bridge_link_raises_alarms_and_gives_the_bridge_the_clock(rig):
    end, hubd, centre = rig
    await end.wait_for(messages.CLOCK)
    clocks = len(end.of_kind(messages.CLOCK))
    # The link coming up at start counts as restored (after a hubd restart it is); wait for it.
    await centre.wait_for(lambda c: events_by_first_arrival(c) == [alarms.HUB_LINK_RESTORED])
    end.silent = True
    await centre.wait_for(lambda c: any(e.event == alarms.HUB_LINK_LOST for _, e in c.copies), timeout=20)
    end.silent = False
    await centre.wait_for(lambda c: events_by_first_arrival(c) == [
        alarms.HUB_LINK_RESTORED, alarms.HUB_LINK_LOST, alarms.HUB_LINK_RESTORED], timeout=20)
    lost = next(e for _, e in centre.copies if e.event == alarms.HUB_LINK_LOST)
    assert (lost.device, lost.priority, lost.hub) == ("hubd", 2, HUB)
    await centre.wait_for(lambda c: all(r.handled_at for r in c.alarms.values()))
    # The centre's confirmation reaches hubd a moment after the centre records it.
    await until(lambda: hubd.alarms.pending() == [], "hubd to take the confirmations")
    await end.wait_for(messages.CLOCK, count=clocks + 1)
    assert end.of_kind(messages.ALARM_HANDLED) == []  # hubd's own alarms are not the bridge's


@pytest.mark.parametrize("payload,why", [
    (b"not json", "malformed confirmation"),
    (AlarmHandled(id="unit-9-9", hub=HUB, handled_at=1.0).model_dump_json().encode(), "unknown alarm id"),
    (AlarmHandled(id="unit-9-9", hub="other-hub", handled_at=1.0).model_dump_json().encode(),
     "confirmation for another hub"),
])
async def test_bogus_confirmations_get_an_error_and_change_nothing(rig, payload, why):
    end, hubd, centre = rig
    centre.stop_confirming()
    end.send(alarm("unit-9-1"))
    await centre.wait_for(lambda c: "unit-9-1" in c.alarms)
    assert hubd.alarms.confirmation(payload).split(":")[0] == why  # the reason, then its detail
    assert [r["id"] for r in hubd.alarms.pending() if r["id"].startswith("unit-")] == ["unit-9-1"]


async def test_an_alarm_hubd_cannot_carry_is_not_acknowledged_so_the_bridge_keeps_it(rig):
    end, hubd, centre = rig
    assert hubd.alarms.received({"id": "bad id with spaces", "event": "button", "device": "u",
                                 "unit_at": 1, "bridge_at": None}).startswith("id:")
    assert hubd.alarms.received({"id": "unit-9-2", "event": "button", "device": "u",
                                 "unit_at": -5, "bridge_at": None}).startswith("unit_at:")
    assert hubd.alarms.received({"event": "button"}) == "not an alarm message"
    end.send(raw({"m": "alarm", "id": "unit-9-3", "event": "button"}))  # malformed on the link
    end.send(alarm("unit-9-4"))
    await end.wait_for(messages.ALARM_STORED, "unit-9-4")
    assert [m["id"] for m in end.of_kind(messages.ALARM_STORED)] == ["unit-9-4"]
    assert [r["id"] for r in hubd.alarms.pending() if r["id"].startswith("unit-")] in ([], ["unit-9-4"])


async def test_an_lte_result_for_an_unknown_alarm_is_an_error(rig):
    end, hubd, centre = rig
    assert hubd.alarms.lte_reported({"id": "unit-0-0", "result": "ack"}) == "unknown alarm id"


# --- hubctl test-alarm's handler (hubd/technician/trial_alarm.py) on the same rig ----------------------------


class _Health:
    """hubd's snapshot as the test-alarm handler reads it: the link, an alarm unit, LTE."""

    def __init__(self, bridge: Bridge, unit: bool = True, lte: bool = True) -> None:
        self._bridge, self._unit, self._lte = bridge, unit, lte

    def snapshot(self) -> Any:
        health = SimpleNamespace(unit=SimpleNamespace(up=True) if self._unit else None,
                                 lte=SimpleNamespace(registered="home") if self._lte else None)
        return SimpleNamespace(bridge=SimpleNamespace(link_up=self._bridge.is_up, health=health))


async def _asked_for(end: BridgeEnd) -> dict[str, Any]:
    await end.wait_for(messages.TEST_ALARM)
    return end.of_kind(messages.TEST_ALARM)[-1]


async def test_a_test_alarm_is_recognised_by_its_ref_and_done_when_the_centre_handled_it(rig):
    end, hubd, centre = rig
    lines: list[str] = []
    handler = TrialAlarms(hubd.bridge, hubd.alarms, _Health(hubd.bridge))
    task = asyncio.create_task(handler.handle(control.TestAlarmRequest(timeout_s=30), lines.append))
    ask = await _asked_for(end)
    assert re.fullmatch(r"hubctl-test-[0-9a-f]{6}", ask["ref"]) and ask["lte"] is False
    end.send(alarm("brT-6", alarms.BUTTON, ask["ref"]))  # not a test: not the answer
    end.send(alarm("brT-7", alarms.TEST, "base"))  # another device: not the answer either
    end.send(alarm("brT-8", alarms.TEST, ask["ref"]))
    result = await asyncio.wait_for(task, 30)
    assert (result.alarm_id, result.primary, result.second_path) == ("brT-8", "handled", None)
    assert centre.alarms["brT-8"].test and centre.alarms["brT-8"].first.device == ask["ref"]
    assert "journaled by the bridge as brT-8" in lines and "stored in hubd's outbox" in lines
    assert lines[-1].startswith("handled by the alarm centre after")


async def test_a_test_alarm_whose_second_path_fails_is_refused_naming_lte_after_the_primary(rig):
    end, hubd, centre = rig
    handler = TrialAlarms(hubd.bridge, hubd.alarms, _Health(hubd.bridge))
    task = asyncio.create_task(handler.handle(
        control.TestAlarmRequest(second_path=True, timeout_s=30), lambda _: None))
    ask = await _asked_for(end)
    assert ask["lte"] is True
    end.send(alarm("brT-9", alarms.TEST, ask["ref"]))
    await centre.wait_for(lambda c: "brT-9" in c.alarms and c.alarms["brT-9"].handled_at is not None, 15)
    end.send(messages.make(messages.ALARM_LTE, "brT-9", "failed"))
    with pytest.raises(control.Refused, match=r"handled test alarm brT-9 .* second path \(LTE"):
        await asyncio.wait_for(task, 30)


async def test_a_test_alarm_the_centre_does_not_handle_is_refused_naming_the_centre(rig):
    end, hubd, centre = rig
    centre.stop_confirming()
    handler = TrialAlarms(hubd.bridge, hubd.alarms, _Health(hubd.bridge))
    task = asyncio.create_task(handler.handle(control.TestAlarmRequest(timeout_s=5), lambda _: None))
    end.send(alarm("brT-10", alarms.TEST, (await _asked_for(end))["ref"]))
    with pytest.raises(control.Refused, match="the alarm centre did not handle test alarm brT-10 within 5 s"):
        await asyncio.wait_for(task, 30)
    assert "brT-10" in centre.alarms  # it did arrive: hubd keeps resending it


@pytest.mark.parametrize(("unit", "lte", "why"), [
    (False, True, "this bridge has no alarm unit"),
    (True, False, "this bridge has no second path"),
])
async def test_a_bridge_that_cannot_carry_the_test_is_refused_before_anything_is_sent(rig, unit, lte, why):
    end, hubd, centre = rig
    handler = TrialAlarms(hubd.bridge, hubd.alarms, _Health(hubd.bridge, unit=unit, lte=lte))
    with pytest.raises(control.Refused, match=why):
        await handler.handle(control.TestAlarmRequest(second_path=True), lambda _: None)
    await asyncio.sleep(0.3)
    assert end.of_kind(messages.TEST_ALARM) == []

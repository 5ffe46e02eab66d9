"""hubd.devices.registry against a real SQLite store, and over a real Mosquitto: retained device state for
late subscribers, availability over (fake) time, battery warnings through the durable outbox that
survive a kill -9 and a broker outage, and are never repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import BatteryWarning, DeviceState
from hubd.config import ConfigError, DevicesConfig, MqttConfig, load_config
from hubd.devices.registry import Devices
from hubd.mqtt import HubMqtt
from hubd.store.outbox import Outbox, OutboxSender
from hubd.store.database import Store
from tests.mosquitto import Mosquitto
from tests.waiting import until
from tests.fixtures import LINK_KEY

HUB = "hub-dev"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0
T0 = 1_767_225_600.0


class Recorder:
    """A publisher that keeps what it was given: (topic, payload, retain)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, payload, retain))

    def states(self, device: str) -> list[DeviceState]:
        topic = topics.device_state(HUB, device)
        return [DeviceState.model_validate_json(p) for t, p, retain in self.sent if t == topic and retain]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


def queued(store: Store) -> list[BatteryWarning]:
    """The battery warnings waiting in the outbox, oldest first."""
    rows = store.conn.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    return [BatteryWarning.model_validate_json(payload) for topic, payload in rows if topic.endswith("/battery")]


def events(warnings: list[BatteryWarning]) -> list[tuple[str, str, int]]:
    return [(w.device, w.event.value, w.percent) for w in warnings]


def devices_for(store: Store, publisher: Any = None, **settings: Any) -> Devices:
    devices = Devices(store, Outbox(store), HUB, publisher or Recorder(),
                      devices=DevicesConfig(**settings) if settings else None, clock=lambda: T0)
    devices.bridge_link(True, at=T0)
    return devices


# --- retained state -------------------------------------------------------------------------------


def test_a_report_publishes_the_retained_state_with_battery_signal_and_firmware(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    assert devices.report("front", "inside_turner", "reference", battery=57, unit="pct", rssi=-70,
                          firmware="2.4.1", present=True, at=T0 + 1) is None
    [state] = recorder.states("front")
    assert state.model_dump(mode="json", exclude={"battery"}) == {
        "v": 1, "hub": HUB, "device": "front", "kind": "inside_turner", "model": "reference", "mains": None,
        "last_seen": T0 + 1, "rssi": -70, "firmware": "2.4.1", "available": True, "why": None, "at": T0 + 1}
    assert state.battery is not None
    level = state.battery
    assert (level.percent, level.state, level.reading, level.unit) == (57, "ok", 57.0, "pct")


def test_the_base_unit_and_its_pendant_are_converted_by_their_models(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=4900, unit="mV", mains=False, at=T0 + 1)
    devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=2800, at=T0 + 1)
    devices.report("lobby", "entrance_door", "mains", mains=True, at=T0 + 1)
    base, pendant, door = (recorder.states(d)[-1] for d in ("au5a000001", "au5a000001-pendant", "lobby"))
    assert base.battery is not None and (base.battery.percent, base.battery.unit, base.mains) == (50, "mV", False)
    assert pendant.battery is not None and (pendant.battery.percent, pendant.battery.reading) == (50, 2800.0)
    assert door.battery is None and door.mains is True and door.available


def test_a_chatty_device_is_republished_on_a_change_or_every_refresh_s_only(store):
    recorder = Recorder()
    devices = devices_for(store, recorder, refresh_s=300)
    for second in range(0, 290, 10):  # the base unit's heartbeat every 10 s, rssi and mV jitter
        devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200 + second % 20, rssi=-60 - second % 3,
                       mains=True, at=T0 + second)
    assert len(recorder.states("au5a000001")) == 1
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200, mains=False, at=T0 + 291)  # mains lost
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200, mains=False, at=T0 + 301)
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200, mains=False, at=T0 + 592)
    states = recorder.states("au5a000001")
    assert [(s.mains, s.last_seen) for s in states] == [(True, T0), (False, T0 + 291), (False, T0 + 592)]


def test_snapshot_has_every_devices_current_state(store):
    devices = devices_for(store)
    devices.expect("keybox", "key_box", "reference")
    devices.report("front", "inside_turner", "reference", battery=80, at=T0 + 5)
    snapshot = devices.snapshot(now=T0 + 10)
    assert sorted(snapshot) == ["front", "keybox"]
    assert snapshot["front"]["battery"] == {"percent": 80, "state": "ok", "reading": 80.0, "unit": "pct"}
    assert (snapshot["keybox"]["available"], snapshot["keybox"]["why"]) == (False, "not heard from yet")
    assert DeviceState.model_validate_json(json.dumps(snapshot["front"])).at == T0 + 10


# --- availability ---------------------------------------------------------------------------------


def availability(recorder: Recorder, device: str) -> list[tuple[bool, str | None, float]]:
    return [(s.available, s.why, s.at) for s in recorder.states(device)]


def test_availability_follows_the_time_since_last_heard_through_tick(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)  # locks: absent after 900 s
    devices.report("front", "inside_turner", "reference", battery=80, at=T0)
    devices.tick(T0 + 899)
    devices.tick(T0 + 900)
    assert availability(recorder, "front") == [(True, None, T0)]
    devices.tick(T0 + 901)
    devices.tick(T0 + 960)  # still absent: not published again
    devices.report("front", "inside_turner", "reference", at=T0 + 980)  # a bare report is no sighting
    devices.report("front", "inside_turner", "reference", battery=80, at=T0 + 1000)
    assert availability(recorder, "front") == [(True, None, T0), (False, "not heard from for over 900 s", T0 + 901),
                                               (True, None, T0 + 1000)]


def test_each_kind_has_its_own_absent_window_and_zero_means_never_by_time(store):
    recorder = Recorder()
    devices = devices_for(store, recorder, absent_s={"base_unit": 30, "pendant": 600, "key_box": 0})
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200, at=T0)
    devices.report("solo-pendant", "pendant", "pendant-cr2032", battery=2900, at=T0)  # no base unit known
    devices.report("keybox", "key_box", "reference", battery=70, at=T0)
    devices.tick(T0 + 31)
    assert devices.state("au5a000001", T0 + 31).available is False  # type: ignore[union-attr]
    assert devices.state("solo-pendant", T0 + 31).available is True  # type: ignore[union-attr]
    devices.tick(T0 + 601)
    assert [s.why for s in recorder.states("solo-pendant")] == [None, "not heard from for over 600 s"]
    devices.tick(T0 + 10**6)
    assert [s.available for s in recorder.states("keybox")] == [True]


def test_the_bridges_word_outweighs_time_and_a_link_drop_voids_it(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)  # locks: 900 s by time
    devices.report("front", "inside_turner", "reference", battery=80, rssi=-60, present=True, at=T0)
    devices.tick(T0 + 5000)  # quiet but heard: the bridge sends a lock only when something changes
    devices.report("front", "inside_turner", "reference", battery=80, rssi=-60, at=T0 + 5100)  # no word: it stands
    devices.tick(T0 + 6100)
    assert devices.state("front", T0 + 6100).available is True  # type: ignore[union-attr]
    devices.bridge_link(False, at=T0 + 6200)
    devices.bridge_link(True, at=T0 + 6210)  # the bridge rebooted and has not told yet: time decides again
    assert availability(recorder, "front")[-1] == (False, "not heard from for over 900 s", T0 + 6210)
    devices.report("front", "inside_turner", "reference", battery=80, present=True, at=T0 + 6220)
    assert availability(recorder, "front")[-1] == (True, None, T0 + 6220)


def test_a_pendant_is_unavailable_while_its_base_unit_is(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5200, present=True, at=T0)
    devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=2900, rssi=-80, at=T0)
    devices.tick(T0 + 10**5)  # the pendant's own default window is 0: never by time
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", present=False, at=T0 + 10**5 + 1)  # unit link lost
    devices.tick(T0 + 10**5 + 2)
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", present=True, at=T0 + 10**5 + 3)
    devices.tick(T0 + 10**5 + 4)
    assert availability(recorder, "au5a000001-pendant") == [
        (True, None, T0), (False, "its base unit au5a000001 is unavailable", T0 + 10**5 + 1),
        (True, None, T0 + 10**5 + 3)]


def test_the_bridge_saying_out_of_reach_holds_until_the_device_is_heard_again(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    devices.report("front", "inside_turner", "reference", battery=80, present=True, at=T0)
    devices.report("front", "inside_turner", "reference", present=False, at=T0 + 60)
    devices.tick(T0 + 120)
    assert devices.state("front", T0 + 120).last_seen == T0  # being missed is not being seen
    devices.report("front", "inside_turner", "reference", present=True, at=T0 + 180)
    assert availability(recorder, "front") == [(True, None, T0), (False, "the bridge reports it out of reach", T0 + 60),
                                               (True, None, T0 + 180)]


def test_bridge_link_down_makes_every_device_unavailable_and_link_up_restores_them(store):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    devices.report("bridge", "bridge", "bridge-liion-1s", battery=4100, mains=True, firmware="1.4.0", at=T0)
    devices.report("front", "inside_turner", "reference", battery=80, at=T0)
    devices.bridge_link(False, at=T0 + 5)
    devices.tick(T0 + 6)
    devices.bridge_link(True, at=T0 + 20)
    for device in ("bridge", "front"):
        assert availability(recorder, device) == [(True, None, T0), (False, "bridge link down", T0 + 5),
                                                  (True, None, T0 + 20)]
    devices.tick(T0 + 20 + 10**6)  # the bridge has no absent window: only its link counts
    assert devices.state("bridge", T0 + 20 + 10**6).available is True
    assert devices.state("front", T0 + 20 + 10**6).available is False


def test_devices_are_unavailable_until_the_first_link_up_and_an_expected_one_until_it_reports(store):
    recorder = Recorder()
    devices = Devices(store, Outbox(store), HUB, recorder, clock=lambda: T0)
    devices.expect("front", "inside_turner", "reference")
    devices.expect("bridge", "bridge", "bridge-liion-1s")
    devices.publish_all()
    devices.bridge_link(True, at=T0 + 1)
    devices.report("front", "inside_turner", "reference", battery=90, at=T0 + 2)
    assert availability(recorder, "front") == [(False, "bridge link down", T0), (False, "not heard from yet", T0 + 1),
                                               (True, None, T0 + 2)]
    assert availability(recorder, "bridge") == [(False, "bridge link down", T0), (True, None, T0 + 1)]


async def test_supervise_ticks_on_its_own_every_tick_s(store):
    recorder = Recorder()
    clock = [T0]
    devices = Devices(store, Outbox(store), HUB, recorder, devices=DevicesConfig(tick_s=0.1), clock=lambda: clock[0])
    devices.bridge_link(True)
    devices.report("front", "inside_turner", "reference", battery=20)
    task = asyncio.create_task(devices.supervise())
    try:
        clock[0] = T0 + 901 + 86400
        await until(lambda: len(queued(store)) == 2 and not recorder.states("front")[-1].available,
                    "the reminder and the lock's absence", TIMEOUT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert events(queued(store)) == [("front", "low", 20), ("front", "reminder", 20)]


# --- battery warnings -----------------------------------------------------------------------------


def test_a_drain_puts_exactly_one_low_and_one_critical_in_the_outbox_then_reminders_and_replaced(store):
    recorder = Recorder()
    devices = Devices(store, Outbox(store), HUB, recorder, clock=lambda: T0)
    devices.bridge_link(True, at=T0)
    at = T0
    for percent in range(100, -1, -1):
        at += 60
        devices.report("front", "inside_turner", "reference", battery=percent, at=at)
    assert events(queued(store)) == [("front", "low", 25), ("front", "critical", 10)]
    low_at = queued(store)[0].at
    devices.tick(low_at + 86400 + 1)  # the critical warning restarted the interval
    assert len(queued(store)) == 2
    critical_at = queued(store)[1].at
    devices.tick(critical_at + 86400)
    devices.tick(critical_at + 86400 + 5)
    devices.report("front", "inside_turner", "reference", battery=100, at=critical_at + 90000)  # new batteries
    warnings = queued(store)
    assert events(warnings) == [("front", "low", 25), ("front", "critical", 10), ("front", "reminder", 0),
                                ("front", "replaced", 100)]
    assert [w.id for w in warnings] == [f"front~{n}-{int(w.at * 1000)}" for n, w in enumerate(warnings, 1)]
    assert all(w.hub == HUB and w.kind == "inside_turner" and w.model == "reference" for w in warnings)
    assert recorder.states("front")[-1].battery.state == "ok"  # type: ignore[union-attr]


def test_a_pendant_hovering_at_its_low_threshold_warns_once(store):
    devices = devices_for(store)
    for n, millivolts in enumerate([2760, 2733, 2735, 2730, 2745, 2736, 2731, 2747]):  # 30 % is about 2733 mV
        devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=millivolts, at=T0 + n * 600)
    assert events(queued(store)) == [("au5a000001-pendant", "low", 30)]


def test_the_base_unit_draining_on_mains_loss_warns_with_mains_false(store):
    devices = devices_for(store)
    millivolts = 5300
    at = T0
    while millivolts >= 4400:
        devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=millivolts, mains=False, at=at)
        millivolts -= 10
        at += 600
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5600, mains=True, at=at)
    warnings = queued(store)
    assert [(w.event, w.mains) for w in warnings] == [("low", False), ("critical", False), ("replaced", True)]
    assert [w.percent for w in warnings[:2]] == [40, 20]


def test_a_failed_database_write_loses_nothing_the_next_reading_warns(store):
    devices = devices_for(store)
    devices.report("front", "inside_turner", "reference", battery=50, at=T0)
    store.conn.execute("CREATE TEMP TRIGGER fail_writes BEFORE UPDATE ON devices "
                       "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    problem = devices.report("front", "inside_turner", "reference", battery=20, at=T0 + 60)
    assert problem is not None and "the state database failed" in problem
    assert queued(store) == []
    store.conn.execute("DROP TRIGGER fail_writes")
    assert devices.report("front", "inside_turner", "reference", battery=20, at=T0 + 120) is None
    assert events(queued(store)) == [("front", "low", 20)]


@pytest.mark.parametrize("kwargs,problem", [
    ({"battery": 4000, "unit": "mV"}, "'pendant-cr2032': reading 4000 mV is outside its physical range"),
    ({"battery": 80, "unit": "pct"}, "'pendant-cr2032' reports mV, not 'pct'"),
    ({"battery": "2800"}, "reading '2800' is not a number"),
    ({"rssi": 99}, "rssi 99 is not a signal strength"),
    ({"firmware": ""}, "firmware '' is not a version string"),
])
def test_a_bad_value_in_a_report_is_refused_with_a_reason_and_the_rest_is_taken(store, kwargs, problem):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    devices.report("p1", "pendant", "pendant-cr2032", battery=2900, rssi=-80, firmware="1.0", at=T0)
    answer = devices.report("p1", "pendant", "pendant-cr2032", **{"rssi": -75, **kwargs}, at=T0 + 400)
    assert answer is not None and answer.startswith("p1: ") and problem in answer
    state = devices.state("p1", T0 + 400)
    assert state is not None and state.last_seen == T0 + 400 and state.battery is not None
    assert state.battery.reading == 2900.0 and state.firmware == "1.0"  # the previous good values stay
    assert state.rssi == (-80 if "rssi" in kwargs else -75)


@pytest.mark.parametrize("device,kind,model,problem", [
    ("front/door", "inside_turner", "reference", "device id 'front/door' must match"),
    ("front", "lamp", "reference", "front: unknown device kind 'lamp'"),
    ("front", "inside_turner", "duracell-9v", "front: unknown battery model 'duracell-9v'"),
])
def test_a_report_from_an_unknown_kind_model_or_bad_id_is_refused_and_stores_nothing(
        store, device, kind, model, problem):
    recorder = Recorder()
    devices = devices_for(store, recorder)
    answer = devices.report(device, kind, model, battery=5, at=T0)
    assert answer is not None and answer.startswith(problem)
    assert recorder.sent == [] and devices.snapshot() == {} and queued(store) == []


def test_a_mains_device_given_a_battery_reading_is_refused_and_never_warns(store):
    devices = devices_for(store)
    answer = devices.report("lobby", "entrance_door", "mains", battery=3, at=T0)
    assert answer is not None and "'mains' is mains powered" in answer
    devices.tick(T0 + 10**6)
    assert queued(store) == [] and devices.state("lobby", T0).battery is None  # type: ignore[union-attr]


def test_the_watch_survives_reopening_the_store_no_warning_is_repeated(tmp_path):
    first = Store.open(tmp_path / "state")
    devices = devices_for(first)
    devices.report("front", "inside_turner", "reference", battery=20, rssi=-66, firmware="2.0", at=T0)
    first.close()
    again = Store.open(tmp_path / "state")
    try:
        devices = devices_for(again)
        devices.report("front", "inside_turner", "reference", battery=22, at=T0 + 60)
        devices.report("front", "inside_turner", "reference", battery=8, at=T0 + 120)
        assert events(queued(again)) == [("front", "low", 20), ("front", "critical", 8)]
        assert [w.id.split("-")[0] for w in queued(again)] == ["front~1", "front~2"]
        state = devices.state("front", T0 + 120)
        assert state is not None and (state.rssi, state.firmware) == (-66, "2.0")
    finally:
        again.close()


# --- the [devices] config section -----------------------------------------------------------------


def test_devices_config_defaults_and_the_bridge_having_no_absent_window(tmp_path):
    from hubapi import signing

    key = signing.public_key_text(signing.generate_private_key())
    path = tmp_path / "hubd.toml"
    base = (f'hub_id = "hub-1"\nstate_dir = "{tmp_path}"\n[keys]\n"k1" = "{key}"\n[locks]\nfront = "inside_turner"\n'
            f'[serial]\nlink_key = "{LINK_KEY.hex()}"\n')
    path.write_text(base)
    config = load_config(path).devices
    assert [config.absent_for(k) for k in ("inside_turner", "key_box", "base_unit", "pendant", "bridge")] == \
        [900, 900, 30, 0, None]
    path.write_text(base + "[devices.absent_s]\nbridge = 10\n")
    with pytest.raises(ConfigError, match=r"devices\.absent_s: the bridge has no absent_s: it is available exactly "
                                          r"while its serial link is up; remove it"):
        load_config(path)


# --- over a real broker ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def hub_mqtt(broker: Mosquitto) -> AsyncIterator[HubMqtt]:
    mqtt = HubMqtt(MqttConfig(host=broker.host, port=broker.port), hub_id=HUB, client_id=f"hubd-{uuid.uuid4().hex[:8]}")
    await mqtt.start()
    try:
        await mqtt.wait_connected(TIMEOUT)
        yield mqtt
    finally:
        await mqtt.stop()


@contextlib.asynccontextmanager
async def sending(outbox: Outbox, mqtt: HubMqtt) -> AsyncIterator[None]:
    task = asyncio.create_task(OutboxSender(outbox, mqtt).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SessionSubscriber:
    """A backend whose MQTT 5 session outlives its connection and the broker's restart (the broker
    persists it), so it misses nothing published while it was reconnecting."""

    def __init__(self, broker: Mosquitto, topic_filter: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"backend-{uuid.uuid4().hex[:8]}",
                                   protocol=paho.MQTTv5)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = lambda client, *_: client.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 600
        self._client.connect_async(broker.host, broker.port, clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
                                   properties=properties)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    async def __aenter__(self) -> SessionSubscriber:
        self._client.loop_start()
        assert await asyncio.to_thread(self._subscribed.wait, TIMEOUT), "the subscription never came"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def warnings(self) -> list[BatteryWarning]:
        with self._lock:
            return [BatteryWarning.model_validate_json(payload) for _, payload in self.received]


async def test_a_late_subscriber_sees_every_devices_retained_state_at_once(mosquitto, tmp_path):
    store = Store.open(tmp_path / "state")
    try:
        async with hub_mqtt(mosquitto) as mqtt:
            devices = Devices(store, Outbox(store), HUB, mqtt)
            devices.bridge_link(True)
            devices.report("front", "inside_turner", "reference", battery=24, rssi=-71, firmware="2.4.1")
            devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=4960, unit="mV", mains=False)
            devices.report("front", "inside_turner", "reference", battery=23, rssi=-72)
        # Stopped: its last publish (offline) was acknowledged, so the broker has handled the states.
        async with BackendClient(mosquitto.host, mosquitto.port) as late, late.watch(topics.device_states(HUB)) as feed:
            first = [await asyncio.wait_for(feed.get(), TIMEOUT) for _ in range(2)]
    finally:
        store.close()
    assert all(m.retain for m in first)
    states = {s.device: s for s in (DeviceState.model_validate_json(m.payload) for m in first)}
    front, base = states["front"], states["au5a000001"]
    assert front.battery is not None and (front.battery.percent, front.battery.state, front.rssi) == (23, "low", -72)
    assert front.available and front.firmware == "2.4.1"
    assert base.battery is not None and (base.battery.percent, base.mains) == (62, False)


async def test_warnings_survive_a_kill_9_and_are_delivered_once_after_the_restart(mosquitto, tmp_path):
    state_dir = tmp_path / "state"
    # A hubd that drains a lock to empty, commits every reading, and dies by SIGKILL mid-run.
    script = textwrap.dedent(f"""
        import os, signal
        from hubd.devices.registry import Devices
        from hubd.store.outbox import Outbox
        from hubd.store.database import Store

        class Nowhere:
            def publish(self, topic, payload, *, retain=False):
                pass

        store = Store.open({str(state_dir)!r})
        devices = Devices(store, Outbox(store), {HUB!r}, Nowhere())
        devices.bridge_link(True, at={T0})
        for n, percent in enumerate(range(100, 4, -1)):
            devices.report("front", "inside_turner", "reference", battery=percent, at={T0} + 60 * n)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr

    store = Store.open(state_dir)
    try:
        stored = queued(store)
        assert events(stored) == [("front", "low", 25), ("front", "critical", 10)]
        async with SessionSubscriber(mosquitto, topics.device_batteries(HUB)) as backend:
            async with hub_mqtt(mosquitto) as mqtt:
                outbox = Outbox(store)
                devices = Devices(store, outbox, HUB, mqtt, clock=lambda: T0 + 6000)
                devices.bridge_link(True)
                for n, percent in enumerate([4, 6, 3, 5, 0]):  # still critical after the restart
                    devices.report("front", "inside_turner", "reference", battery=percent, at=T0 + 6000 + n)
                async with sending(outbox, mqtt):
                    await until(lambda: len(outbox) == 0, "the outbox to empty", TIMEOUT)
                    devices.report("front", "inside_turner", "reference", battery=100, at=T0 + 7000)
                    await until(lambda: len(outbox) == 0, "the replaced warning to go out", TIMEOUT)
                await until(lambda: len(backend.warnings()) >= 3, "three warnings at the backend", TIMEOUT)
    finally:
        store.close()
    delivered = backend.warnings()
    assert [w.id for w in delivered[:2]] == [w.id for w in stored], "the stored warnings, with their ids"
    by_id = {w.id: w for w in delivered}  # at least once: a redelivery would have the same id
    assert sorted((w.event.value, w.percent) for w in by_id.values()) == [
        ("critical", 10), ("low", 25), ("replaced", 100)]


async def test_warnings_made_while_the_broker_is_down_arrive_when_it_is_back(mosquitto, tmp_path):
    store = Store.open(tmp_path / "state")
    try:
        async with SessionSubscriber(mosquitto, topics.device_batteries(HUB)) as backend, hub_mqtt(mosquitto) as mqtt:
            outbox = Outbox(store)
            devices = Devices(store, outbox, HUB, mqtt, clock=lambda: T0)
            devices.bridge_link(True)
            async with sending(outbox, mqtt):
                devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=2900, at=T0)
                mosquitto.stop()
                await until(lambda: not mqtt.connected, "hubd to see the broker gone", TIMEOUT)
                for n, millivolts in enumerate(range(2900, 1999, -20)):
                    devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=millivolts,
                                   at=T0 + 60 * (n + 1))
                assert events(queued(store)) == [("au5a000001-pendant", "low", 26),
                                                 ("au5a000001-pendant", "critical", 14)]
                mosquitto.start()
                await until(lambda: len(outbox) == 0, "the outbox to empty after the broker's return", 60)
                await until(lambda: len(backend.warnings()) >= 2, "both warnings at the backend", TIMEOUT)
    finally:
        store.close()
    by_id = {w.id: w for w in backend.warnings()}
    assert sorted((w.event.value, w.percent, w.reading) for w in by_id.values()) == [
        ("critical", 14, 2640.0), ("low", 26, 2720.0)]


async def test_every_broker_session_gets_every_devices_retained_state_again(mosquitto, tmp_path):
    # hubd publishes the current truth whenever a session with the broker begins: a state
    # published before the first CONNACK, or lost by the broker, is not left wrong until the
    # next refresh (a lock's "available" once never became the retained state that way).
    store = Store.open(tmp_path / "state")
    mqtt = HubMqtt(MqttConfig(host=mosquitto.host, port=mosquitto.port), hub_id=HUB,
                   client_id=f"hubd-{uuid.uuid4().hex[:8]}")
    devices = Devices(store, Outbox(store), HUB, mqtt)
    mqtt.on_connected(devices.publish_all)
    topic = topics.device_state(HUB, "front")
    try:
        devices.bridge_link(True)
        devices.report("front", "inside_turner", "reference", battery=80, rssi=-60)  # not connected yet
        await mqtt.start()
        await mqtt.wait_connected(TIMEOUT)
        async with BackendClient(mosquitto.host, mosquitto.port) as backend:
            await backend.publish(topic, b"", retain=True)  # the broker loses the retained state
        await asyncio.to_thread(mosquitto.restart)
        async with BackendClient(mosquitto.host, mosquitto.port) as late, late.watch(topic) as feed:
            state = DeviceState.model_validate_json((await asyncio.wait_for(feed.get(), TIMEOUT)).payload)
        assert state.available and state.battery is not None and state.battery.percent == 80
    finally:
        await mqtt.stop()
        store.close()

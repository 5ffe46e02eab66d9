"""Device health: every device hubd hears of, its retained state, and its battery warnings.

One :class:`Devices` per hub keeps, per device, the last report (battery, mains, signal, firmware,
last seen) and the battery watch of :mod:`hubd.devices.battery`, in the state database's ``devices``
table. It publishes each device's :class:`hubapi.models.DeviceState` retained on
``hubs/{hub}/v1/devices/{device}/state`` and its :class:`hubapi.models.BatteryWarning` events on
``.../devices/{device}/battery`` through the durable outbox, **in the same transaction** as the
watch change that caused them: a kill -9 before the commit loses both (the next reading finds the
crossing again and warns then), after it keeps both (the outbox sends the warning after the restart
or the broker's return). So a warning is never repeated and never lost; the outbox delivers it at
least once and the backend drops a redelivery by its ``id``.

Wiring (hubd/__main__.py and hubd/link/bridge.py; every call runs on the event loop)::

    devices = Devices(store, outbox, config.hub_id, mqtt, battery=config.battery, devices=config.devices)
    for lock, kind in config.locks.items():        # known before they first report
        devices.expect(lock, kind, "mains" if kind == "entrance_door" else "reference")
    devices.expect("bridge", "bridge", "bridge-liion-1s")
    bridge.on_link_change(devices.bridge_link)     # before the first await, so no link change goes unheard
    devices.bridge_link(bridge.is_up)              # and the link as it is now
    ...
    await mqtt.start()
    devices.publish_all()                          # the current truth for late subscribers at once
    tasks.append(asyncio.create_task(devices.supervise(), name="devices"))  # tick() every tick_s

    # in the bridge's handlers, for each device report (a lock's state or advert, the alarm
    # unit's heartbeat or status, the bridge's own supply); a lock's ``state`` message already
    # carries its battery percent, so its callback can report it here as well:
    devices.report("front", "inside_turner", "reference", battery=57, unit="pct", rssi=-70, present=True)
    devices.report("au5a000001", "base_unit", "base-nimh-4.8v", battery=5120, unit="mV", mains=False)
    devices.report("au5a000001-pendant", "pendant", "pendant-cr2032", battery=2870, unit="mV")
    devices.report("bridge", "bridge", "bridge-liion-1s", battery=4100, unit="mV", mains=True,
                   firmware="1.4.0")

Availability (``available`` and ``why`` in the state), first rule that applies:

1. the bridge (``bridge``) is available exactly while the serial link is up (:meth:`bridge_link`);
   every other device is behind the bridge: ``bridge link down`` while it is down (also from
   hubd's start until the first ``bridge_link(True)``);
2. the bridge's word: ``present=True`` (it hears the lock's adverts, the unit's heartbeats) makes
   a device available, ``present=False`` unavailable (``the bridge reports it out of reach``), until
   it says otherwise; a report with ``present=None`` leaves its word as it was, and a link drop
   voids it (the bridge tells every device again when the link comes up);
3. a pendant (``{unit}-pendant``) is heard only through its base unit: unavailable while the base
   unit is;
4. otherwise, time: unavailable until first heard (``not heard from yet``) and when not heard from
   within its kind's ``absent_s`` (``[devices.absent_s]``; 0: never by time), checked by :meth:`tick`,
   which also sends the battery reminders that fall due. This is the only judge of a lock
   (hubd.locks.drivers gives no ``present`` word): its adverts and authentic
   answers are its sightings (:meth:`heard` for an answer with no reading).

The retained state is published when anything in it changes except ``last_seen``, ``rssi``, the
raw battery ``reading`` and ``at``, and at least every ``refresh_s`` while the device reports, so a
chatty device (the base unit's heartbeat every 10 s) does not flood the broker.

Reports are input from devices: a bad one never raises. :meth:`report` returns None when it took
everything, or a one-line reason naming what it refused (an unknown kind or model, a reading out of
range, an unusable rssi, the state database failing); what was usable is still taken.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import ValidationError

from hubapi import topics
from hubapi.models import (
    BatteryEvent,
    BatteryLevel,
    BatteryState,
    BatteryUnit,
    BatteryWarning,
    DeviceKind,
    DeviceState,
)
from hubd.devices.battery import MODELS, Watch, assess, remind, to_percent
from hubd.config import BatteryConfig, DevicesConfig
from hubd.store.outbox import Outbox
from hubd.store.database import Store

log = logging.getLogger(__name__)

#: The bridge's own device id.
BRIDGE_ID = "bridge"
#: A pendant's id is its base unit's id and this.
PENDANT_SUFFIX = "-pendant"
#: Why a device is unavailable.
WHY_LINK_DOWN = "bridge link down"
WHY_OUT_OF_REACH = "the bridge reports it out of reach"
WHY_NEVER_HEARD = "not heard from yet"

_FIRMWARE_MAX = 64


class Publisher(Protocol):
    """Where retained state goes (``hubd.mqtt.HubMqtt``)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


@dataclass(frozen=True)
class _Device:
    """One device as stored (the ``devices`` row)."""

    id: str
    kind: DeviceKind
    model: str
    watch: Watch = Watch()
    reading: float | None = None
    unit: BatteryUnit | None = None
    warnings: int = 0
    mains: bool | None = None
    last_seen: float | None = None
    rssi: int | None = None
    firmware: str | None = None
    present: bool | None = None  # the bridge's word (not stored: void once the link drops)


class Devices:
    """The devices of one hub: their reports, retained state, availability and battery warnings."""

    def __init__(self, store: Store, outbox: Outbox, hub_id: str, publisher: Publisher, *,
                 battery: BatteryConfig | None = None, devices: DevicesConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._outbox = outbox
        self._hub = hub_id
        self._publisher = publisher
        self._battery = battery if battery is not None else BatteryConfig()  # the config, not hubd.devices.battery
        self._config = devices if devices is not None else DevicesConfig()
        self._clock = clock
        self._link_up = False
        self._devices: dict[str, _Device] = {}
        self._stored_seen: dict[str, float | None] = {}  # last_seen as last written to the database
        self._published: dict[str, tuple[tuple[Any, ...], float]] = {}  # material content, publish time
        for row in store.conn.execute(
                "SELECT id, kind, model, reading, unit, percent, state, warned_at, warnings, mains, "
                "last_seen, rssi, firmware FROM devices"):
            try:
                device = _from_row(row)
            except ValueError as exc:
                log.error("device %r in the state database is unreadable (%s); it starts afresh", row[0], exc)
                continue
            self._devices[device.id] = device
            self._stored_seen[device.id] = device.last_seen

    # --- input ---------------------------------------------------------------------------------

    def expect(self, device_id: str, kind: DeviceKind | str, model: str) -> str | None:
        """Register a device hubd should hear from (a configured lock, the bridge) before it reports.

        A device already known keeps what it has (its kind and model follow its reports). Until it
        reports it is unavailable (``not heard from yet``). Returns None, or why it was refused.
        """
        problem = _identity_problem(device_id, kind, model)
        if problem is not None:
            log.warning("device not registered: %s", problem)
            return problem
        if device_id not in self._devices:
            self._devices[device_id] = _Device(device_id, DeviceKind(kind), model)
            self._stored_seen[device_id] = None
        return None

    def report(self, device_id: str, kind: DeviceKind | str, model: str, *, battery: float | None = None,
               unit: BatteryUnit | str | None = None, mains: bool | None = None, rssi: int | None = None,
               firmware: str | None = None, present: bool | None = None, at: float | None = None) -> str | None:
        """The latest report of one device; ``None`` fields were not reported and stay as they were.

        ``battery`` is the raw reading in ``unit`` (the model's unit when None), converted by
        ``model`` (:data:`hubd.devices.battery.MODELS`). ``present`` is the bridge's judgement of whether it
        hears the device (None: no judgement, the previous one stands). The device counts as heard
        from at ``at`` (default: now; ``last_seen``) when ``present`` is True, or when it is None and
        the report carries a reading (battery, mains, rssi or firmware); a bare report only makes the
        device known. Stores the report, sends the battery warnings it causes and publishes the
        retained state when it changed. Returns None, or a one-line reason for what it refused.
        """
        now = self._clock() if at is None else at
        problem = _identity_problem(device_id, kind, model)
        if problem is not None:
            log.warning("device report refused: %s", problem)
            return problem
        known = self._devices.get(device_id)
        device = replace(known or _Device(device_id, DeviceKind(kind), model), kind=DeviceKind(kind), model=model)
        problems: list[str] = []
        if present is not None:
            if isinstance(present, bool):
                device = replace(device, present=present)
            else:
                problems.append(f"{device_id}: present must be true or false, got {present!r}")
        sighting = present is True or (present is None and any(
            value is not None for value in (battery, mains, rssi, firmware)))
        if sighting:
            device = replace(device, last_seen=max(now, device.last_seen or now))
        if mains is not None:
            if isinstance(mains, bool):
                device = replace(device, mains=mains)
            else:
                problems.append(f"{device_id}: mains must be true or false, got {mains!r}")
        if rssi is not None:
            if type(rssi) is int and -127 <= rssi <= 20:
                device = replace(device, rssi=rssi)
            else:
                problems.append(f"{device_id}: rssi {rssi!r} is not a signal strength in dBm (-127..20)")
        if firmware is not None:
            if isinstance(firmware, str) and 1 <= len(firmware) <= _FIRMWARE_MAX:
                device = replace(device, firmware=firmware)
            else:
                problems.append(f"{device_id}: firmware {firmware!r} is not a version string of 1..64 characters")
        events: list[BatteryEvent] = []
        if battery is not None:
            try:
                percent = to_percent(model, battery, unit)
            except ValueError as exc:
                problems.append(f"{device_id}: {exc}")
            else:
                watch, events = assess(device.watch, percent, self._battery.for_kind(device.kind), now)
                device = replace(device, watch=watch, reading=float(battery), unit=MODELS[model].unit)
        if problems:
            log.warning("device report partly refused: %s", "; ".join(problems))
        stored = self._commit(known, device, events, now)
        if not stored:
            problems.append(f"{device_id}: the state database failed; the report was not stored")
        else:
            self._publish_if_changed(self._devices[device_id], now)
            pendant = self._devices.get(device_id + PENDANT_SUFFIX)
            if pendant is not None:  # heard through this base unit: its availability may follow
                self._publish_if_changed(pendant, now)
        return "; ".join(problems) or None

    def heard(self, device_id: str, at: float | None = None) -> None:
        """A known device answered, authentically, with no reading to report (a lock's
        REPORTS_END to hubd's own driver): it counts as heard from at ``at`` (default: now) for
        the time rule of availability. An unknown device is ignored."""
        now = self._clock() if at is None else at
        known = self._devices.get(device_id)
        if known is None:
            return
        device = replace(known, last_seen=max(now, known.last_seen or now))
        if self._commit(known, device, [], now):
            self._publish_if_changed(self._devices[device_id], now)

    def bridge_link(self, up: bool, at: float | None = None) -> None:
        """The serial link to the bridge went up or down (:meth:`hubd.link.bridge.Bridge.on_link_change`).

        Every device's availability follows; the bridge counts as heard from while the link is up.
        """
        now = self._clock() if at is None else at
        self._link_up = bool(up)
        if not up:  # the bridge may restart: its word on each device is void until it tells again
            self._devices = {key: replace(device, present=None) for key, device in self._devices.items()}
        bridge = self._devices.get(BRIDGE_ID)
        if bridge is not None and up:
            self._devices[BRIDGE_ID] = replace(bridge, last_seen=max(now, bridge.last_seen or now))
        for device in list(self._devices.values()):
            self._publish_if_changed(device, now)

    def tick(self, now: float | None = None) -> None:
        """Re-evaluate availability and send the battery reminders that are due (call every few
        seconds: :meth:`supervise` does). Never raises for a database failure (logged; the reminder
        is tried again at the next tick)."""
        now = self._clock() if now is None else now
        for device in list(self._devices.values()):
            thresholds = self._battery.for_kind(device.kind)
            watch, events = remind(device.watch, thresholds, now)
            if events:
                self._commit(device, replace(device, watch=watch), events, now)
            self._publish_if_changed(self._devices[device.id], now)

    async def supervise(self) -> None:
        """Call :meth:`tick` every ``[devices] tick_s`` until cancelled."""
        while True:
            await asyncio.sleep(self._config.tick_s)
            try:
                self.tick()
            except Exception:  # a bug must not end supervision of every device
                log.exception("device supervision tick failed")

    # --- output --------------------------------------------------------------------------------

    def publish_all(self, now: float | None = None) -> None:
        """Publish every known device's retained state now (on start: replaces what a previous run
        left on the broker)."""
        now = self._clock() if now is None else now
        for device in self._devices.values():
            self._publish(device, now)

    def state(self, device_id: str, now: float | None = None) -> DeviceState | None:
        """The current state of one device (None if unknown)."""
        device = self._devices.get(device_id)
        return None if device is None else self._state(device, self._clock() if now is None else now)

    def states(self, now: float | None = None) -> list[DeviceState]:
        """Every device's current state, by id."""
        now = self._clock() if now is None else now
        return [self._state(device, now) for _, device in sorted(self._devices.items())]

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Every device's current state as JSON-ready dicts (the :class:`DeviceState` fields), by id."""
        return {state.device: state.model_dump(mode="json") for state in self.states(now)}

    # --- internals -----------------------------------------------------------------------------

    def _availability(self, device: _Device, now: float) -> tuple[bool, str | None]:
        if device.kind is DeviceKind.BRIDGE:
            return (True, None) if self._link_up else (False, WHY_LINK_DOWN)
        if not self._link_up:
            return False, WHY_LINK_DOWN
        if device.present is not None:
            return (True, None) if device.present else (False, WHY_OUT_OF_REACH)
        if device.kind is DeviceKind.PENDANT and device.id.endswith(PENDANT_SUFFIX):
            base = self._devices.get(device.id.removesuffix(PENDANT_SUFFIX))
            if base is not None and not self._availability(base, now)[0]:
                return False, f"its base unit {base.id} is unavailable"
        if device.last_seen is None:
            return False, WHY_NEVER_HEARD
        window = self._config.absent_for(device.kind)
        if window and now - device.last_seen > window:
            return False, f"not heard from for over {window:g} s"
        return True, None

    def _state(self, device: _Device, now: float) -> DeviceState:
        available, why = self._availability(device, now)
        level = None
        if device.watch.percent is not None and device.reading is not None and device.unit is not None:
            level = BatteryLevel(percent=device.watch.percent, state=device.watch.state, reading=device.reading,
                                 unit=device.unit)
        return DeviceState(hub=self._hub, device=device.id, kind=device.kind, model=device.model, battery=level,
                           mains=device.mains, last_seen=device.last_seen, rssi=device.rssi,
                           firmware=device.firmware, available=available, why=why, at=now)

    def _publish_if_changed(self, device: _Device, now: float) -> None:
        state = self._state(device, now)
        last = self._published.get(device.id)
        material = _material(state)
        if last is not None and last[0] == material:
            if device.last_seen is None or device.last_seen <= last[1] or now - last[1] < self._config.refresh_s:
                return  # nothing new, or only last_seen/rssi/reading and not yet time to refresh
        self._send_state(state, material, now)

    def _publish(self, device: _Device, now: float) -> None:
        state = self._state(device, now)
        self._send_state(state, _material(state), now)

    def _send_state(self, state: DeviceState, material: tuple[Any, ...], now: float) -> None:
        self._publisher.publish(topics.device_state(self._hub, state.device), state.model_dump_json().encode(),
                                retain=True)
        self._published[state.device] = (material, now)

    def _commit(self, known: _Device | None, device: _Device, events: list[BatteryEvent], now: float) -> bool:
        """Store ``device`` (and queue ``events`` as warnings, in the same transaction) when needed;
        only then does it become the device's state in memory. False when the database failed."""
        device = replace(device, warnings=device.warnings + len(events))
        if not events and known is not None and not self._needs_write(known, device):
            self._devices[device.id] = device
            return True
        try:
            with self._store.transaction() as conn:
                _save(conn, device)
                for n, event in enumerate(events, start=device.warnings - len(events) + 1):
                    warning = self._warning(device, event, n, now)
                    self._outbox.add(conn, topics.device_battery(self._hub, device.id),
                                     warning.model_dump_json().encode())
        except sqlite3.Error as exc:
            log.error("cannot store device %s: %s", device.id, exc, extra={"events": [e.value for e in events]})
            return False
        except ValidationError as exc:  # a bug, not input: the models and the conversions disagree
            log.error("device %s: warning does not fit the API: %s", device.id, exc)
            return False
        for event in events:
            log.info("battery %s", event.value, extra={"device": device.id, "percent": device.watch.percent,
                                                       "state": device.watch.state.value})
        self._devices[device.id] = device
        self._stored_seen[device.id] = device.last_seen
        return True

    def _needs_write(self, old: _Device, new: _Device) -> bool:
        def lasting(device: _Device) -> _Device:  # what must be on disk at once; the rest can wait
            return replace(device, last_seen=None, rssi=None, reading=None, present=None)

        if lasting(old) != lasting(new):
            return True
        stored = self._stored_seen.get(new.id)
        return new.last_seen is not None and (stored is None or new.last_seen - stored >= self._config.refresh_s)

    def _warning(self, device: _Device, event: BatteryEvent, n: int, now: float) -> BatteryWarning:
        assert device.watch.percent is not None and device.reading is not None and device.unit is not None
        return BatteryWarning(id=f"{device.id}~{n}-{int(now * 1000)}", hub=self._hub, device=device.id,
                              kind=device.kind, model=device.model, event=event, state=device.watch.state,
                              percent=device.watch.percent, reading=device.reading, unit=device.unit,
                              mains=device.mains, at=now)


def _identity_problem(device_id: Any, kind: Any, model: Any) -> str | None:
    if not isinstance(device_id, str) or not topics.is_valid_segment(device_id):
        return f"device id {device_id!r} must match {topics.SEGMENT_PATTERN}"
    try:
        DeviceKind(kind)
    except ValueError:
        return f"{device_id}: unknown device kind {kind!r} (known: {', '.join(k.value for k in DeviceKind)})"
    if model not in MODELS:
        return f"{device_id}: unknown battery model {model!r} (known: {', '.join(MODELS)})"
    return None


def _material(state: DeviceState) -> tuple[Any, ...]:
    """What counts as a change of the retained state: all but last_seen, rssi, the raw reading, at."""
    level = state.battery
    return (state.kind, state.model, None if level is None else (level.percent, level.state, level.unit),
            state.mains, state.firmware, state.available, state.why)


def _save(conn: sqlite3.Connection, device: _Device) -> None:
    watch = device.watch
    conn.execute(
        "INSERT INTO devices (id, kind, model, reading, unit, percent, state, warned_at, warnings, mains, "
        "last_seen, rssi, firmware) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, model = excluded.model, reading = excluded.reading, "
        "unit = excluded.unit, percent = excluded.percent, state = excluded.state, warned_at = excluded.warned_at, "
        "warnings = excluded.warnings, mains = excluded.mains, last_seen = excluded.last_seen, "
        "rssi = excluded.rssi, firmware = excluded.firmware",
        (device.id, device.kind.value, device.model, device.reading, None if device.unit is None else device.unit.value,
         watch.percent, watch.state.value, watch.warned_at, device.warnings,
         None if device.mains is None else int(device.mains), device.last_seen, device.rssi, device.firmware))


def _from_row(row: tuple[Any, ...]) -> _Device:
    (device_id, kind, model, reading, unit, percent, state, warned_at, warnings, mains, last_seen, rssi,
     firmware) = row
    if model not in MODELS:
        raise ValueError(f"unknown battery model {model!r}")
    return _Device(
        id=device_id, kind=DeviceKind(kind), model=model,
        watch=Watch(BatteryState(state), percent, warned_at),
        reading=reading, unit=None if unit is None else BatteryUnit(unit), warnings=warnings,
        mains=None if mains is None else bool(mains), last_seen=last_seen, rssi=rssi, firmware=firmware)

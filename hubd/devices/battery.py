"""Battery levels and warnings: each device model's reading as a percent, and the per-device state
machine that turns a series of percents into warnings.

Pure code: no I/O and no clock of its own (the time is passed in), so :mod:`hubd.devices.registry` stores
what it returns in the same transaction as the warnings, and tests drive it with a fake clock.
docs/battery.md documents every model's curve and where its points come from.

Converting a reading (:data:`MODELS`)::

    to_percent("pendant-cr2032", 2700)          # -> 20; "mV" is the model's unit
    to_percent("reference", 57, "pct")          # -> 57; a unit that is not the model's: ValueError
    to_percent("mains", 1)                      # ValueError: a mains model has no battery

Every refusal (unknown model, a mains model, a wrong unit, a reading that is not a finite number or
lies outside what the battery can physically show) is a :class:`ValueError` whose message names the
model and the value; nothing else is raised.

Watching a battery (:func:`assess`, :func:`remind`)::

    watch = Watch()                                             # ok, never warned
    watch, events = assess(watch, 22, DEFAULT_THRESHOLDS["inside_turner"], now)   # [LOW]
    watch, events = remind(watch, thresholds, now + 86400)      # [REMINDER] (on a timer)

The rules, with ``low``, ``critical``, ``hysteresis`` and ``reminder_s`` from :class:`Thresholds`:

- ``ok`` becomes ``low`` at ``percent <= low``, and ``critical`` at ``percent <= critical``; each
  downward crossing is one event. A reading that jumps past both (30 % straight to 5 %) gives
  ``low`` then ``critical``, so a backend that acts on ``low`` never misses it.
- Going back up needs the hysteresis: ``critical`` leaves for ``low`` only at ``percent >=
  critical + hysteresis`` (silently: a coin cell recovers a little when the load stops), and
  ``low`` or ``critical`` leave for ``ok`` only at ``percent >= low + hysteresis``, which is the
  ``replaced`` event (a new or recharged battery). A reading hovering around a threshold within the
  band therefore gives one event at the first crossing and none after it.
- While the state is ``low`` or ``critical``, :func:`remind` (and :func:`assess`, on a reading that
  changes nothing else) gives one ``reminder`` when ``reminder_s`` has passed since the last
  warning or reminder; ``reminder_s == 0`` turns reminders off. A late timer delays a reminder,
  it never gives several at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from hubapi.models import BatteryEvent, BatteryState, BatteryUnit, DeviceKind

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MODELS",
    "Model",
    "Thresholds",
    "Watch",
    "assess",
    "remind",
    "to_percent",
]


@dataclass(frozen=True)
class Model:
    """How one device model's battery reading becomes a percent.

    ``curve`` is a piecewise-linear discharge curve, (reading, percent) points with readings
    ascending; below its first point the battery is 0 %, above its last 100 %. ``limits`` are the
    readings the battery can physically show: anything outside is a broken reading, refused.
    ``unit`` is None for a model without a battery (mains powered).
    """

    name: str
    unit: BatteryUnit | None
    curve: tuple[tuple[float, int], ...]
    limits: tuple[float, float]
    about: str

    @property
    def has_battery(self) -> bool:
        """False for a mains-powered model: it has nothing to convert and never warns."""
        return self.unit is not None


def _model(name: str, unit: BatteryUnit | None, curve: tuple[tuple[float, int], ...],
           limits: tuple[float, float], about: str) -> Model:
    readings = [reading for reading, _ in curve]
    percents = [percent for _, percent in curve]
    if readings != sorted(set(readings)) or percents != sorted(percents):
        raise AssertionError(f"{name}: curve points must rise in reading and percent")
    if curve and not (limits[0] <= readings[0] and readings[-1] <= limits[1]):
        raise AssertionError(f"{name}: curve outside its limits")
    return Model(name, unit, curve, limits, about)


#: Every battery model hubd knows, by name (the name devices report; docs/battery.md, per model).
MODELS: dict[str, Model] = {model.name: model for model in (
    _model("reference", BatteryUnit.PERCENT, ((0, 0), (100, 100)), (0, 100),
           "every lock of the reference BLE lock protocol (inside_turner, in_cylinder, key_box): "
           "the lock reports percent itself"),
    _model("mains", None, (), (0, 0),
           "mains powered (the building's entrance door): no battery, never warns"),
    # Li/MnO2 coin cell; Energizer CR2032 datasheet shape (15 kOhm, 21 C; 2.0 V end point),
    # cross-checked with zigbee-herdsman-converters' "3V_2100" table. docs/battery.md has the detail.
    _model("pendant-cr2032", BatteryUnit.MILLIVOLT,
           ((2000, 0), (2400, 5), (2600, 10), (2700, 20), (2800, 50), (2900, 80), (3000, 100)),
           (0, 3600), "the alarm unit's pendant: one CR2032 lithium coin cell, millivolts"),
    # 4 x NiMH: 1.10 V/cell empty (stop before cell reversal), 1.20 V/cell plateau, 1.30-1.35 V
    # resting full, 1.40 V on charge.
    _model("base-nimh-4.8v", BatteryUnit.MILLIVOLT,
           ((4400, 0), (4600, 8), (4700, 15), (4800, 30), (4900, 50), (5000, 70), (5200, 90), (5600, 100)),
           (0, 6600), "the alarm unit's base: backup pack of 4 NiMH cells, millivolts"),
    # One Li-ion cell (LiCoO2/NMC), rest voltage, charged to 4.15 V, cut off at 3.3 V.
    _model("bridge-liion-1s", BatteryUnit.MILLIVOLT,
           ((3300, 0), (3450, 5), (3680, 10), (3740, 20), (3770, 30), (3790, 40), (3820, 50), (3870, 60),
            (3920, 70), (4000, 80), (4080, 90), (4150, 100)),
           (0, 4400), "the hub's own supply: one Li-ion cell behind the bridge's supply, millivolts"),
    # dormakaba dKey: raw units as the lock reports them (py-dormakaba-dkey: 28 and more full, a
    # warning below 20, critical at 17 and under). The library's own percent steps (20: 25 %,
    # 23: 50 %, 25: 75 %, 28: 100 %) above its warning; below it, the points put its warning and
    # critical levels on the lock thresholds' low (25 %) and critical (10 %). docs/battery.md.
    _model("dkey", BatteryUnit.RAW,
           ((15, 0), (17, 10), (19, 25), (20, 30), (23, 50), (25, 75), (28, 100)), (0, 255),
           "a dormakaba dKey: the raw units the lock reports (28 and more full)"),
    _model("raw8", BatteryUnit.RAW, ((0, 0), (255, 100)), (0, 255),
           "a vendor model reporting raw units 0..255, linear (255 full, 0 empty)"),
)}


def _model_named(name: str) -> Model:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown battery model {name!r} (known: {', '.join(MODELS)})") from None


def to_percent(model: str, reading: float, unit: BatteryUnit | str | None = None) -> int:
    """``reading`` of a battery of ``model`` as a whole percent 0..100.

    ``unit`` is checked against the model's when given. Raises ValueError naming the model and the
    value for an unknown model, a model without a battery, a wrong unit, a reading that is not a
    finite number or one outside the model's physical limits.
    """
    spec = _model_named(model)
    if not spec.has_battery:
        raise ValueError(f"battery model {model!r} is mains powered: it has no battery reading "
                         f"(got {reading!r})")
    if unit is not None and unit != spec.unit:
        raise ValueError(f"battery model {model!r} reports {spec.unit}, not {unit!r} "
                         f"(reading {reading!r})")
    if isinstance(reading, bool) or not isinstance(reading, (int, float)) or not math.isfinite(reading):
        raise ValueError(f"battery model {model!r}: reading {reading!r} is not a number")
    low, high = spec.limits
    if not low <= reading <= high:
        raise ValueError(f"battery model {model!r}: reading {reading:g} {spec.unit} is outside its "
                         f"physical range {low:g}..{high:g} {spec.unit}")
    return _round(_interpolate(spec.curve, reading))


def _interpolate(curve: tuple[tuple[float, int], ...], reading: float) -> float:
    if reading <= curve[0][0]:
        return curve[0][1]
    for (r0, p0), (r1, p1) in zip(curve, curve[1:]):
        if reading <= r1:
            return p0 + (p1 - p0) * (reading - r0) / (r1 - r0)
    return curve[-1][1]


def _round(value: float) -> int:
    return max(0, min(100, math.floor(value + 0.5)))  # half up, not to even: 12.5 % is 13 %


@dataclass(frozen=True)
class Thresholds:
    """When a battery of one device kind is ``low`` or ``critical`` (percent, inclusive), how far
    above a threshold it must read again to leave that state (``hysteresis``, percentage points),
    and the reminder interval (``reminder_s``; 0: no reminders)."""

    low: int
    critical: int
    hysteresis: int = 5
    reminder_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.critical < self.low <= 100:
            raise ValueError(f"critical ({self.critical}) must be below low ({self.low}), both 0..100")
        if self.hysteresis < 0 or self.low + self.hysteresis > 100:
            raise ValueError(f"hysteresis ({self.hysteresis}) must be 0 or more, and low + hysteresis "
                             f"({self.low + self.hysteresis}) at most 100, or a low battery could "
                             f"never read ok again")
        if self.reminder_s < 0:
            raise ValueError(f"reminder_s ({self.reminder_s}) must be 0 (no reminders) or more")


#: Thresholds per device kind when the config says nothing. Locks warn at 25 % (weeks of use left
#: on a typical lock) and are critical at 10 %; the pendant's coin cell has a sharp knee, so it
#: warns earlier; the base unit must still carry 48 hours of mains loss (Norwegian practice), so
#: its pack warns at 40 % and is critical at 20 %; the bridge's cell bridges mains loss for the hub.
DEFAULT_THRESHOLDS: Mapping[DeviceKind, Thresholds] = {
    DeviceKind.INSIDE_TURNER: Thresholds(low=25, critical=10),
    DeviceKind.IN_CYLINDER: Thresholds(low=25, critical=10),
    DeviceKind.KEY_BOX: Thresholds(low=25, critical=10),
    DeviceKind.ENTRANCE_DOOR: Thresholds(low=25, critical=10),
    DeviceKind.PENDANT: Thresholds(low=30, critical=15),
    DeviceKind.BASE_UNIT: Thresholds(low=40, critical=20),
    DeviceKind.BRIDGE: Thresholds(low=30, critical=15),
}


@dataclass(frozen=True)
class Watch:
    """What the state machine remembers about one battery (hubd.devices.registry stores it per device).

    ``state`` is the battery state after hysteresis, ``percent`` the last percent assessed,
    ``warned_at`` when the last ``low``, ``critical`` or ``reminder`` went out (None while ``ok``).
    """

    state: BatteryState = BatteryState.OK
    percent: int | None = None
    warned_at: float | None = None


_SEVERITY = {BatteryState.OK: 0, BatteryState.LOW: 1, BatteryState.CRITICAL: 2}


def _next_state(current: BatteryState, percent: int, th: Thresholds) -> BatteryState:
    if percent <= th.critical:
        return BatteryState.CRITICAL
    if current is BatteryState.CRITICAL and percent < th.critical + th.hysteresis:
        return BatteryState.CRITICAL
    if percent <= th.low:
        return BatteryState.LOW
    if current is not BatteryState.OK and percent < th.low + th.hysteresis:
        return BatteryState.LOW
    return BatteryState.OK


def assess(watch: Watch, percent: int, thresholds: Thresholds, now: float) -> tuple[Watch, list[BatteryEvent]]:
    """A new reading of ``percent`` at ``now``: the new watch and the events it gives, in order."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"percent must be a whole number 0..100, got {percent!r}")
    state = _next_state(watch.state, percent, thresholds)
    before, after = _SEVERITY[watch.state], _SEVERITY[state]
    if after > before:
        events = [BatteryEvent.LOW] if before == 0 else []
        if state is BatteryState.CRITICAL:
            events.append(BatteryEvent.CRITICAL)
        return Watch(state, percent, now), events
    if state is BatteryState.OK and before > 0:
        return Watch(state, percent, None), [BatteryEvent.REPLACED]
    return remind(replace(watch, state=state, percent=percent), thresholds, now)


def remind(watch: Watch, thresholds: Thresholds, now: float) -> tuple[Watch, list[BatteryEvent]]:
    """Time passing at ``now``: a ``reminder`` if one is due, else nothing."""
    due = (watch.state is not BatteryState.OK and thresholds.reminder_s > 0 and watch.warned_at is not None
           and now - watch.warned_at >= thresholds.reminder_s)
    if not due:
        return watch, []
    return replace(watch, warned_at=now), [BatteryEvent.REMINDER]

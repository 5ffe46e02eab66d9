"""hubd.devices.battery: each model's reading as a percent, and the warning state machine (fake clock)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hubapi.models import BatteryEvent, BatteryState, DeviceKind
from hubd.devices.battery import DEFAULT_THRESHOLDS, MODELS, Thresholds, Watch, assess, remind, to_percent
from wire import lockkinds
from tests.fixtures import LINK_KEY

LOW, CRITICAL = BatteryEvent.LOW, BatteryEvent.CRITICAL
REMINDER, REPLACED = BatteryEvent.REMINDER, BatteryEvent.REPLACED
LOCK = Thresholds(low=25, critical=10, hysteresis=5, reminder_s=3600)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "battery.md"


# --- conversion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model,reading,percent", [
    ("reference", 0, 0), ("reference", 100, 100), ("reference", 57, 57), ("reference", 57.4, 57),
    ("reference", 12.5, 13),  # half up
    ("pendant-cr2032", 3000, 100), ("pendant-cr2032", 3250, 100),  # a fresh cell reads above 3.0 V
    ("pendant-cr2032", 2900, 80), ("pendant-cr2032", 2800, 50), ("pendant-cr2032", 2750, 35),
    ("pendant-cr2032", 2700, 20), ("pendant-cr2032", 2600, 10), ("pendant-cr2032", 2400, 5),
    ("pendant-cr2032", 2000, 0), ("pendant-cr2032", 1200, 0),
    ("base-nimh-4.8v", 5800, 100), ("base-nimh-4.8v", 5600, 100), ("base-nimh-4.8v", 5200, 90),
    ("base-nimh-4.8v", 4900, 50), ("base-nimh-4.8v", 4800, 30), ("base-nimh-4.8v", 4400, 0),
    ("base-nimh-4.8v", 3000, 0),
    ("bridge-liion-1s", 4150, 100), ("bridge-liion-1s", 4200, 100), ("bridge-liion-1s", 3820, 50),
    ("bridge-liion-1s", 3680, 10), ("bridge-liion-1s", 3300, 0), ("bridge-liion-1s", 2800, 0),
    ("raw8", 0, 0), ("raw8", 255, 100), ("raw8", 128, 50), ("raw8", 64, 25),
])
def test_a_reading_becomes_the_percent_of_its_models_curve(model, reading, percent):
    assert to_percent(model, reading) == percent


def test_the_unit_is_checked_when_given():
    assert to_percent("pendant-cr2032", 2800, "mV") == 50
    with pytest.raises(ValueError, match=r"'pendant-cr2032' reports mV, not 'pct' \(reading 80\)"):
        to_percent("pendant-cr2032", 80, "pct")


@pytest.mark.parametrize("model,reading,message", [
    ("reference", 101, r"'reference': reading 101 pct is outside its physical range 0..100 pct"),
    ("reference", -1, r"'reference': reading -1 pct is outside"),
    ("pendant-cr2032", 3700, r"'pendant-cr2032': reading 3700 mV is outside its physical range 0..3600 mV"),
    ("base-nimh-4.8v", 7000, r"'base-nimh-4.8v': reading 7000 mV is outside"),
    ("bridge-liion-1s", 4500, r"'bridge-liion-1s': reading 4500 mV is outside"),
    ("raw8", 256, r"'raw8': reading 256 raw is outside its physical range 0..255 raw"),
    ("raw8", math.nan, r"'raw8': reading nan is not a number"),
    ("raw8", math.inf, r"'raw8': reading inf is not a number"),
    ("reference", "57", r"'reference': reading '57' is not a number"),
    ("reference", None, r"'reference': reading None is not a number"),
    ("reference", True, r"'reference': reading True is not a number"),
    ("mains", 80, r"battery model 'mains' is mains powered: it has no battery reading \(got 80\)"),
    ("duracell-9v", 80, r"unknown battery model 'duracell-9v' \(known: reference, mains, "),
])
def test_a_reading_that_cannot_be_converted_is_a_value_error_naming_model_and_value(model, reading, message):
    with pytest.raises(ValueError, match=message):
        to_percent(model, reading)


@pytest.mark.parametrize("name", [name for name, model in MODELS.items() if model.has_battery])
def test_every_curve_never_falls_as_the_reading_rises(name):
    low, high = MODELS[name].limits
    steps = 1000
    percents = [to_percent(name, low + (high - low) * i / steps) for i in range(steps + 1)]
    assert percents == sorted(percents)
    assert percents[0] == 0 and percents[-1] == 100


def test_every_model_is_documented_in_docs_battery_md():
    text = DOCS.read_text()
    for name in MODELS:
        assert f"### `{name}`" in text, f"docs/battery.md has no section for {name}"


# --- thresholds -----------------------------------------------------------------------------------


def test_every_device_kind_has_default_thresholds_and_every_lock_kind_is_a_device_kind():
    assert set(DEFAULT_THRESHOLDS) == set(DeviceKind)
    assert set(lockkinds.KINDS) <= {kind.value for kind in DeviceKind}
    assert (DEFAULT_THRESHOLDS[DeviceKind.BASE_UNIT].low, DEFAULT_THRESHOLDS[DeviceKind.BASE_UNIT].critical) == (40, 20)


@pytest.mark.parametrize("fields,message", [
    ({"low": 20, "critical": 20}, r"critical \(20\) must be below low \(20\)"),
    ({"low": 20, "critical": 30}, r"critical \(30\) must be below low \(20\)"),
    ({"low": 98, "critical": 10}, r"low \+ hysteresis \(103\) at most 100"),
    ({"low": 20, "critical": 10, "hysteresis": -1}, r"hysteresis \(-1\) must be 0 or more"),
    ({"low": 20, "critical": 10, "reminder_s": -5}, r"reminder_s \(-5\) must be 0"),
])
def test_inconsistent_thresholds_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Thresholds(**fields)


# --- the state machine ----------------------------------------------------------------------------


def run(readings, thresholds=LOCK, watch=None, start=0.0, step=60.0):
    """Assess readings one per ``step`` seconds; returns the final watch and (time, percent, event)."""
    watch = watch or Watch()
    seen = []
    for i, percent in enumerate(readings):
        now = start + i * step
        watch, events = assess(watch, percent, thresholds, now)
        seen += [(now, percent, event) for event in events]
    return watch, seen


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_a_monotone_drain_gives_exactly_one_low_and_one_critical_at_the_thresholds(kind):
    thresholds = Thresholds(DEFAULT_THRESHOLDS[kind].low, DEFAULT_THRESHOLDS[kind].critical, reminder_s=0)
    watch, seen = run(range(100, -1, -1), thresholds)
    assert [(percent, event) for _, percent, event in seen] == [(thresholds.low, LOW), (thresholds.critical, CRITICAL)]
    assert watch.state is BatteryState.CRITICAL and watch.percent == 0


def test_a_reading_jumping_past_both_thresholds_gives_low_then_critical():
    watch, events = assess(Watch(BatteryState.OK, 30), 5, LOCK, 100.0)
    assert events == [LOW, CRITICAL] and watch.state is BatteryState.CRITICAL
    _, later = run([4, 3, 2], LOCK, watch, start=160.0)
    assert later == []


def test_a_device_first_seen_already_critical_gets_low_and_critical():
    watch, events = assess(Watch(), 3, LOCK, 0.0)
    assert events == [LOW, CRITICAL] and watch == Watch(BatteryState.CRITICAL, 3, 0.0)


def test_a_level_hovering_around_a_threshold_within_the_hysteresis_warns_once():
    watch, seen = run([27, 26, 25, 26, 24, 27, 29, 25, 28, 29, 26])
    assert [(p, e) for _, p, e in seen] == [(25, LOW)]
    assert watch.state is BatteryState.LOW


def test_a_level_hovering_above_the_threshold_never_warns():
    watch, seen = run([28, 26, 27, 26, 29, 26])
    assert seen == [] and watch.state is BatteryState.OK


def test_a_level_hovering_around_critical_warns_once():
    watch, seen = run([12, 10, 11, 9, 14, 10, 13, 11])
    assert [(p, e) for _, p, e in seen] == [(12, LOW), (10, CRITICAL)]
    assert watch.state is BatteryState.CRITICAL


def test_leaving_low_needs_the_full_hysteresis_and_is_the_replaced_event():
    watch, _ = run([24])
    watch, events = assess(watch, 29, LOCK, 100.0)
    assert events == [] and watch.state is BatteryState.LOW
    watch, events = assess(watch, 30, LOCK, 200.0)
    assert events == [REPLACED] and watch == Watch(BatteryState.OK, 30, None)


def test_a_new_battery_after_critical_is_one_replaced_event_and_reminders_stop():
    watch, _ = run([50, 20, 5])
    watch, events = assess(watch, 100, LOCK, 1000.0)
    assert events == [REPLACED] and watch.state is BatteryState.OK
    assert remind(watch, LOCK, 1000.0 + 10 * LOCK.reminder_s) == (watch, [])


def test_critical_recovering_into_the_low_band_is_silent_and_falling_again_is_a_new_crossing():
    watch, _ = run([20, 8])
    watch, events = assess(watch, 14, LOCK, 1000.0)  # below critical + hysteresis
    assert events == [] and watch.state is BatteryState.CRITICAL
    watch, events = assess(watch, 15, LOCK, 1100.0)  # a coin cell rests and recovers a little
    assert events == [] and watch.state is BatteryState.LOW
    watch, events = assess(watch, 10, LOCK, 1200.0)
    assert events == [CRITICAL] and watch.state is BatteryState.CRITICAL


def test_reminders_come_every_interval_while_low_and_never_in_a_burst():
    watch, events = assess(Watch(), 20, LOCK, 0.0)
    assert events == [LOW]
    assert remind(watch, LOCK, 3599.0)[1] == []
    watch, events = remind(watch, LOCK, 3600.0)
    assert events == [REMINDER] and watch.warned_at == 3600.0
    assert remind(watch, LOCK, 3601.0)[1] == []
    watch, events = remind(watch, LOCK, 10 * 3600.0)  # the timer was late (hubd was down): one reminder
    assert events == [REMINDER]
    assert remind(watch, LOCK, 10 * 3600.0 + 1)[1] == []
    assert remind(watch, LOCK, 11 * 3600.0)[1] == [REMINDER]


def test_a_reading_that_changes_nothing_else_brings_a_due_reminder():
    watch, _ = assess(Watch(), 20, LOCK, 0.0)
    watch, events = assess(watch, 19, LOCK, 1800.0)
    assert events == []
    watch, events = assess(watch, 19, LOCK, 3600.0)
    assert events == [REMINDER] and watch.warned_at == 3600.0


def test_a_critical_warning_restarts_the_reminder_interval():
    watch, _ = assess(Watch(), 20, LOCK, 0.0)
    watch, events = assess(watch, 9, LOCK, 3000.0)
    assert events == [CRITICAL]
    assert remind(watch, LOCK, 3600.0)[1] == []
    assert remind(watch, LOCK, 6600.0)[1] == [REMINDER]


def test_reminder_interval_zero_turns_reminders_off():
    quiet = Thresholds(low=25, critical=10, reminder_s=0)
    watch, _ = assess(Watch(), 20, quiet, 0.0)
    assert remind(watch, quiet, 10**9)[1] == []


def test_an_ok_battery_is_never_reminded():
    watch, _ = assess(Watch(), 80, LOCK, 0.0)
    assert remind(watch, LOCK, 10**9) == (watch, [])


@pytest.mark.parametrize("percent", [101, -1, True, 50.5])
def test_assess_refuses_what_is_not_a_percent(percent):
    with pytest.raises(ValueError, match="percent must be a whole number 0..100"):
        assess(Watch(), percent, LOCK, 0.0)


# --- the [battery] config section -----------------------------------------------------------------


def hub_toml(tmp_path: Path, extra: str) -> Path:
    from hubapi import signing

    key = signing.public_key_text(signing.generate_private_key())
    path = tmp_path / "hubd.toml"
    path.write_text(f'hub_id = "hub-1"\nstate_dir = "{tmp_path}"\n[keys]\n"k1" = "{key}"\n'
                    f'[locks]\nfront = "inside_turner"\n[serial]\nlink_key = "{LINK_KEY.hex()}"\n{extra}\n')
    return path


def test_battery_config_defaults_are_the_documented_thresholds_per_kind(tmp_path):
    from hubd.config import load_config

    config = load_config(hub_toml(tmp_path, ""))
    assert {kind: config.battery.for_kind(kind) for kind in DeviceKind} == dict(DEFAULT_THRESHOLDS)
    assert config.battery.for_kind("inside_turner") == Thresholds(25, 10, 5, 86400)


def test_a_kind_table_changes_only_what_it_names_and_shared_values_apply_to_every_kind(tmp_path, monkeypatch):
    from hubd.config import load_config

    monkeypatch.setenv("HUBD_BATTERY__KEY_BOX__CRITICAL", "5")
    config = load_config(hub_toml(tmp_path, "[battery]\nhysteresis = 3\nreminder_s = 3600\n"
                                            "pendant = { low = 35 }\n[battery.base_unit]\nreminder_s = 600\n"))
    assert config.battery.for_kind("pendant") == Thresholds(35, 15, 3, 3600)
    assert config.battery.for_kind("base_unit") == Thresholds(40, 20, 3, 600)
    assert config.battery.for_kind("key_box") == Thresholds(25, 5, 3, 3600)
    assert config.battery.for_kind("bridge") == Thresholds(30, 15, 3, 3600)


@pytest.mark.parametrize("extra,message", [
    ("[battery.pendant]\ncritical = 30\n",
     r"^invalid configuration: battery\.pendant: critical \(30\) must be below low \(30\), both 0\.\.100: "
     r"fix it in .*hubd\.toml or HUBD_BATTERY__PENDANT$"),
    ("[battery.base_unit]\nlow = 97\n", r"battery\.base_unit: .*low \+ hysteresis \(102\) at most 100"),
    ("[battery]\nreminder_s = -1\n", r"battery\.reminder_s: Input should be greater than or equal to 0"),
    ("[battery.lamp]\nlow = 5\n", r"battery\.lamp is not a known setting"),
])
def test_bad_battery_settings_are_one_line_errors_naming_the_field(tmp_path, extra, message):
    from hubd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message) as raised:
        load_config(hub_toml(tmp_path, extra))
    assert "\n" not in str(raised.value)

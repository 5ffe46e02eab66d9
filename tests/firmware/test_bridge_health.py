"""Battery warnings and device health through the real firmware: the simulated home (locks,
alarm unit, LTE modem, the bridge in MicroPython) and hubd's end of the serial link, played by
the test (hubd does not handle `device` and `health` itself yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hubd.link.serial_port import SerialLink
from simulator.alarm_unit import BACKUP_EMPTY_MV, BACKUP_FULL_MV, AlarmUnit
from simulator.home import SimulatedHome, every_kind
from tests.waiting import until
from wire import alarms, hubside, link, messages

# The proxy's passive scan windows several times a second, for a watched lock's adverts.
FAST = {"scan_every_ms": 200, "scan_ms": 150}
LTE = {"apn": "internet.m2m", "host": "127.0.0.1", "port": 9, "account": "1234"}


class Hub:
    """hubd's end of the serial link, keeping every message the bridge sends; like hubd it asks
    for the bridge's health whenever the link comes up."""

    def __init__(self, port: str, key: bytes) -> None:
        self.received: list[dict[str, Any]] = []
        self.link = SerialLink(port, 115200, "test-hub", key, self._on_event)

    def _on_event(self, kind: str, value: Any) -> None:
        if kind == link.EV_DATA:
            self.received.append(messages.decode(value))
        elif kind == link.EV_UP:
            self.link.send(hubside.health_request())

    def health(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m["m"] == messages.HEALTH]

    def device(self, dev_id: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["m"] == messages.DEVICE and m["id"] == dev_id]

    def adverts(self, data: bytes) -> list[dict[str, Any]]:
        """The ble_adv messages that carried ``data``."""
        return [m for m in self.received if m["m"] == messages.BLE_ADV and m["data"] == data.hex()]

    def last(self, dev_id: str) -> dict[str, Any] | None:
        found = self.device(dev_id)
        return found[-1] if found else None


async def _started(home: SimulatedHome) -> Hub:
    await home.start()
    hub = Hub(home.port, home.link_key)
    await hub.link.start()
    await until(lambda: hub.link.state == link.UP, "the host link")
    return hub


@pytest.fixture
async def stop_after():
    """Stops what a test started, whatever happened to it."""
    started: list[tuple[SimulatedHome, Hub]] = []
    yield started
    for home, hub in started:
        await asyncio.sleep(0.2)  # hubd.link.serial_port's close must not race a message arriving (3.11)
        await hub.link.close()
        await home.stop()


async def _home(stop_after, tmp_path: Path, **kw: Any) -> tuple[SimulatedHome, Hub]:
    home = SimulatedHome(tmp_path, **kw)
    hub = await _started(home)
    stop_after.append((home, hub))
    return home, hub


async def test_health_comes_on_request_and_every_health_ms(
        tmp_path, stop_after):
    home, hub = await _home(stop_after, tmp_path, alarm_unit=AlarmUnit(heartbeat_s=0.3),
                            alarm_timings={"heartbeat_ms": 300}, lte=LTE,
                            health={"health_ms": 1500})
    await until(lambda: len(hub.health()) >= 3, "three health reports")
    first = hub.health()[0]
    assert first["reset"] == "power_on"
    assert 0 < first["heap_free"] < 192 * 1024
    assert 0 < first["heap_min"] <= first["heap_free"]
    assert set(first["link"]) == set(messages.LINK_COUNTERS)
    assert first["ble"] == {"restarts": 0, "last_restart": None, "connected": first["ble"]["connected"]}
    assert first["journals"] == {"commands": 0, "alarms": 0}
    ups = [h["up_s"] for h in hub.health()]
    assert ups == sorted(ups)
    mins = [h["heap_min"] for h in hub.health()]  # a low-water mark: it never rises
    assert mins == sorted(mins, reverse=True) and all(h["heap_min"] <= h["heap_free"] for h in hub.health())
    # The largest free block, measured on the running bridge at each report: a low-water mark
    # too, never more than was free (a block is part of the free heap).
    blks = [h["heap_blk"] for h in hub.health()]
    assert blks == sorted(blks, reverse=True) and all(0 < h["heap_blk"] <= h["heap_free"] for h in hub.health())
    await until(lambda: hub.health()[-1]["lte"]["registered"] == "home", "LTE registration")
    last = hub.health()[-1]
    assert last["lte"]["rssi"] == -113 + 2 * home.modem.rssi  # AT+CSQ's scale, in dBm
    assert last["unit"]["up"] is True and 0 <= last["unit"]["last_heard_s"] <= 2
    assert last["link"]["frames_rx"] > 0 and last["link"]["crc_errors"] == 0
    # A request is answered at once, not at the next period.
    await until(lambda: len(hub.health()) >= 4, "a fourth report")
    n = len(hub.health())
    hub.link.send(hubside.health_request())
    await until(lambda: len(hub.health()) > n, "the answer to health_request", timeout=1.4)
    # The bridge reboots (its reset line): the next boot's health says so.
    await home.bridge.reboot()
    await until(lambda: hub.health()[-1]["reset"] == "hard", "health after the reboot")
    assert home.bridge.causes == ["power_on", "hard"], "\n".join(home.bridge.log)


async def test_every_device_is_reported_when_the_link_comes_up(tmp_path, stop_after):
    # The bridge reports itself and the alarm unit's base unit and pendant; the locks in its
    # radio's reach are hubd's (it hears them through the proxy), never the bridge's devices.
    home, hub = await _home(stop_after, tmp_path, locks=every_kind(),
                            alarm_unit=AlarmUnit(heartbeat_s=0.3),
                            alarm_timings={"heartbeat_ms": 300})
    ids = {"bridge", "au5a000001", "au5a000001-pendant"}
    await until(lambda: ids <= {m["id"] for m in hub.received if m["m"] == messages.DEVICE},
                "every device")
    assert {(hub.last(i)["kind"], hub.last(i)["model"], hub.last(i)["unit"]) for i in ids} == {
        ("bridge", "bridge-liion-1s", "mV"), ("base_unit", "base-nimh-4.8v", "mV"),
        ("pendant", "pendant-cr2032", "mV")}
    assert hub.last("bridge")["firmware"] == hub.link.engine.peer["version"]  # from its HELLO
    assert hub.last("au5a000001")["firmware"] == "1.4.2"
    # hubd restarts (a new link session): it hears every device again.
    seen = len([m for m in hub.received if m["m"] == messages.DEVICE])
    await hub.link.close()
    hub2 = Hub(home.port, home.link_key)
    stop_after[0] = (home, hub2)
    await hub2.link.start()
    await until(lambda: ids <= {m["id"] for m in hub2.received if m["m"] == messages.DEVICE},
                "every device again")
    assert seen >= len(ids)
    assert {m["id"] for m in hub.received + hub2.received if m["m"] == messages.DEVICE} == ids


async def test_mains_loss_reports_mains_false_and_a_falling_backup_voltage_then_recharging(
        tmp_path, stop_after):
    # 48 h of battery life pass in 24 s: a heartbeat every 0.3 s is 36 simulated minutes.
    unit = AlarmUnit(heartbeat_s=0.3, time_scale=48 * 3600 / 24)
    home, hub = await _home(stop_after, tmp_path, alarm_unit=unit,
                            alarm_timings={"heartbeat_ms": 300})
    base = "au5a000001"
    await until(lambda: (hub.last(base) or {}).get("battery") == BACKUP_FULL_MV, "a full pack")
    assert hub.last(base)["mains"] is True
    unit.mains = False
    await until(lambda: hub.last(base)["mains"] is False, "mains False at hubd")
    await until(lambda: len([m for m in hub.device(base) if m["mains"] is False]) >= 4,
                "the pack draining")
    drained = [m["battery"] for m in hub.device(base) if m["mains"] is False]
    assert drained == sorted(drained, reverse=True) and drained[-1] < drained[0]
    assert all(BACKUP_EMPTY_MV <= mv <= BACKUP_FULL_MV for mv in drained)
    # The unit's own mains_lost alarm goes its usual way, unchanged.
    await until(lambda: any(m["m"] == messages.ALARM and m["event"] == alarms.MAINS_LOST
                            for m in hub.received), "the mains_lost alarm")
    unit.mains = True
    await until(lambda: hub.last(base)["mains"] is True, "mains back")
    low = hub.last(base)["battery"]
    await until(lambda: hub.last(base)["battery"] > low, "recharging")


async def test_the_pendant_battery_and_signal_reach_hubd(tmp_path, stop_after):
    unit = AlarmUnit(heartbeat_s=0.3)
    home, hub = await _home(stop_after, tmp_path, alarm_unit=unit,
                            alarm_timings={"heartbeat_ms": 300})
    pendant = "au5a000001-pendant"
    await until(lambda: (hub.last(pendant) or {}).get("battery") == 3000, "a fresh pendant")
    assert hub.last(pendant)["rssi"] == -65
    for mv in (2800, 2600, 2400):
        unit.drain_pendant(200)
        await until(lambda mv=mv: hub.last(pendant)["battery"] == mv, f"{mv} mV")
    unit.pendant_rssi = -90
    await until(lambda: hub.last(pendant)["rssi"] == -90, "the weaker signal")


async def test_a_lost_alarm_unit_is_reported_absent(tmp_path, stop_after):
    unit = AlarmUnit(heartbeat_s=0.3)
    home, hub = await _home(stop_after, tmp_path, alarm_unit=unit,
                            alarm_timings={"heartbeat_ms": 300, "missed": 3})
    await until(lambda: (hub.last("au5a000001") or {}).get("present") is True, "present")
    unit.heartbeats = False
    await until(lambda: hub.last("au5a000001")["present"] is False, "absent")
    unit.heartbeats = True
    await until(lambda: hub.last("au5a000001")["present"] is True, "present again")


async def test_the_bridge_supply_reaches_hubd(tmp_path, stop_after):
    home, hub = await _home(stop_after, tmp_path)
    await until(lambda: (hub.last("bridge") or {}).get("battery") == 4100, "the cell")
    assert hub.last("bridge")["mains"] is True and hub.last("bridge")["present"] is True
    home.bridge.set_supply(3700, False)
    await until(lambda: (hub.last("bridge")["battery"], hub.last("bridge")["mains"])
                == (3700, False), "on its backup cell")


async def test_a_stuck_ble_stack_is_restarted_and_health_says_why(tmp_path, stop_after):
    home, hub = await _home(stop_after, tmp_path, proxy=FAST,
                            health={"health_ms": 60000, "ble_stuck_ms": 2000})
    lock = home.locks["front-door"]
    # hubd watches the lock through the proxy: its adverts come from the bridge's scans.
    hub.link.send(messages.make(messages.BLE_WATCH, 1, "C0:FF:EE:00:00:01", True))
    await until(lambda: hub.adverts(lock.advertising_data()), "first adverts")
    home.radio.wedge()
    await until(lambda: any(h["ble"]["restarts"] for h in hub.health()), "a BLE restart")
    restarted = next(h for h in hub.health() if h["ble"]["restarts"])
    assert restarted["ble"] == {"restarts": 1, "last_restart": "silent", "connected": 0}
    assert any("BLE stack stuck (silent)" in line for line in home.bridge.log)
    # The restarted stack scans again: a battery change is seen from the adverts.
    lock.set_battery(77)
    await until(lambda: hub.adverts(lock.advertising_data()), "adverts after the restart")
    assert home.bridge.boots == 1, "the stack was restarted, not the bridge"


async def test_an_unfed_watchdog_resets_the_bridge_and_the_next_health_says_wdt(
        tmp_path, stop_after):
    home, hub = await _home(stop_after, tmp_path, health={"health_ms": 60000, "wdt_ms": 2000})
    await until(lambda: hub.health(), "the first health")
    assert hub.health()[-1]["reset"] == "power_on"
    await asyncio.sleep(3)  # fed all along: no reset
    assert home.bridge.wdt_resets == 0
    home.bridge.hang()  # the CPU hangs: nothing feeds the watchdog
    await until(lambda: home.bridge.wdt_resets == 1, "the watchdog reset")
    await until(lambda: hub.health()[-1]["reset"] == "wdt", "health after the reset")
    assert home.bridge.causes == ["power_on", "wdt"]
    assert home.bridge.exits[0] == "wdt"


"""Battery warnings and availability end to end: the simulated lock, pendant and base unit, the
real firmware reporting what it hears, hubd's device registry and durable outbox, the broker.

Each scenario watches the hub's battery topic as the backend does and counts the events: a drain
from full to empty gives exactly one `low` and one `critical` (reminders aside), a level hovering
at a threshold gives nothing more, a new battery gives `replaced`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from hil_tests.harness import HubUnderTest, watch_scans
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import BatteryWarning, DeviceState
from simulator.locks import LOW_BATTERY_PERCENT as LOCK_REFUSES_BELOW

REMINDER_S = 3
# The proxy looks at the locks' adverts (battery, presence) every half second instead of 10 s (on
# the realistic air a window as long as a lock's advertising interval: harness.watch_scans).
FAST_SCAN = watch_scans(scan_every_ms=500, scan_ms=300, presence_ms=1000)
# hubd judges a lock absent by its adverts, which the proxy forwards unchanged every presence_ms
# (docs/ble-proxy.md): absent_s must stay well above that.
ABSENT_S = 8
# Fast reminders and ticks; the thresholds are the defaults (locks 25/10, pendant 30/15, base unit
# 40/20, hysteresis 5).
FAST = f"""[battery]
reminder_s = {REMINDER_S}

[devices]
tick_s = 0.2
"""


class Warnings:
    """Every battery warning of the hub, in arrival order, with a redelivery (same id) kept once."""

    def __init__(self) -> None:
        self.seen: list[BatteryWarning] = []
        self.copies = 0
        self._ids: set[str] = set()

    def take(self, payload: bytes) -> None:
        w = BatteryWarning.model_validate_json(payload)
        self.copies += 1
        if w.id not in self._ids:
            self._ids.add(w.id)
            self.seen.append(w)

    def events(self, device: str, reminders: bool = False) -> list[str]:
        return [w.event for w in self.seen if w.device == device and (reminders or w.event != "reminder")]


@asynccontextmanager
async def watching(backend: BackendClient, hub: HubUnderTest) -> AsyncIterator[Warnings]:
    warnings = Warnings()
    async with backend.watch(topics.device_batteries(hub.hub_id)) as queue:

        async def pump() -> None:
            while True:
                warnings.take((await queue.get()).payload)

        task = asyncio.create_task(pump())
        try:
            yield warnings
        finally:
            task.cancel()


async def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def warned_in_log(hub: HubUnderTest, event: str, percent: int) -> bool:
    """hubd logged a battery warning ``event`` at ``percent`` (hubd.devices.registry: after the
    warning is in the outbox)."""
    for line in hub.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == f"battery {event}" and entry.get("percent") == percent:
            return True
    return False


async def device_state(backend: BackendClient, hub: HubUnderTest, device: str,
                       check: Callable[[DeviceState], bool], timeout: float = 30) -> DeviceState:
    """The device's retained state as it changes, until ``check`` holds."""
    async with backend.watch(topics.device_state(hub.hub_id, device)) as queue:
        async with asyncio.timeout(timeout):
            while True:
                state = DeviceState.model_validate_json((await queue.get()).payload)
                if check(state):
                    return state


async def set_lock_battery(hub: HubUnderTest, backend: BackendClient, lock: str, percent: int) -> None:
    """Set the lock's battery and wait until hubd's retained state shows it (the bridge hears it
    in the lock's adverts, no operation needed)."""
    hub.sim.call(lambda: hub.sim.home.locks[lock].set_battery(percent))
    await device_state(backend, hub, lock, lambda s: s.battery is not None and s.battery.percent == percent)


@pytest.mark.long(25)
@pytest.mark.home(hubd=FAST, policy=FAST_SCAN)
async def test_a_lock_draining_to_empty_warns_low_and_critical_once_reminds_and_is_replaced(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    async with watching(backend, hub) as warnings:
        # Each step takes a second (the bridge forwards a lock's advert at most once a second):
        # full, then every level around the thresholds and their hysteresis.
        for percent in (90, 30, 26, 25, 24, 26, 24, 26, 25, 27, 20, 15, 11, 10, 9, 11, 9, 5):
            await set_lock_battery(hub, backend, lock, percent)
        await asyncio.sleep(2.5 * REMINDER_S)  # critical for a while: reminders fall due
        assert warnings.events(lock) == ["low", "critical"], warnings.seen
        reminders = [w for w in warnings.seen if w.device == lock and w.event == "reminder"
                     and w.state == "critical"]
        assert len(reminders) >= 2, "a reminder every reminder_s while it stays critical"
        assert reminders[-1].percent == 5
        gaps = [b.at - a.at for a, b in zip(reminders, reminders[1:])]
        assert all(g >= REMINDER_S * 0.99 for g in gaps), gaps
        low, critical = (next(w for w in warnings.seen if w.device == lock and w.event == e)
                         for e in ("low", "critical"))
        assert (low.percent, low.state, critical.percent, critical.state) == (25, "low", 10, "critical")
        await set_lock_battery(hub, backend, lock, 100)  # the resident changed the batteries
        await until(lambda: "replaced" in warnings.events(lock), "replaced")
        assert warnings.events(lock) == ["low", "critical", "replaced"]


@pytest.mark.long(25)
@pytest.mark.home(alarms=True, unit={"time_scale": 48 * 3600 / 16}, hubd=FAST)
async def test_the_base_unit_on_mains_loss_and_the_pendant_warn_once_each_and_recover(
        hub: HubUnderTest, backend: BackendClient) -> None:
    unit = hub.sim.home.alarm_unit
    base, pendant = unit.unit_name, f"{unit.unit_name}-pendant"
    async with watching(backend, hub) as warnings:
        # Mains lost: the backup pack (48 h, here 16 s) drains through low and critical; the mains
    # returns and the pack recharges (12 h, here 4 s) while the pendant's coin cell runs down.
        hub.sim.call(lambda: setattr(unit, "mains", False))
        await device_state(backend, hub, base, lambda s: s.mains is False)
        await until(lambda: warnings.events(base) == ["low", "critical"], "the base unit low, then critical", 40)
        hub.sim.call(lambda: setattr(unit, "mains", True))  # mains back before the pack is empty
        # The pendant's coin cell, in steps the unit's heartbeat carries.
        for mv in (2900, 2800, 2700, 2600, 2500, 2400, 2300, 2200):
            hub.sim.call(lambda mv=mv: setattr(unit, "pendant_mv", mv))
            await asyncio.sleep(1.0)  # two of the unit's heartbeats carry it
        await until(lambda: warnings.events(pendant) == ["low", "critical"], "the pendant low, then critical")
        hub.sim.call(lambda: setattr(unit, "pendant_mv", 3000))  # a new coin cell
        await until(lambda: "replaced" in warnings.events(base) and "replaced" in warnings.events(pendant),
                    "replaced for both", 40)
    assert warnings.events(base) == ["low", "critical", "replaced"]
    assert warnings.events(pendant) == ["low", "critical", "replaced"]
    assert all(w.mains is False for w in warnings.seen if w.device == base and w.event != "replaced")


@pytest.mark.home(policy=FAST_SCAN,
                  hubd=f"[devices]\ntick_s = 0.2\n[devices.absent_s]\ninside_turner = {ABSENT_S}\n")
async def test_a_lock_whose_adverts_stop_becomes_unavailable_and_available_again(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    await device_state(backend, hub, lock, lambda s: s.available)
    hub.sim.call(lambda: setattr(hub.sim.home.locks[lock], "advertising", False))
    # The proxy may forward an advert it heard just before the silence up to presence_ms later
    # (unchanged): hubd counts absent_s from that.
    gone = await device_state(backend, hub, lock, lambda s: not s.available,
                              timeout=ABSENT_S + 2 + 60)
    assert gone.why == f"not heard from for over {ABSENT_S:g} s"
    hub.sim.call(lambda: setattr(hub.sim.home.locks[lock], "advertising", True))
    back = await device_state(backend, hub, lock, lambda s: s.available, timeout=30)
    assert back.why is None


@pytest.mark.home(hubd=FAST, policy=FAST_SCAN)
async def test_warnings_survive_a_broker_outage_and_a_hubd_kill_and_arrive_afterwards(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    await set_lock_battery(hub, backend, lock, 50)
    hub.broker.stop()
    for percent, event in ((24, "low"), (9, "critical")):  # while no broker is there to take them
        hub.sim.call(lambda p=percent: hub.sim.home.locks[lock].set_battery(p))
        # heard by the bridge, reported, warned into the outbox (hubd logs it after the outbox
        # took it, in the same transaction as the level)
        await until(lambda e=event, p=percent: warned_in_log(hub, e, p),
                    f"hubd's {event} warning at {percent} %")
    hub.kill_hubd()
    hub.broker.start()
    # A backend connecting after the outage (the fixture's client lost its broker with it).
    async with BackendClient(hub.broker.host, hub.broker.port, client_id="hil-backend-after") as later, \
            watching(later, hub) as warnings:
        await asyncio.to_thread(hub.restart_hubd)
        await until(lambda: warnings.events(lock)[:2] == ["low", "critical"], "the warnings made while away")
        await asyncio.sleep(2)
    assert warnings.events(lock) == ["low", "critical"], "each once, none made up again after the restart"
    assert (warnings.seen[0].percent, warnings.seen[1].percent) == (24, 9)


@pytest.mark.home(hubd=FAST, policy=FAST_SCAN)
async def test_a_lock_too_flat_to_move_says_so_and_was_warned_about_long_before(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    async with watching(backend, hub) as warnings:
        for percent in (60, 24, 9, LOCK_REFUSES_BELOW - 1):
            await set_lock_battery(hub, backend, lock, percent)
        await until(lambda: warnings.events(lock) == ["low", "critical"], "low and critical")
        asked = time.time()
        answers = await hub.command(backend, "unlock")
    final = answers[-1]
    assert (final.status, final.reason) == ("failed", "low_battery")
    assert hub.sim.call(lambda: hub.sim.home.locks[lock].motor_moves) == 0
    assert all(w.at < asked for w in warnings.seen if w.device == lock and w.event in ("low", "critical"))

"""The nurse's unlock through MQTT with hubd (its own process) running the reference lock
protocol itself, on bleak, through the REAL bridge firmware as its Bluetooth proxy (bridge.json
names no lock); the locks' battery and signal reach their device state from the adverts hubd
hears through the proxy. hubd polls each lock at start, and a key turned by hand while nobody is
connected reaches the lock's retained state as a manual turn (hubd reads the lock's backlog when
its advert says so), through the proxy and in direct mode.
"""

from __future__ import annotations

import asyncio

import pytest

from hil_tests.harness import BOTH_WAYS, HubUnderTest, audit_log, retained, watch_scans
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import DeviceState, LockState

# The proxy looks at the watched locks' adverts every second instead of every 10 s (on the
# realistic air a window as long as a lock's advertising interval: harness.watch_scans).
POLICY = watch_scans(scan_every_ms=1000, scan_ms=500)
SCANS = pytest.mark.home(policy=POLICY)


@pytest.mark.home(policy=POLICY, via="bridge")
async def test_the_nurses_unlock_runs_in_hubd_moves_the_lock_once_and_is_answered(
        hub: HubUnderTest, backend: BackendClient) -> None:
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, hub.locks[0])))
    assert state.state == "unlocked"
    lock = hub.sim.home.locks[hub.locks[0]]
    assert hub.sim.call(lambda: (lock.state, lock.motor_moves)) == ("unlocked", 1)
    assert hub.proxy_connects() >= 1, "hubd reached the lock through the bridge's proxy"
    bridge = hub.sim.home.bridge_config()
    assert "locks" not in bridge, "the bridge drives no lock: hubd does"
    log = hub.hubd_log.read_text()
    assert "hubd drives the locks through the bridge's Bluetooth proxy" in log
    assert lock.secret is not None and lock.secret.hex() not in log, "a lock's secret was logged"


async def _polled_and_idle(hub: HubUnderTest, lock_id: str) -> int:
    """Wait for hubd's poll at start to reach the retained state and its connection to be
    dropped; return the lock's connections so far."""
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, lock_id), timeout=60))
    assert state.source == "poll", state
    lock = hub.sim.home.locks[lock_id]
    async with asyncio.timeout(60):
        while hub.sim.call(lambda: bool(lock.links)):
            await asyncio.sleep(0.1)
    return hub.sim.call(lambda: lock.connections)


@SCANS
async def test_a_locks_battery_reaches_its_device_state_from_the_adverts_hubd_hears(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock_id = hub.locks[0]
    connections = await _polled_and_idle(hub, lock_id)
    hub.sim.call(lambda: hub.sim.home.locks[lock_id].set_battery(37))
    async with backend.watch(topics.device_state(hub.hub_id, lock_id)) as queue:
        async with asyncio.timeout(60):
            while True:
                state = DeviceState.model_validate_json((await queue.get()).payload)
                if state.battery is not None and state.battery.percent == 37:
                    break
    assert state.available and state.rssi is not None
    assert hub.sim.call(lambda: hub.sim.home.locks[lock_id].connections) == connections, \
        "no connection needed"


@BOTH_WAYS
@SCANS
async def test_a_key_turned_by_hand_while_hubd_is_not_connected_reaches_the_lock_state_as_manual(
        hub: HubUnderTest, backend: BackendClient, bluetooth: str) -> None:
    lock_id = hub.locks[0]
    lock = hub.sim.home.locks[lock_id]
    connections = await _polled_and_idle(hub, lock_id)
    async with backend.watch(topics.lock_state(hub.hub_id, lock_id)) as queue:
        hub.sim.call(lambda: lock.turn_manually("unlocked"))  # only its backlog and advert know
        async with asyncio.timeout(60):
            while True:
                state = LockState.model_validate_json((await queue.get()).payload)
                if (state.state, state.source) == ("unlocked", "manual"):
                    break
    # hubd (through the proxy, or its own adapter) read the lock's backlog when its advert's
    # report number moved: one connection.
    assert hub.sim.call(lambda: (lock.connections, lock.motor_moves)) == (connections + 1, 0)


@SCANS
async def test_a_key_turned_by_hand_while_hubd_was_down_is_audited_as_manual_after_its_restart(
        hub: HubUnderTest, backend: BackendClient) -> None:
    # hubd keeps the number of each lock's latest report it took in (hubd.store.pairings): after
    # a restart it asks for the reports made meanwhile, not for a new baseline that would hide
    # them (the poll's state would say unlocked, by ``poll``, and nobody would know it was a key).
    lock_id = hub.locks[0]
    lock = hub.sim.home.locks[lock_id]
    await _polled_and_idle(hub, lock_id)
    hub.kill_hubd()
    hub.sim.call(lambda: lock.turn_manually("unlocked"))
    hub.restart_hubd()
    async with backend.watch(topics.lock_state(hub.hub_id, lock_id)) as queue:
        async with asyncio.timeout(60):
            while (state := LockState.model_validate_json((await queue.get()).payload)).state != "unlocked":
                pass
    assert (state.state, state.source) == ("unlocked", "manual"), state
    trail = await audit_log(hub, backend)
    assert [(e.source, e.state) for e in trail if e.lock == lock_id and e.outcome == "reported"
            ][-1:] == [("manual", "unlocked")], trail[-4:]
    assert hub.sim.call(lambda: lock.motor_moves) == 0


@pytest.mark.home(hubd_top='lock_driver = "hubd"')
async def test_an_older_hubd_toml_choosing_hubds_drivers_still_runs_and_says_to_drop_the_line(
        hub: HubUnderTest, backend: BackendClient) -> None:
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    notes = [line for line in hub.log_text().splitlines() if "lock_driver is gone" in line]
    assert len(notes) == 1 and "remove the line from hubd.toml" in notes[0], notes

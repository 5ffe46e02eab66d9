"""The nurse's unlock through MQTT with ``lock_driver = "hubd"``: hubd (its own process) runs the
reference lock protocol itself, on bleak, through the REAL bridge firmware as its Bluetooth
proxy; the bridge's bridge.json names no lock, so the firmware's own drivers never touch it, and
the locks' battery and signal reach their device state from adverts hubd hears through the proxy.
hubd polls each lock at start, and a key turned by hand while nobody is connected reaches the
lock's retained state as a manual turn (hubd reads the lock's backlog when its advert says so).
The locks' pairings are in hubd's state database before it starts, as ``hubctl pair`` leaves
them (tests.fixtures.record_pairings).

Simulator only: on a bench bridge the bench locks would first be paired through hubd (hubctl
pair, tests/hubctl/test_hubctl_pair_hubd.py walks that on the simulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil_tests.harness import (HUB_ID, HubUnderTest, retained, start_hubd, stop_hubd, wait_online,
                               write_hubd_config)
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import DeviceState, LockState
from simulator.home import HomeThread, SimulatedHome, default_locks
from tests.fixtures import BackendKey, record_pairings
from tests.mosquitto import Mosquitto


class _ProxyOnlyHome(SimulatedHome):
    """The bridge is only the locks' Bluetooth proxy: its bridge.json names no lock."""

    def bridge_config(self) -> dict[str, Any]:
        return {**super().bridge_config(), "locks": []}


@pytest.fixture
def hub(request: pytest.FixtureRequest, mosquitto: Mosquitto, backend_key: BackendKey,
        tmp_path: Path) -> Iterator[HubUnderTest]:
    if request.config.getoption("--target") != "sim":
        pytest.skip("SKIPPED ON A REAL BRIDGE: the bench locks would first be paired through hubd; "
                    "run it with --target=sim")
    home = HomeThread(_ProxyOnlyHome(tmp_path / "home", locks=default_locks(),
                                     policy={"scan_every_ms": 1000, "scan_ms": 500}))
    home.start()
    locks = home.home.locks
    config = tmp_path / "hubd.toml"
    record_pairings(tmp_path / "hubd-state", locks.values())  # write_hubd_config's state_dir
    write_hubd_config(config, mosquitto, home.home.port, backend_key,
                      {lock_id: lk.kind for lock_id, lk in locks.items()},
                      top='lock_driver = "hubd"', link_key=home.home.link_key)
    log = tmp_path / "hubd.log"
    under_test = HubUnderTest(HUB_ID, list(locks), mosquitto, backend_key, start_hubd(config, log),
                              log, home, config, kinds={k: lk.kind for k, lk in locks.items()})
    try:
        wait_online(mosquitto, HUB_ID, under_test.hubd, log)
        yield under_test
    finally:
        stop_hubd(under_test.hubd)
        home.stop()


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


async def test_a_key_turned_by_hand_while_hubd_is_not_connected_reaches_the_lock_state_as_manual(
        hub: HubUnderTest, backend: BackendClient) -> None:
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
    # hubd read the lock's backlog when its advert's report number moved: one connection.
    assert hub.sim.call(lambda: (lock.connections, lock.motor_moves)) == (connections + 1, 0)

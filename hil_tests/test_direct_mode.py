"""Direct mode: hubd drives the locks through the hub's own Bluetooth adapter, not the bridge's
proxy (hubd.toml ``[bluetooth] via = "adapter"``, docs/direct-mode.md). On the simulator the
adapter is a bleak backend on the same simulated air the bridge's firmware uses
(simulator/bleak_backend.py), so the locks, their motors and their radio rules are the same; the
bridge still runs (the alarm unit, LTE) but carries no lock traffic. The fixed rules hold as
through the proxy: signed, at most once, the state read back, manual turns reported.
"""

from __future__ import annotations

import asyncio

import pytest

from hil_tests.harness import HubUnderTest, retained
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import LockState
from wire import lockkinds

DIRECT = pytest.mark.home(direct=True)


@DIRECT
async def test_the_nurses_unlock_goes_through_the_hubs_own_adapter_and_moves_the_lock_once(
        hub: HubUnderTest, backend: BackendClient) -> None:
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    lock = hub.sim.home.locks[hub.locks[0]]
    assert hub.sim.call(lambda: (lock.state, lock.motor_moves)) == ("unlocked", 1)
    log = hub.log_text()
    assert "hubd drives the locks through SimClient adapter" in log, "not in direct mode"
    # Two centrals on the air: the bridge's stack and hubd's own adapter, which reached the lock;
    # no connect asked of the bridge's proxy crossed the serial line.
    assert hub.sim.call(lambda: hub.sim.home.radio.centrals) == 2
    assert hub.proxy_connects() == 0, "the lock went through the bridge's proxy"


@pytest.mark.home(direct=True, locks="every_kind")
async def test_an_unlatch_whose_ack_is_lost_is_incomplete_and_unlatches_once_in_direct_mode(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.lock_of_kind(lockkinds.IN_CYLINDER)
    hub.sim.call(lambda: setattr(hub.sim.home.locks[lock], "drop_link_after_move", True))
    answers = await hub.command(backend, "unlatch", lock)
    assert [a.status for a in answers] == ["accepted", "incomplete"], answers
    assert answers[-1].state in ("unlatched", "unlocked"), "the state must be read back"
    await asyncio.sleep(1.0)
    assert hub.sim.call(lambda: list(hub.sim.home.locks[lock].moves)) == ["unlatch"], \
        "an unlatch must never be sent twice"


@DIRECT
async def test_a_key_turned_by_hand_reaches_the_lock_state_as_manual_in_direct_mode(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock_id = hub.locks[0]
    lock = hub.sim.home.locks[lock_id]
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, lock_id), timeout=60))
    assert state.source == "poll", state  # hubd's poll at start, through its own adapter
    async with asyncio.timeout(60):
        while hub.sim.call(lambda: bool(lock.links)):
            await asyncio.sleep(0.1)
    connections = hub.sim.call(lambda: lock.connections)
    async with backend.watch(topics.lock_state(hub.hub_id, lock_id)) as queue:
        hub.sim.call(lambda: lock.turn_manually("unlocked"))  # only its backlog and advert know
        async with asyncio.timeout(60):
            while True:
                state = LockState.model_validate_json((await queue.get()).payload)
                if (state.state, state.source) == ("unlocked", "manual"):
                    break
    # hubd's adapter heard the advert's report number move and read the backlog: one connection.
    assert hub.sim.call(lambda: (lock.connections, lock.motor_moves)) == (connections + 1, 0)

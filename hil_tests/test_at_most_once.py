"""A command runs at most once: through duplicate delivery, a hubd kill -9, and lost acks."""

from __future__ import annotations

import asyncio

import pytest

from hil_tests.harness import (BOTH_WAYS, HubUnderTest, answers_of, audit_log,
                               cable_pulled_after_write, next_answer)
from hubapi import topics
from hubapi.client import BackendClient
from wire import lockkinds


def _moves(hub: HubUnderTest, lock: str) -> list[str]:
    return hub.sim.call(lambda: list(hub.sim.home.locks[lock].moves))


@pytest.mark.home(travel_time_s=1.0)
async def test_a_duplicate_delivery_moves_the_lock_once(hub: HubUnderTest,
                                                        backend: BackendClient) -> None:
    claims = hub.claims("unlock")
    token = hub.key.sign(claims)
    async with answers_of(backend, hub, claims.id) as queue:
        await backend.publish(topics.commands(hub.hub_id), token)
        await backend.publish(topics.commands(hub.hub_id), token)
        answers = [await next_answer(queue) for _ in range(3)]
    statuses = sorted((a.status, a.reason) for a in answers)
    assert statuses == [("accepted", None), ("rejected", "replayed"), ("succeeded", None)]
    await asyncio.sleep(1.5)  # long enough for a second run to have started, if there were one
    assert _moves(hub, hub.locks[0]) == ["unlock"]


@pytest.mark.home(travel_time_s=3.0)
async def test_hubd_kill_9_between_accepted_and_outcome_never_moves_the_lock_twice(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    claims = hub.claims("unlock")
    token = hub.key.sign(claims)
    async with answers_of(backend, hub, claims.id) as queue:
        await backend.publish(topics.commands(hub.hub_id), token)
        assert (await next_answer(queue)).status == "accepted"
        # Wait until the bridge wrote to the lock (its motor is running), then kill hubd.
        for _ in range(200):
            if hub.sim.call(lambda: hub.sim.home.locks[lock].state) == "moving":
                break
            await asyncio.sleep(0.02)
        hub.kill_hubd()
        await asyncio.to_thread(hub.restart_hubd)

        final = await next_answer(queue)
        assert final.status == "incomplete", final
        assert final.reason == "hubd_restarted"
        # The same command delivered again (the broker redelivers, a backend retries) must not run.
        await backend.publish(topics.commands(hub.hub_id), token)
        again = await next_answer(queue)
        assert (again.status, again.reason) == ("rejected", "replayed")
    await asyncio.sleep(3.5)  # a second run would have finished its travel by now
    assert _moves(hub, lock) == ["unlock"]
    trail = [e for e in await audit_log(hub, backend) if e.command == claims.id]
    assert [e.outcome for e in trail][-2:] == ["incomplete", "rejected"]
    assert trail[0].outcome == "accepted"


@BOTH_WAYS
@pytest.mark.home(locks="every_kind")
async def test_an_unlatch_whose_ack_is_lost_is_incomplete_and_unlatches_once(
        hub: HubUnderTest, backend: BackendClient, bluetooth: str) -> None:
    lock = hub.lock_of_kind(lockkinds.IN_CYLINDER)
    hub.sim.call(lambda: setattr(hub.sim.home.locks[lock], "drop_link_after_move", True))
    answers = await hub.command(backend, "unlatch", lock)
    assert [a.status for a in answers] == ["accepted", "incomplete"], answers
    assert answers[-1].state in ("unlatched", "unlocked"), "the state must be read back"
    await asyncio.sleep(1.0)
    assert _moves(hub, lock) == ["unlatch"], "an unlatch must never be sent twice"


@pytest.mark.home(travel_time_s=2.0, via="bridge")
async def test_the_serial_link_pulled_after_the_write_is_incomplete_read_back_and_moves_once(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    claims = hub.claims("unlock")
    # The COMMAND was written (the motor runs): the cable between hub and bridge is pulled.
    final = await cable_pulled_after_write(
        hub, backend, claims, lambda: hub.sim.home.locks[lock].state == "moving")
    assert (final.status, final.reason) == ("incomplete", "link_lost"), final
    assert final.state == "unlocked", "the state is read back once the link is back, never guessed"
    await asyncio.sleep(2.5)  # a second write would have moved the lock by now
    assert _moves(hub, lock) == ["unlock"]
    trail = [e.outcome for e in await audit_log(hub, backend) if e.command == claims.id]
    assert trail == ["accepted", "written", "incomplete"]


@pytest.mark.home(travel_time_s=3.0, via="bridge")
async def test_hubd_killed_mid_operation_the_bridge_drops_the_locks_connection(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = hub.locks[0]
    model = hub.sim.home.locks[lock]
    claims = hub.claims("unlock")
    token = hub.key.sign(claims)
    async with answers_of(backend, hub, claims.id) as queue:
        await backend.publish(topics.commands(hub.hub_id), token)
        assert (await next_answer(queue)).status == "accepted"
        for _ in range(500):
            if hub.sim.call(lambda: bool(model.links)) and \
                    hub.sim.call(lambda: model.state) == "moving":
                break
            await asyncio.sleep(0.02)
        assert hub.sim.call(lambda: bool(model.links)), "hubd held the lock's connection"
        hub.kill_hubd()
        # Nobody is left to end the BLE connection but the bridge: it drops the proxy's
        # connections when the link to hubd goes silent, so the lock is free for the next hubd.
        async with asyncio.timeout(60):
            while hub.sim.call(lambda: bool(model.links)):
                await asyncio.sleep(0.1)
        dropped = hub.sim.call(lambda: [ln for ln in hub.sim.home.bridge.log
                                        if "proxy connection" in ln and "dropped" in ln])
        assert dropped, "the bridge says it dropped the proxy's connection"
        await asyncio.to_thread(hub.restart_hubd)
        final = await next_answer(queue)
    assert (final.status, final.reason) == ("incomplete", "hubd_restarted"), final
    assert final.state == "unlocked"
    assert _moves(hub, lock) == ["unlock"]

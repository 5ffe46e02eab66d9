"""A lock's GATT database kept across connections through the bridge's proxy
(hubd/ble/gatt_cache.py), with the REAL bridge firmware as the proxy (MicroPython, on the
simulated radio and serial line) and hubd's reference lock driver: the ``ble_discover`` requests
hubd sends and the lock's motor are the evidence.

One walk through a lock's life: a reconnect makes no discovery; a connection that never heard
the lock on the kept database discards it; a firmware update that moves the handles without
Service Changed (a careless vendor's) is met on the stale handles and rediscovered, the command
still written once; one that brings Service Changed and a Database Hash is kept with the hash
and checked by one read at each connect; a second update (the hash changed) is rediscovered at
connect; Service Changed without a hash is never kept. Every command moves the lock once, never
twice. Then ``gatt_cache=False``: every connect discovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bleak import BleakClient

from hubd.ble import BleProxy, ProxyClient
from hubd.link.bridge import Bridge
from hubd.locks import ReferenceLock, Timings
from simulator.home import SimulatedHome, address
from tests.waiting import until
from wire import lockproto, messages
from wire import outcomes as oc

LOCK = "front-door"
TIMEOUT = 60.0
FAST = Timings(deadline_s=30.0, result_s=30.0, settle_s=0.5, idle_s=1.0)


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home")
    await home.start()
    yield home
    await home.stop()


async def _proxy(home: SimulatedHome, **kwargs: Any) -> tuple[BleProxy, list[dict[str, Any]]]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge, **kwargs)
    sent: list[dict[str, Any]] = []
    send = bridge.send_lock_message

    def spy(payload: bytes) -> bool:
        sent.append(messages.decode(payload))
        return send(payload)

    bridge.send_lock_message = spy  # type: ignore[method-assign]
    return proxy, sent


def _count(sent: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for m in sent if m["m"] == kind)


def _commands(sent: list[dict[str, Any]]) -> int:
    pdus = [bytes.fromhex(m["data"]) for m in sent if m["m"] == messages.BLE_WRITE]
    return sum(1 for p in pdus if p[0] == lockproto.OP_COMMAND)


async def test_a_reconnect_skips_discovery_and_a_changed_database_is_rediscovered_once_per_change(
        home: SimulatedHome) -> None:
    lock = home.locks[LOCK]
    proxy, sent = await _proxy(home)
    assert lock.secret is not None
    driver = ReferenceLock(address(lock), lock.secret, addr_type=lock.addr_type, radio=proxy,
                           timings=FAST)
    actions = iter(["unlock", "lock"] * 7)
    ids = iter(range(100))

    async def command(discoveries: int) -> None:
        """One command on a new connection: it succeeds, moves the lock once, is written once,
        and the proxy was asked for ``discoveries`` discoveries in all so far."""
        moves, commands = lock.motor_moves, _commands(sent)
        action = next(actions)
        result = await driver.operate(action, f"cmd-{next(ids)}", lambda: None, 30)
        assert (result.outcome, result.reason) == (oc.SUCCEEDED, None), result
        await driver.close()
        assert lock.motor_moves == moves + 1 and lock.moves[-1] == action
        assert _commands(sent) == commands + 1, "a COMMAND was written twice"
        assert _count(sent, messages.BLE_DISCOVER) == discoveries, proxy.gatt_cache.counts

    try:
        async with asyncio.timeout(TIMEOUT):
            await command(discoveries=1)
            await command(discoveries=1)  # reconnected: the kept database
            assert lock.connections == 2

            # A connection on the kept database that never heard the lock leaves it unconfirmed:
            # discarded (a stale handle may take a write silently), the next one discovers.
            client = BleakClient(address(lock), backend=ProxyClient, proxy=proxy,
                                 addr_type=lock.addr_type)
            await client.connect()
            await client.disconnect()
            assert proxy.gatt_cache.counts["unconfirmed"] == 1
            await command(discoveries=2)
            await command(discoveries=2)

            # Handles moved, no Service Changed: the kept CCCD handle is the control point's
            # now (the lock takes "01 00" as a bad request), the kept control handle a
            # read-only value (write not permitted): discarded, the driver connects again and
            # that connection discovers.
            lock.update_firmware()
            await until(lambda: not lock.links)
            await command(discoveries=3)
            assert proxy.gatt_cache.counts["att_error_0x03"] == 1
            await command(discoveries=3)

            # The GATT service comes: the kept subscription's handle is stale (0x03), the
            # database discovered again on the same connection, the subscription asked again;
            # the driver's control point, of the old collection, found again by its UUID.
            lock.update_firmware(gatt_service=True, revision="3")
            await until(lambda: not lock.links)
            reads = _count(sent, messages.BLE_READ)
            await command(discoveries=4)
            assert _count(sent, messages.BLE_READ) == reads + 1, "the Database Hash, read once"
            await command(discoveries=4)  # kept, the hash read and equal
            assert _count(sent, messages.BLE_READ) == reads + 2

            lock.update_firmware(gatt_service=True, device_information=False)
            await until(lambda: not lock.links)
            await command(discoveries=5)  # the hash differs: discovered at connect
            assert proxy.gatt_cache.counts["hash_changed"] == 1

            # Service Changed without a hash: not kept, every connection discovers.
            lock.update_firmware(gatt_service=True, database_hash=False)
            await until(lambda: not lock.links)
            await command(discoveries=6)
            await command(discoveries=7)
            assert address(lock) not in proxy.gatt_cache
            assert lock.motor_moves == 11 and _commands(sent) == 11
    finally:
        await driver.close()
        proxy.close()
        await proxy.bridge.close()

    # Without the cache every connection discovers.
    proxy, sent = await _proxy(home, gatt_cache=False)
    driver = ReferenceLock(address(lock), lock.secret, addr_type=lock.addr_type, radio=proxy,
                           timings=FAST)
    try:
        async with asyncio.timeout(TIMEOUT):
            await command(discoveries=1)
            await command(discoveries=2)
    finally:
        await driver.close()
        proxy.close()
        await proxy.bridge.close()

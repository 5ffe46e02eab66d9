"""hubd's reference lock driver (hubd/locks/reference.py) on bleak, through the REAL bridge
firmware as a Bluetooth proxy (firmware/ble_proxy.py in MicroPython, on the simulated radio and
serial line), against the simulated lock: the lock's motor, its commands and its state are the
evidence.

- unlock then lock: one motor move per command, the state and battery the lock reports;
- a status operation moves nothing;
- the serial cable cut after ``on_written``: ``incomplete`` (link_lost), at most one move, the
  COMMAND never written a second time, the state read back once the link is back;
- a lost RESULT: ``incomplete`` (no_result) with the state read back by a status COMMAND;
- a wrong secret: ``failed`` with the protocol's ``auth_failed``, nothing moves;
- a lock out of range: ``timed_out`` ``unreachable`` (docs/lock-protocol.md), nothing written;
- the link to the bridge down before the write: ``failed`` ``bridge_unavailable``, nothing written;
- the connection kept for a follow-up, then dropped when idle;
- each result counts the BLE requests the driver waited on, and their time within its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import ReferenceLock, Timings
from simulator.locks import ReferenceProtocolLock
from simulator.home import SimulatedHome, address
from tests.waiting import until
from wire import lockproto, messages
from wire import outcomes as oc

LOCK = "front-door"
TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time
# Generous deadlines (the lock here is instant; a loaded machine is not), a short settle time.
FAST = Timings(deadline_s=30.0, result_s=30.0, settle_s=0.5, idle_s=1.0)


@pytest.fixture
def bridge_log() -> list[str]:
    return []


@pytest.fixture
async def home(tmp_path: Path, bridge_log: list[str]) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", on_bridge_log=bridge_log.append)
    await home.start()
    yield home
    await home.stop()


@pytest.fixture
async def proxy(home: SimulatedHome) -> AsyncIterator[BleProxy]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge)
    yield proxy
    proxy.close()
    await bridge.close()


def _driver(lock: ReferenceProtocolLock, proxy: BleProxy, timings: Timings = FAST,
            secret: bytes | None = None) -> ReferenceLock:
    assert lock.secret is not None
    return ReferenceLock(address(lock), secret or lock.secret, addr_type=lock.addr_type, radio=proxy,
                         timings=timings)


class Written:
    """An ``on_written`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _spy(proxy: BleProxy) -> list[dict[str, Any]]:
    """Every proxy request hubd sends, decoded."""
    sent: list[dict[str, Any]] = []
    send = proxy.bridge.send_lock_message

    def spy(payload: bytes) -> bool:
        sent.append(messages.decode(payload))
        return send(payload)

    proxy.bridge.send_lock_message = spy  # type: ignore[method-assign]
    return sent


def _commands(sent: list[dict[str, Any]]) -> list[str]:
    """The actions of the COMMAND PDUs hubd asked the bridge to write, in order."""
    pdus = [bytes.fromhex(m["data"]) for m in sent if m["m"] == messages.BLE_WRITE]
    return [lockproto.action_name(p[1]) for p in pdus if p[0] == lockproto.OP_COMMAND]


async def test_unlock_then_lock_move_the_lock_once_each_and_report_its_state(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    driver = _driver(lock, proxy)
    written = Written()
    async with asyncio.timeout(TIMEOUT):
        unlocked = await driver.operate("unlock", "cmd-unlock-1", written, 30)
        assert (unlocked.outcome, unlocked.reason, unlocked.state) == (oc.SUCCEEDED, None, "unlocked")
        assert unlocked.battery == lock.battery and lock.motor_moves == 1
        locked = await driver.operate("lock", "cmd-lock-1", written, 30)
        await driver.close()
    assert (locked.outcome, locked.state, locked.battery) == (oc.SUCCEEDED, "locked", lock.battery)
    assert lock.moves == ["unlock", "lock"] and lock.state == "locked"
    assert written.calls == 2
    assert lock.connections == 1, "the follow-up used the connection kept from the first"


async def test_a_status_operation_reads_state_and_battery_and_moves_nothing(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    lock.set_battery(73)
    driver = _driver(lock, proxy)
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("status", "status-1", Written(), 30)
        await driver.close()
    assert (result.outcome, result.state, result.battery) == (oc.SUCCEEDED, "locked", 73)
    assert lock.motor_moves == 0 and lock.commands == [("status", "ok")]


async def test_the_cable_cut_after_the_write_is_incomplete_never_written_again_and_read_back(
        home: SimulatedHome, proxy: BleProxy, bridge_log: list[str]) -> None:
    lock = home.locks[LOCK]
    lock.idle_timeout_s = None  # only the cut ends the connection, however slow the run
    sent = _spy(proxy)
    # The write stays out on the bridge until the cut (the bridge would end it after gatt_s),
    # and the read-back waits for the link to come back, however long the test takes.
    driver = _driver(lock, proxy, Timings(gatt_s=TIMEOUT, deadline_s=30.0, result_s=30.0,
                                          settle_s=0.5, readback_extra_s=TIMEOUT))
    written = asyncio.Event()

    def on_written() -> None:
        lock.response_delay_s = TIMEOUT  # a slow lock: the COMMAND's write stays out on the bridge
        written.set()

    engine = proxy.bridge.link.engine
    async with asyncio.timeout(2 * TIMEOUT):
        operating = asyncio.create_task(driver.operate("unlock", "cmd-cut-1", on_written, 30))
        await until(lambda: written.is_set() and _commands(sent) == ["unlock"]
                    and engine.pending() == 0 and not operating.done(),
                    "the bridge to acknowledge the COMMAND's write request", TIMEOUT)
        home.line.cut = True
        await until(lambda: not proxy.is_up, "hubd to see the link down", TIMEOUT)
        await until(lambda: any("dropped 1 proxy connection" in line for line in bridge_log),
                    "the bridge to drop its proxy connection with the link", TIMEOUT)
        assert not operating.done(), "the driver waits for the link to read the state back"
        lock.response_delay_s = 0.0
        home.line.cut = False
        result = await operating
        await driver.close()
    assert (result.outcome, result.reason) == (oc.INCOMPLETE, oc.LINK_LOST)
    assert result.state == lock.state and result.battery == lock.battery, "the state is read back"
    assert lock.motor_moves <= 1
    assert _commands(sent) == ["unlock", "status"], "never a second COMMAND; the read-back is a status"
    assert [a for a, _ in lock.commands if a != "status"] in ([], ["unlock"])


async def test_a_lost_result_is_incomplete_with_the_state_read_back(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    lock.lose_next_result = True
    sent = _spy(proxy)
    driver = _driver(lock, proxy, Timings(deadline_s=30.0, result_s=1.0, settle_s=0.5))
    written = Written()
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("unlock", "cmd-lost-1", written, 30)
        await driver.close()
    assert (result.outcome, result.reason, result.state) == (oc.INCOMPLETE, oc.NO_RESULT, "unlocked")
    assert lock.moves == ["unlock"] and written.calls == 1
    assert _commands(sent) == ["unlock", "status"]


async def test_a_wrong_secret_fails_auth_failed_and_nothing_moves(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    driver = _driver(lock, proxy, secret=os.urandom(lockproto.SECRET_LEN))
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("unlock", "cmd-wrong-secret", Written(), 30)
        await driver.close()
    assert (result.outcome, result.reason, result.state) == (oc.FAILED, oc.AUTH_FAILED, None)
    assert lock.motor_moves == 0 and lock.commands == [("unlock", "auth_failed")]


async def test_a_lock_out_of_range_times_out_unreachable_and_nothing_is_written(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    lock.in_range = False
    sent = _spy(proxy)
    driver = _driver(lock, proxy, Timings(connect_s=1.0, deadline_s=3.0))
    written = Written()
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("unlock", "cmd-away-1", written, 30)
        await driver.close()
    assert (result.outcome, result.reason, result.state) == (oc.TIMED_OUT, oc.UNREACHABLE, None)
    assert written.calls == 0 and not any(m["m"] == messages.BLE_WRITE for m in sent)
    assert any(m["m"] == messages.BLE_CONNECT for m in sent)
    assert lock.motor_moves == 0 and lock.commands == []


async def test_the_connection_is_dropped_once_idle(home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    driver = _driver(lock, proxy, Timings(deadline_s=30.0, result_s=30.0, idle_s=0.2))
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("status", "status-idle", Written(), 30)
        assert result.outcome == oc.SUCCEEDED
        await until(lambda: not driver.connected and not lock.links,
                    "the idle connection to be dropped", TIMEOUT)
        await driver.close()


async def test_the_link_to_the_bridge_down_before_the_write_fails_bridge_unavailable_unwritten(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    home.line.cut = True
    await until(lambda: not proxy.is_up, "hubd to see the link down", TIMEOUT)
    driver = _driver(lock, proxy, Timings(deadline_s=1.0))
    written = Written()
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("unlock", "cmd-no-link", written, 30)
        await driver.close()
    assert (result.outcome, result.reason, result.state) == (oc.FAILED, oc.BRIDGE_UNAVAILABLE, None)
    assert written.calls == 0 and lock.connections == 0 and lock.motor_moves == 0


async def test_each_result_says_how_many_ble_requests_the_driver_waited_on_within_its_time(
        home: SimulatedHome, proxy: BleProxy) -> None:
    # hubd's "command timing" splits the driver's time with these (benchmarks/roundtrip.py).
    lock = home.locks[LOCK]
    # Patient GATT waits: a retry on a loaded machine would add requests.
    driver = _driver(lock, proxy, Timings(connect_s=20.0, gatt_s=20.0, deadline_s=30.0,
                                          result_s=30.0, settle_s=0.5, idle_s=5.0))
    async with asyncio.timeout(TIMEOUT):
        first = await driver.operate("unlock", "cmd-requests-1", Written(), 30)
        follow_up = await driver.operate("lock", "cmd-requests-2", Written(), 30)
        await driver.close()
    assert (first.outcome, follow_up.outcome) == (oc.SUCCEEDED, oc.SUCCEEDED)
    assert first.ble_requests == 4, "connect with discovery, subscribe, CHALLENGE_REQUEST, COMMAND"
    assert follow_up.ble_requests == 2, "on the kept connection: the two writes only"
    for result in (first, follow_up):
        assert result.ble_ms is not None
        assert result.ble_requests_ms is not None and 0 < result.ble_requests_ms <= result.ble_ms

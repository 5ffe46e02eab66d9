"""A lock operation out when the serial link goes silent is answered as lost, and never runs when
the link comes back: hubd takes a new link session, so the link cannot resend the proxy requests
that were out, and the bridge drops its BLE connections with the old session (hubd's lock
driver through the real firmware as proxy, in MicroPython, on the simulated serial line and
radio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import BleLocks, Timings
from simulator.home import SimulatedHome, paired
from wire import outcomes

LOCK = "front-door"
TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home")
    await home.start()
    try:
        yield home
    finally:
        await home.stop()


@pytest.mark.long
async def test_an_op_lost_with_the_link_never_moves_the_lock_when_the_link_is_back(home: SimulatedHome) -> None:
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    lock = home.locks[LOCK]
    # The operation is out well past the link's dead time (wire.link: dead_ms 3500), so the link
    # goes silent and hubd takes a new session while it waits; the driver's default deadline
    # (10 s) is enough for that, and is what ends the operation here.
    locks = BleLocks(proxy, {LOCK: paired(lock)}, Timings(deadline_s=10.0, result_s=30.0, settle_s=0.5))
    written: list[str] = []
    try:
        assert await bridge.wait_up(TIMEOUT)
        session = bridge.link.engine.session
        home.line.cut = True  # the cable pulled just before the nurse's command
        async with asyncio.timeout(2 * TIMEOUT):
            result = await locks.operate(LOCK, "unlock", "c0ffee01", lambda: written.append("1"), 30)
        assert bridge.link.engine.session != session, "the link went silent while the operation was out"
        # The link went silent with the proxy's requests unanswered: never a success.
        assert result.outcome in (outcomes.FAILED, outcomes.INCOMPLETE), result
        if written:
            assert (result.outcome, result.reason) == (outcomes.INCOMPLETE, outcomes.LINK_LOST)
        home.line.cut = False
        assert await bridge.wait_up(TIMEOUT), "the link comes back"
        await asyncio.sleep(3.0)  # a request resent by the link would have moved it by now
        assert lock.motor_moves == 0, "an operation answered as lost ran after the link came back"
        async with asyncio.timeout(2 * TIMEOUT):
            again = await locks.operate(LOCK, "unlock", "c0ffee02", lambda: None, 30)
        assert again.outcome == outcomes.SUCCEEDED and lock.motor_moves == 1
    finally:
        await locks.close()
        proxy.close()
        await bridge.close()

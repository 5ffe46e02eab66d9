"""An operation out when the serial link goes silent is answered as lost, and never runs when
the link comes back: hubd takes a new link session, so the link cannot resend it (the real
firmware, in MicroPython, on the simulated serial line and radio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubd.link.bridge import Bridge
from simulator.home import SimulatedHome
from wire import outcomes

LOCK = "front-door"


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home")
    await home.start()
    try:
        yield home
    finally:
        await home.stop()


async def test_an_op_lost_with_the_link_never_moves_the_lock_when_the_link_is_back(home: SimulatedHome) -> None:
    bridge = await Bridge.open(home.port, home.link_key)
    try:
        assert await bridge.wait_up(60)
        lock = home.locks[LOCK]
        home.line.cut = True  # the cable pulled just before the nurse's command
        result = await bridge.operate(LOCK, "unlock", "c0ffee01", lambda: None, timeout=30)
        # The link went silent with the op unacknowledged: it may or may not have arrived.
        assert (result.outcome, result.reason) == (outcomes.INCOMPLETE, outcomes.LINK_LOST)
        home.line.cut = False
        assert await bridge.wait_up(60), "the link comes back"
        await asyncio.sleep(3.0)  # the op's own ttl (5 s from receipt) would have run it by now
        assert lock.motor_moves == 0, "an op answered as lost ran after the link came back"
        again = await bridge.operate(LOCK, "unlock", "c0ffee02", lambda: None, timeout=30)
        assert again.outcome == outcomes.SUCCEEDED and lock.motor_moves == 1
    finally:
        await bridge.close()

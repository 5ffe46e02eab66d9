"""A bench for CPython tests: the real firmware in a simulated home, driven through the real link.

No hubd daemon and no broker: hubd's link client (``hubd.link.bridge.Bridge``) talks to the bridge over
the simulated serial line, the lock models run on the home's own thread, and every message the
bridge sends is read back from the line's transcript (what really crossed the cable).

    async with Bench.start(tmp_path, every_kind(), policy=FAST) as bench:
        res = await bench.op("key-box", "unlock")
        bench.poke("key-box", "take_key")
        await bench.until(lambda: bench.events("key-box"))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hubd.access.transport import OpResult
from hubd.link.bridge import Bridge
from simulator.home import HomeThread, SimulatedHome
from simulator.locks import ReferenceProtocolLock
from simulator.serial_line import TO_HUB
from wire import frame, messages

# Short settings so a test sees idle disconnects, polls and advert checks within a second or two.
FAST = {
    "connect_timeout_ms": 500,
    "deadline_ms": 2000,
    "result_timeout_ms": 1500,
    "settle_ms": 1000,
    "idle_ms": 600,
    "poll_ms": 600000,
    "scan_every_ms": 200,
    "scan_ms": 150,
}

_ids = itertools.count(1)


class Bench:
    """A running simulated home and hubd's link client to its bridge."""

    def __init__(self, home: HomeThread, bridge: Bridge) -> None:
        self.home = home
        self.bridge = bridge
        self.written: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, workdir: Path, locks: list[ReferenceProtocolLock],
                    policy: dict[str, int] | None = None) -> AsyncIterator[Bench]:
        """Start the home and the link; wait until the bridge polled every lock once."""
        home = HomeThread(SimulatedHome(workdir, locks=locks, policy=policy or FAST))
        await asyncio.to_thread(home.start)
        bridge = None
        try:
            bridge = await Bridge.open(home.home.port, home.home.link_key)
            bench = cls(home, bridge)
            assert await bridge.wait_up(20), "the bridge link did not come up"
            for lock_id in home.home.locks:
                await bench.until(lambda lock_id=lock_id: bench.states(lock_id, "poll"))
            yield bench
        finally:
            if bridge is not None:
                # hubd.link.serial_port.SerialLink.close() cancels a task that waits in asyncio.wait_for;
                # on Python 3.11 that cancel is lost if the awaited event was set in the same
                # loop turn (a message just arrived), and close() never returns. Let it settle.
                await asyncio.sleep(0.2)
                await bridge.close()
            await asyncio.to_thread(home.stop)

    def lock(self, lock_id: str) -> Any:
        """The lock model (what the lock really did)."""
        return self.home.home.locks[lock_id]

    def poke(self, lock_id: str, method: str, *args: Any) -> Any:
        """Call a lock model's method on the home's loop, as the world would."""
        lk = self.lock(lock_id)
        return self.home.call(lambda: getattr(lk, method)(*args))

    def set(self, lock_id: str, **knobs: Any) -> None:
        """Set lock model attributes (failure knobs) on the home's loop."""
        lk = self.lock(lock_id)

        def apply() -> None:
            for name, value in knobs.items():
                setattr(lk, name, value)

        self.home.call(apply)

    async def op(self, lock_id: str, action: str, cmd: str | None = None,
                 timeout: float = 30) -> OpResult:
        """One lock operation as hubd runs it; ``written`` records the ops that were written."""
        cmd = cmd or f"cmd-{next(_ids)}-{time.time_ns()}"
        return await self.bridge.operate(lock_id, action, cmd,
                                         lambda: self.written.append(cmd), timeout)

    def sent(self, kind: str) -> list[dict[str, Any]]:
        """Every message of ``kind`` the bridge sent to hubd so far, in order."""
        crossings = self.home.call(lambda: list(self.home.home.line.transcript))
        out = []
        recent: list[tuple[int | None, bytes | None]] = []
        for c in crossings:
            if c.direction != TO_HUB or c.ftype != frame.T_DATA:
                continue
            # A frame resent because its ack was lost crosses twice; the receiver keeps one.
            if (c.seq, c.body) in recent:
                continue
            recent = [*recent[-3:], (c.seq, c.body)]
            with contextlib.suppress(messages.MessageError):
                msg = messages.decode(c.body)
                if msg["m"] == kind:
                    out.append(msg)
        return out

    def states(self, lock_id: str, source: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.sent(messages.STATE)
                if m["lock"] == lock_id and source in (None, m["source"])]

    def events(self, lock_id: str) -> list[dict[str, Any]]:
        return [m for m in self.sent(messages.EVENT) if m["lock"] == lock_id]

    async def until(self, check: Callable[[], Any], timeout: float = 20) -> Any:
        """Wait until ``check()`` is truthy and return it; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async def reboot(self) -> None:
        """Power-cycle the bridge and wait until its link is up again."""
        boots = self.home.home.bridge.boots
        session = self.bridge.peer["session"] if self.bridge.peer else None
        await asyncio.to_thread(self.home.run, self.home.home.bridge.reboot())
        assert self.home.home.bridge.boots == boots + 1
        await self.until(lambda: self.bridge.is_up and self.bridge.peer is not None
                         and self.bridge.peer["session"] != session)


"""Lock operations run by hubd's own drivers over bleak (a ``hubd.access.transport.LockTransport``).

The command path hands each operation to a lock id; this maps the id to its driver (one per
paired lock: its kind, address, address type and secret) and runs one operation at a time per
lock, in the order asked, while other locks go on in parallel. The bridge is then only the
Bluetooth proxy (docs/ble-proxy.md): ``is_up`` and ``wait_up`` follow the serial link to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hubd.access.transport import OpResult
from hubd.ble.proxy import BleProxy
from hubd.locks.reference import ReferenceLock, Timings
from wire import lockkinds
from wire import outcomes as oc

log = logging.getLogger(__name__)

#: report(lock, what, name, state, battery, source): an authentic report a lock made on its own
#: while connected ("state" or "event"; ``name`` the event; ``source`` wire.lockkinds').
ReportCallback = Callable[[str, str, "str | None", str, int, str], None]


@dataclass(frozen=True)
class PairedLock:
    """What hubd needs to reach one lock and be believed by it (from pairing)."""

    kind: str  # wire.lockkinds.KINDS
    address: str  # "C0:FF:EE:00:00:01"
    secret: bytes = field(repr=False)  # the lock's 32-byte pairing secret
    addr_type: int = 0  # 0 public, 1 random

    def __post_init__(self) -> None:
        if self.kind not in lockkinds.KINDS:
            raise ValueError(f"unknown lock kind {self.kind!r}")

#: The reference protocol names the motor as a report's source; to hubd that is a remote action.
_SOURCES = {"motor": lockkinds.SOURCE_REMOTE}


class BleLocks:
    """The locks of ``locks`` (lock id -> PairedLock), each driven by a ReferenceLock through
    ``proxy``; a LockTransport for hubd.access.commands."""

    def __init__(self, proxy: BleProxy, locks: Mapping[str, PairedLock],
                 timings: Timings = Timings(), on_report: ReportCallback | None = None) -> None:
        self.proxy = proxy
        self.timings = timings
        self._on_report = on_report
        self.kinds: dict[str, str] = {}
        self._drivers: dict[str, ReferenceLock] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        for lock_id, paired in locks.items():
            self.add(lock_id, paired)

    def add(self, lock_id: str, paired: PairedLock) -> None:
        """Drive ``lock_id`` from now on (a lock just paired); it must not be driven already."""
        if lock_id in self._drivers:
            raise ValueError(f"{lock_id} is driven already: remove it first")
        self.kinds[lock_id] = paired.kind
        self._drivers[lock_id] = ReferenceLock(paired.address, paired.secret,
                                               addr_type=paired.addr_type, proxy=self.proxy,
                                               timings=self.timings,
                                               on_report=_for_lock(lock_id, self._on_report))
        self._turns[lock_id] = asyncio.Lock()

    async def remove(self, lock_id: str) -> None:
        """Stop driving ``lock_id`` (decommissioned): after the operation under way, if any,
        its connection is dropped; an operation asked later is ``unknown_lock``."""
        turn = self._turns.get(lock_id)
        if turn is None:
            return
        async with turn:
            driver = self._drivers.pop(lock_id, None)
            self.kinds.pop(lock_id, None)
            self._turns.pop(lock_id, None)
        if driver is not None:
            await driver.close()

    @property
    def is_up(self) -> bool:
        return self.proxy.is_up

    async def wait_up(self, timeout: float) -> bool:
        return await self.proxy.bridge.wait_up(timeout)

    async def operate(self, lock: str, action: str, command_id: str,
                      on_written: Callable[[], None], timeout: float) -> OpResult:
        turn = self._turns.get(lock)
        if turn is None:
            return OpResult(oc.FAILED, oc.UNKNOWN_LOCK, None, None)
        if action != "status" and not lockkinds.supports(self.kinds[lock], action):
            return OpResult(oc.FAILED, oc.UNSUPPORTED_ACTION, None, None)
        async with turn:  # one operation at a time per lock
            driver = self._drivers.get(lock)
            if driver is None:  # removed while this operation waited its turn
                return OpResult(oc.FAILED, oc.UNKNOWN_LOCK, None, None)
            return await driver.operate(action, command_id, on_written, timeout)

    async def close(self) -> None:
        """Drop every lock's connection (hubd stops)."""
        await asyncio.gather(*(driver.close() for driver in list(self._drivers.values())))


def _for_lock(lock_id: str, on_report: ReportCallback | None
              ) -> Callable[[str, str | None, str, int, str], None] | None:
    if on_report is None:
        return None

    def report(what: str, name: str | None, state: str, battery: int, source: str) -> None:
        on_report(lock_id, what, name, state, battery, _SOURCES.get(source, source))

    return report

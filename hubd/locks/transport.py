"""Lock operations run by hubd's own drivers over bleak (a ``hubd.access.transport.LockTransport``).

The command path hands each operation to a lock id; this maps the id to its driver (one per
paired lock: its kind, address, address type, secret and protocol: hubd.locks.reference for the
reference lock protocol, hubd.locks.dkey for a dormakaba dKey) and runs one operation at a time
per lock, in the order asked, while other locks go on in parallel. An action the lock's kind or
protocol cannot do is refused before anything moves (``wire.lockkinds.supports``). The bridge
is then only the Bluetooth proxy (docs/ble-proxy.md), or the hub's own adapter
(docs/direct-mode.md): ``is_up`` and ``wait_up`` follow the radio (hubd.ble.radio: the serial
link to the bridge, or the adapter).

Given ``upkeep`` timings it also does, from :meth:`BleLocks.start`, what the firmware's
connection policy did for a lock nobody commands (hubd.locks.upkeep): polls, and reads of the
reports a lock kept while nobody was connected when its advert says there are some
(:meth:`BleLocks.advertised`); each in the lock's turn, so never during an operation on it.

Every report a lock makes goes to ``on_report`` with the source hubd names it by, unless the
lock's kind cannot make it (``wire.lockkinds.can_report``: a misconfigured or hostile device;
dropped, as firmware/locks/kinds.py did). Every authentic answer (a RESULT, a report, a read's
REPORTS_END, a dKey's session) goes to ``on_heard`` with the battery reading it carries, if any,
in the lock's battery model (:func:`battery_model`): the lock is there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hubd.access.transport import OpResult
from hubd.ble.radio import Radio
from hubd.locks.dkey import BATTERY_MODEL as DKEY_BATTERY_MODEL
from hubd.locks.dkey import DkeyLock, DkeyTimings
from hubd.locks.reference import ReferenceLock, Refreshed, Timings
from hubd.locks.upkeep import Upkeep, UpkeepTimings
from wire import lockkinds
from wire import outcomes as oc

log = logging.getLogger(__name__)

#: report(lock, what, name, state, battery, source): an authentic report a lock made on its own
#: while connected ("state" or "event"; ``name`` the event; ``battery`` percent, None if the lock
#: has not told it; ``source`` wire.lockkinds').
ReportCallback = Callable[[str, str, "str | None", str, "int | None", str], None]
#: heard(lock, battery): the lock answered authentically; ``battery`` the battery reading the
#: answer carried, if any, in the unit of the lock's battery model (battery_model: a
#: reference lock's percent, a dKey's raw units).
HeardCallback = Callable[[str, "int | None"], None]


#: How long each protocol's secret is: the reference lock's pairing secret (32 bytes); a dKey's
#: association data, its key holder id (4 bytes) then its association secret (32 bytes).
SECRET_LENS = {lockkinds.REFERENCE: 32, lockkinds.DKEY: 4 + 32}


@dataclass(frozen=True)
class PairedLock:
    """What hubd needs to reach one lock and be believed by it (from pairing)."""

    kind: str  # wire.lockkinds.KINDS
    address: str  # "C0:FF:EE:00:00:01"
    secret: bytes = field(repr=False)  # SECRET_LENS[protocol] bytes, kept in hubd's state only
    addr_type: int = 0  # 0 public, 1 random
    protocol: str = lockkinds.REFERENCE  # wire.lockkinds.PROTOCOLS: which driver speaks to it
    # The number of its latest report hubd took in (hubd.store.pairings), -1: none yet. A dKey
    # keeps no reports: always -1.
    report_counter: int = -1

    def __post_init__(self) -> None:
        if self.kind not in lockkinds.KINDS:
            raise ValueError(f"unknown lock kind {self.kind!r}")
        if self.protocol not in lockkinds.PROTOCOLS:
            raise ValueError(f"unknown lock protocol {self.protocol!r}")
        if self.kind not in lockkinds.PROTOCOL_KINDS[self.protocol]:
            raise ValueError(f"a {self.protocol} lock is not a {self.kind}")
        if len(self.secret) != SECRET_LENS[self.protocol]:
            raise ValueError(f"a {self.protocol} lock's secret is {SECRET_LENS[self.protocol]} bytes")

#: The reference protocol names the motor as a report's source; to hubd that is a remote action.
_SOURCES = {"motor": lockkinds.SOURCE_REMOTE}


def battery_model(kind: str, protocol: str) -> str:
    """The device registry's battery model of a lock (hubd.devices.battery, docs/battery.md):
    an entrance door is mains powered; a dKey reports its own raw units; every reference-protocol
    lock reports percent."""
    if kind == lockkinds.ENTRANCE_DOOR:
        return "mains"
    return DKEY_BATTERY_MODEL if protocol == lockkinds.DKEY else "reference"


class LockDriver(Protocol):
    """What BleLocks and hubd.locks.upkeep use of one lock's driver (hubd.locks.reference's
    ReferenceLock, hubd.locks.dkey's DkeyLock): one operation at a time, each ending in a result;
    a read between operations; the connection it may keep."""

    @property
    def connected(self) -> bool: ...

    @property
    def settling_s(self) -> float: ...

    @property
    def report_counter(self) -> int: ...

    @property
    def read_s(self) -> float:
        """How long a background read (:meth:`read`) may take."""
        ...

    def reading_of(self, percent: int | None) -> int | None:
        """The battery reading behind a percent this driver gave, in its lock's battery model
        (:func:`battery_model`)."""
        ...

    async def operate(self, action: str, command_id: str, on_written: Callable[[], None],
                      timeout: float) -> OpResult: ...

    @property
    def keeps_alive(self) -> bool:
        """Whether a read on the connection up keeps it alive under the lock's own idle drop
        (not a dKey's: its held session lasts what the lock allows a silent link)."""
        ...

    async def read(self, read_status: bool, timeout: float, *,
                   connections: int | None = None) -> Refreshed | str:
        """The lock's kept reports and, with ``read_status``, its state and battery, within
        ``timeout``, moving nothing; or why not (a reason of wire.outcomes), making at most
        ``connections`` new connections (None: no bound but the time)."""
        ...

    def hold(self, on: bool, *, in_use: bool = False) -> None:
        """A visit holds the connection, or lets go (hubd.locks.kept.Kept.hold)."""
        ...

    async def close(self) -> None: ...


class BleLocks:
    """The locks of ``locks`` (lock id -> PairedLock), each driven through ``radio`` by its
    protocol's driver (a ReferenceLock on ``timings``, a DkeyLock on ``dkey_timings``); a
    LockTransport for hubd.access.commands."""

    def __init__(self, radio: Radio, locks: Mapping[str, PairedLock],
                 timings: Timings = Timings(), on_report: ReportCallback | None = None, *,
                 upkeep: UpkeepTimings | None = None, on_heard: HeardCallback | None = None,
                 dkey_timings: DkeyTimings = DkeyTimings(),
                 on_counter: Callable[[str, int], None] | None = None) -> None:
        self.radio = radio
        self.timings = timings
        self.dkey_timings = dkey_timings
        self._on_report = on_report
        self._on_counter = on_counter  # (lock id, number): a reference lock's latest report taken in
        self._on_heard = on_heard
        self.kinds: dict[str, str] = {}
        self.protocols: dict[str, str] = {}
        self._drivers: dict[str, LockDriver] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        self.upkeep = None if upkeep is None else Upkeep(self, upkeep)
        for lock_id, paired in locks.items():
            self.add(lock_id, paired)

    def start(self) -> None:
        """Start the background work (with ``upkeep`` timings; nothing without): each lock's
        first poll at once."""
        if self.upkeep is not None:
            self.upkeep.start()

    def add(self, lock_id: str, paired: PairedLock) -> None:
        """Drive ``lock_id`` from now on (a lock just paired), its background work with it; it
        must not be driven already."""
        if lock_id in self._drivers:
            raise ValueError(f"{lock_id} is driven already: remove it first")
        self.kinds[lock_id] = paired.kind
        self.protocols[lock_id] = paired.protocol
        reports = self._reports_of(lock_id, paired.kind)
        driver: LockDriver
        if paired.protocol == lockkinds.DKEY:
            driver = DkeyLock(paired.address, paired.secret, addr_type=paired.addr_type,
                              radio=self.radio, timings=self.dkey_timings, on_report=reports)
        else:
            on_counter = self._on_counter
            driver = ReferenceLock(paired.address, paired.secret, addr_type=paired.addr_type,
                                   radio=self.radio, timings=self.timings, on_report=reports,
                                   report_counter=paired.report_counter,
                                   on_counter=None if on_counter is None else
                                   lambda number: on_counter(lock_id, number))
        self._drivers[lock_id] = driver
        self._turns[lock_id] = asyncio.Lock()
        if self.upkeep is not None:
            self.upkeep.add(lock_id)

    async def remove(self, lock_id: str) -> None:
        """Stop driving ``lock_id`` (decommissioned) and its background work: after the
        operation or read under way, if any, its connection is dropped; an operation asked
        later is ``unknown_lock``."""
        turn = self._turns.get(lock_id)
        if turn is None:
            return
        if self.upkeep is not None:
            self.upkeep.remove(lock_id)
        async with turn:
            driver = self._drivers.pop(lock_id, None)
            self.kinds.pop(lock_id, None)
            self.protocols.pop(lock_id, None)
            self._turns.pop(lock_id, None)
        if driver is not None:
            await driver.close()

    @property
    def is_up(self) -> bool:
        return self.radio.is_up

    async def wait_up(self, timeout: float) -> bool:
        return await self.radio.wait_up(timeout)

    async def operate(self, lock: str, action: str, command_id: str,
                      on_written: Callable[[], None], timeout: float) -> OpResult:
        turn = self._turns.get(lock)
        if turn is None:
            return OpResult(oc.FAILED, oc.UNKNOWN_LOCK, None, None)
        if action != "status" and not lockkinds.supports(self.kinds[lock], action,
                                                          self.protocols[lock]):
            return OpResult(oc.FAILED, oc.UNSUPPORTED_ACTION, None, None)
        try:
            async with turn:  # one operation at a time per lock
                driver = self._drivers.get(lock)
                if driver is None:  # removed while this operation waited its turn
                    return OpResult(oc.FAILED, oc.UNKNOWN_LOCK, None, None)
                result = await driver.operate(action, command_id, on_written, timeout)
        finally:
            if self.upkeep is not None:
                self.upkeep.wake()  # a poll passed over for this operation may run now
        if result.battery is not None:  # only an authentic answer carries one
            self._heard(lock, result.battery, driver)
        return result

    # -- the background work (hubd.locks.upkeep) ------------------------------------------------

    def advertised(self, lock_id: str, counter: int) -> None:
        """``lock_id``'s advert carries report number ``counter`` (low 16 bits): if hubd has
        not taken that one in, the upkeep reads the lock's kept reports."""
        if self.upkeep is not None:
            self.upkeep.advertised(lock_id, counter)

    def driver(self, lock_id: str) -> LockDriver | None:
        return self._drivers.get(lock_id)

    def busy(self, lock_id: str) -> bool:
        """Whether an operation or a read holds ``lock_id``'s turn, or waits for it."""
        turn = self._turns.get(lock_id)
        return turn is not None and turn.locked()

    def connected(self, lock_id: str) -> bool:
        """Whether hubd has a connection up to ``lock_id``."""
        driver = self._drivers.get(lock_id)
        return driver is not None and driver.connected

    def hold(self, lock_id: str, on: bool) -> bool:
        """A visit holds ``lock_id``'s connection past its idle drop (``on``), or lets go
        (hubd.locks.visit); False if the lock is not driven."""
        driver = self._drivers.get(lock_id)
        if driver is None:
            return False
        driver.hold(on, in_use=self.busy(lock_id))
        return True

    def keeps_alive(self, lock_id: str) -> bool:
        """Whether a read keeps ``lock_id``'s held connection alive (not a dKey's: it is kept
        without keep-alives, for what the lock allows a silent link)."""
        driver = self._drivers.get(lock_id)
        return driver is not None and driver.keeps_alive

    async def refresh(self, lock_id: str, read_status: bool) -> Refreshed | None:
        """In ``lock_id``'s turn, read its kept reports and, with ``read_status``, its state and
        battery (``ReferenceLock.read``); the state goes to ``on_report`` with source ``poll``.
        None when the lock is not driven, not reached or not authentic."""
        got = await self._read(lock_id, read_status, None)
        return None if isinstance(got, str) else got

    async def read(self, lock_id: str, *, connections: int) -> str:
        """In ``lock_id``'s turn, the read that keeps a visit's hold (its kept reports, as
        :meth:`refresh` without the state): "" when done, else why not (a reason of
        wire.outcomes: ``unknown_lock`` when it is not driven), making at most ``connections``
        new connections (0: only on the connection up now; ``link_failed`` when it needs one
        more): a hold counts its connections."""
        got = await self._read(lock_id, False, connections)
        return got if isinstance(got, str) else ""

    async def _read(self, lock_id: str, read_status: bool,
                    connections: int | None) -> Refreshed | str:
        turn = self._turns.get(lock_id)
        if turn is None:
            return oc.UNKNOWN_LOCK
        async with turn:
            driver = self._drivers.get(lock_id)
            if driver is None:
                return oc.UNKNOWN_LOCK
            got = await driver.read(read_status, driver.read_s, connections=connections)
        if isinstance(got, Refreshed):
            self._took(lock_id, got, driver)
        return got

    def _took(self, lock_id: str, got: Refreshed, driver: LockDriver) -> None:
        """A read's news: the lock was heard; a state it read goes to ``on_report`` (``poll``)."""
        self._heard(lock_id, got.battery, driver)
        if got.state is not None and got.battery is not None and self._on_report is not None:
            _call(self._on_report, lock_id, "state", None, got.state, got.battery,
                  lockkinds.SOURCE_POLL)

    async def close(self) -> None:
        """Stop the background work and drop every lock's connection (hubd stops)."""
        if self.upkeep is not None:
            await self.upkeep.close()
        await asyncio.gather(*(driver.close() for driver in list(self._drivers.values())))

    # -- what the locks say -------------------------------------------------------------------

    def _heard(self, lock_id: str, percent: int | None, driver: LockDriver | None) -> None:
        """``lock_id`` answered with ``percent``: ``on_heard`` gets the reading behind it, in
        the lock's battery model (LockDriver.reading_of)."""
        if self._on_heard is None:
            return
        reading = percent if driver is None else driver.reading_of(percent)
        _call(self._on_heard, lock_id, reading)

    def _reports_of(self, lock_id: str, kind: str
                    ) -> Callable[[str, str | None, str, int | None, str], None]:
        def report(what: str, name: str | None, state: str, battery: int | None,
                   source: str) -> None:
            self._heard(lock_id, battery, self._drivers.get(lock_id))
            ours = _SOURCES.get(source, source)
            if not lockkinds.can_report(kind, ours, name):
                log.warning("%s: dropped a report its kind (%s) cannot make: %s %s from %s",
                            lock_id, kind, what, name or state, ours)
                return
            if self._on_report is not None:
                self._on_report(lock_id, what, name, state, battery, ours)

        return report


def _call(callback: Callable[..., None], *args: object) -> None:
    # A listener's bug (the state database, the registry) must not end the lock's read.
    try:
        callback(*args)
    except Exception:
        log.exception("a lock report's listener raised")

"""A visit's next door ready before the tap: the connection to it opened when the visit's door
before it opened, and held for the visit's next command (issue 17, docs/ble-timing.md, "A
visit's next door held").

A nurse's visit in a home with a shared entrance door (or a key box) is a sequence: the
entrance's unlatch, then a minute or so later the apartment door's unlock, both signed commands
naming the same assignment. A cold connection to a battery lock advertising every 1 s costs up
to the advert interval before anything else; a held one answers in ~130 ms. hubd.toml's
``[visit] route`` names the doors in the order a visitor passes them; when a command naming an
assignment succeeded on one of them, hubd connects to the route's next door at once and holds
that connection (:meth:`VisitHold.succeeded`):

- alive under the lock's own idle drop by a read every ``keepalive_s``: READ_REPORTS after a
  fresh challenge (hubd.locks.transport.BleLocks.refresh without the state), authenticated and
  moving nothing; no COMMAND is ever written by the hold, so the at-most-once rule is the
  command path's alone;
- for ``hold_s`` at most, or until the next command is accepted (:meth:`VisitHold.accepted`):
  a command for the held door takes the connection (the driver keeps it ``idle_s`` for it, as
  after any operation); any other command ends the hold at once: no more keep-alives, and the
  connection is let go as after any operation, dropped ``idle_s`` later, not at once;
- one hold at a time across the hub (one per visit, never two visits' at once);
- never for a door the visit asked for already (both commands sent at once: the door's came
  before the one before it ended);
- a lock that drops the held connection is connected again once, not more: a second loss (or a
  connection that cannot be made twice) ends the hold;
- a lock is held ``daily_hold_s`` (30 min) a day (UTC) at most, whatever asks: its battery's
  bound against a backend that prepares in a loop. A hold ends when the allowance does; one asked
  for after it is not made (a prepare answers ``failed`` ``daily_hold_spent``; the command itself
  still works, on a connection of its own). Counted in hubd's memory: a restart begins again.

**A dKey** (hubd.locks.dkey) is held without keep-alives: nothing its library can send without
moving the bolt keeps the link alive (``BleLocks.keeps_alive``). The hold's first read
connects and authenticates, the expensive part of a command; the session is then kept silent
until its driver lets it go, ``held_s`` (25 s) after its last traffic, before the lock's own
idle drop at 30 s (a command's write must never cross the lock's DISCONNECT_REQ); then the
hold connects once more, as after a loss, and ends when that session goes too (``expired``).

The hold starts when the command that opened the door before succeeded, not when it was
accepted: that command's own connection comes first. Its counts (:attr:`VisitHold.counts`) go
to the log at each hold's end.

**A visit's first door** has no door before it: the backend, which knows the visit is coming,
sends a signed ``prepare`` command for it (hubapi.models.Action.PREPARE, docs/mqtt-api.md), and
the command path asks for the same hold (:meth:`VisitHold.announced` at its acceptance,
:meth:`VisitHold.prepare` in the lock's turn). Its answer is the future :meth:`prepare`
returns: "" once the hold's first read is done while it still holds (``succeeded``), else why
not: the read's reason (``unreachable``, ``link_failed``, ...; the hold ends), ``superseded``
(a later command or prepare ended the hold before that), ``unknown_lock`` (no driver for
it). A prepare for the door held already answers at once when its
connection is up, and extends the hold to ``hold_s`` from its own acceptance, never further,
with two connections of its own again (a dKey prepared twice keeps a session ready through the
second prepare's ``hold_s``).
It works without a route: the hold's times are ``[visit]``'s either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wire import outcomes as oc

if TYPE_CHECKING:
    from hubd.locks.transport import BleLocks

log = logging.getLogger(__name__)

#: How many connections one hold may make: the first, and one more after a loss.
CONNECTS_PER_HOLD = 2
#: How often a hold without keep-alives (a dKey's) looks whether its session is still up.
LINK_CHECK_S = 0.5
#: How many of the latest commands' (lock, assignment) are remembered: a door its visit already
#: asked for is not held.
ASKED_KEPT = 32
#: How long hubd's stop waits for a hold's read under way before it cancels it.
READ_GRACE_S = 5.0


@dataclass(frozen=True)
class VisitRoute:
    """The doors a visitor passes, in order (lock ids), and the hold's times in seconds;
    hubd.toml ``[visit]`` sets them (hubd.config.VisitConfig)."""

    route: tuple[str, ...] = ()
    hold_s: float = 120.0  # the held connection is let go this long after the door before opened
    keepalive_s: float = 20.0  # a read this often keeps it: under the lock's own idle drop (30 s)
    # A lock is held at most this long a day (UTC), whatever asks: its battery's bound against a
    # backend that prepares in a loop (15 visits' full holds; a hold costs ~10x the lock's own
    # advertising while it lasts: docs/ble-timing.md, "A visit's first door prepared").
    daily_hold_s: float = 1800.0

    def next_after(self, lock: str) -> str | None:
        """The door after ``lock`` on the route, if any."""
        if lock not in self.route:
            return None
        at = self.route.index(lock)
        return self.route[at + 1] if at + 1 < len(self.route) else None


@dataclass
class _Hold:
    lock: str
    assignment: str | None
    until: float  # loop time
    started: float  # loop time
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    nudge: asyncio.Event = field(default_factory=asyncio.Event)  # stop, or a prepare waits: read
    task: asyncio.Task[None] | None = None
    reading: asyncio.Future[str] | None = None  # the read under way, shielded from the hold's end
    read: bool = False  # a read on the connection held succeeded
    connects: int = 0  # connections the hold made (CONNECTS_PER_HOLD); a new prepare starts again
    # The prepares waiting for the hold to be up: "" once a read succeeded while it held, else
    # why not (a reason of wire.outcomes).
    waiting: list[asyncio.Future[str]] = field(default_factory=list)


class VisitHold:
    """Holds the connection to a visit's next door on ``locks`` (module docstring); the command
    path tells it of each command accepted and each that succeeded, and asks it for each
    prepare."""

    def __init__(self, locks: BleLocks, route: VisitRoute) -> None:
        self._locks = locks
        self.route = route
        self._hold: _Hold | None = None
        self._asked: deque[tuple[str, str | None]] = deque(maxlen=ASKED_KEPT)
        self._seen = 0  # commands and prepares accepted: a prepare's ticket (announced)
        # Seconds each lock was held, by UTC day: (day, seconds), the day's only.
        self._spent: dict[str, tuple[int, float]] = {}
        # holds started; ended by a command for the held door (used), by another command or
        # assignment (ended), by hold_s or the daily allowance (expired), by the lock (lost:
        # dropped twice, or not reached); holds not started, the lock's day spent (refused)
        self.counts = {"held": 0, "used": 0, "ended": 0, "expired": 0, "lost": 0, "refused": 0}

    @property
    def holding(self) -> str | None:
        """The door held now, if any."""
        return None if self._hold is None else self._hold.lock

    def accepted(self, lock: str, assignment: str | None) -> None:
        """A command for ``lock`` was accepted: any hold ends now. The held door's command takes
        the connection; any other gets the proxy's slot."""
        self._seen += 1
        self._asked.append((lock, assignment))
        hold = self._hold
        if hold is not None:
            self._end(hold, "used" if lock == hold.lock and assignment == hold.assignment
                      else "ended")

    def announced(self, lock: str) -> int:
        """A prepare for ``lock`` was accepted: a hold of another door ends now (the newer
        prepare ends it; the held door's stays for it). Returns the prepare's ticket for
        :meth:`prepare`: a command or prepare accepted after it supersedes it."""
        self._seen += 1
        hold = self._hold
        if hold is not None and hold.lock != lock:
            self._end(hold, "ended")
        return self._seen

    def prepare(self, lock: str, assignment: str | None, ticket: int,
                accepted_at: float) -> asyncio.Future[str]:
        """Hold ``lock``'s connection for a prepare accepted at loop time ``accepted_at`` with
        ``ticket`` (:meth:`announced`): until ``hold_s`` after that, or the next command. The
        future is "" once a read on the held connection succeeded, else why not (module
        docstring); it is always resolved."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        if ticket != self._seen:
            ready.set_result(oc.SUPERSEDED)  # a command or a newer prepare came after it
            return ready
        if self._locks.driver(lock) is None:
            ready.set_result(oc.UNKNOWN_LOCK)
            return ready
        until = accepted_at + self.route.hold_s
        hold = self._hold
        if hold is not None and hold.lock == lock:
            # Never beyond hold_s from this acceptance, nor the lock's allowance for the day.
            hold.until = max(hold.until, until)
            hold.assignment = assignment
            # A new prepare is a new hold of the same door: its own two connections (a dKey's
            # two sessions, spent ~50 s after the first prepare, would else end the hold at once
            # and answer this prepare unreachable).
            hold.connects = 0
            if hold.read and self._locks.connected(lock):
                ready.set_result("")
            else:
                hold.waiting.append(ready)
                hold.nudge.set()
            log.info("visit: %s's connection held already for the prepared visit", lock,
                     extra={"lock": lock, "assignment": assignment})
            return ready
        if self._left(lock) <= 0:
            self._refuse(lock, assignment, "a prepare")
            ready.set_result(oc.DAILY_HOLD_SPENT)
            return ready
        if hold is not None:
            self._end(hold, "ended")
        self._start(lock, assignment, until, "prepared", [ready])
        return ready

    def succeeded(self, lock: str, assignment: str | None) -> None:
        """A command naming ``assignment`` for ``lock`` succeeded: hold the route's next door,
        unless the visit asked for it already (its command came before this one ended)."""
        after = self.route.next_after(lock)
        if assignment is None or after is None or self._locks.driver(after) is None \
                or (after, assignment) in self._asked:
            return
        if self._left(after) <= 0:
            self._refuse(after, assignment, f"{lock} opened")
            return
        if self._hold is not None:
            self._end(self._hold, "ended")
        until = asyncio.get_running_loop().time() + self.route.hold_s
        self._start(after, assignment, until, f"{lock} opened", [])

    async def close(self) -> None:
        """Let go of the hold, if any (hubd stops)."""
        hold = self._hold
        if hold is None:
            return
        self._end(hold, "ended", oc.SHUTTING_DOWN)
        if hold.task is not None:
            hold.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hold.task
        # The read the hold's end does not cancel (a command may be waiting for its connection)
        # ends before the drivers close: within its own timeouts, else cancelled.
        reading = hold.reading
        if reading is not None and not reading.done():
            await asyncio.wait({reading}, timeout=READ_GRACE_S)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    # -- the hold ---------------------------------------------------------------------------

    def _spent_today(self, lock: str) -> float:
        """Seconds ``lock`` was held today (UTC), by the holds ended."""
        day, spent = self._spent.get(lock, (0, 0.0))
        return spent if day == _today() else 0.0

    def _left(self, lock: str) -> float:
        """Seconds ``lock`` may still be held today: the allowance less what it was."""
        return self.route.daily_hold_s - self._spent_today(lock)

    def _ends(self, hold: _Hold) -> float:
        """When (loop time) ``hold`` ends by itself: ``until``, or its lock's daily allowance
        (what is left of it since the hold began, which counts once it ended)."""
        return min(hold.until, hold.started + self._left(hold.lock))

    def _refuse(self, lock: str, assignment: str | None, cause: str) -> None:
        self.counts["refused"] += 1
        log.warning("visit: not holding %s for %s: it was held %.0f s today, the hub's daily "
                    "allowance for a lock ([visit] daily_hold_s)", lock, cause,
                    self.route.daily_hold_s, extra={"lock": lock, "assignment": assignment,
                                                     "reason": oc.DAILY_HOLD_SPENT})

    def _start(self, lock: str, assignment: str | None, until: float, cause: str,
               waiting: list[asyncio.Future[str]]) -> None:
        now = asyncio.get_running_loop().time()
        hold = _Hold(lock, assignment, until, now, waiting=waiting)
        self._hold = hold
        self.counts["held"] += 1
        log.info("visit: holding %s's connection for the visit's next command (%s)", lock, cause,
                 extra={"lock": lock, "assignment": assignment, "hold_s": self.route.hold_s})
        hold.task = asyncio.get_running_loop().create_task(self._run(hold),
                                                            name=f"visit-hold-{lock}")

    def _end(self, hold: _Hold, why: str, reason: str | None = None) -> None:
        """Let go now, synchronously: the driver arms its idle drop before any command runs.
        The prepares still waiting are answered ``reason`` (by default: ``superseded`` when a
        command or prepare ended it, ``unreachable`` when its time did)."""
        if self._hold is hold:
            self._hold = None
            held = asyncio.get_running_loop().time() - hold.started
            self._spent[hold.lock] = (_today(), self._spent_today(hold.lock) + held)
            hold.stop.set()
            hold.nudge.set()
            self._locks.hold(hold.lock, False)
            self.counts[why] += 1
            log.info("visit: let go of %s (%s)", hold.lock, why,
                     extra={"lock": hold.lock, "assignment": hold.assignment, "why": why,
                            **{f"visit_{k}": v for k, v in self.counts.items()}})
        if reason is None:
            reason = oc.UNREACHABLE if why == "expired" else oc.SUPERSEDED
        _answer(hold, reason)

    async def _run(self, hold: _Hold) -> None:
        loop = asyncio.get_running_loop()
        if not self._locks.hold(hold.lock, True):
            self._end(hold, "lost", oc.UNKNOWN_LOCK)
            return
        # A dKey's held session is not kept alive by reads (hubd.locks.dkey.DkeyLock.keeps_alive):
        # it lasts until its driver lets it go under the lock's own idle drop; then the one more
        # connection, as after a loss.
        keeps_alive = self._locks.keeps_alive(hold.lock)
        try:
            while not hold.stop.is_set() and loop.time() < self._ends(hold):
                hold.nudge.clear()
                if not self._locks.is_up:
                    # The link to the bridge is down: nothing to hold until it is back; a
                    # prepare waiting is told so (its command path waited for the link already).
                    if hold.waiting:
                        self._end(hold, "lost", oc.BRIDGE_UNAVAILABLE)
                        return
                elif not self._locks.connected(hold.lock):
                    if hold.connects >= CONNECTS_PER_HOLD:
                        if not keeps_alive:
                            log.info("visit: %s's second held session ended: the hold ends",
                                     hold.lock, extra={"lock": hold.lock})
                            self._end(hold, "expired")
                            return
                        log.info("visit: %s dropped its held connection again: not connecting "
                                 "a third time", hold.lock, extra={"lock": hold.lock})
                        self._end(hold, "lost", oc.LINK_FAILED)
                        return
                    hold.connects += 1
                    why = await self._read(hold, connections=1)
                    if why and hold.waiting:  # a prepare's connection failed: its answer, the end
                        self._end(hold, "lost", why)
                        return
                elif keeps_alive or hold.waiting or not hold.read:
                    # The keep-alive, on the connection up: never a connection of its own (one
                    # lost meanwhile is made again above, counted). On a dKey's session it
                    # sends nothing: only for a prepare waiting, or a session the hold found.
                    why = await self._read(hold, connections=0)
                    if why and hold.waiting:  # a prepare waits: connect now if the link went
                        if self._locks.connected(hold.lock):
                            self._end(hold, "lost", why)
                            return
                        hold.nudge.set()
                # A dKey's session is looked at every LINK_CHECK_S (no radio traffic): its end
                # calls for the one more connection at once.
                every = self.route.keepalive_s if keeps_alive else LINK_CHECK_S
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(every, self._ends(hold) - loop.time()))):
                        await hold.nudge.wait()
            # Before its own time: the lock's daily allowance ended it (a prepare waiting hears so).
            spent = not hold.stop.is_set() and loop.time() < hold.until
            self._end(hold, "expired", oc.DAILY_HOLD_SPENT if spent else None)
        except asyncio.CancelledError:
            self._end(hold, "ended", oc.SHUTTING_DOWN)
            raise
        except Exception:  # a bug must not leave the connection held
            log.exception("visit: holding %s failed", hold.lock)
            self._end(hold, "lost", oc.DRIVER_ERROR)

    async def _read(self, hold: _Hold, connections: int) -> str | None:
        """One authenticated read that moves nothing, in the lock's turn, making at most
        ``connections`` new connections (a link lost during the read is not made again by it:
        the hold counts its connections); never cancelled by the hold's end (a command waiting
        for the turn then finds the connection). "" when done (the prepares waiting are
        answered), else why not; None when the hold ended."""
        if hold.stop.is_set():
            return None
        hold.reading = asyncio.ensure_future(self._locks.read(hold.lock, connections=connections))
        why = await asyncio.shield(hold.reading)
        if why:
            log.info("visit: reading %s for its hold failed: %s", hold.lock, why,
                     extra={"lock": hold.lock, "reason": why})
        elif not hold.stop.is_set():
            hold.read = True
            _answer(hold, "")
        return why


def _today() -> int:
    """Today's number (UTC days since the epoch): the daily allowance's day."""
    return int(time.time() // 86400)


def _answer(hold: _Hold, why: str) -> None:
    """Answer the prepares waiting for ``hold``."""
    for ready in hold.waiting:
        if not ready.done():
            ready.set_result(why)
    hold.waiting.clear()

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
  connection that cannot be made twice) ends the hold.

The hold starts when the command that opened the door before succeeded, not when it was
accepted: that command's own connection comes first. Nothing is held with no route (the
default): hubd behaves as without this module. Its counts (:attr:`VisitHold.counts`) go to the
log at each hold's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubd.locks.transport import BleLocks

log = logging.getLogger(__name__)

#: How many connections one hold may make: the first, and one more after a loss.
CONNECTS_PER_HOLD = 2
#: How many of the latest commands' (lock, assignment) are remembered: a door its visit already
#: asked for is not held.
ASKED_KEPT = 32


@dataclass(frozen=True)
class VisitRoute:
    """The doors a visitor passes, in order (lock ids), and the hold's times in seconds;
    hubd.toml ``[visit]`` sets them (hubd.config.VisitConfig)."""

    route: tuple[str, ...] = ()
    hold_s: float = 120.0  # the held connection is let go this long after the door before opened
    keepalive_s: float = 20.0  # a read this often keeps it: under the lock's own idle drop (30 s)

    def next_after(self, lock: str) -> str | None:
        """The door after ``lock`` on the route, if any."""
        if lock not in self.route:
            return None
        at = self.route.index(lock)
        return self.route[at + 1] if at + 1 < len(self.route) else None


@dataclass
class _Hold:
    lock: str
    assignment: str
    until: float  # loop time
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = "expired"  # how it ended
    task: asyncio.Task[None] | None = None


class VisitHold:
    """Holds the connection to a visit's next door on ``locks`` (module docstring); the command
    path tells it of each command accepted and each that succeeded."""

    def __init__(self, locks: BleLocks, route: VisitRoute) -> None:
        self._locks = locks
        self.route = route
        self._hold: _Hold | None = None
        self._asked: deque[tuple[str, str | None]] = deque(maxlen=ASKED_KEPT)
        # holds started; ended by a command for the held door (used), by another command or
        # assignment (ended), by hold_s (expired), by the lock (lost: dropped twice, or not reached)
        self.counts = {"held": 0, "used": 0, "ended": 0, "expired": 0, "lost": 0}

    @property
    def holding(self) -> str | None:
        """The door held now, if any."""
        return None if self._hold is None else self._hold.lock

    def accepted(self, lock: str, assignment: str | None) -> None:
        """A command for ``lock`` was accepted: any hold ends now. The held door's command takes
        the connection; any other gets the proxy's slot."""
        self._asked.append((lock, assignment))
        hold = self._hold
        if hold is not None:
            self._end(hold, "used" if lock == hold.lock and assignment == hold.assignment
                      else "ended")

    def succeeded(self, lock: str, assignment: str | None) -> None:
        """A command naming ``assignment`` for ``lock`` succeeded: hold the route's next door,
        unless the visit asked for it already (its command came before this one ended)."""
        after = self.route.next_after(lock)
        if assignment is None or after is None or self._locks.driver(after) is None \
                or (after, assignment) in self._asked:
            return
        if self._hold is not None:
            self._end(self._hold, "ended")
        loop = asyncio.get_running_loop()
        hold = _Hold(after, assignment, loop.time() + self.route.hold_s)
        self._hold = hold
        self.counts["held"] += 1
        log.info("visit: holding %s's connection for the visit's next command (%s opened)",
                 after, lock, extra={"lock": after, "assignment": assignment,
                                     "hold_s": self.route.hold_s})
        hold.task = loop.create_task(self._run(hold), name=f"visit-hold-{after}")

    async def close(self) -> None:
        """Let go of the hold, if any (hubd stops)."""
        hold = self._hold
        if hold is None:
            return
        self._end(hold, "ended")
        if hold.task is not None:
            hold.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hold.task

    # -- the hold ---------------------------------------------------------------------------

    def _end(self, hold: _Hold, why: str) -> None:
        """Let go now, synchronously: the driver arms its idle drop before any command runs."""
        if self._hold is hold:
            self._hold = None
            hold.why = why
            hold.stop.set()
            self._locks.hold(hold.lock, False)
            self.counts[why] += 1
            log.info("visit: let go of %s (%s)", hold.lock, why,
                     extra={"lock": hold.lock, "assignment": hold.assignment, "why": why,
                            **{f"visit_{k}": v for k, v in self.counts.items()}})

    async def _run(self, hold: _Hold) -> None:
        loop = asyncio.get_running_loop()
        if not self._locks.hold(hold.lock, True):
            self._end(hold, "lost")
            return
        connects = 0
        try:
            while not hold.stop.is_set() and loop.time() < hold.until:
                if not self._locks.is_up:
                    pass  # the link to the bridge is down: nothing to hold until it is back
                elif not self._locks.connected(hold.lock):
                    if connects >= CONNECTS_PER_HOLD:
                        log.info("visit: %s dropped its held connection again: not connecting "
                                 "a third time", hold.lock, extra={"lock": hold.lock})
                        self._end(hold, "lost")
                        return
                    connects += 1
                    await self._read(hold)
                else:
                    await self._read(hold)  # the keep-alive
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(self.route.keepalive_s,
                                                            hold.until - loop.time()))):
                        await hold.stop.wait()
            self._end(hold, "expired")
        except asyncio.CancelledError:
            self._end(hold, "ended")
            raise
        except Exception:  # a bug must not leave the connection held
            log.exception("visit: holding %s failed", hold.lock)
            self._end(hold, "lost")

    async def _read(self, hold: _Hold) -> None:
        """One authenticated read that moves nothing, in the lock's turn; never cancelled by
        the hold's end (a command waiting for the turn then finds the connection)."""
        if hold.stop.is_set():
            return
        got = await asyncio.shield(self._locks.refresh(hold.lock, read_status=False))
        if got is None:
            log.info("visit: reading %s for its hold failed", hold.lock,
                     extra={"lock": hold.lock})

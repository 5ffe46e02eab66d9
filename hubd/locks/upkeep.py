"""What hubd does for its locks while nobody commands them: the connection policy the bridge's
firmware kept until its lock drivers left it (its policy.py; docs/lock-protocol.md, "Connection
policy"), for hubd's own drivers.

- **Polls**: each lock's reports, state and battery are read at start and every ``poll_s``; the
  state goes to the lock states with source ``poll``. A battery lock pays for a connection this
  often, no more.
- **News**: a lock's advert carries its latest report number (low 16 bits); when it differs from
  the last one hubd took in, the lock kept reports nobody heard (a key turned by hand while
  nobody was connected), and hubd connects and reads them (READ_REPORTS). An advert is not
  authenticated, so a forger can announce news that is not there: such reads are rate-limited
  per lock (``news_gap_s``), and each one that finds nothing new doubles the gap, up to
  ``news_gap_max_s``; one that finds news sets it back.

Both run one lock at a time across the hub (every connection costs the bridge's heap and a proxy
slot), each in its lock's turn (hubd.locks.transport: never during an operation on that lock, and
a lock whose operation is under way is passed over until it ends), and a poll never within
``settle_s`` after a move, when the lock may still answer the old state. Operations on other
locks never wait for them. Nothing runs while the link to the bridge is down; a poll it kept from
reaching its lock is made when the link is back.

What a read learns goes out through the transport (hubd.locks.transport.BleLocks.refresh): the
reports to ``on_report``, the polled state with source ``poll``, the lock heard to ``on_heard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubd.locks.transport import BleLocks

log = logging.getLogger(__name__)

#: How long the loop waits for the link to the bridge at a time before looking again.
_LINK_WAIT_S = 60.0


@dataclass(frozen=True)
class UpkeepTimings:
    """The background work's times in seconds; the defaults are the firmware's former
    ``poll_ms`` and ``scan_every_ms``; hubd.toml ``[lock_upkeep]`` sets them."""

    poll_s: float = 1800.0  # each lock's state and battery, and once at start
    news_gap_s: float = 10.0  # reads for an advert's news, at most this often per lock
    news_gap_max_s: float = 600.0  # the gap after reads that found nothing new, doubled to this


@dataclass
class _Watch:
    """One lock's schedule."""

    next_poll: float  # loop time
    advert: int | None = None  # the report number (low 16 bits) in its latest advert
    news_at: float = 0.0  # loop time before which no read for news starts
    gap: float = 0.0  # the current gap between reads for news


class Upkeep:
    """Polls and reads for news of ``locks``' locks (see the module docstring), from
    :meth:`start` until :meth:`close`; the transport tells it of locks added and removed, of
    adverts and of operations that ended."""

    def __init__(self, locks: BleLocks, timings: UpkeepTimings = UpkeepTimings()) -> None:
        self._locks = locks
        self.timings = timings
        self._watches: dict[str, _Watch] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, lock_id: str) -> None:
        """Look after ``lock_id`` from now on: its first poll at once."""
        self._watches[lock_id] = _Watch(next_poll=_now(), gap=self.timings.news_gap_s)
        self.wake()

    def remove(self, lock_id: str) -> None:
        """Stop looking after ``lock_id`` (a read of it under way ends on its own)."""
        self._watches.pop(lock_id, None)

    def advertised(self, lock_id: str, counter: int) -> None:
        """``lock_id``'s advert says its latest report number is ``counter`` (low 16 bits)."""
        watch = self._watches.get(lock_id)
        if watch is not None and watch.advert != counter:
            watch.advert = counter
            self.wake()

    def wake(self) -> None:
        """Something changed (an advert, an operation ended): look at the schedule again."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lock-upkeep")

    async def close(self) -> None:
        """Stop (hubd stops): a read under way is cancelled, its connection dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if not self._locks.is_up:
                    await self._locks.wait_up(_LINK_WAIT_S)
                    continue
                job, wait = self._next()
                if job is None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    continue
                await self._read(job[0], poll=job[1])
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the locks' upkeep
                log.exception("lock upkeep failed; going on")
                await asyncio.sleep(1.0)

    def _next(self) -> tuple[tuple[str, bool] | None, float | None]:
        """The read to make now, (lock id, poll?), or None and how long until one may be due
        (None: only an advert or an operation's end can make one due). Of the reads due, the
        one due longest: a lock that keeps failing does not starve the others."""
        now = _now()
        first: tuple[float, str, bool] | None = None
        for lock_id, watch in self._watches.items():
            driver = self._locks.driver(lock_id)
            if driver is None or self._locks.busy(lock_id):
                continue  # an operation ends with wake()
            if now >= watch.next_poll:
                settling = driver.settling_s
                due, poll = now + settling if settling > 0 else watch.next_poll, True
            elif self._news(watch, driver.report_counter):
                due, poll = watch.news_at, False
            else:
                due, poll = watch.next_poll, True
            if first is None or due < first[0]:
                first = (due, lock_id, poll)
        if first is None:
            return None, None
        due, lock_id, poll = first
        if due <= now:
            return (lock_id, poll), None
        return None, due - now

    @staticmethod
    def _news(watch: _Watch, known: int) -> bool:
        # Reports taken in over a live connection meanwhile make the advert old news by themselves.
        return watch.advert is not None and (known < 0 or watch.advert != known & 0xFFFF)

    async def _read(self, lock_id: str, poll: bool) -> None:
        watch = self._watches[lock_id]
        now = _now()
        if poll:
            watch.next_poll = now + self.timings.poll_s
        driver = self._locks.driver(lock_id)
        # Before the first read hubd knows no report number: that read is a poll's, with the
        # state (the firmware's too), whatever made it due.
        read_status = poll or driver is None or driver.report_counter < 0
        log.debug("upkeep: reading %s (%s)", lock_id, "poll" if poll else "news")
        got = await self._locks.refresh(lock_id, read_status=read_status)
        log.debug("upkeep: %s read: %s", lock_id, "nothing" if got is None else got)
        if got is None and poll and not self._locks.is_up:
            watch.next_poll = _now()  # the link, not the lock, kept it: again once it is back
        if got is not None and got.reports > 0:
            watch.gap = self.timings.news_gap_s
        elif not poll:
            # A read for news that found none (nothing new, or the lock not reached) doubles the
            # gap before the next one: an advert is no proof, and a battery lock pays for each.
            watch.gap = min(2 * watch.gap, self.timings.news_gap_max_s)
        watch.news_at = _now() + watch.gap  # a poll read the reports too


def _now() -> float:
    return asyncio.get_running_loop().time()

"""The connection a lock driver keeps between operations, and its end: one rule for every
driver (hubd.locks.reference, hubd.locks.dkey).

An operation holds the connection (:meth:`Kept._keep`); when it ends the connection is kept
``timings.idle_s`` more (:meth:`Kept._release`), so a follow-up skips connecting, and is then
dropped (:meth:`Kept._drop`), because a battery lock pays for every second of it. A dropped
connection is forgotten at once and disconnected in the background; :meth:`Kept._closed` waits
for those disconnects (a lock that takes one connection must be free before the next),
:meth:`Kept.close` drops and waits (hubd stops).

A driver says what it holds (:meth:`Kept._held`) and how to let go of it (:meth:`Kept._forget`:
detach it and return the coroutine that disconnects it). A read between operations (a poll) goes
through :meth:`Kept._read_between`: a connection made for it is dropped at once, one an operation
left open is kept. A visit's hold (hubd.locks.visit) keeps the connection past ``idle_s``
(:meth:`Kept.hold`): while it holds, an operation's or a read's end arms no drop, and a read
that made the connection keeps it. Beside the connection every driver
keeps the radio it reaches its lock through (:attr:`Kept.radio`) and when its last move was
asked for, so that nobody reads the lock before it settled (:attr:`Kept.settling_s`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from hubd.ble.proxy import BleProxy
from hubd.ble.radio import Radio

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Timings(Protocol):
    @property
    def idle_s(self) -> float: ...

    @property
    def settle_s(self) -> float: ...


class Kept:
    """A lock driver's kept connection (module docstring); ``address`` and ``timings`` are the
    driver's."""

    address: str
    timings: _Timings

    def __init__(self, radio: Radio | None) -> None:
        self._radio = radio
        self._moved_at: float | None = None  # loop time of the last move asked for, until settled
        self._idle: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._holding = False  # a visit holds the connection (hubd.locks.visit)
        # No operation or read runs on the connection kept: a lock's news on it is passed on at
        # once (the drivers' ``_notified``), also while a visit holds it without a drop armed.
        self._between = False

    @property
    def radio(self) -> Radio:
        """The radio given, else the installed proxy (a BleakError naming the fix if none)."""
        return self._radio if self._radio is not None else BleProxy.current()

    @property
    def settling_s(self) -> float:
        """How much longer a status read may still show the state from before the last move
        (0: settled)."""
        if self._moved_at is None:
            return 0.0
        return max(0.0, self._moved_at + self.timings.settle_s - asyncio.get_running_loop().time())

    @property
    def connected(self) -> bool:
        """Whether the connection held is up."""
        raise NotImplementedError

    def _held(self) -> bool:
        """Whether a connection is held now."""
        raise NotImplementedError

    def _forget(self) -> Coroutine[Any, Any, None] | None:
        """Detach the connection held, if any, and return what disconnects it."""
        raise NotImplementedError

    def hold(self, on: bool, *, in_use: bool = False) -> None:
        """A visit holds the connection (``on``): it is not dropped when idle, and a read that
        makes it keeps it; or lets go: the connection held is dropped ``idle_s`` after, unless an
        operation takes it first. ``in_use``: an operation or a read runs now (its end arms the
        drop, not this: a drop armed under it could end it)."""
        self._holding = on
        if on:
            self._disarm()
        elif not in_use:
            self._release()

    def _disarm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _keep(self) -> None:
        """An operation starts: the connection is not dropped under it."""
        self._disarm()
        self._between = False

    def _release(self) -> None:
        """An operation ended: the connection is dropped at :meth:`_drop_at` unless used again.
        Called twice, the later call's time counts."""
        self._disarm()
        self._between = True
        if not self._held():
            return
        at = self._drop_at()
        if at is not None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(max(0.0, at - loop.time()), self._drop)

    def _drop_at(self) -> float | None:
        """When (loop time) the connection kept is dropped if nothing uses it: ``idle_s`` from
        now; never while a visit holds it (None). A driver whose lock ends a silent link itself
        bounds it (hubd.locks.dkey)."""
        if self._holding:
            return None
        return asyncio.get_running_loop().time() + self.timings.idle_s

    def _drop(self) -> None:
        """Forget the connection now and disconnect it in the background."""
        self._idle = None
        disconnect = self._forget()
        if disconnect is None:
            return
        task = asyncio.get_running_loop().create_task(disconnect,
                                                      name=f"lock-disconnect-{self.address}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _closed(self, timeout: float | None = None) -> None:
        """Wait for the disconnects under way (at most ``timeout`` s)."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=timeout)

    async def _read_between(self, read: Callable[[], Awaitable[T | None]]) -> T | None:
        """A read between operations (hubd.locks.upkeep's): ``read()`` on the connection kept,
        or a new one that is dropped at once and gone before this returns (background reads hold
        one proxy slot at a time across the hub, and a battery lock pays for every second); one
        an operation left open is kept ``idle_s`` after. A bug in it is logged and None, the
        connection dropped."""
        kept = self.connected or self._holding  # a read made for a hold keeps its connection
        self._keep()
        try:
            return await read()
        except asyncio.CancelledError:
            self._drop()
            raise
        except Exception:
            log.exception("lock %s: the driver failed reading it", self.address)
            self._drop()
            return None
        finally:
            if kept:  # (a hold that ended meanwhile: the command waiting takes it)
                self._release()
            else:
                self._drop()
                await self._closed()

    async def close(self) -> None:
        """Drop the connection now and wait until it is closed (hubd stops)."""
        self._keep()
        self._drop()
        await self._closed()

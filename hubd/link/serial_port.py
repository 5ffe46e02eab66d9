"""hubd's end of the serial link to the bridge: wire.link driven over pyserial from asyncio.

The port is opened non-blocking and watched with the event loop's add_reader, so a USB serial
adapter and the simulator's pty behave the same. When the port goes away (cable pulled, bridge
re-enumerating) the link reopens it every `reopen_s` until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import serial

from wire import frame, link

log = logging.getLogger(__name__)

Event = tuple[str, Any]


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class SerialLink:
    """Runs the link engine on a serial port; hands link events to `on_event(kind, value)`."""

    def __init__(self, port: str, baudrate: int, version: str, key: bytes,
                 on_event: Callable[[str, Any], None], reopen_s: float = 1.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.engine = link.Link(frame.ROLE_HUB, version, _now_ms(), key)
        self._auth_errors_said = 0  # the engine's auth_errors when they were last logged
        self._said: dict[str, float] = {}  # what was logged once a minute at most, and when
        self._on_event = on_event
        self._reopen_s = reopen_s
        self._serial: serial.Serial | None = None
        self._wbuf = bytearray()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> str:
        return self.engine.state

    def restart_session(self) -> list[bytes]:
        """Start a new link session (wire.link.Link.restart): what is queued or in flight is
        dropped and returned, and never reaches the bridge, now or when the link is back."""
        dropped = self.engine.restart(_now_ms())
        self._wake.set()
        return dropped

    def send(self, payload: bytes) -> None:
        """Queue one payload for the bridge (raises link.LinkFull at the queue bound)."""
        self.engine.send(payload)
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open()
        self._task = asyncio.create_task(self._run(), name="serial-link")

    async def close(self) -> None:
        # The flag ends the loop even if a cancel is swallowed: on Python 3.11 a wait_for whose
        # awaitable is already done when the cancel arrives returns normally instead of raising.
        self._closing = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            # asyncio.wait neither raises the task's CancelledError nor swallows our own.
            await asyncio.wait([self._task])
        self._close_port()

    def _open(self) -> bool:
        try:
            ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0,
                                exclusive=True)
        except (serial.SerialException, OSError) as e:
            log.warning("cannot open bridge port %s: %s; retrying", self.port, e)
            return False
        self._serial = ser
        assert self._loop is not None
        self._loop.add_reader(ser.fileno(), self._readable)
        log.info("bridge port %s open at %d baud", self.port, self.baudrate)
        return True

    def _close_port(self) -> None:
        if self._serial is not None and self._loop is not None:
            try:
                self._loop.remove_reader(self._serial.fileno())
                self._loop.remove_writer(self._serial.fileno())
            except (ValueError, OSError):
                pass
            self._serial.close()
        self._serial = None
        self._wbuf.clear()

    def _port_failed(self, err: Exception) -> None:
        log.error("bridge port %s failed: %s; reopening", self.port, err)
        self._close_port()
        self._wake.set()

    def _readable(self) -> None:
        assert self._serial is not None
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as e:
            self._port_failed(e)
            return
        if not data:
            self._port_failed(OSError("end of file"))
            return
        self.engine.feed(data, _now_ms())
        self._say_unverified()
        self._dispatch()
        self._wake.set()

    def _say_unverified(self) -> None:
        # Frames that fail their tag: a bridge with another link key (re-provisioned on one side
        # only) or someone on the wire. Said at most once a minute with the fix, never acted on.
        count = self.engine.stats["auth_errors"]
        if count != self._auth_errors_said and self._once_a_minute("auth"):
            log.error("%d frame(s) from the bridge failed authentication%s: the link key in hubd.env "
                      "(HUBD_SERIAL__LINK_KEY) and the bridge's bridge.json (link.key) must be the same: "
                      "provision both with hubctl provision, then hubctl flash", count - self._auth_errors_said,
                      "" if self.engine.state == link.UP else " and the link is down")
            self._auth_errors_said = count

    def _say_foreign(self, major: int) -> None:
        # Link protocol 1 had no tags, so a bridge of an older release cannot verify its HELLO;
        # said once a minute with the fix, never acted on (it may as well be a forgery).
        if self._once_a_minute("foreign"):
            log.error("a bridge speaking link protocol %d (unauthenticated) is on the line, hubd speaks %d.%d: "
                      "flash matching firmware (hubctl flash)", major, link.PROTOCOL_MAJOR, link.PROTOCOL_MINOR)

    def _once_a_minute(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._said.get(what, -math.inf) < 60:
            return False
        self._said[what] = now
        return True

    def _writable(self) -> None:
        self._flush()

    def _flush(self) -> None:
        ser = self._serial
        if ser is None or not self._wbuf:
            return
        try:
            n = os.write(ser.fileno(), self._wbuf)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._port_failed(e)
            return
        del self._wbuf[:n]
        assert self._loop is not None
        if self._wbuf:
            self._loop.add_writer(ser.fileno(), self._writable)
        else:
            self._loop.remove_writer(ser.fileno())

    async def _run(self) -> None:
        while not self._closing:
            if self._serial is None:
                await asyncio.sleep(self._reopen_s)
                self._open()
                continue
            now = _now_ms()
            while out := self.engine.poll(now):  # one frame per call
                if len(self._wbuf) < 64 * 1024:  # a stuck port must not grow memory
                    self._wbuf += out
            self._dispatch()
            self._flush()
            self._wake.clear()
            wait = self.engine.next_poll_ms(_now_ms()) / 1000
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _dispatch(self) -> None:
        for kind, value in self.engine.events():
            if kind == link.EV_FOREIGN:  # a diagnosis for the log, not an event for the application
                self._say_foreign(value)
            else:
                self._on_event(kind, value)

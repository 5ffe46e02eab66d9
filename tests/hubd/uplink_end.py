"""A stand-in for the bridge's end of the LTE uplink, for hubd's tests until the firmware's lands.

Built from the real wire pieces (wire.link on a real pty, wire.uplink, wire.messages) and a real
TCP connection (to the real Mosquitto the test started), it keeps the contract of
/docs/second-path.md ("The uplink") as the bridge does: ``uplink_open`` answers ``open`` or a
refusal (``refuse``); hubd's DATA is written to the TCP connection and acknowledged with
``uplink_ack`` once written (more than wire.uplink.WINDOW outstanding: ``closed error``); the
broker's bytes go back as DATA only while the link has room for bulk; the broker closing is
``closed peer``, ``drop()`` is the network's end (``closed network``), the link going down closes
the socket (``closed host_link``). It is no kinder than the firmware: it acknowledges only what
it wrote, and never holds more than the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from typing import Any

from tests.fixtures import LINK_KEY
from wire import frame, link, messages
from wire import uplink as wire_uplink


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class UplinkEnd:
    """The bridge's end of the serial link with an uplink socket; ``routes`` maps the (host, port)
    hubd asks for to where the modem's network reaches it (default: as asked)."""

    def __init__(self, routes: dict[tuple[str, int], tuple[str, int]] | None = None) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.engine = link.Link(frame.ROLE_BRIDGE, "fw-uplink-test", _now_ms(), LINK_KEY)
        self.routes = dict(routes or {})
        self.refuse: str | None = None  # answer uplink_open with closed <refuse>
        self.hold_acks = False  # acknowledge nothing (hubd must stop at the window)
        self.mute = False  # answer no uplink_open (a modem that hangs)
        self.opens: list[tuple[str, int]] = []
        self.closes = 0  # uplink_close messages heard
        self.violations = 0  # more than WINDOW bytes outstanding from hubd
        self.max_outstanding = 0
        self.bytes_to_broker = 0
        self.bytes_from_broker = 0
        self.received: list[dict[str, Any]] = []
        self._outstanding = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._work: list[Any] = []  # decoded messages and DATA in arrival order
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        self._task = asyncio.create_task(self._pump())
        self._worker = asyncio.create_task(self._work_loop())

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        for task in (self._task, self._worker, self._reader_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._close_tcp()
        os.close(self._master)
        os.close(self._slave)

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def drop(self, why: str = "network") -> None:
        """The network ends the socket (coverage lost: pdpdeact)."""
        self._close_tcp()
        self._say("closed", why)

    def send(self, payload: bytes) -> None:
        self.engine.send(payload)

    # --- the link ---------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        self.engine.feed(data, _now_ms())
        self._drain()

    async def _pump(self) -> None:
        while True:
            out = b"".join(iter(lambda: self.engine.poll(_now_ms()), b""))
            self._drain()
            if out:
                os.write(self._master, out)
            await asyncio.sleep(0.005)

    def _drain(self) -> None:
        for kind, value in self.engine.events():
            if kind == link.EV_DATA:
                if wire_uplink.is_data(value):
                    self._work.append(wire_uplink.chunk(value))
                else:
                    msg = messages.decode(value)
                    self.received.append(msg)
                    self._work.append(msg)
                self._wake.set()
            elif kind in (link.EV_DOWN, link.EV_RESET) and self._writer is not None:
                self._close_tcp()
                self._say("closed", "host_link")  # said to the next session

    def _say(self, state: str, why: str | None) -> None:
        self.engine.send(messages.make(messages.UPLINK_STATE, state, why))

    # --- the modem's socket -----------------------------------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            while not self._work:
                self._wake.clear()
                await self._wake.wait()
            item = self._work.pop(0)
            if isinstance(item, bytes):
                await self._to_broker(item)
            elif item["m"] == messages.UPLINK_OPEN:
                await self._open(item["host"], item["port"])
            elif item["m"] == messages.UPLINK_CLOSE:
                self.closes += 1
                self._close_tcp()
                self._say("closed", "hubd")

    async def _open(self, host: str, port: int) -> None:
        self.opens.append((host, port))
        self._close_tcp()  # a reconnecting hubd: the open socket is closed first
        if self.mute:
            return
        if self.refuse is not None:
            self._say("closed", self.refuse)
            return
        real = self.routes.get((host, port), (host, port))
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*real), 10)
        except (OSError, TimeoutError):
            self._say("closed", "open_failed")
            return
        self._writer = writer
        self._outstanding = 0
        self._reader_task = asyncio.create_task(self._from_broker(reader, writer))
        self._say("open", None)

    async def _to_broker(self, chunk: bytes) -> None:
        if self._writer is None:
            return  # bytes for a socket already closed: the bridge drops them
        self._outstanding += len(chunk)
        self.max_outstanding = max(self.max_outstanding, self._outstanding)
        if self._outstanding > wire_uplink.WINDOW:
            self.violations += 1
            self._close_tcp()
            self._say("closed", "error")
            return
        self._writer.write(chunk)
        with contextlib.suppress(OSError):
            await self._writer.drain()
        self.bytes_to_broker += len(chunk)
        if not self.hold_acks:
            self._outstanding -= len(chunk)
            self.engine.send(messages.make(messages.UPLINK_ACK, len(chunk)))

    async def _from_broker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            while self.engine.bulk_room() <= 0 or self.engine.state != link.UP:
                await asyncio.sleep(0.005)  # the modem holds the rest
            try:
                data = await reader.read(wire_uplink.MAX_CHUNK)
            except OSError:
                data = b""
            if self._writer is not writer:
                return
            if not data:
                self._close_tcp()
                self._say("closed", "peer")
                return
            self.bytes_from_broker += len(data)
            self.engine.send(wire_uplink.data(data))

    def _close_tcp(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

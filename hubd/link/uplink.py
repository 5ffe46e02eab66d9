"""The LTE uplink's channel: a TCP connection on the bridge's modem, handed to paho as a socket.

    channel = Channel(bridge, LteBytes(state_dir / LteBytes.FILE))
    sock = await channel.open("broker.example", 8883, timeout=30)   # or UplinkError(why)
    # paho owns ``sock`` (one end of a socketpair); the channel pumps the other end

hubd's MQTT client (hubd/mqtt.py) connects through it when the path is LTE: paho wraps the
socket in its own TLS, so MQTT and TLS run end to end between hubd and the broker and the bridge
and the modem carry ciphertext (docs/second-path.md, "The uplink: hubd's side").

The pump, in the event loop:

- **out** (paho -> bridge): read paho's bytes only as far as the credit allows (at most
  wire.uplink.WINDOW bytes sent and not acknowledged by an ``uplink_ack``) and the link has room
  for bulk (Bridge.uplink_room); cut into wire.uplink.MAX_CHUNK chunks. Otherwise the bytes wait
  in the socketpair (paho's send blocks, as on a slow TCP connection).
- **in** (bridge -> paho): DATA chunks are written to the socketpair; what paho has not read yet
  waits in a buffer of at most MAX_INBOUND bytes (more: the stream is closed, ``error``).
- **end**: the bridge's ``uplink_state closed`` or the link going down closes the socketpair, so
  paho sees EOF and reconnects; paho closing its end sends ``uplink_close`` once what it wrote
  has been acknowledged (at most DRAIN_S), so its last packet (a DISCONNECT) is not overtaken
  by the close (a message goes before bulk on the link).

An ``uplink_state closed`` that arrives while an open waits for its answer and names the end of
an earlier socket (``host_link``, ``hubd``, ``peer``, ``network``: a bridge that says so to the
next session, or a close that crossed the open) is not taken as the answer.

LTE data costs money: :class:`LteBytes` counts the bytes each way per UTC day and keeps the
day's count in hubd's state directory, so a restart does not reset it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wire import hubside, messages
from wire import uplink as wire_uplink

log = logging.getLogger(__name__)

#: Bytes from the bridge paho has not read yet that the channel holds; beyond: the stream is closed.
MAX_INBOUND = 256 * 1024
#: How long paho's last bytes may take to be acknowledged before ``uplink_close`` goes anyway.
DRAIN_S = 5.0
#: How often a pump blocked on the link's bulk room looks again (the link says nothing when a
#: bulk payload leaves its queue).
ROOM_POLL_S = 0.01
#: Closed reasons that only an open stream can have: while an open waits they describe an
#: earlier socket. Every other reason (wire.messages.UPLINK_WHY) answers ``uplink_open``, so a
#: reason added to UPLINK_WHY fails the open at once instead of leaving it to time out.
STREAM_ENDINGS = ("hubd", "peer", "network", "host_link")
OPEN_FAILURES = tuple(why for why in messages.UPLINK_WHY if why not in STREAM_ENDINGS)
#: How long an open waits for the bridge's link to come up (hubd starting, a bridge restarting).
LINK_WAIT_S = 5.0
#: Seconds between writes of the day's byte counts (and at close): a crash loses at most this much.
SAVE_EVERY_S = 10.0


class UplinkError(OSError):
    """The uplink could not be opened or ended; ``why`` is one of wire.messages.UPLINK_WHY.
    An OSError, so paho takes it as a failed connect and tries again."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(f"LTE uplink: {why}" + (f" ({detail})" if detail else ""))
        self.why = why


def _utc_day(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).date().isoformat()


class LteBytes:
    """Bytes carried over LTE per UTC day, up (hubd -> broker) and down, kept in ``path``
    (JSON, written atomically at most every SAVE_EVERY_S and by :meth:`save`)."""

    FILE = "uplink-bytes.json"

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self.day = _utc_day(clock())
        self.up = 0
        self.down = 0
        self._saved_at = -float("inf")
        self._dirty = False
        try:
            kept = json.loads(self.path.read_text())
            if kept.get("day") == self.day:
                self.up = max(0, int(kept["up"]))
                self.down = max(0, int(kept["down"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("LTE byte count %s unreadable (%s): today's count starts at 0", self.path, exc)

    def today(self) -> tuple[str, int, int]:
        """(UTC day, bytes up, bytes down) for today."""
        self._roll()
        return self.day, self.up, self.down

    def add(self, up: int = 0, down: int = 0) -> None:
        self._roll()
        self.up += up
        self.down += down
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        """Write the day's count now (if it changed)."""
        if not self._dirty:
            return
        self._saved_at = time.monotonic()
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"day": self.day, "up": self.up, "down": self.down}))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            log.warning("cannot keep the LTE byte count in %s: %s", self.path, exc)

    def _roll(self) -> None:
        day = _utc_day(self._clock())
        if day != self.day:
            self.save()
            self.day, self.up, self.down = day, 0, 0
            self._dirty = True


class Channel:
    """The uplink as one stream at a time over the bridge (see the module docstring)."""

    def __init__(self, bridge: Any, counter: LteBytes) -> None:
        self._bridge = bridge
        self.counter = counter
        self._lock = asyncio.Lock()  # one open at a time
        self._answer: asyncio.Future[tuple[str, str | None]] | None = None
        self._mine: socket.socket | None = None  # our end of the stream's socketpair
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unacked = 0  # bytes sent to the bridge and not acknowledged
        self._reading = False
        self._room_poll: asyncio.TimerHandle | None = None
        self._inbound = bytearray()  # from the bridge, not yet taken by paho
        self._draining: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self.opened_at: float | None = None  # Unix time the current stream opened
        self._last_error: str | None = None  # why the last stream ended or an open failed
        self.last_error_at: float | None = None  # and when (Unix time)
        self.max_unacked = 0  # the most bytes ever outstanding (a test checks the window)
        self._stopping = False
        bridge.on_message(messages.UPLINK_STATE, self._on_state)
        bridge.on_message(messages.UPLINK_ACK, self._on_ack)
        bridge.on_uplink_data(self._on_data)
        bridge.on_link_change(self._on_link)

    @property
    def last_error(self) -> str | None:
        """Why the last stream ended or the last open failed (a wire.messages.UPLINK_WHY; None:
        nothing has failed since hubd started); ``last_error_at`` says when."""
        return self._last_error

    @last_error.setter
    def last_error(self, why: str | None) -> None:
        self._last_error = why
        self.last_error_at = time.time()

    @property
    def is_open(self) -> bool:
        return self._mine is not None and self._draining is None

    async def open(self, host: str, port: int, timeout: float) -> socket.socket:
        """Open a stream to ``host``:``port`` through the bridge's modem and return paho's end
        of it (a connected, blocking socket); an open stream is closed first. Raises
        :class:`UplinkError`."""
        if not (isinstance(host, str) and 0 < len(host) <= messages.MAX_ID and host.isascii()
                and host.isprintable() and not any(c in host for c in '",; ')):
            raise UplinkError("error", f"host {host!r} is not one the bridge can open")
        if not 0 < port < 65536:
            raise UplinkError("error", f"port {port} out of range")
        async with self._lock:
            self._loop = asyncio.get_running_loop()
            if self._stopping:
                raise UplinkError("hubd", "hubd is stopping")
            if self._mine is not None:
                self._end("hubd", tell=False)  # the bridge closes an open socket first itself
            if not self._bridge.is_up and not await self._bridge.wait_up(min(timeout, LINK_WAIT_S)):
                raise self._failed(UplinkError("host_link", "the bridge's link is down"))
            self._answer = self._loop.create_future()
            try:
                if not self._bridge.send(hubside.uplink_open(host, port)):
                    raise self._failed(UplinkError("host_link", "the link cannot take the request now"))
                try:
                    async with asyncio.timeout(timeout):
                        state, why = await self._answer
                except TimeoutError:
                    self._bridge.send(hubside.uplink_close())  # a late "open" must not stay open
                    raise self._failed(UplinkError("timeout", f"no answer within {timeout:g} s")) from None
            finally:
                self._answer = None
            if state != "open":
                raise self._failed(UplinkError(why or "error", "the bridge could not open it"))
            theirs, mine = socket.socketpair()
            mine.setblocking(False)
            self._mine = mine
            self._unacked = 0
            self._inbound.clear()
            self._drained.clear()
            self.opened_at = time.time()
            self._resume()
            log.info("LTE uplink open to %s:%d", host, port)
            return theirs

    def close(self) -> None:
        """End the stream now (paho sees EOF) and tell the bridge; nothing if none is open."""
        if self._mine is not None:
            self._end("hubd", tell=True)

    def stop_opening(self) -> None:
        """hubd is stopping: an open waiting for the bridge's answer fails now and no other is
        made (paho's thread, waiting in one, would hold up its own stop for OPEN_TIMEOUT_S)."""
        self._stopping = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(("closed", "hubd"))

    def _failed(self, exc: UplinkError) -> UplinkError:
        self.last_error = exc.why
        log.warning("%s", exc)
        return exc

    # --- out: paho -> bridge ---------------------------------------------------------------------

    def _resume(self) -> None:
        if self._mine is not None and not self._reading and self._draining is None:
            assert self._loop is not None
            self._loop.add_reader(self._mine.fileno(), self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._mine is not None and self._loop is not None:
            self._loop.remove_reader(self._mine.fileno())
        self._reading = False

    def _readable(self) -> None:
        mine = self._mine
        if mine is None:
            return
        credit = wire_uplink.WINDOW - self._unacked
        room = self._bridge.uplink_room()
        allowed = min(credit, room * wire_uplink.MAX_CHUNK)
        if allowed <= 0:
            self._pause()
            if credit > 0:  # blocked on the link's room: look again soon (an ack resumes the rest)
                self._poll_room()
            return
        try:
            data = mine.recv(allowed)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end("error", tell=True, detail=str(exc))
            return
        if not data:  # paho closed its end: close once its last bytes are acknowledged
            self._pause()
            self._draining = asyncio.get_running_loop().create_task(self._drain_then_close())
            return
        for i in range(0, len(data), wire_uplink.MAX_CHUNK):
            piece = data[i:i + wire_uplink.MAX_CHUNK]
            if not self._bridge.send_uplink(piece):  # the room was checked: only a link going down
                self._end("host_link", tell=False)
                return
            self._unacked += len(piece)
        self.max_unacked = max(self.max_unacked, self._unacked)
        self.counter.add(up=len(data))

    def _poll_room(self) -> None:
        if self._room_poll is None and self._loop is not None:
            self._room_poll = self._loop.call_later(ROOM_POLL_S, self._room_polled)

    def _room_polled(self) -> None:
        self._room_poll = None
        self._resume()

    async def _drain_then_close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                while self._unacked > 0:
                    self._drained.clear()
                    await self._drained.wait()
        self._draining = None
        if self._mine is not None:
            self._end("hubd", tell=True)

    def _on_ack(self, msg: dict[str, Any]) -> str | None:
        n = msg["n"]
        if self._mine is None:
            return "uplink_ack: no uplink open"
        if not 0 < n <= self._unacked:
            outstanding, self._unacked = self._unacked, 0  # believe no more than was sent
            self._drained.set()
            self._resume()
            return f"uplink_ack: {n} bytes acknowledged, {outstanding} outstanding"
        self._unacked -= n
        if self._unacked == 0:
            self._drained.set()
        self._resume()
        return None

    # --- in: bridge -> paho ----------------------------------------------------------------------

    def _on_data(self, chunk: bytes) -> str | None:
        if not chunk:
            return "uplink_data: empty"
        if self._mine is None:
            return "uplink_data: no uplink open"
        if self._draining is not None:  # paho has closed its end: nobody reads this
            self.counter.add(down=len(chunk))
            return None
        self.counter.add(down=len(chunk))
        if len(self._inbound) + len(chunk) > MAX_INBOUND:
            self._end("error", tell=True, detail="paho does not read")
            return "uplink_data: paho does not read"
        self._inbound += chunk
        self._write_inbound()
        return None

    def _write_inbound(self) -> None:
        mine = self._mine
        if mine is None or not self._inbound:
            return
        try:
            n = mine.send(self._inbound)
        except BlockingIOError:
            n = 0
        except OSError as exc:  # paho's end is gone: the reader sees its EOF
            log.debug("LTE uplink: paho's end gone: %s", exc)
            self._inbound.clear()
            return
        del self._inbound[:n]
        assert self._loop is not None
        if self._inbound:
            self._loop.add_writer(mine.fileno(), self._write_inbound)
        else:
            self._loop.remove_writer(mine.fileno())

    # --- end -------------------------------------------------------------------------------------

    def _on_state(self, msg: dict[str, Any]) -> str | None:
        state, why = msg["state"], msg["why"]
        if self._answer is not None and not self._answer.done():
            if state == "open" or why in OPEN_FAILURES:
                self._answer.set_result((state, why))
                return None
            log.info("LTE uplink: closed (%s) for an earlier socket while opening", why)
            return None
        if state == "open":  # a late answer to an open that timed out: close it on the bridge
            self._bridge.send(hubside.uplink_close())
            return "uplink_state: open, unasked"
        if self._mine is not None:
            log.warning("LTE uplink closed by the bridge: %s", why)
            self._end(why or "error", tell=False)
        elif why != "hubd":  # "hubd": the bridge confirms our own close
            self.last_error = why or "error"
        return None

    def _on_link(self, up: bool) -> None:
        if up:
            return
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(("closed", "host_link"))
        if self._mine is not None:
            self._end("host_link", tell=False)

    def _end(self, why: str, *, tell: bool, detail: str = "") -> None:
        """Close our end (paho sees what it has not read, then EOF); ``tell``: send uplink_close."""
        mine = self._mine
        if mine is None:
            return
        self._pause()
        if self._room_poll is not None:
            self._room_poll.cancel()
            self._room_poll = None
        if self._loop is not None:
            self._loop.remove_writer(mine.fileno())
        if self._inbound:  # what paho's buffer still takes
            with contextlib.suppress(OSError):
                mine.send(self._inbound)
            self._inbound.clear()
        mine.close()
        self._mine = None
        self._unacked = 0
        self._drained.set()
        if self._draining is not None and self._draining is not asyncio.current_task():
            self._draining.cancel()
        self._draining = None
        self.counter.save()
        if why != "hubd":
            self.last_error = why
        if tell:
            self._bridge.send(hubside.uplink_close())
        log.info("LTE uplink stream ended: %s%s", why, f" ({detail})" if detail else "")

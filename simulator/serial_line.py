"""The USB serial cable between the hub and the bridge, in software.

hubd opens the pty's device path exactly as it opens /dev/ttyUSB0; the firmware's UART shim gets
the other end as a socket. Between the two, the line can damage frames on purpose (flip a bit,
cut a frame short, drop it) and keeps a transcript of the frames that crossed, the way a logic
analyser on a bench would, so tests can see a damaged frame and its retransmission.

The line carries each direction at ``baud`` (10 bits a byte, simulator/pacing.py), as the real
cable's UART does (bridge.json's link baudrate, 115200), or as fast as the host goes when
``baud`` is None. DEFAULT_BAUD is the default (``HUB_SIM_LINE_BAUD`` in the environment
overrides it: 0 is unpaced); docs/architecture.md says what pacing costs the test suite.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tty
from collections import deque
from dataclasses import dataclass

from simulator.pacing import Uart
from wire import frame

TO_BRIDGE = "to_bridge"
TO_HUB = "to_hub"
LINK_BAUD = 115200  # the link's UART (simulator.home's bridge.json)
DEFAULT_BAUD: int | None = int(os.environ.get("HUB_SIM_LINE_BAUD", "0")) or None


@dataclass
class Crossing:
    """One frame seen on the line, after any damage the line did to it."""

    direction: str
    damage: str | None  # None, "corrupt", "truncate" or "drop"
    ftype: int | None  # decoded frame type, None when the frame no longer decodes
    seq: int | None
    body: bytes | None
    block: bytes | None = None  # the frame as it crossed, COBS-encoded, without its delimiter:
                                # what someone on the wire could record and play back later


def _frame_type(block: bytes) -> int | None:
    try:
        return frame.decode(block)[0]
    except frame.FrameError:
        return None


class SerialLine:
    """A pty for hubd joined to a socket for the firmware, with faults on demand."""

    def __init__(self, seed: int = 0, transcript: int = 2000,
                 baud: int | None = DEFAULT_BAUD) -> None:
        self._rng = random.Random(seed)
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._ours, self.firmware_end = socket.socketpair()
        self._ours.setblocking(False)
        self.firmware_end.setblocking(False)
        self.transcript: deque[Crossing] = deque(maxlen=transcript)
        self._pending: dict[str, bytearray] = {TO_BRIDGE: bytearray(), TO_HUB: bytearray()}
        # Planned damage per direction: (kind, frame type to wait for, or None for any frame).
        self._planned: dict[str, deque[tuple[str, int | None]]] = {TO_BRIDGE: deque(),
                                                                  TO_HUB: deque()}
        self.noise = {"corrupt": 0.0, "truncate": 0.0, "drop": 0.0}
        self.cut = False  # the cable is unplugged: nothing crosses
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uarts = {TO_BRIDGE: Uart(baud, self._to_bridge), TO_HUB: Uart(baud, self._to_hub)}

    @property
    def baud(self) -> int | None:
        """The line's pace, both ways; may change while running."""
        return self._uarts[TO_BRIDGE].baud

    @baud.setter
    def baud(self, baud: int | None) -> None:
        for uart in self._uarts.values():
            uart.baud = baud

    def damage_next(self, direction: str, kind: str = "corrupt", count: int = 1,
                    ftype: int | None = None) -> None:
        """Damage the next `count` frames going `direction` ("corrupt", "truncate", "drop").

        With `ftype` (e.g. frame.T_DATA) only frames of that type count; others pass intact.
        """
        if kind not in self.noise:
            raise ValueError(f"unknown damage {kind!r}")
        self._planned[direction].extend([(kind, ftype)] * count)

    def inject(self, direction: str, data: bytes) -> None:
        """Put raw bytes on the line towards ``direction``'s receiver, as a hostile or broken
        device on the cable would (nothing is recorded in the transcript)."""
        if not self.cut:
            self._write(direction, data)

    def frames(self, direction: str | None = None) -> list[Crossing]:
        return [c for c in self.transcript if direction in (None, c.direction)]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._from_hub)
        self._loop.add_reader(self._ours.fileno(), self._from_bridge)

    async def stop(self) -> None:
        for uart in self._uarts.values():
            uart.clear()
        if self._loop is not None:
            self._loop.remove_reader(self.master)
            self._loop.remove_reader(self._ours.fileno())
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._ours.close()
        self.firmware_end.close()

    def _from_hub(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return  # EIO: hubd closed its end for now; the line waits for it to come back
        self._cross(TO_BRIDGE, data)

    def _from_bridge(self) -> None:
        try:
            data = self._ours.recv(4096)
        except BlockingIOError:
            return
        if not data:
            assert self._loop is not None
            self._loop.remove_reader(self._ours.fileno())  # the firmware process is gone
            return
        self._cross(TO_HUB, data)

    def _cross(self, direction: str, data: bytes) -> None:
        if self.cut:
            return
        buf = self._pending[direction]
        buf += data
        out = bytearray()
        while True:
            end = buf.find(frame.DELIMITER)
            if end < 0:
                break
            block = bytes(buf[:end])
            del buf[: end + 1]
            if not block:
                out += frame.DELIMITER
                continue
            damage = self._damage_for(direction, block)
            block = self._apply(damage, block)
            self._record(direction, damage, block)
            if block is not None:
                out += block + frame.DELIMITER
        if out:
            self._write(direction, bytes(out))

    def _damage_for(self, direction: str, block: bytes) -> str | None:
        planned = self._planned[direction]
        if planned:
            kind, ftype = planned[0]
            if ftype is None or _frame_type(block) == ftype:
                planned.popleft()
                return kind
            return None
        r = self._rng.random()
        for kind, p in self.noise.items():
            if r < p:
                return kind
            r -= p
        return None

    def _apply(self, damage: str | None, block: bytes) -> bytes | None:
        if damage == "drop":
            return None
        b = bytearray(block)
        if damage == "corrupt":
            i = self._rng.randrange(len(b))
            b[i] ^= 1 << self._rng.randrange(8)
            if b[i] == 0:  # keep the frame one frame: a 0x00 would split it in two
                b[i] = 0xFF
        elif damage == "truncate":
            b = b[: self._rng.randrange(1, len(b))] if len(b) > 1 else b
        return bytes(b)

    def _record(self, direction: str, damage: str | None, block: bytes | None) -> None:
        ftype = seq = body = None
        if block is not None:
            try:
                ftype, seq, _, body, _ = frame.decode(block)
            except frame.FrameError:
                pass
        self.transcript.append(Crossing(direction, damage, ftype, seq,
                                        bytes(body) if body is not None else None, block))

    def _write(self, direction: str, data: bytes) -> None:
        self._uarts[direction].write(data)

    def _to_bridge(self, data: bytes) -> None:
        if self.cut:
            return  # still on its way when the cable was pulled: lost, as on a real one
        try:
            self._ours.sendall(data)
        except (BlockingIOError, OSError):
            pass  # a full or closed receiver loses bytes, as a real UART FIFO would

    def _to_hub(self, data: bytes) -> None:
        if self.cut:
            return
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            pass

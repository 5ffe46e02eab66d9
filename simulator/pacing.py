"""Bytes on a timeline: what the simulator's wires use to make bytes arrive no sooner than real
ones would.

`Timeline` hands items on in the order given, each at its due time (the event loop's clock),
never before. `Uart` is one direction of a UART at its baud rate: 8N1 framing spends 10 bits on
a byte (start bit, 8 data bits, stop bit), so at 115200 baud a byte takes 86.8 us and a
1460-byte AT+QISEND payload 126.7 ms. simulator.serial_line paces the hub-bridge cable with it,
simulator.modem the BG95's UART, simulator.lte_network the network's segments with a Timeline.

A late event loop only makes delivery later, never earlier: a test may take the model's time as
a lower bound of what it measures, never as an upper one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
PIECE = 64  # a UART's bytes are handed on this many at a time: the far end sees them trickle in


def line_time(n: int, baud: int | None) -> float:
    """Seconds a UART at ``baud`` needs for ``n`` bytes (0 when ``baud`` is None: unpaced)."""
    return n * BITS_PER_BYTE / baud if baud else 0.0


class Timeline:
    """Hands items to ``deliver`` in the order they were given, each no sooner than its due
    time; an item due before the one ahead of it waits for that one (a wire keeps order)."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self._deliver = deliver
        self._queue: deque[tuple[float, Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.last = 0.0  # the due time of the latest item given

    def __len__(self) -> int:
        return len(self._queue)

    def items(self) -> list[Any]:
        """What is still on its way."""
        return [item for _, item in self._queue]

    def at(self, due: float, item: Any) -> None:
        loop = asyncio.get_running_loop()
        due = max(due, self.last)
        self.last = due
        if not self._queue and due <= loop.time():
            self._deliver(item)
            return
        self._queue.append((due, item))
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._run)

    def clear(self) -> None:
        """Forget everything on its way (the wire is cut)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _run(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        while self._queue and self._queue[0][0] <= loop.time():
            self._deliver(self._queue.popleft()[1])
        if self._queue and self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._run)


class Uart:
    """One direction of a UART at ``baud`` (None: as fast as the host goes). ``write(data)``
    hands the bytes to ``deliver`` as the line would carry them; ``await carry(n)`` is the
    receiving end's form, for bytes already read: it returns when n bytes would have arrived.
    ``baud`` may change while running; bytes already on the line keep their time."""

    def __init__(self, baud: int | None, deliver: Callable[[bytes], None] | None = None) -> None:
        self.baud = baud
        self._free = 0.0  # when the line has sent everything given so far
        self._line = Timeline(deliver or (lambda _: None))

    def _due(self, n: int) -> float:
        now = asyncio.get_running_loop().time()
        self._free = max(now, self._free) + line_time(n, self.baud)
        return self._free

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), PIECE):
            piece = data[i:i + PIECE]
            self._line.at(self._due(len(piece)), piece)

    async def carry(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        wait = self._due(n) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    def clear(self) -> None:
        self._line.clear()

"""The hub-bridge cable (simulator/serial_line.py) at its baud rate: bytes cross no faster than
a UART would carry them (10 bits a byte), each way, intact and in order. Times are asserted only
as lower bounds from the model: a loaded machine can only make the line slower."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from simulator.pacing import line_time
from simulator.serial_line import SerialLine
from tests.waiting import until
from wire import frame


def frames(n: int) -> bytes:
    """n bytes of frames: no zero inside, a delimiter at the end (the line forwards whole
    frames)."""
    body = bytes(b or 1 for b in os.urandom(n - 1))
    return body + frame.DELIMITER


@pytest.fixture
async def line() -> AsyncIterator[tuple[SerialLine, int]]:
    ln = SerialLine(baud=115200)
    await ln.start()
    hub = os.open(ln.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    yield ln, hub
    os.close(hub)
    await ln.stop()


async def test_hub_to_bridge_at_the_baud_rate(line: tuple[SerialLine, int]) -> None:
    ln, hub = line
    data = frames(4000)
    loop = asyncio.get_running_loop()
    start = loop.time()
    os.write(hub, data)
    got = bytearray()

    def take() -> bool:
        try:
            got.extend(ln.firmware_end.recv(65536))
        except BlockingIOError:
            pass
        return len(got) >= len(data)

    await until(take, "the bytes at the bridge")
    assert loop.time() - start >= line_time(len(data), 115200) > 0.34
    assert bytes(got) == data


async def test_bridge_to_hub_at_the_baud_rate_and_the_knob_while_running(
        line: tuple[SerialLine, int]) -> None:
    ln, hub = line
    got = bytearray()

    def take(n: int) -> bool:
        try:
            got.extend(os.read(hub, 65536))
        except BlockingIOError:
            pass
        return len(got) >= n

    loop = asyncio.get_running_loop()
    for baud, n in ((115200, 3000), (9600, 300)):
        ln.baud = baud
        got.clear()
        data = frames(n)
        start = loop.time()
        ln.firmware_end.sendall(data)
        await until(lambda: take(n), "the bytes at the hub")
        assert loop.time() - start >= line_time(n, baud) > 0.25
        assert bytes(got) == data


async def test_bytes_still_on_the_line_when_it_is_cut_are_lost(line: tuple[SerialLine, int]) -> None:
    ln, hub = line
    ln.baud = 2400  # 300 bytes: 1.25 s on the line
    ln.firmware_end.sendall(frames(300))
    await until(lambda: ln.frames(), "the frame read off the bridge's end")
    ln.cut = True  # pulled while the bytes cross
    await asyncio.sleep(line_time(300, 2400))  # the sender's UART went on sending into nothing
    ln.cut = False
    ln.firmware_end.sendall(data := frames(10))  # what crosses after the cable is back
    got = bytearray()

    def take() -> bool:
        try:
            got.extend(os.read(hub, 65536))
        except BlockingIOError:
            pass
        return bytes(got).endswith(data)

    await until(take, "the later frame")
    assert len(got) - len(data) < 300  # what was on the line during the cut never arrived

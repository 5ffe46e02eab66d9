"""hubd's serial link driver (hubd/link/serial_port.py) on a real pty pair."""

from __future__ import annotations

import asyncio
import os
import tty

from hubd.link.serial_port import SerialLink
from wire import frame, link
from tests.fixtures import LINK_KEY


async def test_close_returns_even_when_a_frame_arrived_in_the_same_loop_turn() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    events: list[str] = []
    serial_link = SerialLink(os.ttyname(slave), 115200, "hubd test", LINK_KEY, lambda k, v: events.append(k))
    await serial_link.start()
    try:
        peer = link.Link(frame.ROLE_BRIDGE, "fw", 0, LINK_KEY)
        for _ in range(50):  # a bridge talking as fast as it can while hubd shuts down
            os.write(master, b"".join(iter(lambda: peer.poll(0), b"")))
            peer._hello_at = 0  # a HELLO at every round
            await asyncio.sleep(0)
        await asyncio.wait_for(serial_link.close(), 5)  # raises TimeoutError if close() hangs
    finally:
        os.close(master)
        os.close(slave)

"""pysiaalarm run as the alarm centre's SIA DC-09 receiver on loopback, for the tests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from wire import dc09

try:
    from pysiaalarm import SIAAccount
    from pysiaalarm.aio import SIAClient
except ImportError:  # a loud failure, never a silent skip: interop is a requirement
    SIAAccount = SIAClient = None

ACCOUNT = "12AB"
KEY = "0123456789ABCDEF"  # pysiaalarm takes the key as ASCII characters
KEY_B = KEY.encode()


def require_pysiaalarm() -> None:
    if SIAClient is None:
        pytest.fail('pysiaalarm is missing: .venv/bin/pip install "pysiaalarm>=3.1,<4"',
                    pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """pysiaalarm on loopback, with the events its callback saw."""

    def __init__(self, key: str | None = None, timeband: tuple[int, int] = (40, 20)) -> None:
        require_pysiaalarm()
        self.port = free_port()
        self.events: list[Any] = []
        self.client = SIAClient("127.0.0.1", self.port,
                                [SIAAccount(ACCOUNT, key, allowed_timeband=timeband)],
                                self._on_event)

    async def _on_event(self, event: Any) -> None:
        self.events.append(event)

    async def exchange(self, *frames: bytes) -> list[bytes]:
        """One connection; one frame per write, each answer read before the next frame."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        answers = []
        try:
            for f in frames:
                writer.write(f)
                await writer.drain()
                buf = b""
                while not dc09.answer_complete(buf):
                    chunk = await asyncio.wait_for(reader.read(512), 5)
                    assert chunk, "receiver closed the connection"
                    buf += chunk
                answers.append(buf)
        finally:
            writer.close()
        await asyncio.sleep(0.05)  # pysiaalarm runs the callback after it answered
        return answers

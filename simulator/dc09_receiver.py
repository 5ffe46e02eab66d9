"""The alarm centre's SIA DC-09 receiver: pysiaalarm (PyPI), unmodified, on a TCP port.

The bridge's second path (LTE) sends each alarm as an ADM-CID frame carrying the alarm's stable id
in its ``I`` extended-data field (wire/dc09.py). This receiver answers ACK/NAK/DUH as pysiaalarm
does, keeps every event it accepted, and hands the alarm id of each to ``on_alarm`` so the
reference alarm centre (simulator/alarm_centre.py) files both paths under one record.

    receiver = Dc09Receiver(accounts={"12AB": None}, on_alarm=centre.received_over_dc09)
    async with receiver:          # listening on 127.0.0.1:receiver.port
        ...
    receiver.alarm_ids()          # ids received, in arrival order (a repeat is a duplicate)

pysiaalarm's own limits apply: one frame per write (it NAKs two frames in one write), and a
timestamp outside the account's window is NAKed with the receiver's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from simulator.ports import free_port
from wire import dc09

try:
    from pysiaalarm import SIAAccount
    from pysiaalarm.aio import SIAClient
except ImportError:  # pragma: no cover - the sim extra installs it
    SIAAccount = SIAClient = None

log = logging.getLogger(__name__)

MISSING = 'pysiaalarm is missing: .venv/bin/pip install -e ".[sim]" (it is in the sim extra)'


def alarm_id_of(event: Any) -> str | None:
    """The alarm id a DC-09 event carries in its ``[I...]`` field, or None (e.g. a NULL message)."""
    extra = getattr(event, "x_data", None) or ""
    return extra[1:] if extra.startswith("I") and len(extra) > 1 else None


class Dc09Receiver:
    """pysiaalarm listening on ``host:port`` for the given accounts (account -> AES key text or None).

    ``timeband`` is pysiaalarm's allowed clock window (seconds before, after); a frame outside it
    is NAKed with the receiver's time, which the bridge takes as its clock.
    """

    def __init__(self, accounts: dict[str, str | None], *, host: str = "127.0.0.1",
                 port: int | None = None, timeband: tuple[int, int] = (40, 20),
                 on_alarm: Callable[[str], Any] | None = None) -> None:
        if SIAClient is None:
            raise RuntimeError(MISSING)
        self.host = host
        self.port = free_port(host) if port is None else port
        self.events: list[Any] = []
        self.on_alarm = on_alarm
        self._changed = asyncio.Event()
        self.client = SIAClient(host, self.port,
                                [SIAAccount(account, key, allowed_timeband=timeband)
                                 for account, key in accounts.items()],
                                self._on_event)

    async def __aenter__(self) -> Dc09Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.client.__aenter__()

    async def stop(self) -> None:
        await self.client.__aexit__(None, None, None)

    async def _on_event(self, event: Any) -> None:
        self.events.append(event)
        alarm_id = alarm_id_of(event)
        log.info("DC-09 %s from account %s: code %s, alarm %s", event.message_type,
                 event.account, event.code, alarm_id)
        if alarm_id is not None and self.on_alarm is not None:
            self.on_alarm(alarm_id)
        self._changed.set()

    def alarm_ids(self) -> list[str]:
        """The alarm id of every event received, in order (a repeated id is a duplicate)."""
        return [i for i in map(alarm_id_of, self.events) if i is not None]

    async def wait_for(self, alarm_id: str, timeout: float = 30.0) -> None:
        """Wait until an event with this alarm id has arrived (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while alarm_id not in self.alarm_ids():
                self._changed.clear()
                await self._changed.wait()

    async def exchange(self, *frames: bytes) -> list[bytes]:
        """Send frames on one connection, one frame per write, each answer read before the next
        (a test's own DC-09 transmitter)."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        answers = []
        try:
            for f in frames:
                writer.write(f)
                await writer.drain()
                buf = b""
                while not dc09.answer_complete(buf):
                    async with asyncio.timeout(5):
                        chunk = await reader.read(512)
                    if not chunk:
                        raise ConnectionError("the receiver closed the connection")
                    buf += chunk
                answers.append(buf)
        finally:
            writer.close()
        await asyncio.sleep(0.05)  # pysiaalarm runs the callback after it answered
        return answers

"""hubd's start-up closes what it opened on every way out: a failure half-way through (here the
state disk failing at the first prune, after the bridge's port and the database are open) leaves
no serial port held and no database open, and the failure itself reaches the caller."""

from __future__ import annotations

import asyncio
import errno
import os
import pty
import sqlite3
import tty

import pytest

from hubd.__main__ import run
from hubd.access.journal import Journal
from tests.hubd.test_mqtt_rejections import hub_config
from tests.fixtures import LINK_KEY


def _port_released(master: int) -> bool:
    """Whether nobody holds the pty's other end any more (Linux: reading the master fails EIO)."""
    while True:  # what hubd wrote (its HELLOs) comes first
        try:
            if not os.read(master, 4096):
                return False
        except BlockingIOError:
            return False  # still held, nothing more to read
        except OSError as exc:
            return exc.errno == errno.EIO


async def test_a_failure_during_start_up_closes_the_port_and_the_database(
        mosquitto, backend_key, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    port = os.ttyname(slave)
    os.close(slave)  # hubd opens it by name, as it would /dev/ttyUSB0
    base = hub_config(mosquitto, backend_key, tmp_path, "5")
    config = type(base).model_validate({**base.model_dump(), "serial": {"port": port, "baudrate": 115200,
                                                                         "link_key": LINK_KEY.hex()}})
    opened: list[sqlite3.Connection] = []

    def failing_prune(self: Journal) -> None:
        opened.append(self._store.conn)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Journal, "prune", failing_prune)
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await asyncio.wait_for(run(config, asyncio.Event()), 30)
        assert opened, "start-up never reached the failing prune: the test proves nothing"
        with pytest.raises(sqlite3.ProgrammingError):  # closed: "Cannot operate on a closed database"
            opened[0].execute("SELECT 1")
        assert _port_released(master), "hubd left the bridge's serial port open"
    finally:
        os.close(master)

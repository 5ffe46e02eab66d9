"""hubd as its own process, watched through its local socket: the tests of hubctl's commands that
talk to a running hubd (status, doctor, test-alarm, pair, decommission) share these."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubapi.models import HubStatus
from hubctl import doctor


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for hubd's socket (a unix socket path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hubd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for_status(socket: Path, hubd: subprocess.Popen[bytes], log: Path, what: str,
                    check: Callable[[HubStatus], bool], timeout: float = 60) -> HubStatus:
    """hubd's snapshot once ``check`` holds (generous: a loaded machine, not a speed test); a
    failure names ``what``, the last snapshot or error, and the tail of hubd's log."""
    deadline = time.monotonic() + timeout
    last: HubStatus | str = "no snapshot"
    while time.monotonic() < deadline and hubd.poll() is None:
        try:
            last = doctor.read_status(socket)
            if check(last):
                return last
        except doctor.StatusError as e:
            last = str(e)
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s; last: {last}\nhubd log:\n"
                         f"{log.read_text(errors='replace')[-4000:]}")

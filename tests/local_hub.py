"""hubd as its own process, watched through its local socket: the tests of hubctl's commands that
talk to a running hubd (status, doctor, test-alarm, pair, decommission) share these."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil_tests.harness import start_hubd, stop_hubd, write_hubd_config
from hubapi.models import HubStatus
from hubctl import reach
from simulator.home import HomeThread, SimulatedHome
from tests.fixtures import BackendKey, record_pairings
from tests.mosquitto import Mosquitto


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
            last = reach.status(reach.Hubd(socket, "the test's hubd"))
            if check(last):
                return last
        except reach.ReachError as e:
            last = str(e)
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s; last: {last}\nhubd log:\n"
                         f"{log.read_text(errors='replace')[-4000:]}")


@dataclass
class LocalHub:
    """A simulated home on its own thread and hubd on it as its own process, with its socket."""

    home: HomeThread
    hubd: subprocess.Popen[bytes]
    config: Path  # hubd.toml; hubd.env beside it when the test gave hubd secrets
    socket: Path
    log: Path

    def wait_for(self, what: str, check: Callable[[HubStatus], bool], timeout: float = 60) -> HubStatus:
        return wait_for_status(self.socket, self.hubd, self.log, what, check, timeout)

    def logs(self) -> str:
        """The tails of the bridge's and hubd's logs, for a failure message."""
        bridge = self.home.call(lambda: list(self.home.home.bridge.log))
        return ("bridge log:\n" + "\n".join(bridge[-40:]) + "\nhubd log:\n"
                + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        stop_hubd(self.hubd)
        self.home.stop()


def start_local_hub(home: SimulatedHome, broker: Mosquitto, key: BackendKey, etc: Path, socket: Path,
                    env: dict[str, str] | None = None, extra: str = "") -> LocalHub:
    """Start ``home`` and hubd on it: ``etc/hubd.toml`` names the home's paired locks, whose
    pairings go into hubd's state (``etc/hubd-state``, as hubctl pair leaves them), and serves
    the local socket at ``socket``; ``etc/bridge.json`` is the one the bridge boots with (the
    hub's copy, as hubctl provision leaves it: hubctl doctor holds the bridge to it); ``env``
    (HUBD_* secrets) goes to ``etc/hubd.env``, as provisioning writes it, and to hubd's
    environment, as systemd gives it; ``extra`` is more hubd.toml (e.g. ``[devices.absent_s]``).
    hubd logs to ``etc/../hubd.log``."""
    thread = HomeThread(home)
    thread.start()
    etc.mkdir(parents=True, exist_ok=True)
    config = etc / "hubd.toml"
    locks = {lock_id: lk.kind for lock_id, lk in home.locks.items() if lk.paired}
    record_pairings(etc / "hubd-state", (lk for lk in home.locks.values() if lk.paired))
    write_hubd_config(config, broker, home.port, key, locks, status_socket=socket, extra=extra,
                      link_key=home.link_key)
    (etc / "bridge.json").write_text(json.dumps(home.bridge_config(), indent=1) + "\n")
    if env:
        (etc / "hubd.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    log = etc.parent / "hubd.log"
    return LocalHub(thread, start_hubd(config, log, {**os.environ, **env} if env else None), config,
                    socket, log)

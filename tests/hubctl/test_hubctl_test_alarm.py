"""hubctl test-alarm end to end: a simulated home (the real bridge firmware in MicroPython, an alarm
unit and an LTE modem), a real Mosquitto, hubd as its own process with its local socket, and the
reference alarm centre (simulator/alarm_centre.py) with its DC-09 receiver (pysiaalarm).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hubapi.models import HubStatus
from simulator.alarm_centre import AlarmCentre, AlarmRecord
from simulator.alarm_unit import AlarmUnit
from simulator.dc09_receiver import alarm_id_of
from simulator.ports import free_port
from simulator.home import SimulatedHome, default_locks
from tests.fixtures import BackendKey
from tests.local_hub import LocalHub, start_local_hub
from tests.hubctl_cli import hubctl, hubctl_in_process, one_error_line
from tests.mosquitto import Mosquitto
from tests.sia_receiver import ACCOUNT, require_pysiaalarm
from wire import alarms

T = TypeVar("T")


class CentreThread:
    """The reference alarm centre on its own event loop, so the test can block on hubctl."""

    def __init__(self, centre: AlarmCentre) -> None:
        self.centre = centre
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="alarm-centre",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.run(self.centre.start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def record(self, alarm_id: str) -> AlarmRecord | None:
        return self.call(lambda: self.centre.alarms.get(alarm_id))

    def dc09_events(self) -> list[Any]:
        assert self.centre.dc09 is not None
        return self.call(lambda: list(self.centre.dc09.events))

    def stop(self) -> None:
        try:
            self.run(self.centre.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@dataclass
class Hub(LocalHub):
    centre: CentreThread

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.centre.stop()


def carries_alarms(s: HubStatus) -> bool:
    """hubd is connected and has heard the bridge report its alarm unit up."""
    h = s.bridge.health
    return (s.broker_connected and s.bridge.link_up and h is not None and h.unit is not None
            and h.unit.up)


@pytest.fixture
def make_hub(tmp_path: Path, backend_key: BackendKey, short_dir: Path) -> Iterator[Callable[..., Hub]]:
    """A simulated home, hubd with its socket, and the alarm centre with its DC-09 receiver on the
    port the bridge's LTE path sends to; all stopped afterwards."""
    require_pysiaalarm()
    started: list[Hub] = []

    def make(broker: Mosquitto, coverage: bool = True, alarm_unit: bool = True) -> Hub:
        dc09_port = free_port()
        centre = CentreThread(AlarmCentre(broker.host, broker.port, dc09_accounts={ACCOUNT: None},
                                          dc09_port=dc09_port))
        centre.start()
        home = SimulatedHome(tmp_path / "home", locks=default_locks(), health={"health_ms": 1000},
                             alarm_unit=AlarmUnit(heartbeat_s=0.5) if alarm_unit else None,
                             lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": dc09_port,
                                  "account": ACCOUNT, "receiver": "1", "retry_ms": 1000})
        assert home.modem is not None
        home.modem.coverage = coverage
        local = start_local_hub(home, broker, backend_key, tmp_path / "etc", short_dir / "status.sock")
        hub = Hub(local.home, local.hubd, local.config, local.socket, local.log, centre)
        started.append(hub)
        return hub

    yield make
    for hub in started:
        hub.stop()


def progress_and_id(proc: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The command's output and the alarm id it reported."""
    assert "Traceback" not in proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "journaled by the bridge as" in line)
    return proc.stdout, line.rsplit(" ", 1)[1]


def test_a_test_alarm_is_handled_by_the_centre_marked_as_a_test(mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto)
    hub.wait_for("the bridge reporting its alarm unit", carries_alarms)

    # No --socket: hubctl finds hubd by status_socket in hubd.toml, as status does.
    shown = hubctl("status", "--config", hub.config)
    assert shown.returncode == 0 and "alarm unit link up" in shown.stdout, shown.stderr
    proc = hubctl_in_process("test-alarm", "--timeout", "60", "--config", hub.config)
    assert proc.returncode == 0, proc.stdout + proc.stderr + hub.logs()
    assert f"asking hubd on {hub.socket}" in proc.stdout
    shown, alarm_id = progress_and_id(proc)
    for hop in ("sent to the bridge", "stored in hubd's outbox", "handled by the alarm centre after"):
        assert hop in shown
    assert shown.strip().splitlines()[-1].startswith(f"test alarm {alarm_id}: handled by the alarm "
                                                     "centre after")
    record = hub.centre.record(alarm_id)
    assert record is not None and record.first is not None and record.handled_at is not None
    assert record.first.test and record.first.event == alarms.TEST
    assert record.first.device.startswith("hubctl-test-")
    assert record.test
    assert not hub.centre.dc09_events()  # not over LTE unless asked


def test_with_second_path_the_dc09_receiver_gets_a_test_code_and_the_ack_is_reported(
        mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto)
    hub.wait_for("the bridge reporting its alarm unit and LTE",
                 lambda s: carries_alarms(s) and s.bridge.health.lte is not None  # type: ignore[union-attr]
                 and s.bridge.health.lte.registered is not None)  # type: ignore[union-attr]

    proc = hubctl("test-alarm", "--second-path", "--timeout", "60", "--socket", hub.socket)
    assert proc.returncode == 0, proc.stdout + proc.stderr + hub.logs()
    shown, alarm_id = progress_and_id(proc)
    assert "second path (LTE, SIA DC-09): ack after" in shown
    assert "; second path (LTE): ack after" in shown.strip().splitlines()[-1]
    frames = [e for e in hub.centre.dc09_events() if alarm_id_of(e) == alarm_id]
    assert frames, "the DC-09 receiver never got the test alarm"
    # Contact ID 601, new event: a manual test, not an emergency.
    assert (frames[0].account, frames[0].event_qualifier, frames[0].event_type) == (ACCOUNT, "1", "601")
    record = hub.centre.record(alarm_id)
    assert record is not None and record.handled_at is not None and record.test
    assert record.copies["dc09"] >= 1 and record.copies["mqtt"] >= 1


def test_without_lte_coverage_second_path_fails_in_one_line_naming_lte_and_the_primary_is_handled(
        mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto, coverage=False)
    hub.wait_for("the bridge reporting its alarm unit", carries_alarms)

    # The second path can only fail at the timeout: a short one (the primary is handled in well
    # under a second here; 5 s is the least hubctl takes).
    proc = hubctl("test-alarm", "--second-path", "--timeout", "8", "--socket", hub.socket)
    line = one_error_line(proc)
    assert "second path (LTE, SIA DC-09) did not answer within 8 s" in line
    assert "hubctl doctor" in line
    assert "the alarm centre handled test alarm" in line
    _, alarm_id = progress_and_id(proc)
    record = hub.centre.record(alarm_id)
    assert record is not None and record.handled_at is not None and record.test


def test_a_bridge_without_an_alarm_unit_is_refused_in_one_line(mosquitto, make_hub) -> None:
    hub = make_hub(mosquitto, alarm_unit=False)
    hub.wait_for("the bridge's health report",
                 lambda s: s.bridge.link_up and s.bridge.health is not None)

    line = one_error_line(hubctl("test-alarm", "--socket", hub.socket))
    assert "this bridge has no alarm unit" in line and "hubctl provision" in line


def test_with_hubd_not_running_it_says_so_in_one_line_naming_the_socket_and_where_it_came_from(
        short_dir: Path, tmp_path: Path) -> None:
    sock = short_dir / "status.sock"
    line = one_error_line(hubctl("test-alarm", "--socket", sock))
    assert f"hubd is not running (nothing answers on {sock}, as given with --socket)" in line
    assert "systemctl start hubd" in line
    config = tmp_path / "hubd.toml"
    config.write_text(f'status_socket = "{sock}"\n')
    line = one_error_line(hubctl_in_process("test-alarm", "--config", config))
    assert f"nothing answers on {sock}, status_socket in {config})" in line
    config.write_text('hub_id = "hub-1"\n')
    line = one_error_line(hubctl_in_process("test-alarm", "--config", config))
    assert f"nothing answers on /run/hubd/status.sock, hubd's default: {config} sets no " \
           "status_socket)" in line
    config.write_text("status_socket = [\n")  # unreadable: the default, and why
    line = one_error_line(hubctl_in_process("status", "--config", config))
    assert f"/run/hubd/status.sock, hubd's default, since config file {config} is not valid TOML" in line
    # pair and decommission read <etc-dir>/hubd.toml: their line names their flag
    config.write_text(f'status_socket = "{sock}"\n')
    line = one_error_line(hubctl_in_process("pair", "--scan", "--etc-dir", tmp_path))
    assert f"nothing answers on {sock}, status_socket in {config})" in line
    line = one_error_line(hubctl_in_process("pair", "--scan", "--etc-dir", short_dir))
    assert f"{short_dir / 'hubd.toml'} does not exist (pass --etc-dir or --socket)" in line


def test_bad_input_is_one_line_and_exit_status_2() -> None:
    proc = hubctl("test-alarm", "--timeout", "0")
    assert one_error_line(proc) and proc.returncode == 2


def test_help_has_an_example() -> None:
    proc = hubctl("test-alarm", "--help")
    assert proc.returncode == 0 and "Example:" in proc.stdout and "--second-path" in proc.stdout

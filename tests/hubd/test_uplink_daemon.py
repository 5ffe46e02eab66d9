"""hubd as its own process (hubd/__main__.py's wiring) in a home without broadband: hubd.toml's
``[uplink] mode = "lte"``, the real firmware's modem to the broker, and the status socket's
``uplink`` section as hubctl status and doctor read it."""

from __future__ import annotations

import json
from pathlib import Path

from hubapi.models import HubStatus
from simulator import lte_network
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome, default_locks

from simulator.ports import free_port
from tests.fixtures import BackendKey
from tests.local_hub import start_local_hub
from tests.mosquitto import Mosquitto
from tests.sia_receiver import ACCOUNT


def _on_lte(s: HubStatus) -> bool:
    return (s.broker_connected and s.uplink is not None and s.uplink.path == "lte"
            and s.uplink.last_lte_login is not None and s.uplink.lte_today.up > 0)


def test_hubd_in_a_home_without_broadband_runs_over_lte_and_says_so(
        tmp_path: Path, mosquitto: Mosquitto, backend_key: BackendKey, short_dir: Path) -> None:
    home = SimulatedHome(tmp_path / "home", locks=default_locks(), alarm_unit=AlarmUnit(heartbeat_s=0.5),
                         lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": free_port(),
                              "account": ACCOUNT, "receiver": "1", "retry_ms": 1000},
                         broker=(mosquitto.host, mosquitto.port), broadband=False)
    assert home.modem is not None
    home.modem.network.conditions = lte_network.fast()
    host, port = home.broker_address  # the home's router, cut from the start
    local = start_local_hub(home, mosquitto, backend_key, tmp_path / "etc", short_dir / "status.sock",
                            env={"HUBD_MQTT__HOST": host, "HUBD_MQTT__PORT": str(port)},
                            extra='[uplink]\nmode = "lte"\nlte_keepalive_s = 240\n')
    try:
        status = local.wait_for("a broker session over LTE", _on_lte, timeout=90)
        assert status.uplink is not None
        assert status.uplink.mode == "lte"
        assert status.uplink.last_error is None, status.uplink  # the link was awaited, not failed
        assert status.uplink.lte_today.down > 0
        # hubd's log names the path of its session.
        log = local.log.read_text(errors="replace")
        assert "over lte" in log, log[-2000:]
    finally:
        local.stop()
    kept = json.loads((tmp_path / "etc" / "hubd-state" / "uplink-bytes.json").read_text())
    assert kept["up"] >= status.uplink.lte_today.up and kept["day"] == status.uplink.lte_today.day

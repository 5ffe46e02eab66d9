"""hubctl pair and hubctl decommission against hubd as its own process, a real Mosquitto and a
simulated home (the real bridge firmware in MicroPython, simulated locks on a simulated radio).

A home with one lock already paired ("back-door") and one fresh from the box: the technician
lists the locks in reach, pairs the new one as "front-door" (refused while it is not in pairing
mode and with a wrong setup key), sees it proven with an unlock/lock cycle, and at the end
decommissions the hub: both locks forget the hub's secret but still work by hand, the backend
gets the retained notice, and no credential is left in the hub's files.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil_tests.harness import HUB_ID, retained
from hubapi import topics
from hubapi.models import Decommissioned
from simulator.home import SimulatedHome
from simulator.locks import InCylinderLock, InsideTurnerLock, ReferenceProtocolLock
from tests.fixtures import BackendKey
from tests.hubctl_cli import hubctl, one_error_line
from tests.local_hub import LocalHub, start_local_hub
from tests.mosquitto import Mosquitto

NEW_ADDR = "C0:FF:EE:00:00:07"
OLD_ADDR = "C0:FF:EE:00:00:01"
PASSWORD_LINE = 'HUBD_MQTT__PASSWORD="not-used-by-this-broker"\n'


@pytest.fixture
def hub(mosquitto: Mosquitto, tmp_path: Path, backend_key: BackendKey, short_dir: Path) -> Iterator[LocalHub]:
    old = InsideTurnerLock("back-door", OLD_ADDR, os.urandom(32))
    new = InCylinderLock("new-lock", NEW_ADDR, None, name="Front door", latch_hold_s=0.5,
                         relock_delay_s=0.3)
    home = SimulatedHome(tmp_path / "home", locks=[old, new],
                         policy={"scan_every_ms": 500, "scan_ms": 300})
    h = start_local_hub(home, mosquitto, backend_key, tmp_path / "etc", short_dir / "status.sock")
    try:
        etc = h.config.parent
        (etc / "hubd.env").write_text(PASSWORD_LINE)  # a secret for decommission to remove
        (etc / "bridge.json").write_text(json.dumps(home.bridge_config()))
        (etc / "bridge.json").chmod(0o600)
        h.wait_for("the bridge link up", lambda s: s.bridge.link_up)
        yield h
    finally:
        h.stop()


def lock(h: LocalHub, lock_id: str) -> ReferenceProtocolLock:
    return h.home.home.locks[lock_id]


def pair_args(h: LocalHub, *extra: str) -> list[str]:
    return ["pair", "--etc-dir", str(h.config.parent), "--socket", str(h.socket), "--seconds", "2", *extra]


def audit_entries(h: LocalHub) -> list[dict]:
    db = h.config.parent / "hubd-state" / "hubd.sqlite3"
    with sqlite3.connect(db) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT entry FROM audit ORDER BY seq")]


def test_scan_pair_prove_then_decommission(hub: LocalHub, mosquitto: Mosquitto) -> None:
    new = lock(hub, "new-lock")
    old = lock(hub, "back-door")

    listed = hubctl(*pair_args(hub, "--scan"))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.startswith("C0:")}
    assert set(rows) == {OLD_ADDR, NEW_ADDR}, listed.stdout
    assert "paired as back-door" in rows[OLD_ADDR] and "inside_turner" in rows[OLD_ADDR]
    assert "Front door" in rows[NEW_ADDR] and "in_cylinder" in rows[NEW_ADDR]
    assert "dBm" in rows[NEW_ADDR] and "100 %" in rows[NEW_ADDR]
    assert rows[NEW_ADDR].split()[-1] == "no"  # not in pairing mode

    key = new.setup_key.hex()
    refused = hubctl(*pair_args(hub, "--addr", NEW_ADDR, "--name", "front-door", "--setup-key", key))
    assert "not in pairing mode" in one_error_line(refused)
    assert not new.paired

    hub.home.call(new.press_pairing_button)
    wrong = hubctl(*pair_args(hub, "--addr", NEW_ADDR, "--name", "front-door",
                              "--setup-key", os.urandom(32).hex()))
    assert "refused the setup key" in one_error_line(wrong)
    assert not new.paired

    paired = hubctl(*pair_args(hub, "--addr", NEW_ADDR, "--name", "front-door", "--setup-key", key))
    assert paired.returncode == 0, paired.stdout + paired.stderr
    assert "front-door: in cylinder at C0:FF:EE:00:00:07 paired" in paired.stdout
    assert "proved: unlock unlocked, lock locked" in paired.stdout
    assert new.paired and new.moves[-2:] == ["unlock", "lock"] and new.state == "locked"
    secret = new.secret.hex()
    assert secret not in paired.stdout + paired.stderr  # never printed
    # Recorded: hubd.toml's [locks], the hub's bridge.json (0600) and the bridge's own flash.
    assert tomllib.loads((hub.config.parent / "hubd.toml").read_text())["locks"] == {
        "back-door": "inside_turner", "front-door": "in_cylinder"}
    for bridge_json in (hub.config.parent / "bridge.json", hub.home.home.bridge.workdir / "bridge.json"):
        entry = {lk["id"]: lk for lk in json.loads(bridge_json.read_text())["locks"]}["front-door"]
        assert entry["secret"] == secret and entry["addr"] == NEW_ADDR and entry["kind"] == "in_cylinder"
    assert (hub.config.parent / "bridge.json").stat().st_mode & 0o777 == 0o600
    audit = audit_entries(hub)
    technician = [e for e in audit if e["source"] == "technician"]
    assert [(e["lock"], e["outcome"], e["action"]) for e in technician] == [
        ("front-door", "paired", None), ("front-door", "succeeded", "unlock"),
        ("front-door", "succeeded", "lock")]
    assert all(e["actor"] == "hubctl" and e["role"] == "technician" for e in technician)

    again = hubctl(*pair_args(hub, "--addr", NEW_ADDR, "--name", "other", "--setup-key", key))
    assert "already paired with this hub as front-door" in one_error_line(again)

    # No alarm centre in this home: the supervision alarms of the bridge's restart (hub link lost,
    # restored) still wait for it, and decommissioning would strand them.
    waiting = hubctl("decommission", "--yes", "--etc-dir", hub.config.parent, "--socket", hub.socket)
    assert "still wait for the alarm centre" in one_error_line(waiting) and "--force" in waiting.stderr
    assert new.paired and old.paired and (hub.config.parent / "hubd.env").exists()

    decommissioned = hubctl("decommission", "--yes", "--force", "--etc-dir", hub.config.parent, "--socket", hub.socket)
    assert decommissioned.returncode == 0, decommissioned.stdout + decommissioned.stderr
    assert "back-door: forgot its secret" in decommissioned.stdout
    assert "front-door: forgot its secret" in decommissioned.stdout
    assert not new.paired and not old.paired
    # The resident's own use goes on.
    hub.home.call(lambda: old.turn_manually("unlocked"))
    assert old.state == "unlocked"
    notice = Decommissioned.model_validate_json(
        asyncio.run(retained(mosquitto, topics.decommissioned(HUB_ID))))
    assert notice.locks == {"back-door": "ok", "front-door": "ok"} and notice.by == "hubctl"
    # Nothing in the hub's files opens anything any more.
    assert not (hub.config.parent / "hubd.env").exists()
    hub_toml = tomllib.loads((hub.config.parent / "hubd.toml").read_text())
    assert "keys" not in hub_toml and "locks" not in hub_toml
    for bridge_json in (hub.config.parent / "bridge.json", hub.home.home.bridge.workdir / "bridge.json"):
        left = json.loads(bridge_json.read_text())
        assert "locks" not in left and "lte" not in left, bridge_json
    assert [e["outcome"] for e in audit_entries(hub) if e["outcome"] == "unpaired"] == ["unpaired"] * 2


def test_pair_without_hubd_and_bad_flags_fail_with_one_line(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hubd.toml").write_text('hub_id = "h"\n')
    (etc / "bridge.json").write_text("{}")
    key = "ab" * 32
    base = ["pair", "--etc-dir", str(etc), "--socket", str(tmp_path / "none.sock")]
    line = one_error_line(hubctl(*base, "--addr", NEW_ADDR, "--name", "front-door", "--setup-key", key))
    assert "hubd is not running" in line and "systemctl start hubd" in line
    assert "--setup-key" in one_error_line(hubctl(*base, "--addr", NEW_ADDR, "--name", "front-door",
                                                  "--setup-key", "123"))
    assert "--addr" in one_error_line(hubctl(*base, "--addr", "nope", "--name", "x", "--setup-key", key))
    assert "--name" in one_error_line(hubctl(*base, "--addr", NEW_ADDR, "--name", "front door!",
                                             "--setup-key", key))
    assert "give --name, --setup-key" in one_error_line(hubctl(*base, "--addr", NEW_ADDR))
    missing = one_error_line(hubctl("pair", "--etc-dir", str(tmp_path / "nowhere"), "--addr", NEW_ADDR,
                                    "--name", "x", "--setup-key", key))
    assert "provision the hub first" in missing
    line = one_error_line(hubctl("decommission", "--yes", "--etc-dir", str(etc), "--socket",
                                 str(tmp_path / "none.sock")))
    assert "hubd is not running" in line


@pytest.mark.parametrize("command", ["pair", "decommission"])
def test_help_has_an_example(command: str) -> None:
    shown = hubctl(command, "--help")
    assert shown.returncode == 0 and "Example:" in shown.stdout

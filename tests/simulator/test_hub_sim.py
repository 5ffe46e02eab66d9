"""hub-sim starts a home with the real firmware as the locks' Bluetooth proxy, names its serial
port and link key, records the locks' pairings in hubd's state, and stops on Ctrl-C; with
``--lock dkey`` and no state its front door is a new dKey, and it says how to pair it. As a
bench (``--bridge-config``) it boots the given bridge.json with parts unplugged as told; the
whole bench, walked with hubd and hubctl, is tests/hubctl/test_guide_walk.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.terminal import interruptible
from tests.simulator.test_demo import processes_using

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, *args: str, until: tuple[str, ...]) -> tuple[subprocess.Popen[str], str]:
    """hub-sim with ``args`` and its work dir in ``tmp_path``; what it printed until every one of
    ``until`` was in it (at most 30 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--workdir", str(tmp_path / "home"),
                             *args],
                            cwd=ROOT, env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
        if all(needle in "".join(lines) for needle in until):
            break
    return proc, "".join(lines)


def stop(proc: subprocess.Popen[str], tmp_path: Path, text: str) -> None:
    """Ctrl-C: hub-sim says it stopped, exits 0 and leaves no process behind."""
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "stopped" in rest
    assert not processes_using(tmp_path), "hub-sim left the firmware running"


def test_hub_sim_names_its_port_and_key_boots_the_firmware_records_the_pairings_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    state = tmp_path / "hubd-state"
    proc, text = start(tmp_path, "--state-dir", str(state),
                       until=("bridge firmware", "point hubd at the port"))
    assert "bridge serial port: /dev/pts/" in text
    assert 'front-door = "inside_turner"' in text and f"state_dir is {state}" in text
    port = text.split("bridge serial port: ")[1].split()[0]
    assert os.path.exists(port)
    key = text.split("HUBD_SERIAL__LINK_KEY=")[1].split()[0]
    bridge = json.loads((tmp_path / "home" / "bridge-flash" / "bridge.json").read_text())
    assert bridge["link"]["key"] == key and "locks" not in bridge, "hubd drives the locks"
    from hubd.store.database import Store
    from hubd.store.pairings import Pairings
    store = Store.open(state)
    try:
        assert Pairings(store).all()["front-door"].kind == "inside_turner"
    finally:
        store.close()
    stop(proc, tmp_path, text)


def test_hub_sim_with_a_new_dkey_prints_how_to_pair_it_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc, text = start(tmp_path, "--lock", "dkey",
                       until=("bridge firmware", "point hubd at the port", "front-door (dKey)"))
    assert 'front-door = "in_cylinder"' in text and "not paired with any hubd" in text
    pair = text.split("fresh from the box: ")[1].split("\n")[0].split()
    assert pair[:6] == ["hubctl", "pair", "--addr", "F0:94:0A:00:00:01", "--name", "front-door"]
    assert pair[6] == "--activation-code" and len(pair[7]) == 8, pair
    assert "front-door (dKey): locked, battery 30 (raw), 0 key holder(s), activation window open" \
        in text
    stop(proc, tmp_path, text)


def test_hub_sim_bench_boots_the_given_bridge_json_with_parts_unplugged_and_refuses_a_bad_one(
        tmp_path: Path) -> None:
    """The bench (--bridge-config) boots the bridge with the file as it is; --no-alarm-unit and
    --no-lte leave its sections' UARTs with nothing on them, and the firmware runs on; a lock's
    setup key is its label's. A file the firmware would refuse is one line, before any boot."""
    from simulator.bench import setup_key

    key = os.urandom(32).hex()
    bridge = tmp_path / "bridge.json"
    bridge.write_text(json.dumps({
        "link": {"uart": 1, "baudrate": 115200, "key": key},
        "alarm_unit": {"uart": 2, "baudrate": 9600, "serial": "5A0000AB"},
        "lte": {"apn": "internet.m2m", "host": "dc09.example", "port": 12000, "account": "12AB"}}))
    proc, text = start(tmp_path, "--bridge-config", str(bridge), "--no-alarm-unit", "--no-lte",
                       "--no-centre", "--locks", "key_box", "--travel-time", "0.1",
                       until=("bridge firmware 0.1.0 up", "no hubd.toml beside"))
    assert "bridge firmware 0.1.0 up: alarm unit, LTE, proxy" in text, text
    assert "alarm unit: none on UART 2 (--no-alarm-unit: unplugged" in text, text
    assert "LTE modem: none (--no-lte: unplugged" in text, text
    assert "key_box at C0:FF:EE:00:00:13, unpaired" in text and \
        f"setup key {setup_key('C0:FF:EE:00:00:13').hex()}" in text, text
    flashed = json.loads((tmp_path / "home" / "bridge-flash" / "bridge.json").read_text())
    assert flashed == json.loads(bridge.read_text()), "the bridge boots with the file as it is"
    stop(proc, tmp_path, text)

    bridge.write_text(json.dumps({"link": {"uart": 1, "key": "00"}}))
    bad = subprocess.run([sys.executable, "-m", "simulator", "--bridge-config", str(bridge)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith(
        f"hub-sim: error: the bridge would not start with {bridge}: link.key") and \
        len(bad.stderr.splitlines()) == 1, bad.stderr

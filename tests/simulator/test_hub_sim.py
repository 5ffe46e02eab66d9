"""hub-sim starts a home with the real firmware as the locks' Bluetooth proxy, names its serial
port and link key, records the locks' pairings in hubd's state, and stops on Ctrl-C; with
``--lock dkey`` and no state its front door is a new dKey, and it says how to pair it."""

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


def test_hub_sim_names_its_port_and_key_boots_the_firmware_records_the_pairings_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    state = tmp_path / "hubd-state"
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--workdir", str(tmp_path / "home"),
                             "--state-dir", str(state)],
                            cwd=ROOT, env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
        text = "".join(lines)
        if "bridge firmware" in text and "point hubd at the port" in text:
            break
    text = "".join(lines)
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
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "stopped" in rest
    assert not processes_using(tmp_path), "hub-sim left the firmware running"


def test_hub_sim_with_a_new_dkey_prints_how_to_pair_it_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--lock", "dkey",
                             "--workdir", str(tmp_path / "home")],
                            cwd=ROOT, env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
        text = "".join(lines)
        if "bridge firmware" in text and "point hubd at the port" in text \
                and "front-door (dKey)" in text:
            break
    text = "".join(lines)
    assert 'front-door = "in_cylinder"' in text and "not paired with any hubd" in text
    pair = text.split("fresh from the box: ")[1].split("\n")[0].split()
    assert pair[:6] == ["hubctl", "pair", "--addr", "F0:94:0A:00:00:01", "--name", "front-door"]
    assert pair[6] == "--activation-code" and len(pair[7]) == 8, pair
    assert "front-door (dKey): locked, battery 30 (raw), 0 key holder(s), activation window open" \
        in text
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "stopped" in rest
    assert not processes_using(tmp_path), "hub-sim left the firmware running"

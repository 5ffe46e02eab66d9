"""The README's demo command runs the whole home and exits cleanly, leaving no process behind:
hubd drives the lock through the bridge's Bluetooth proxy, a nurse's unlock end to end; with
``--lock dkey`` the front door is a simulated dKey, driven through py-dormakaba-dkey, and the
lock's side of its protocol is narrated step by step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def processes_using(path: Path) -> list[str]:
    """Processes whose command line or working directory lies under `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def test_demo_once_shows_the_command_path_and_stops_everything(tmp_path: Path) -> None:
    env = dict(os.environ, NO_COLOR="1", TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.demo", "--once", "--travel-time", "0.2", "--pause", "0.2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for who in ("backend", "hubd", "bridge", "lock", "unit", "centre"):
        assert f"{who} │" in out, f"the demo never showed the {who}"
    assert "→ unlock front-door" in out
    assert "← accepted" in out
    # The backend prepares the door before the nurse's tap; the unlock takes the held connection.
    assert out.index("→ prepare front-door") < out.index("prepare finished") < out.index("→ unlock front-door")
    assert out.index("visit: let go of front-door (used)") < out.index("lock command written  [lock=front-door action=unlock]")
    assert "← succeeded, lock unlocked" in out
    assert "← succeeded, lock locked" in out
    assert "motor turning" in out
    # Where a command's time went, with figures, not a bare "command timing".
    timing = next(line for line in out.splitlines() if "command timing" in line)
    assert re.search(r"verify \d+\.\d ms", timing) and re.search(r"operate \d+\.\d ms", timing), timing
    assert re.search(r"ble_requests \d+\.\d ms", timing), "hubd's driver through the proxy: " + timing
    # hubd drives the lock: the bridge is its proxy, and the lock's pairing is in hubd's state.
    assert "paired with hubd" in out and "Bluetooth proxy" in out
    # The resident's alarm: pressed, at the centre over MQTT, handled, and the resident hears it.
    assert "the resident presses the pendant button (event 1, alarm au5a000001-1)" in out
    assert "← au5a000001-1: button (first copy, over MQTT)" in out
    assert "→ au5a000001-1 handled by operator-sim" in out
    assert out.index("→ au5a000001-1 handled") > out.index("presses the pendant")
    # In the order it happened: the centre has the alarm before hubd hears it was handled.
    assert out.index("hubd │ alarm au5a000001-1 handled") > out.index("← au5a000001-1: button")
    assert 'event 1: plays "help is on the way"' in out
    assert "all stopped" in out
    assert f"working files in {tmp_path}" in out
    assert not processes_using(tmp_path), "the demo left processes behind"


def test_demo_once_with_a_dkey_front_door_narrates_its_protocol_steps(tmp_path: Path) -> None:
    env = dict(os.environ, NO_COLOR="1", TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.demo", "--once", "--lock", "dkey", "--travel-time", "0.2",
         "--pause", "0.2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "front-door is a dormakaba dKey, paired with hubd before" in out
    assert "→ unlock front-door" in out and "→ lock front-door" in out
    assert out.index("→ prepare front-door") < out.index("prepare finished") < out.index("→ unlock front-door")
    assert "← succeeded, lock unlocked" in out and "← succeeded, lock locked" in out
    # The lock's side, step by step, in the order it happened: hubd's first connection bonds
    # (the window closes), every session authenticates before a command is taken.
    steps = [line.split("front-door (dKey): ", 1)[1] for line in out.splitlines()
             if "lock │ front-door (dKey): " in line]
    assert steps[0].startswith("locked, battery 30 (raw), 1 key holder(s), activation window open")
    bonded = steps.index("bonded with the central (BLE); activation window closed")
    taken = steps.index("command taken")
    assert steps.index("a central connected") < bonded < taken
    assert "session ready (authenticated)" in steps[bonded:taken]
    assert steps.count("command taken") == 2 and steps.count("motor turning") == 2
    assert "unlocked" in steps and steps[-1] in ("locked", "disconnected")
    assert 'event 1: plays "help is on the way"' in out
    assert "all stopped" in out
    assert not processes_using(tmp_path), "the demo left processes behind"

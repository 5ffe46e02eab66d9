"""The README's demo command runs the whole home and exits cleanly, leaving no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_once_shows_the_command_path_and_stops_everything() -> None:
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.demo", "--once", "--travel-time", "0.2", "--pause", "0.2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for who in ("backend", "hubd", "bridge", "lock"):
        assert f"{who} │" in out, f"the demo never showed the {who}"
    assert "→ unlock front-door" in out
    assert "← accepted" in out
    assert "← succeeded, lock unlocked" in out
    assert "← succeeded, lock locked" in out
    assert "motor turning" in out
    assert "all stopped" in out
    leftovers = subprocess.run(["pgrep", "-f", "firmware/main.py|-m hubd --config .*hub-demo-"],
                               capture_output=True, text=True, check=False).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"

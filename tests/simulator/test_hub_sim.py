"""hub-sim starts a home with the real firmware, names its serial port, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.terminal import interruptible
from tests.simulator.test_demo import processes_using

ROOT = Path(__file__).resolve().parents[2]


def test_hub_sim_names_its_port_boots_the_firmware_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--workdir", str(tmp_path)],
                            cwd=ROOT, env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
        if "bridge firmware" in lines[-1]:
            break
    text = "".join(lines)
    assert "bridge serial port: /dev/pts/" in text
    assert "up with 1 lock(s): front-door" in text
    port = text.split("bridge serial port: ")[1].split()[0]
    assert os.path.exists(port)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, text + rest
    assert "stopped" in rest
    assert not processes_using(tmp_path), "hub-sim left the firmware running"

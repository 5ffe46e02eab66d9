"""benchmarks/heap.py's imports part (the runtime part is a soak: benchmarks/soak.py's test
covers that home). What is asserted is its shape, not its figures: every module the bridge boots
is measured in boot order on this environment's MicroPython, the cumulative column adds up, the
boot-only modules are marked and left out of what is kept; speed and sizes are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "heap.py"


def test_the_imports_table_measures_every_boot_module_in_order(tmp_path: Path) -> None:
    out = tmp_path / "heap.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--imports-only", "--micropython32",
                           str(tmp_path / "none"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO 32-bit column" in proc.stdout  # a missing build is said, never silently left out
    result = json.loads(out.read_text())
    assert set(result["imports"]) == {"64-bit"}
    modules = result["imports"]["64-bit"]["modules"]
    names = [m["module"] for m in modules]
    # The boot's order: the link before the alarm path, the proxy after it (firmware/startup.py).
    for first, then in [("wire.link", "hostlink"), ("hostlink", "alarms"), ("alarms", "lte"),
                        ("second_path", "ble_proxy")]:
        assert names.index(first) < names.index(then), names
    assert all(m["bytes"] > 0 for m in modules if not m["module"].startswith("asyncio")), modules
    running = 0
    for m in modules:
        running += m["bytes"]
        assert m["cumulative"] == running, m
    assert {m["module"] for m in modules if m["boot_only"]} == {"config", "startup"}
    assert f"all {running} B" in proc.stdout

"""Firmware unit tests, run inside the real MicroPython interpreter, one pytest item each."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.micropython import HEAP, micropython_binary, micropython_env

HERE = Path(__file__).parent
RUNNER = HERE / "runner.py"


def _collect() -> list[tuple[str, str]]:
    items = []
    for path in sorted(HERE.glob("mp_test_*.py")):
        out = subprocess.run(
            [micropython_binary(), "-X", f"heapsize={HEAP}", str(RUNNER), path.name, "--list"],
            env=micropython_env(HERE), capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            items.append((path.name, "<import failed>"))
            continue
        items.extend((path.name, name) for name in out.stdout.split())
    return items


@pytest.mark.parametrize(("module", "name"), _collect())
def test_in_micropython(module: str, name: str) -> None:
    """Run one firmware test function in MicroPython and require it to pass."""
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={HEAP}", str(RUNNER), module]
        + ([] if name.startswith("<") else [name]),
        env=micropython_env(HERE), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and f"PASS {name}" in proc.stdout, proc.stdout + proc.stderr

"""Running the real `hubctl` console script as a technician would, for the hubctl tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HUBCTL = Path(sys.executable).parent / "hubctl"


def hubctl(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``hubctl args...`` without the caller's HUBD_* settings; its output as text."""
    if not HUBCTL.exists():
        pytest.fail(f"{HUBCTL} is missing: pip install -e '.[test]'", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HUBD_")}
    return subprocess.run([str(HUBCTL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure as a technician sees it: a non-zero status and exactly one line, no trace."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]

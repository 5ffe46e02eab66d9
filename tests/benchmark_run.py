"""Running a benchmark from a test: the script to its end, its JSON and what it printed.

A benchmark prints figures and writes JSON; its test runs it small and checks what it wrote, never
how fast it was. One way to run them, so a hang or a failure reads the same in every such test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: Path, out: Path, *args: str, timeout: float = 240) -> tuple[dict[str, Any], str]:
    """Run ``script`` with ``args`` and ``--out out`` from the checkout's root: (the JSON it wrote,
    what it printed). A run still going after ``timeout`` is stopped with SIGTERM (a benchmark
    still stops hubd, the bridge and its broker then) and fails the test with its output; so
    does a run that exits non-zero."""
    proc = subprocess.Popen([sys.executable, str(script), *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark hung:\n{output}")
    assert proc.returncode == 0, output
    return json.loads(out.read_text()), output

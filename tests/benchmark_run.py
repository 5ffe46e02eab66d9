"""Running a benchmark from a test: the script to its end, its JSON and what it printed.

A benchmark prints figures and writes JSON; its test runs it small and checks what it wrote, never
how fast it was. One way to run them, so a hang or a failure reads the same in every such test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: Path, out: Path, *args: str, timeout: float = 240,
                  exit_status: Callable[[dict[str, Any]], int] = lambda _: 0,
                  ) -> tuple[dict[str, Any], str]:
    """Run ``script`` with ``args`` and ``--out out`` from the checkout's root: (the JSON it wrote,
    what it printed). A run still going after ``timeout`` is stopped with SIGTERM (a benchmark
    still stops hubd, the bridge and its broker then) and fails the test with its output; so
    does a run that wrote no JSON or whose exit status is not the one ``exit_status`` of its
    JSON says (0: a benchmark that judges nothing; the soak exits 1 with its violations)."""
    proc = subprocess.Popen([sys.executable, str(script), *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark hung:\n{output}")
    assert out.exists(), output
    result = json.loads(out.read_text())
    assert proc.returncode == exit_status(result), output
    return result, output

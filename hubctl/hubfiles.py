"""The hub's own files, one module for every command that reads or writes them (provision,
pair, decommission, audit export, doctor): where they live, their formats (hubd.toml, hubd.env as
systemd reads it, bridge.json), reading them with an error that says what to fix, and replacing
them atomically with their mode (and owner) set before their first byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from hubd.envfile import EnvFileError, read_env_file  # hubd.env's one definition: hubd reads it too

#: bridge.json's one definition: the firmware's own parser, in the checkout beside hubctl.

PUBLIC = 0o644
SECRET = 0o600
DIR_MODE = 0o755

# An installed hub's layout, the paths deploy/systemd/hubd.service names: here, not in the
# commands' own modules, so that hubctl's command line has its defaults without loading them.
DEFAULT_ETC = Path("/etc/hubd")
DEFAULT_CONFIG = DEFAULT_ETC / "hubd.toml"
DEFAULT_STATE = Path("/var/lib/hubd")
DEFAULT_DB = DEFAULT_STATE / "hubd.sqlite3"  # hubd's state database: its audit trail
DEFAULT_SERIAL = "/dev/ttyUSB0"  # the bridge's port
SERVICE_USER = "hubd"  # hubd.service's User=: the owner of the client key


class FilesError(Exception):
    """The hub's files cannot be read or written as they are; ``str()`` says what to do."""


@dataclass(frozen=True)
class Planned:
    """One file to write: its bytes, mode and (when run as root) owner."""

    path: Path
    data: bytes
    mode: int
    owner: tuple[int, int] | None = None


@dataclass(frozen=True)
class HubFiles:
    """Where hubd's configuration and the bridge's copy live (provision's layout)."""

    etc: Path
    bridge_json: Path

    @classmethod
    def at(cls, etc: Path, bridge_json: Path | None = None) -> HubFiles:
        etc = etc.absolute()
        return cls(etc, (bridge_json or etc / "bridge.json").absolute())

    @property
    def hubd_toml(self) -> Path:
        return self.etc / "hubd.toml"

    @property
    def hubd_env(self) -> Path:
        return self.etc / "hubd.env"

    def check_writable(self, bridge: bool = True) -> None:
        """Refuse before anything changes on the lock when the files cannot be updated after;
        ``bridge``: the hub's bridge.json too (decommission rewrites it, pairing does not)."""
        paths = (self.hubd_toml, self.bridge_json) if bridge else (self.hubd_toml,)
        for path in paths:
            if not path.exists():
                raise FilesError(f"{path} does not exist: provision the hub first "
                                 "(hubctl provision), or pass --etc-dir")
        read_toml(self.hubd_toml)
        if bridge:
            read_bridge(self.bridge_json)
        for path in paths:
            try:
                with path.open("r+b"):
                    pass
            except OSError as e:
                raise FilesError(f"cannot write {path}: {e.strerror}: run hubctl as root "
                                 "(sudo)") from None


def drop_visit_route(hub: dict[str, Any]) -> None:
    """hubd.toml's ``[visit] route`` removed (the section too when nothing else is set in it)."""
    visit = hub.get("visit")
    if isinstance(visit, dict):
        visit.pop("route", None)
        if not visit:
            del hub["visit"]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise FilesError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise FilesError(f"{path} is not valid TOML ({e}): fix it, or move it away to "
                             "provision afresh (its [locks] would then need hubctl pair again)") from None


def read_env(path: Path) -> dict[str, str]:
    """hubd.env as hubd reads it (none when it is not there yet); a file hubd would refuse is
    refused with the same line, before provision or decommission rewrites it."""
    try:
        return read_env_file(path, missing_ok=True)
    except EnvFileError as e:
        raise FilesError(str(e)) from None


def read_bridge(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise FilesError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise FilesError(f"{path} is not valid JSON ({e}): fix it, or move it away to "
                             "provision afresh (its locks would then need hubctl pair again)") from None
    if not isinstance(obj, dict):
        raise FilesError(f"{path} is not a bridge configuration (a JSON object): fix or move it")
    return obj


def toml_bytes(hub: dict[str, Any]) -> bytes:
    """hubd.toml as hubctl writes it."""
    head = ("# hubd's configuration, written by hubctl provision (which keeps what is here when\n"
            "# run again, but not comments). Secrets are in hubd.env (mode 0600).\n")
    return (head + tomli_w.dumps(hub)).encode()


def mode_of(path: Path) -> int:
    """A file's mode as it is (PUBLIC for a file not there yet): kept when it is replaced."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return PUBLIC


def json_bytes(obj: dict[str, Any]) -> bytes:
    """bridge.json as hubctl writes it."""
    return (json.dumps(obj, indent=1) + "\n").encode()


def replace(files: list[Planned]) -> None:
    """Replace each file atomically (its mode and owner set before its first byte), all or none
    renamed; the directories are synced so the renames survive a power cut."""
    staged: list[tuple[Path, Planned]] = []
    try:
        for f in files:
            staged.append((_stage(f), f))
        for tmp, f in staged:
            os.replace(tmp, f.path)
    except OSError as e:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise FilesError(f"cannot write {e.filename or 'the configuration'}: {e.strerror}") from None
    for d in {f.path.parent for f in files}:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stage(f: Planned) -> Path:
    fd, name = tempfile.mkstemp(dir=f.path.parent, prefix=f".{f.path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, f.mode)  # mode and owner before the first byte of a secret
        if f.owner is not None:
            os.fchown(fd, *f.owner)
        view = memoryview(f.data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)

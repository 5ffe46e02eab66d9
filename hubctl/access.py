"""The municipality's access in the hub's own files: a lock added by ``hubctl pair``, every
secret removed by ``hubctl decommission``.

The bridge keeps its own bridge.json on its flash (the firmware rewrites it when it pairs or
forgets a lock); the hub keeps a copy in ``etc/bridge.json`` that ``hubctl flash`` copies to a
new or reflashed bridge, so both are changed together. Files are replaced atomically with their
modes kept (provision.replace).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubctl import provision

DECOMMISSIONED = ("# This hub was decommissioned by hubctl decommission: no backend keys, no locks,\n"
                  "# no broker credentials. Provision it again (hubctl provision) to use it.\n")


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

    def check_writable(self) -> None:
        """Refuse before anything changes on the lock when the files cannot be updated after."""
        for path in (self.hubd_toml, self.bridge_json):
            if not path.exists():
                raise provision.ProvisionError(f"{path} does not exist: provision the hub first "
                                               "(hubctl provision), or pass --etc-dir")
        provision.existing_toml(self.hubd_toml)
        provision.existing_bridge(self.bridge_json)
        for path in (self.hubd_toml, self.bridge_json):
            try:
                with path.open("r+b"):
                    pass
            except OSError as e:
                raise provision.ProvisionError(f"cannot write {path}: {e.strerror}: run hubctl as root "
                                               "(sudo)") from None


def add_lock(files: HubFiles, lock: str, kind: str, addr: str, addr_type: int, secret: str) -> None:
    """The paired lock in hubd.toml's [locks] and the hub's bridge.json (0600: its secret)."""
    hub = provision.existing_toml(files.hubd_toml)
    hub.setdefault("locks", {})[lock] = kind
    bridge = provision.existing_bridge(files.bridge_json)
    locks = [lk for lk in bridge.get("locks", []) if lk.get("id") != lock]
    locks.append({"id": lock, "kind": kind, "protocol": "reference", "addr": addr.upper(),
                  "addr_type": addr_type, "secret": secret.lower()})
    bridge["locks"] = locks
    provision.replace([
        provision.Planned(files.hubd_toml, provision.toml_text(hub), _mode(files.hubd_toml)),
        provision.Planned(files.bridge_json, _json(bridge), provision.SECRET),
    ])


@dataclass
class Removed:
    """What decommission took out of the hub's files, for the checklist."""

    deleted: list[Path]
    rewritten: list[Path]


def remove_secrets(files: HubFiles) -> Removed:
    """Remove every credential and key the municipality gave this hub: the broker password file
    (hubd.env), the client certificate's key, the backend keys and locks in hubd.toml, the locks
    and LTE (DC-09 key) in the hub's bridge.json. The broker's CA and the audit trail in the state
    directory stay (they open nothing)."""
    deleted: list[Path] = []
    rewritten: list[Path] = []
    hub = provision.existing_toml(files.hubd_toml)
    mqtt = hub.get("mqtt", {})
    key_file = mqtt.pop("key_file", None)
    mqtt.pop("cert_file", None)
    mqtt.pop("password", None)  # should never be here, but if set by hand it is a secret
    hub.pop("keys", None)
    hub.pop("locks", None)
    planned = [provision.Planned(files.hubd_toml, DECOMMISSIONED.encode() + provision.toml_text(hub),
                                 _mode(files.hubd_toml))]
    bridge = provision.existing_bridge(files.bridge_json)
    if bridge:
        bridge.pop("locks", None)
        bridge.pop("lte", None)
        planned.append(provision.Planned(files.bridge_json, _json(bridge), provision.SECRET))
    provision.replace(planned)
    rewritten.extend(p.path for p in planned)
    for path in (files.hubd_env, *([Path(key_file)] if key_file else []),
                 files.etc / "tls" / "client.key", files.etc / "tls" / "client.crt"):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise provision.ProvisionError(f"cannot remove {path}: {e.strerror}: remove it by hand "
                                           "(it holds a credential)") from None
        if path not in deleted:
            deleted.append(path)
    return Removed(deleted, rewritten)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return provision.PUBLIC


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()

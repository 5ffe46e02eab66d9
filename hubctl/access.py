"""The municipality's access in the hub's own files: a lock added by ``hubctl pair``, every
secret removed by ``hubctl decommission``.

With ``lock_driver = "hubd"`` in hubd.toml hubd pairs the locks itself and keeps their secrets in
its state database: a lock paired is then only its name and kind in hubd.toml's [locks], and no
file of hubctl's ever holds a lock secret (:func:`add_lock` with ``secret`` None).

The bridge keeps its own bridge.json on its flash (the firmware rewrites it when it pairs or
forgets a lock); the hub keeps a copy in ``etc/bridge.json`` that ``hubctl flash`` copies to a
new or reflashed bridge, so both are changed together. Files are replaced atomically with their
modes kept (hubctl.hubfiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubctl.hubfiles import (SECRET, FilesError, HubFiles, Planned, json_bytes, mode_of, read_bridge,
                             read_toml, replace, toml_bytes)

DECOMMISSIONED = ("# This hub was decommissioned by hubctl decommission: no backend keys, no locks,\n"
                  "# no broker credentials. Provision it again (hubctl provision) to use it.\n")


def lock_driver(files: HubFiles) -> str:
    """Who runs the lock protocols on this hub: hubd.toml's ``lock_driver`` ("bridge" when
    unset, as hubd reads it)."""
    return str(read_toml(files.hubd_toml).get("lock_driver", "bridge"))


def add_lock(files: HubFiles, lock: str, kind: str, addr: str, addr_type: int,
             secret: str | None) -> None:
    """The paired lock in hubd.toml's [locks] and, with the bridge's drivers (``secret`` given),
    in the hub's bridge.json (0600: its secret). With ``secret`` None (hubd paired it and keeps
    the secret) only hubd.toml changes."""
    hub = read_toml(files.hubd_toml)
    hub.setdefault("locks", {})[lock] = kind
    if secret is None:
        replace([Planned(files.hubd_toml, toml_bytes(hub), mode_of(files.hubd_toml))])
        return
    bridge = read_bridge(files.bridge_json)
    locks = [lk for lk in bridge.get("locks", []) if lk.get("id") != lock]
    locks.append({"id": lock, "kind": kind, "protocol": "reference", "addr": addr.upper(),
                  "addr_type": addr_type, "secret": secret.lower()})
    bridge["locks"] = locks
    replace([
        Planned(files.hubd_toml, toml_bytes(hub), mode_of(files.hubd_toml)),
        Planned(files.bridge_json, json_bytes(bridge), SECRET),
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
    hub = read_toml(files.hubd_toml)
    mqtt = hub.get("mqtt", {})
    key_file = mqtt.pop("key_file", None)
    mqtt.pop("cert_file", None)
    mqtt.pop("password", None)  # should never be here, but if set by hand it is a secret
    hub.pop("keys", None)
    hub.pop("locks", None)
    planned = [Planned(files.hubd_toml, DECOMMISSIONED.encode() + toml_bytes(hub),
                                 mode_of(files.hubd_toml))]
    bridge = read_bridge(files.bridge_json)
    if bridge:
        bridge.pop("locks", None)
        bridge.pop("lte", None)
        planned.append(Planned(files.bridge_json, json_bytes(bridge), SECRET))
    replace(planned)
    rewritten.extend(p.path for p in planned)
    for path in (files.hubd_env, *([Path(key_file)] if key_file else []),
                 files.etc / "tls" / "client.key", files.etc / "tls" / "client.crt"):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise FilesError(f"cannot remove {path}: {e.strerror}: remove it by hand "
                                           "(it holds a credential)") from None
        if path not in deleted:
            deleted.append(path)
    return Removed(deleted, rewritten)



"""The municipality's access in the hub's own files: a lock added by ``hubctl pair``, every
secret removed by ``hubctl decommission``.

hubd pairs the locks itself and keeps their secrets in its state database: a lock paired is
only its name and kind in hubd.toml's [locks], and no file of hubctl's ever holds a lock secret.
The hub keeps a copy of the bridge's bridge.json in ``etc/bridge.json`` that ``hubctl flash``
copies to a new or reflashed bridge: it holds the link key and the LTE path's credentials, and no
lock (a ``locks`` list an older release wrote there is removed on decommission; the firmware
ignores it). Files are replaced atomically with their modes kept (hubctl.hubfiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubctl.hubfiles import (SECRET, FilesError, HubFiles, Planned, drop_visit_route, json_bytes, mode_of, read_bridge,
                             read_toml, replace, toml_bytes)

DECOMMISSIONED = ("# This hub was decommissioned by hubctl decommission: no backend keys, no locks,\n"
                  "# no broker credentials. Provision it again (hubctl provision) to use it.\n")


def add_lock(files: HubFiles, lock: str, kind: str) -> None:
    """The lock hubd paired in hubd.toml's [locks] (its secret is in hubd's state only)."""
    hub = read_toml(files.hubd_toml)
    hub.setdefault("locks", {})[lock] = kind
    replace([Planned(files.hubd_toml, toml_bytes(hub), mode_of(files.hubd_toml))])


@dataclass
class Removed:
    """What decommission took out of the hub's files, for the checklist."""

    deleted: list[Path]
    rewritten: list[Path]


def remove_secrets(files: HubFiles) -> Removed:
    """Remove every credential and key the municipality gave this hub: the broker password file
    (hubd.env), the client certificate's key, the backend keys, locks and visit route in hubd.toml, the LTE
    path's DC-09 key in the hub's bridge.json (and any locks an older release wrote there). The broker's CA and the audit trail in the state
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
    # The visit route names the locks just removed (hubd would refuse the file) and the home's
    # doors; its times stay.
    drop_visit_route(hub)
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



"""The bridge's configuration: bridge.json on the flash filesystem, written by provisioning.

    {"link": {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16},
     "log": "info",
     "locks": [{"id": "front-door", "kind": "reference", "addr": "C0:FF:EE:00:00:01",
                "addr_type": 0, "secret": "<64 hex digits>"}]}
"""

import json

from wire import messages

PATH = "bridge.json"
KINDS = ("reference",)


class ConfigError(ValueError):
    """The configuration file is missing a value or has a wrong one."""


def parse_addr(text):
    """'C0:FF:EE:00:00:01' -> 6 bytes."""
    parts = text.split(":") if isinstance(text, str) else ()
    if len(parts) != 6:
        raise ConfigError("lock address %r is not six hex bytes like C0:FF:EE:00:00:01" % (text,))
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ConfigError("lock address %r is not hex" % (text,))


def _lock(entry):
    if not isinstance(entry, dict):
        raise ConfigError("each lock must be an object")
    lock_id = entry.get("id")
    if not isinstance(lock_id, str) or not 0 < len(lock_id) <= messages.MAX_ID:
        raise ConfigError("lock id %r must be a string of 1..%d characters"
                          % (lock_id, messages.MAX_ID))
    kind = entry.get("kind", "reference")
    if kind not in KINDS:
        raise ConfigError("lock %s: kind %r is not one of %s" % (lock_id, kind, KINDS))
    secret = entry.get("secret")
    try:
        secret = bytes.fromhex(secret)
    except (TypeError, ValueError):
        raise ConfigError("lock %s: secret must be hex" % lock_id)
    if len(secret) != 32:
        raise ConfigError("lock %s: secret must be 32 bytes (64 hex digits)" % lock_id)
    addr_type = entry.get("addr_type", 0)
    if addr_type not in (0, 1):
        raise ConfigError("lock %s: addr_type must be 0 (public) or 1 (random)" % lock_id)
    return {"id": lock_id, "kind": kind, "addr": parse_addr(entry.get("addr")),
            "addr_type": addr_type, "secret": secret}


def parse(obj):
    """Check a decoded configuration object and return it normalised."""
    if not isinstance(obj, dict):
        raise ConfigError("configuration must be a JSON object")
    link = obj.get("link", {})
    if not isinstance(link, dict):
        raise ConfigError("link must be an object")
    uart = link.get("uart", 1)
    baudrate = link.get("baudrate", 115200)
    if not isinstance(uart, int) or not isinstance(baudrate, int) or baudrate <= 0:
        raise ConfigError("link.uart and link.baudrate must be positive integers")
    locks = [_lock(e) for e in obj.get("locks", [])]
    ids = [lk["id"] for lk in locks]
    for i in ids:
        if ids.count(i) > 1:
            raise ConfigError("lock id %s appears twice" % i)
    return {"link": {"uart": uart, "baudrate": baudrate, "tx": link.get("tx"),
                     "rx": link.get("rx")},
            "log": obj.get("log", "info"), "locks": locks}


def load(path=PATH):
    """Read and check the configuration file."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except OSError:
        raise ConfigError("no %s on the bridge: provision it (hubctl provision)" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    return parse(obj)

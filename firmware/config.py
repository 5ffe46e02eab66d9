"""The bridge's configuration: bridge.json on the flash filesystem, written by provisioning.

    {"link": {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16},
     "log": "info",
     "policy": {"idle_ms": 3000, "poll_ms": 1800000},
     "locks": [{"id": "front-door", "kind": "inside_turner", "protocol": "reference",
                "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": "<64 hex digits>"}],
     "alarm_unit": {"uart": 2, "baudrate": 9600, "tx": 4, "rx": 5, "heartbeat_ms": 10000},
     "health": {"health_ms": 60000, "wdt_ms": 30000, "ble_stuck_ms": 60000},
     "supply": {"cell_adc": 34, "cell_divider": 2, "ext_pin": 35}}

``kind`` is one of ``wire.lockkinds.KINDS``; ``protocol`` names the driver (only "reference"
today); ``policy`` overrides the BLE connection policy's defaults (``POLICY``), all in ms.
``alarm_unit`` is optional (a bridge without a safety alarm unit leaves it out): the unit's UART
and the alarm flow's timings (``ALARM_TIMINGS``, all in ms but ``missed``). ``health`` overrides
the health report's and the watchdogs' timings (``HEALTH``, ms). ``supply`` is how the board
measures its own supply: the backup cell on an ADC pin behind a divider (cell voltage = pin
voltage x ``cell_divider``), the external supply on an input pin (high: present); without it
the bridge reports no battery.

Only main.py imports this module, and drops it once the configuration is read: its code is
needed once, and heap is short.
"""

import json

from wire import lockkinds, messages

PATH = "bridge.json"
PROTOCOLS = ("reference",)
SECRET_LEN = 32

# The alarm unit link and the alarm flow (docs/alarm-unit.md; firmware/alarms.py uses them).
ALARM_TIMINGS = {
    "heartbeat_ms": 10000,  # the unit sends a heartbeat this often
    "missed": 3,  # heartbeats missed before the unit link counts as lost
    "resend_ms": 5000,  # resend an alarm hubd has not stored yet this often
    "handled_deadline_ms": 30000,  # no alarm_handled this long after taking it: second path
    "hub_down_ms": 10000,  # the host link down this long: second path for every alarm
    "prompt_resend_ms": 1000,  # resend a voice prompt the unit has not said HEARD for this often
}

# The BLE connection policy for battery locks (docs/lock-protocol.md, "Connection policy").
POLICY = {
    "connect_timeout_ms": 3000,  # one connection attempt
    "deadline_ms": 10000,  # everything before a command's write, retries included
    "result_timeout_ms": 8000,  # waiting for the RESULT after the write (motors take seconds)
    "settle_ms": 6000,  # a lock's status read may show the old state this long after a move
    "idle_ms": 3000,  # keep an unused connection this long, so a follow-up op is fast
    "poll_ms": 1800000,  # read state and battery this often (30 min)
    "scan_every_ms": 10000,  # look at the locks' adverts this often for their report counter
    "scan_ms": 1000,  # for this long (passive scan)
    "absent_ms": 600000,  # a lock not heard (advert or answer) this long is reported absent
}

# The health report and the watchdogs (firmware/health.py).
HEALTH = {
    "health_ms": 60000,  # send hubd a health report this often
    "wdt_ms": 30000,  # the chip's watchdog: a bridge whose host link task stalls resets
    "ble_stuck_ms": 60000,  # a BLE stack owing an event this long is restarted (far beyond
                            # any BLE timeout)
}


class ConfigError(ValueError):
    """The configuration file is missing a value or has a wrong one."""


def parse_addr(text):
    """'C0:FF:EE:00:00:01' -> 6 bytes."""
    parts = text.split(":") if isinstance(text, str) else ()
    if len(parts) != 6 or [p for p in parts if len(p) != 2]:
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
    kind = entry.get("kind")
    if kind not in lockkinds.KINDS:
        raise ConfigError("lock %s: kind %r is not one of %s"
                          % (lock_id, kind, ", ".join(lockkinds.KINDS)))
    protocol = entry.get("protocol", "reference")
    if protocol not in PROTOCOLS:
        raise ConfigError("lock %s: protocol %r is not one of %s"
                          % (lock_id, protocol, ", ".join(PROTOCOLS)))
    secret = entry.get("secret")
    try:
        secret = bytes.fromhex(secret)
    except (TypeError, ValueError):
        raise ConfigError("lock %s: secret must be hex" % lock_id)
    if len(secret) != SECRET_LEN:
        raise ConfigError("lock %s: secret must be %d bytes (%d hex digits)"
                          % (lock_id, SECRET_LEN, 2 * SECRET_LEN))
    addr_type = entry.get("addr_type", 0)
    if addr_type not in (0, 1) or isinstance(addr_type, bool):
        raise ConfigError("lock %s: addr_type must be 0 (public) or 1 (random)" % lock_id)
    return {"id": lock_id, "kind": kind, "protocol": protocol,
            "addr": parse_addr(entry.get("addr")), "addr_type": addr_type, "secret": secret}


def _timings(obj, defaults, section):
    if not isinstance(obj, dict):
        raise ConfigError("%s must be an object" % section)
    out = dict(defaults)
    for name, value in obj.items():
        if name not in defaults:
            raise ConfigError("%s: unknown setting %r (known: %s)"
                              % (section, name, ", ".join(sorted(defaults))))
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError("%s.%s must be a positive number of milliseconds"
                              % (section, name))
        out[name] = value
    return out


def _pin(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError("%s must be a pin number" % name)
    return value


def _supply(obj):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("supply must be an object")
    for name in obj:
        if name not in ("cell_adc", "cell_divider", "ext_pin"):
            raise ConfigError("supply: unknown setting %r" % name)
    divider = obj.get("cell_divider", 2)
    if not isinstance(divider, (int, float)) or isinstance(divider, bool) or divider <= 0:
        raise ConfigError("supply.cell_divider must be a positive number")
    ext = obj.get("ext_pin")
    return {"cell_adc": _pin(obj.get("cell_adc"), "supply.cell_adc"), "cell_divider": divider,
            "ext_pin": None if ext is None else _pin(ext, "supply.ext_pin")}


def _alarm_unit(obj):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("alarm_unit must be an object")
    out = dict(ALARM_TIMINGS)
    for name, value in obj.items():
        if name in ("tx", "rx"):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError("alarm_unit.%s must be a pin number" % name)
        elif name not in ALARM_TIMINGS and name not in ("uart", "baudrate"):
            raise ConfigError("alarm_unit: unknown setting %r" % name)
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError("alarm_unit.%s must be a positive integer" % name)
        out[name] = value
    out.setdefault("uart", 2)
    out.setdefault("baudrate", 9600)
    out.setdefault("tx", None)
    out.setdefault("rx", None)
    return out


# The second path: the LTE modem and the alarm centre's SIA DC-09 receiver (all times in ms).
LTE_DEFAULTS = {"uart": 3, "baudrate": 115200, "tx": None, "rx": None, "user": "",
                "password": "", "receiver": "", "line": "1", "key": None,
                "deadline_ms": 120000, "retry_ms": 10000}
_LTE_REQUIRED = ("apn", "host", "port", "account")


def _lte(obj):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("lte must be an object")
    for name in obj:
        if name not in LTE_DEFAULTS and name not in _LTE_REQUIRED:
            raise ConfigError("lte: unknown setting %r" % name)
    out = dict(LTE_DEFAULTS)
    out.update(obj)
    for name in _LTE_REQUIRED:
        if name not in obj:
            raise ConfigError("lte.%s is missing: the second path cannot reach the centre" % name)
    for name in ("apn", "host", "account", "user", "password", "receiver", "line"):
        if not isinstance(out[name], str):
            raise ConfigError("lte.%s must be a string" % name)
    acct = out["account"]
    if not 3 <= len(acct) <= 16 or any(c not in "0123456789ABCDEF" for c in acct):
        raise ConfigError("lte.account must be 3-16 upper-case hex digits")
    for name in ("uart", "baudrate", "port", "deadline_ms", "retry_ms"):
        value = out[name]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError("lte.%s must be a positive integer" % name)
    if out["key"] is not None and (not isinstance(out["key"], str)
                                   or len(out["key"]) not in (16, 24, 32)):
        raise ConfigError("lte.key must be the receiver's AES key: 16, 24 or 32 characters")
    return out


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
    entries = obj.get("locks", [])
    if not isinstance(entries, list):
        raise ConfigError("locks must be a list")
    locks = [_lock(e) for e in entries]
    seen_ids = []
    seen_addrs = []
    for lk in locks:
        if lk["id"] in seen_ids:
            raise ConfigError("lock id %s appears twice" % lk["id"])
        if lk["addr"] in seen_addrs:
            raise ConfigError("lock %s: its address is another lock's too" % lk["id"])
        seen_ids.append(lk["id"])
        seen_addrs.append(lk["addr"])
    return {"link": {"uart": uart, "baudrate": baudrate, "tx": link.get("tx"),
                     "rx": link.get("rx")},
            "log": obj.get("log", "info"),
            "policy": _timings(obj.get("policy", {}), POLICY, "policy"),
            "locks": locks, "alarm_unit": _alarm_unit(obj.get("alarm_unit")),
            "lte": _lte(obj.get("lte")),
            "health": _timings(obj.get("health", {}), HEALTH, "health"),
            "supply": _supply(obj.get("supply"))}


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

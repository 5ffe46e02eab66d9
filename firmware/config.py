"""The bridge's configuration: bridge.json on the flash filesystem, written by provisioning.

    {"link": {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "key": "<64 hex digits>"},
     "log": "info",
     "alarm_unit": {"uart": 2, "baudrate": 9600, "tx": 4, "rx": 5, "heartbeat_ms": 10000},
     "health": {"health_ms": 60000, "wdt_ms": 30000, "ble_stuck_ms": 60000},
     "supply": {"cell_adc": 34, "cell_divider": 2, "ext_pin": 35},
     "proxy": {"slots": 3, "scan_every_ms": 10000, "scan_ms": 1000, "presence_ms": 60000}}

``link.key`` is the serial link's key, the same as hubd's (``HUBD_SERIAL__LINK_KEY`` in hubd.env):
every frame between them carries a tag made with it (wire/link.py); ``hubctl provision`` makes it.
``alarm_unit`` is optional (a bridge without a safety alarm unit leaves it out): the unit's UART,
its ``serial`` (8 hex digits; frames of any other unit are then dropped) and the alarm flow's
timings (``ALARM_TIMINGS``, all in ms but ``missed``). ``health`` overrides
the health report's and the watchdogs' timings (``HEALTH``, ms). ``supply`` is how the board
measures its own supply: the backup cell on an ADC pin behind a divider (cell voltage = pin
voltage x ``cell_divider``), the external supply on an input pin (high: present); without it
the bridge reports no battery. ``proxy`` is optional: ``slots``, how many connections the
Bluetooth proxy holds for hubd at once (docs/ble-proxy.md; 1..``wire.messages.MAX_SLOTS``), and its
passive scan windows for watched addresses (``PROXY_SCANS``, ms).

The bridge drives no lock of its own (hubd does, through the proxy): a ``locks`` list or a
``policy`` section an older provisioning wrote is ignored, whatever it holds, and named in
``stale`` so startup.py says once how to drop it (``hubctl provision``); the alarm unit must
work meanwhile, so it never stops the boot.

Whatever bridge.json holds (any JSON, or none), load() and parse() raise only ConfigError, with
one line naming the setting; startup.py logs it and waits for a technician instead of resetting.
Every number has a range, every string a form, so nothing read here fails later in the bridge.

Only startup.py imports this module, and drops it once the configuration is read: its code is
needed once, and heap is short.
"""

import json

from wire import messages

PATH = "bridge.json"
LINK_KEY_LEN = 32  # wire.frame.KEY_SIZE, not imported: this module is read once and dropped
LOG_LEVELS = ("debug", "info", "warn", "error")  # firmware/log.py
MAX_FILE = 8192  # bytes of bridge.json (an alarm unit and LTE take about 1 KB; an older
                 # provisioning's four locks about 1 KB more)
MAX_NESTED = 32  # objects and arrays in it, counted before parsing: bounds its nesting depth
MAX_MS = 86400000  # a day: every time setting; ticks_add takes less than 2**29
MAX_PIN = 48  # the highest GPIO of an ESP32-S3 (the ESP32's is 39)
MAX_UART = 9
BAUDRATES = (300, 5000000)  # the range an ESP32 UART runs at

# The alarm unit link and the alarm flow (docs/alarm-unit.md; firmware/alarms.py uses them).
ALARM_TIMINGS = {
    "heartbeat_ms": 10000,  # the unit sends a heartbeat this often
    "missed": 3,  # heartbeats missed before the unit link counts as lost
    "resend_ms": 5000,  # resend an alarm hubd has not stored yet this often
    "handled_deadline_ms": 30000,  # no alarm_handled this long after taking it: second path
    "hub_down_ms": 10000,  # the host link down this long: second path for every alarm
    "prompt_resend_ms": 1000,  # resend a voice prompt the unit has not said HEARD for this often
}

# The Bluetooth proxy (firmware/ble_proxy.py, docs/ble-proxy.md).
PROXY_SLOTS = 3
# Its passive scan windows while hubd watches an address (ble_watch): a window of scan_ms every
# scan_every_ms on average (the gap drawn at random: ble_proxy._watch_gap). A ble_scan of
# hubd's serves the watches too. A watched address that is heard goes to hubd at least every presence_ms even unchanged (hubd judges absence from that: its
# absent_s must be longer).
PROXY_SCANS = {
    "scan_every_ms": 10000,
    "scan_ms": 1000,
    "presence_ms": 60000,
}
# What an older provisioning wrote for the bridge's own lock drivers: ignored (see above).
STALE = ("locks", "policy")

# The health report and the watchdogs (firmware/health.py).
HEALTH = {
    "health_ms": 60000,  # send hubd a health report this often
    "wdt_ms": 30000,  # the chip's watchdog: a bridge whose host link task stalls resets
    "ble_stuck_ms": 60000,  # a BLE stack owing an event this long is restarted (far beyond
                            # any BLE timeout)
}


class ConfigError(ValueError):
    """The configuration file is missing a value or has a wrong one."""


def _shown(value):
    # A bad value as an error line may quote it: short, on one line, never a structure's repr.
    text = repr(value) if isinstance(value, (str, int, float)) else type(value).__name__
    return text if len(text) <= 40 else text[:36] + "...'"


def _int(value, name, low=1, high=MAX_MS):
    # Whole numbers only: a bool is no number here, a float would fail in ticks arithmetic.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError("%s must be a whole number from %d to %d, not %s"
                          % (name, low, high, _shown(value)))
    return value


def _pin_or_none(value, name):
    return None if value is None else _int(value, name, 0, MAX_PIN)


def _text(value, name, low, high, extra=""):
    # Printable ASCII of low..high characters (the DC-09 and AT command fields are no more).
    if not isinstance(value, str) or not low <= len(value) <= high \
            or [c for c in value if not " " < c <= "~" or c in extra]:
        raise ConfigError("%s must be %d to %d printable ASCII characters%s, not %s"
                          % (name, low, high, " without " + extra if extra else "",
                             _shown(value)))
    return value


def _timings(obj, defaults, section):
    if not isinstance(obj, dict):
        raise ConfigError("%s must be an object" % section)
    out = dict(defaults)
    for name, value in obj.items():
        if name not in defaults:
            raise ConfigError("%s: unknown setting %s (known: %s)"
                              % (section, _shown(name), ", ".join(sorted(defaults))))
        out[name] = _int(value, "%s.%s (milliseconds)" % (section, name))
    return out


def _supply(obj):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("supply must be an object")
    for name in obj:
        if name not in ("cell_adc", "cell_divider", "ext_pin"):
            raise ConfigError("supply: unknown setting %s" % _shown(name))
    divider = obj.get("cell_divider", 2)
    # NaN fails every comparison, so it is refused too
    if not isinstance(divider, (int, float)) or isinstance(divider, bool) \
            or not 0 < divider <= 100:
        raise ConfigError("supply.cell_divider must be a number above 0, at most 100")
    return {"cell_adc": _int(obj.get("cell_adc"), "supply.cell_adc", 0, MAX_PIN),
            "cell_divider": divider,
            "ext_pin": _pin_or_none(obj.get("ext_pin"), "supply.ext_pin")}


def _proxy(obj):
    if not isinstance(obj, dict):
        raise ConfigError("proxy must be an object")
    out = {"slots": PROXY_SLOTS}
    out.update(PROXY_SCANS)
    for name, value in obj.items():
        if name not in out:
            raise ConfigError("proxy: unknown setting %s (known: %s)"
                              % (_shown(name), ", ".join(sorted(out))))
        out[name] = value
    _int(out["slots"], "proxy.slots", 1, messages.MAX_SLOTS)
    for name in PROXY_SCANS:
        _int(out[name], "proxy.%s (milliseconds)" % name)
    if out["scan_ms"] > out["scan_every_ms"]:
        raise ConfigError("proxy.scan_ms must be at most proxy.scan_every_ms")
    return out


def _alarm_unit(obj):
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("alarm_unit must be an object")
    out = {"uart": 2, "baudrate": 9600, "tx": None, "rx": None, "serial": None}
    out.update(ALARM_TIMINGS)
    for name, value in obj.items():
        if name not in out:
            raise ConfigError("alarm_unit: unknown setting %s" % _shown(name))
        out[name] = value
    _port(out, "alarm_unit")
    if out["serial"] is not None:
        text = out["serial"]
        if not isinstance(text, str) or len(text) != 8 \
                or [c for c in text if c not in "0123456789ABCDEF"]:
            raise ConfigError("alarm_unit.serial must be the unit's serial, 8 upper-case hex "
                              "digits as its label shows, not %s" % _shown(text))
        out["serial"] = int(text, 16)
    for name in ALARM_TIMINGS:
        _int(out[name], "alarm_unit." + name, 1, 100 if name == "missed" else MAX_MS)
    return out


def _link_key(text):
    # Never quoted back: it is a secret.
    if text is None:
        raise ConfigError("link.key is missing: provision the bridge with its hub's link key "
                          "(hubctl provision, then hubctl flash)")
    try:
        key = bytes.fromhex(text)
    except (TypeError, ValueError):
        key = b""
    if len(key) != LINK_KEY_LEN:
        raise ConfigError("link.key must be %d hex digits (hubctl provision makes it)"
                          % (2 * LINK_KEY_LEN))
    return key


def _port(out, section):
    # A UART's settings, checked in place: number, speed and its pins (None: the board's own).
    _int(out["uart"], section + ".uart", 0, MAX_UART)
    _int(out["baudrate"], section + ".baudrate", BAUDRATES[0], BAUDRATES[1])
    _pin_or_none(out["tx"], section + ".tx")
    _pin_or_none(out["rx"], section + ".rx")


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
    # These go into AT commands inside quotes (firmware/lte.py takes them as they are).
    for name in ("apn", "host", "user", "password"):
        _text(out[name], "lte." + name, 0 if name in ("user", "password") else 1, 63, '",;')
    for name, low, high in (("account", 3, 16), ("receiver", 0, 6), ("line", 1, 6)):
        value = out[name]
        if not isinstance(value, str) or not low <= len(value) <= high \
                or [c for c in value if c not in "0123456789ABCDEF"]:
            raise ConfigError("lte.%s must be %d to %d upper-case hex digits, not %s"
                              % (name, low, high, _shown(value)))
    _port(out, "lte")
    _int(out["port"], "lte.port", 1, 65535)
    _int(out["deadline_ms"], "lte.deadline_ms")
    _int(out["retry_ms"], "lte.retry_ms")
    if out["key"] is not None:
        _text(out["key"], "lte.key (the receiver's AES key)", 16, 32)
        if len(out["key"]) not in (16, 24, 32):
            raise ConfigError("lte.key must be the receiver's AES key: 16, 24 or 32 characters")
    return out


def parse(obj):
    """Check a decoded configuration object and return it normalised."""
    if not isinstance(obj, dict):
        raise ConfigError("configuration must be a JSON object")
    link = obj.get("link", {})
    if not isinstance(link, dict):
        raise ConfigError("link must be an object")
    for name in link:
        if name not in ("uart", "baudrate", "tx", "rx", "key"):
            raise ConfigError("link: unknown setting %s" % _shown(name))
    link = {"uart": link.get("uart", 1), "baudrate": link.get("baudrate", 115200),
            "tx": link.get("tx"), "rx": link.get("rx"), "key": _link_key(link.get("key"))}
    _port(link, "link")
    level = obj.get("log", "info")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise ConfigError("log must be one of %s, not %s" % (", ".join(LOG_LEVELS), _shown(level)))
    # An older provisioning's lock list and connection policy: named, never read.
    stale = [name for name in STALE if obj.get(name)]
    return {"link": link, "log": level, "stale": stale,
            "alarm_unit": _alarm_unit(obj.get("alarm_unit")),
            "lte": _lte(obj.get("lte")),
            "health": _timings(obj.get("health", {}), HEALTH, "health"),
            "supply": _supply(obj.get("supply")),
            "proxy": _proxy(obj.get("proxy", {}))}


def load(path=PATH):
    """Read and check the configuration file; any content, or none, ends in ConfigError."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError:
        raise ConfigError("no %s on the bridge: provision it (hubctl provision)" % path)
    if len(data) > MAX_FILE or messages.containers(data) > MAX_NESTED:
        raise ConfigError("%s is over %d bytes or nests over %d objects and arrays"
                          % (path, MAX_FILE, MAX_NESTED))
    try:
        obj = json.loads(data)
    except ValueError:  # UnicodeError too
        raise ConfigError("%s is not valid JSON" % path)
    return parse(obj)

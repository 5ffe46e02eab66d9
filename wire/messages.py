"""Application messages carried in the payload of link DATA frames.

Each payload is one UTF-8 JSON object whose "m" names the kind. Both ends build messages with
make(KIND, field values...) (what only hubd sends: wire/hubside.py) and read them with decode(),
which bounds the payload (MAX_SIZE bytes, MAX_NESTED objects and arrays) before parsing and checks
kinds, fields and types, so any payload, corrupt or hostile, is a message or a MessageError.

Locks are driven by hubd through the Bluetooth proxy (below): no message names a lock.

Safety alarms (wire/alarms.py has the vocabulary):
bridge -> hubd
    alarm        {"m":"alarm","id":str,"event":str,"device":str,"unit_at":int,"bridge_at":int|null}
                 journaled on the bridge's flash; id is stable (wire.alarms.alarm_id); times are
                 Unix seconds (bridge_at null while the bridge has no clock)
    alarm_lte    {"m":"alarm_lte","id":str,"result":str}   the second path's result for an
                 alarm: "ack" (the receiver has it), "nak", "duh" or "failed"
hubd -> bridge
    alarm_stored {"m":"alarm_stored","id":str}   in hubd's durable outbox
    alarm_handled {"m":"alarm_handled","id":str} the alarm centre handled it: the bridge may
                 drop it from its journal and tell the resident help is on the way
    clock        {"m":"clock","unix":int}        hubd's time, so the bridge can stamp events

Device health (docs/serial-link.md has the details and the byte budget):
bridge -> hubd
    device   {"m":"device","id":str,"kind":str,"model":str,"battery":int|null,
              "unit":"pct"|"mV"|"raw"|null,"mains":bool|null,"rssi":int|null,
              "present":bool|null,"firmware":str|null}
             one device's raw reading (hubd converts it per model): sent when it changes and
             for every device whenever the link comes up
    health   {"m":"health","up_s":int,"reset":str,"heap_free":int,"heap_min":int,
              "heap_blk":int,"link":{counter:int,...},
              "ble":{"restarts":int,"last_restart":str|null,"connected":int},
              "lte":{"registered":str|null,"rssi":int|null}|null,
              "unit":{"up":bool,"last_heard_s":int|null}|null,
              "journals":{"commands":int,"alarms":int},"clock":int|null}
             the bridge's own health, every health_ms and on request
hubd -> bridge
    health_request {"m":"health_request"}   answered with a `health` at once

Technician requests (hubctl through hubd; docs/technician-guide.md), built with make(KIND, ...):
hubd -> bridge
    test_alarm {"m":"test_alarm","ref":str,"lte":bool}
             journal a `test` alarm whose device is ``ref`` and carry it like any alarm; with
             lte also hand it to the second path at once (answered by `alarm`, `alarm_lte`)
    wipe     {"m":"wipe"}    remove the LTE section (its DC-09 key) and any lock list an older
             provisioning left from bridge.json, delete the proxy's bonds, then restart
bridge -> hubd
    wiped    {"m":"wiped","locks":int}   bridge.json rewritten (locks: how many entries an
             older provisioning's lock list had); the bridge restarts next

The Bluetooth proxy (docs/ble-proxy.md): hubd's bleak backend asks, the bridge performs the GAP
and GATT procedure with MicroPython's `bluetooth` and answers. Binary data travels as hex
(type hex: an even number of hex digits, at most 2 * MAX_DATA); UUIDs as the hex of their
over-the-air (little-endian) bytes, 4 or 32 digits; addresses as "C0:FF:EE:00:00:01".
hubd -> bridge (each answered by one ble_done with its rid)
    ble_scan       {"rid":int,"ms":int,"active":bool}   forward every advert heard for ms
    ble_watch      {"rid":int,"addr":str,"on":bool}     forward this address's adverts from now
                   on (on: false, stop); at most MAX_WATCH addresses
    ble_connect    {"rid":int,"addr":str,"addr_type":int,"ms":int}   answered with conn, mtu
                   and count: BLE_SEC bits (a bonded peer is re-encrypted before the answer)
    ble_disconnect {"rid":int,"conn":int}
    ble_discover   {"rid":int,"conn":int}   every service, characteristic and descriptor, sent
                   as ble_service, ble_char and ble_desc before the ble_done (count: how many)
    ble_read       {"rid":int,"conn":int,"handle":int,"ms":int}   answered with data
    ble_write      {"rid":int,"conn":int,"handle":int,"data":hex,"response":bool,"ms":int}
    ble_subscribe  {"rid":int,"conn":int,"handle":int,"mode":int}   write a CCCD: mode 0 off,
                   1 notifications, 2 indications
    ble_pair       {"rid":int,"conn":int,"ms":int}   encrypt the link: with the stored bond of
                   that peer, else by pairing and bonding; answered with count: BLE_SEC bits
    ble_unpair     {"rid":int,"addr":str,"addr_type":int}   forget that peer's bond (count: how
                   many bonds were forgotten, 0 or 1)
bridge -> hubd
    ble_done       {"rid":int,"status":str,"conn":int|null,"data":hex|null,"mtu":int|null,
                    "count":int|null,"att":int|null}
                   status: BLE_STATUSES; att: the ATT error code of a gatt_error
    ble_service    {"rid":int,"uuid":hex,"start":int,"end":int}
    ble_char       {"rid":int,"uuid":hex,"handle":int,"props":int,"service":int}
                   handle: the value handle; service: its service's start handle
    ble_desc       {"rid":int,"uuid":hex,"handle":int,"char":int}   char: the value handle
    ble_adv        {"addr":str,"addr_type":int,"rssi":int,"data":hex,"resp":hex|null}
                   raw advertising data (and scan response); see docs/ble-proxy.md for which
                   adverts go out and how often
    ble_notify     {"conn":int,"handle":int,"data":hex}   a notification or indication
    ble_lost       {"conn":int,"reason":str}   the connection is gone (BLE_LOST reasons)
The LTE uplink (wire/uplink.py; docs/second-path.md, "The uplink"): hubd's broker connection as
a TCP socket on the bridge's modem. Its bytes travel as bulk payloads (wire.uplink.DATA), after
every message; these messages open, close and pace it.
hubd -> bridge
    uplink_open  {"m":"uplink_open","host":str,"port":int}   open the socket (one at a time);
                 answered with uplink_state
    uplink_close {"m":"uplink_close"}   close it; answered with uplink_state "closed"
bridge -> hubd
    uplink_state {"m":"uplink_state","state":str,"why":str|null}   state: UPLINK_STATES; why
                 (closed only): UPLINK_WHY
    uplink_ack   {"m":"uplink_ack","n":int}   the modem took n more of hubd's bytes (SEND OK):
                 hubd may have at most wire.uplink.WINDOW bytes sent and not acknowledged
"""

import json

ALARM = "alarm"
ALARM_LTE = "alarm_lte"
ALARM_STORED = "alarm_stored"
ALARM_HANDLED = "alarm_handled"
CLOCK = "clock"
DEVICE = "device"
HEALTH = "health"
HEALTH_REQUEST = "health_request"
TEST_ALARM = "test_alarm"
WIPE = "wipe"
WIPED = "wiped"
BLE_SCAN = "ble_scan"
BLE_WATCH = "ble_watch"
BLE_CONNECT = "ble_connect"
BLE_DISCONNECT = "ble_disconnect"
BLE_DISCOVER = "ble_discover"
BLE_READ = "ble_read"
BLE_WRITE = "ble_write"
BLE_SUBSCRIBE = "ble_subscribe"
BLE_PAIR = "ble_pair"
BLE_UNPAIR = "ble_unpair"
BLE_DONE = "ble_done"
BLE_SERVICE = "ble_service"
BLE_CHAR = "ble_char"
BLE_DESC = "ble_desc"
BLE_ADV = "ble_adv"
BLE_NOTIFY = "ble_notify"
BLE_LOST = "ble_lost"
UPLINK_OPEN = "uplink_open"
UPLINK_CLOSE = "uplink_close"
UPLINK_STATE = "uplink_state"
UPLINK_ACK = "uplink_ack"

# The proxy's answers: done; the peer did not answer in time (a timed-out GATT procedure also
# drops the connection: the bearer's state is unknown); no connection could be made; the
# connection went down before or during it; every connection slot is taken; the peer answered
# with an ATT error (ble_done's att); no such connection (conn); the request cannot be done
# (a bad handle, too much data, too many watches); anything else the stack raised; the peer
# refused to pair or to encrypt with the stored bond (ble_pair).
BLE_STATUSES = ("ok", "timeout", "unreachable", "disconnected", "busy", "gatt_error", "no_conn",
                "refused", "error", "auth_failed")
# ble_pair's ok carries the link's security in count: these bits
BLE_SEC_ENCRYPTED = 1
BLE_SEC_AUTHENTICATED = 2  # MITM-protected keys
BLE_SEC_BONDED = 4  # the keys are stored on the bridge
# Why a proxy connection went: the peer (or the radio) dropped it; a GATT procedure timed out;
# the link to hubd went down (the bridge drops every proxy connection then); the BLE stack was
# restarted by its watchdog.
BLE_LOST_REASONS = ("peer", "timeout", "host_link", "ble_restart")
# The uplink's states: the socket is open end to end (bytes may flow); it is closed (why says
# which side or what ended it, or that it never opened).
UPLINK_STATES = ("open", "closed")
# Why the uplink is closed: hubd asked; the bridge has no LTE modem configured; the modem has no
# SIM ready (none inserted, or it wants a PIN); the modem is not registered on a network (coverage) or the data context failed; the socket could not be opened
# (the broker refused or did not answer); the peer or the network closed it; the bridge's link
# to hubd went down (the socket is closed then: its stream belonged to that session); the modem
# did not answer in time; anything else the modem answered.
UPLINK_WHY = ("hubd", "no_modem", "no_sim", "not_registered", "pdp_failed", "open_failed", "peer",
              "network", "host_link", "timeout", "error")
MAX_DATA = 176  # bytes of GATT data in one message (a write, a read, a notification): the
# longest ble_done and ble_write then fit a link payload (tests/wire/test_ble_proxy_messages.py)
MAX_WATCH = 8  # addresses hubd may watch at once
# A Bluetooth device address as the ble_* messages, hubd's audit entries and its logs write it:
# six hex bytes, upper case, colons ("C0:FF:EE:00:00:01"); a regular expression for fullmatch
# (the firmware parses addresses itself: ble_proxy.parse_addr)
ADDR_PATTERN = "[0-9A-F]{2}(:[0-9A-F]{2}){5}"
MAX_SLOTS = 4  # proxy connections a bridge holds at most (NimBLE's default on the ESP32): so
# at most this many discoveries, one at a time, and hubd waits for a discovery's first message
# as long as this many take (docs/ble-proxy.md, "Discovery")
MAX_ID = 64  # longest lock id or command id, in characters
MAX_SIZE = 512  # bytes: one link payload (wire.frame.MAX_PAYLOAD)
MAX_NESTED = 8  # objects and arrays in one payload (health has 6): bounds the nesting depth
UNITS = ("pct", "mV", "raw")  # a device's battery reading: percent, millivolts, model-specific
# health's "link": the link's counters the bridge reports (wire/link.py stats, and the bridge's
# bad_messages and downs); every count in health saturates at COUNT_CAP (8 digits: with the
# largest free block, heap_blk, the longest health still fits a payload)
LINK_COUNTERS = ("frames_rx", "frames_tx", "crc_errors", "framing_errors", "retransmits",
                 "bad_messages", "downs", "heap_drops")
COUNT_CAP = 99999999
# health's "reset": machine.reset_cause() n (1..5 on the ESP32) is RESETS[n - 1]
RESETS = ("power_on", "hard", "wdt", "deepsleep", "soft", "unknown")

# Each kind's fields, in order, as "name:type" words: type int, str (1..MAX_ID characters), bool,
# counters (an object of at most 16 names, each an int) or ".name", the nested object of that
# name below; a trailing "?" also allows null. One string of "|kind=fields" (fields() reads it),
# not a dict of strings: this table is on the bridge's short heap too, where a dict and a string
# object per kind cost 1.6 KB (64-bit) and one string costs a pointer to its bytes in flash.
_FIELDS = (
    "|alarm=id:str event:str device:str unit_at:int bridge_at:int?"
    "|alarm_lte=id:str result:str"
    "|alarm_stored=id:str"
    "|alarm_handled=id:str"
    "|clock=unix:int"
    "|device=id:str kind:str model:str battery:int? unit:str? mains:bool? rssi:int? present:bool?"
    " firmware:str?"
    "|health=up_s:int reset:str heap_free:int heap_min:int heap_blk:int link:counters ble:.ble"
    " lte:.lte? unit:.unit? journals:.journals clock:int?"
    "|health_request="
    "|test_alarm=ref:str lte:bool"
    "|wipe="
    "|wiped=locks:int"
    "|ble_scan=rid:int ms:int active:bool"
    "|ble_watch=rid:int addr:str on:bool"
    "|ble_connect=rid:int addr:str addr_type:int ms:int"
    "|ble_disconnect=rid:int conn:int"
    "|ble_discover=rid:int conn:int"
    "|ble_read=rid:int conn:int handle:int ms:int"
    "|ble_write=rid:int conn:int handle:int data:hex response:bool ms:int"
    "|ble_subscribe=rid:int conn:int handle:int mode:int"
    "|ble_pair=rid:int conn:int ms:int"
    "|ble_unpair=rid:int addr:str addr_type:int"
    "|ble_done=rid:int status:str conn:int? data:hex? mtu:int? count:int? att:int?"
    "|ble_service=rid:int uuid:hex start:int end:int"
    "|ble_char=rid:int uuid:hex handle:int props:int service:int"
    "|ble_desc=rid:int uuid:hex handle:int char:int"
    "|ble_adv=addr:str addr_type:int rssi:int data:hex resp:hex?"
    "|ble_notify=conn:int handle:int data:hex"
    "|ble_lost=conn:int reason:str"
    "|uplink_open=host:str port:int"
    "|uplink_close="
    "|uplink_state=state:str why:str?"
    "|uplink_ack=n:int"
    "|.ble=restarts:int last_restart:str? connected:int"
    "|.lte=registered:str? rssi:int?"
    "|.unit=up:bool last_heard_s:int?"
    "|.journals=commands:int alarms:int"
    "|"
)
_MAX_COUNTERS = 16


def fields(kind):
    """``kind``'s fields as _FIELDS writes them ("name:type" words), or None for a kind it does
    not define (nested objects are kinds too: ".ble"). Any string may be asked: one holding a
    separator is no kind."""
    if "|" in kind or "=" in kind:
        return None
    i = _FIELDS.find("|" + kind + "=")
    if i < 0:
        return None
    i += len(kind) + 2
    return _FIELDS[i:_FIELDS.index("|", i)]


def kinds():
    """Every kind _FIELDS defines, in its order (nested objects' ".name" too)."""
    return [part[:part.index("=")] for part in _FIELDS.split("|") if part]


class MessageError(ValueError):
    """A payload that is not a valid application message."""


def make(kind, *values):
    """Build a message of ``kind`` from its fields' values, in _FIELDS' order (the module
    docstring says what each means). Every message the bridge sends is built with it directly:
    a builder function each would cost the bridge's heap; what only hubd sends is built by
    wire/hubside.py, which the bridge never loads. Trailing values left out are null. A health
    is encoded without blanks: with at most LINK_COUNTERS in its link, every count below
    COUNT_CAP and a 10-digit clock it fits a link payload (docs/serial-link.md, byte budget)."""
    obj = {"m": kind}
    i = 0
    for field in fields(kind).split():
        obj[field[:field.index(":")]] = values[i] if i < len(values) else None
        i += 1
    if kind == HEALTH:  # no blanks after "," and ":": the longest message needs the bytes
        return json.dumps(obj, separators=(",", ":")).encode()
    return json.dumps(obj).encode()


def _ok(value, kind):
    if value is None:
        return kind[-1] == "?"
    if kind[0] == "i":  # int
        return isinstance(value, int) and not isinstance(value, bool) \
            and -(1 << 31) <= value < (1 << 31)
    if kind[0] == "s":  # str; UTF-8 text (CPython would keep a lone surrogate: "\\ud800")
        return isinstance(value, str) and 0 < len(value) <= MAX_ID \
            and value.encode("utf-8", "replace").decode() == value
    if kind[0] == "b":  # bool
        return isinstance(value, bool)
    if kind[0] == "h":  # hex: binary data, at most MAX_DATA bytes
        if not isinstance(value, str) or len(value) % 2 or len(value) > 2 * MAX_DATA:
            return False
        for c in value:
            if c not in "0123456789abcdefABCDEF":
                return False
        return True
    if not isinstance(value, dict):
        return False
    if kind[0] == "c":  # counters
        if len(value) > _MAX_COUNTERS:
            return False
        for name, count in value.items():
            if not _ok(name, "str") or not _ok(count, "int"):
                return False
        return True
    return _bad(value, fields(kind.rstrip("?"))) is None


def _bad(obj, spec):
    """The first field of ``obj`` that is missing or of the wrong type, or None (``spec``: the
    kind's fields()). A field that may be null and was left out is set to None: every field is
    there after decode()."""
    for field in spec.split():
        name, kind = field.split(":")
        value = obj.get(name)
        if not _ok(value, kind):
            return name
        obj[name] = value
    return None


def containers(data):
    """How many JSON objects and arrays ``data`` (bytes) opens outside its strings: at least its
    nesting depth, counted before parsing. CPython's parser recurses (RecursionError is no
    ValueError), MicroPython's allocates a block per level."""
    n = 0
    quoted = escaped = False
    for c in data:
        if escaped:
            escaped = False
        elif c == 92:  # a backslash escapes the next byte, inside a string
            escaped = quoted
        elif c == 34:  # a quote
            quoted = not quoted
        elif not quoted and (c == 91 or c == 123):  # [ or {
            n += 1
    return n


def decode(payload):
    """Parse and check one payload (bytes); return the message as a dict. Whatever the bytes,
    anything else raises MessageError: size and nesting are bounded before parsing."""
    if len(payload) > MAX_SIZE or containers(payload) > MAX_NESTED:
        raise MessageError("payload over %d bytes or %d objects and arrays"
                           % (MAX_SIZE, MAX_NESTED))
    try:
        obj = json.loads(payload)
    except ValueError:  # UnicodeError is one too, in both interpreters
        raise MessageError("payload is not JSON")
    if not isinstance(obj, dict):
        raise MessageError("payload is not a JSON object")
    kind = obj.get("m")
    spec = fields(kind) if isinstance(kind, str) and kind[:1] != "." else None
    if spec is None:
        raise MessageError("unknown message kind %r" % (kind,))
    bad = _bad(obj, spec)
    if bad is not None:
        raise MessageError("%s: field %r missing or of the wrong type" % (kind, bad))
    if kind == DEVICE and obj["unit"] is not None and obj["unit"] not in UNITS:
        raise MessageError("device: unknown unit %r" % obj["unit"])
    if kind == BLE_DONE and obj["status"] not in BLE_STATUSES:
        raise MessageError("ble_done: unknown status %r" % obj["status"])
    if kind == BLE_LOST and obj["reason"] not in BLE_LOST_REASONS:
        raise MessageError("ble_lost: unknown reason %r" % obj["reason"])
    if kind == UPLINK_STATE and (obj["state"] not in UPLINK_STATES
                                 or obj["why"] is not None and obj["why"] not in UPLINK_WHY):
        raise MessageError("uplink_state: unknown state or reason")
    if kind == HEALTH and obj["reset"] not in RESETS:
        raise MessageError("health: unknown reset cause %r" % obj["reset"])
    return obj

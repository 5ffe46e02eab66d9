"""Reference lock protocol: the one codec that the bridge firmware and the simulated locks share.

Runs unchanged on MicroPython and CPython. docs/lock-protocol.md describes every byte; this module
is the executable form of that document. Every decoder treats its input as hostile and raises
``ProtocolError`` (and nothing else) on anything malformed.

Flow per command: central writes CHALLENGE_REQUEST to the control point; the lock notifies CHALLENGE
with a fresh 16-byte nonce; central writes COMMAND with an HMAC over (domain, lock address, nonce,
action, tag); the lock notifies RESULT, MACed by the lock over the same nonce and tag.

Reports: what happens at the lock without a command (a key turned, a key taken from a box, an
auto-relock) becomes a numbered, MACed report (STATUS or EVENT), notified live to connected
centrals and kept in a short backlog that a central reads with READ_REPORTS; REPORTS_END closes
the backlog with the lock's latest report number, MACed over the link's nonce so it is fresh.

Pairing: PAIR and UNPAIR are in ``wire.lockpair`` (the bridge loads it only while pairing, to
spare its heap); here is only what every central needs of it: the ``not_pairing`` status name
and the pairing-mode bit of the advert.
"""

import struct
import binascii

from wire.hmac_sha256 import HMAC, compare_digest

VERSION = 1

# 128-bit UUIDs (random, version 4); only the second group differs between them.
SERVICE_UUID = "5f3b0001-9c7e-4b1a-8d2e-6a4c1f0e7b92"
CONTROL_UUID = "5f3b0002-9c7e-4b1a-8d2e-6a4c1f0e7b92"  # write with response
EVENT_UUID = "5f3b0003-9c7e-4b1a-8d2e-6a4c1f0e7b92"  # notify

# 0xFFFF is the Bluetooth SIG company id reserved for testing; a product would use its own.
COMPANY_ID = 0xFFFF

PREFERRED_MTU = 185
NONCE_LEN = 16
TAG_LEN = 8
MAC_LEN = 32
SECRET_LEN = 32
NONCE_LIFETIME_MS = 5000
ADDR_LEN = 6

# Opcodes: central -> lock below 0x80, lock -> central from 0x80.
OP_CHALLENGE_REQUEST = 0x01
OP_COMMAND = 0x02
OP_READ_REPORTS = 0x03
OP_CHALLENGE = 0x81
OP_RESULT = 0x82
OP_STATUS = 0x83
OP_EVENT = 0x84
OP_REPORTS_END = 0x85

CHALLENGE_REQUEST_LEN = 2  # op, version
CHALLENGE_LEN = 1 + NONCE_LEN
COMMAND_LEN = 1 + 1 + TAG_LEN + MAC_LEN
RESULT_LEN = 1 + 1 + 1 + 1 + MAC_LEN
STATUS_LEN = 1 + 4 + 1 + 1 + 1 + MAC_LEN
READ_REPORTS_LEN = 1 + 4
EVENT_LEN = 1 + 4 + 1 + 1 + 1 + 1 + MAC_LEN
REPORTS_END_LEN = 1 + 4 + MAC_LEN
COUNTER_NONE = 0xFFFFFFFF  # READ_REPORTS after this: no reports, only REPORTS_END

ACTIONS = ("status", "unlock", "lock", "unlatch")
STATES = ("unknown", "locked", "unlocked", "unlatched", "moving", "jammed")
STATUSES = (
    "ok",
    "auth_failed",
    "busy",
    "jammed",
    "low_battery",
    "bad_request",
    "challenge_expired",
    "duplicate",
    "unsupported",
    "not_pairing",
)
# What caused a report: the lock's motor, a key or thumb-turn, the lock by itself, the door handle.
SOURCES = ("motor", "manual", "auto", "handle")
# Codes are the protocol's; the names are wire.lockkinds'.
KINDS = ("unknown", "inside_turner", "in_cylinder", "key_box", "entrance_door")
EVENTS = ("box_opened", "box_closed", "key_taken", "key_returned", "door_opened", "door_closed")

STATUS_OK = 0
STATUS_AUTH_FAILED = 1
STATUS_BUSY = 2
STATUS_JAMMED = 3
STATUS_LOW_BATTERY = 4
STATUS_BAD_REQUEST = 5
STATUS_CHALLENGE_EXPIRED = 6
STATUS_DUPLICATE = 7
STATUS_UNSUPPORTED = 8

_DOMAIN_COMMAND = b"homecare-lock/v1/command"
_DOMAIN_RESULT = b"homecare-lock/v1/result"
_DOMAIN_STATUS = b"homecare-lock/v1/status"
_DOMAIN_TAG = b"homecare-lock/v1/tag"
_DOMAIN_EVENT = b"homecare-lock/v1/event"
_DOMAIN_REPORTS = b"homecare-lock/v1/reports"

# Advertising data types (Bluetooth Assigned Numbers, "Common Data Types").
AD_FLAGS = 0x01
AD_UUID128_COMPLETE = 0x07
AD_NAME_COMPLETE = 0x09
AD_MANUFACTURER = 0xFF
ADV_MAX = 31
MANUFACTURER_LEN = 2 + 1 + 1 + 1 + 2  # company, version, kind, battery, counter


class ProtocolError(ValueError):
    """A PDU or advert is malformed, truncated, of the wrong type or carries an unknown value."""


def _index(table, name, what):
    for i in range(len(table)):
        if table[i] == name:
            return i
    raise ProtocolError("unknown %s %r" % (what, name))


def _name(table, code, what):
    if code < len(table):
        return table[code]
    raise ProtocolError("unknown %s code %d" % (what, code))


def action_code(name):
    return _index(ACTIONS, name, "action")


def action_name(code):
    return _name(ACTIONS, code, "action")


def state_name(code):
    return _name(STATES, code, "state")


def status_name(code):
    return _name(STATUSES, code, "status")


def source_name(code):
    return _name(SOURCES, code, "source")


def event_name(code):
    return _name(EVENTS, code, "event")


def _check(data, length, op, what):
    if data is None or len(data) != length:
        raise ProtocolError(
            "%s must be %d bytes, got %s" % (what, length, "none" if data is None else len(data))
        )
    if data[0] != op:
        raise ProtocolError("%s: expected opcode 0x%02x, got 0x%02x" % (what, op, data[0]))


def _check_len(value, length, what):
    if len(value) != length:
        raise ProtocolError("%s must be %d bytes, got %d" % (what, length, len(value)))


def opcode(data):
    """Return the opcode of a PDU (its first byte)."""
    if not data:
        raise ProtocolError("empty PDU")
    return data[0]


def command_tag(command_id):
    """Derive the 8-byte command tag from a command id (str or bytes)."""
    if isinstance(command_id, str):
        command_id = command_id.encode()
    return HMAC(_DOMAIN_TAG).update(command_id).digest()[:TAG_LEN]


# --- CHALLENGE_REQUEST / CHALLENGE -------------------------------------------------------------


def encode_challenge_request():
    return bytes((OP_CHALLENGE_REQUEST, VERSION))


def decode_challenge(data):
    """Return the nonce carried by a CHALLENGE."""
    _check(data, CHALLENGE_LEN, OP_CHALLENGE, "CHALLENGE")
    return bytes(data[1:])


# --- COMMAND -----------------------------------------------------------------------------------


def _mac(secret, domain, *parts):
    """HMAC-SHA256(secret, domain || parts...): every MAC of the protocol, each with its domain."""
    h = HMAC(secret)
    h.update(domain)
    for part in parts:
        h.update(part)
    return h.digest()


def command_mac(secret, addr, nonce, action, tag):
    """HMAC(secret, domain || addr || nonce || action || tag); action is the code (int)."""
    _check_len(addr, ADDR_LEN, "lock address")
    _check_len(nonce, NONCE_LEN, "nonce")
    _check_len(tag, TAG_LEN, "tag")
    return _mac(secret, _DOMAIN_COMMAND, addr, nonce, bytes((action,)), tag)


def encode_command(secret, addr, nonce, action, tag):
    """Build a COMMAND for action code ``action`` (see ``action_code``)."""
    action_name(action)
    return bytes((OP_COMMAND, action)) + bytes(tag) + command_mac(secret, addr, nonce, action, tag)


# --- RESULT ------------------------------------------------------------------------------------


def result_mac(secret, addr, nonce, tag, status, state, battery):
    """HMAC(secret, domain || addr || nonce || tag || status || state || battery)."""
    _check_len(addr, ADDR_LEN, "lock address")
    _check_len(nonce, NONCE_LEN, "nonce")
    _check_len(tag, TAG_LEN, "tag")
    return _mac(secret, _DOMAIN_RESULT, addr, nonce, tag, bytes((status, state, battery)))


def decode_result(data):
    """Return (status code, state code, battery, mac); values are range-checked, MAC is not."""
    _check(data, RESULT_LEN, OP_RESULT, "RESULT")
    status, state, battery = data[1], data[2], data[3]
    status_name(status)
    state_name(state)
    if battery > 100:
        raise ProtocolError("battery out of range: %d" % battery)
    return status, state, battery, bytes(data[4:])


def verify_result(secret, addr, nonce, tag, status, state, battery, mac):
    return compare_digest(result_mac(secret, addr, nonce, tag, status, state, battery), mac)


# --- STATUS (unsolicited) ----------------------------------------------------------------------


def status_mac(secret, addr, counter, state, battery, source):
    """HMAC(secret, domain || addr || counter (u32 BE) || state || battery || source)."""
    _check_len(addr, ADDR_LEN, "lock address")
    return _mac(secret, _DOMAIN_STATUS, addr,
                struct.pack(">IBBB", counter, state, battery, source))


def decode_status(data):
    """Return (counter, state code, battery, source code, mac); MAC is not checked."""
    _check(data, STATUS_LEN, OP_STATUS, "STATUS")
    _, counter, state, battery, source = struct.unpack_from(">BIBBB", data, 0)
    state_name(state)
    source_name(source)
    if battery > 100:
        raise ProtocolError("battery out of range: %d" % battery)
    return counter, state, battery, source, bytes(data[8:])


def verify_status(secret, addr, counter, state, battery, source, mac):
    return compare_digest(status_mac(secret, addr, counter, state, battery, source), mac)


# --- EVENT (unsolicited) -----------------------------------------------------------------------


def event_mac(secret, addr, counter, event, source, state, battery):
    """HMAC(secret, domain || addr || counter (u32 BE) || event || source || state || battery)."""
    _check_len(addr, ADDR_LEN, "lock address")
    return _mac(secret, _DOMAIN_EVENT, addr,
                struct.pack(">IBBBB", counter, event, source, state, battery))


def decode_event(data):
    """Return (counter, event code, source code, state code, battery, mac); MAC is not checked."""
    _check(data, EVENT_LEN, OP_EVENT, "EVENT")
    _, counter, event, source, state, battery = struct.unpack_from(">BIBBBB", data, 0)
    event_name(event)
    source_name(source)
    state_name(state)
    if battery > 100:
        raise ProtocolError("battery out of range: %d" % battery)
    return counter, event, source, state, battery, bytes(data[9:])


def verify_event(secret, addr, counter, event, source, state, battery, mac):
    return compare_digest(event_mac(secret, addr, counter, event, source, state, battery), mac)


# --- READ_REPORTS / REPORTS_END ----------------------------------------------------------------


def encode_read_reports(after):
    """Ask for every kept report numbered above ``after`` (COUNTER_NONE: none, just the end)."""
    if not 0 <= after <= 0xFFFFFFFF:
        raise ProtocolError("counter out of range")
    return struct.pack(">BI", OP_READ_REPORTS, after)


def reports_end_mac(secret, addr, nonce, counter):
    """HMAC(secret, domain || addr || nonce || counter (u32 BE))."""
    _check_len(addr, ADDR_LEN, "lock address")
    _check_len(nonce, NONCE_LEN, "nonce")
    return _mac(secret, _DOMAIN_REPORTS, addr, nonce, struct.pack(">I", counter))


def decode_reports_end(data):
    """Return (counter, mac) of a REPORTS_END; the MAC is not checked."""
    _check(data, REPORTS_END_LEN, OP_REPORTS_END, "REPORTS_END")
    return struct.unpack_from(">I", data, 1)[0], bytes(data[5:])


def verify_reports_end(secret, addr, nonce, counter, mac):
    return compare_digest(reports_end_mac(secret, addr, nonce, counter), mac)


# --- Advertising -------------------------------------------------------------------------------


def uuid128_le(uuid):
    """The 16 bytes of a 128-bit UUID string in over-the-air (little-endian) order."""
    raw = binascii.unhexlify(uuid.replace("-", ""))
    if len(raw) != 16:
        raise ProtocolError("not a 128-bit UUID: %r" % uuid)
    out = bytearray(16)
    for i in range(16):
        out[i] = raw[15 - i]
    return bytes(out)


def ad_fields(data):
    """Yield (ad type, payload) of each AD structure; raise ProtocolError if a length overruns."""
    i = 0
    n = len(data)
    while i < n:
        length = data[i]
        if length == 0:  # early terminator: the rest is padding
            return
        if i + 1 + length > n:
            raise ProtocolError("AD structure at %d overruns the advert" % i)
        yield data[i + 1], data[i + 2 : i + 1 + length]
        i += 1 + length


def decode_advert(data):
    """Return (kind name, battery, counter, pairing) from a reference-lock advert's manufacturer
    data; ``pairing`` is True while the lock is in pairing mode."""
    for ad_type, payload in ad_fields(data):
        if ad_type == AD_MANUFACTURER and len(payload) >= 2:
            company, = struct.unpack_from("<H", payload, 0)
            if company != COMPANY_ID:
                continue
            return decode_manufacturer(company, payload[2:])
    raise ProtocolError("no reference-lock manufacturer data")


def decode_manufacturer(company, data):
    """Return (kind name, battery, counter, pairing) from a reference lock's manufacturer data as
    a parsed advert holds it: the company id and the bytes after it (bleak's
    ``AdvertisementData.manufacturer_data[company]``, for a central that never sees the raw AD
    structures)."""
    if company != COMPANY_ID:
        raise ProtocolError("company id 0x%04x is not the reference lock's" % company)
    if len(data) != MANUFACTURER_LEN - 2:
        raise ProtocolError("manufacturer data must be %d bytes" % MANUFACTURER_LEN)
    version, kind, battery, counter = struct.unpack("<BBBH", data)
    if version != VERSION:
        raise ProtocolError("unsupported protocol version %d" % version)
    if battery > 100:
        raise ProtocolError("battery out of range: %d" % battery)
    return _name(KINDS, kind & 0x7F, "kind"), battery, counter, kind > 0x7F


def decode_name(data):
    """Return the complete or shortened local name in an advert or scan response, or None."""
    for ad_type, payload in ad_fields(data):
        if ad_type in (0x08, AD_NAME_COMPLETE):
            try:
                return bytes(payload).decode()
            except UnicodeError:
                raise ProtocolError("local name is not UTF-8")
    return None

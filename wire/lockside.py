"""The lock's side of the reference lock protocol: what a lock encodes and decodes.

wire/lockproto.py is the protocol's one definition (constants, the central's encoders and
decoders, every MAC); this module adds the PDUs only a lock sends (CHALLENGE, RESULT, STATUS,
EVENT, REPORTS_END, the advert) and reads (CHALLENGE_REQUEST, COMMAND, READ_REPORTS), so the
bridge, a central, never loads them: its heap holds its compiled code (docs/architecture.md,
Limits). The simulated locks import both modules; docs/lock-protocol.md describes every byte.
Runs unchanged on MicroPython and CPython; decoders raise ``ProtocolError`` only.
"""

import struct

from wire.hmac_sha256 import compare_digest
from wire.lockproto import (
    ADV_MAX, AD_FLAGS, AD_MANUFACTURER, AD_NAME_COMPLETE, AD_UUID128_COMPLETE,
    CHALLENGE_REQUEST_LEN, COMMAND_LEN, COMPANY_ID, EVENTS, KINDS, NONCE_LEN, OP_CHALLENGE,
    OP_CHALLENGE_REQUEST, OP_COMMAND, OP_EVENT, OP_READ_REPORTS, OP_REPORTS_END, OP_RESULT,
    OP_STATUS, READ_REPORTS_LEN, SERVICE_UUID, SOURCES, STATES, STATUSES, TAG_LEN, VERSION,
    ProtocolError, _check, _check_len, _index, action_name, command_mac, event_mac, reports_end_mac,
    result_mac, status_mac, uuid128_le,
)


def state_code(name):
    return _index(STATES, name, "state")


def status_code(name):
    return _index(STATUSES, name, "status")


def source_code(name):
    return _index(SOURCES, name, "source")


def event_code(name):
    return _index(EVENTS, name, "event")


def _check_byte(value, what):
    if not 0 <= value <= 255:
        raise ProtocolError("%s out of range: %d" % (what, value))


def decode_challenge_request(data):
    """Check a CHALLENGE_REQUEST; raise ProtocolError if it is not one for this version."""
    _check(data, CHALLENGE_REQUEST_LEN, OP_CHALLENGE_REQUEST, "CHALLENGE_REQUEST")
    if data[1] != VERSION:
        raise ProtocolError("unsupported protocol version %d" % data[1])


def encode_challenge(nonce):
    _check_len(nonce, NONCE_LEN, "nonce")
    return bytes((OP_CHALLENGE,)) + bytes(nonce)


def decode_command(data):
    """Return (action code, tag, mac); the MAC is not checked here (see ``verify_command``)."""
    _check(data, COMMAND_LEN, OP_COMMAND, "COMMAND")
    action = data[1]
    action_name(action)
    return action, bytes(data[2 : 2 + TAG_LEN]), bytes(data[2 + TAG_LEN :])


def verify_command(secret, addr, nonce, action, tag, mac):
    return compare_digest(command_mac(secret, addr, nonce, action, tag), mac)


def encode_result(secret, addr, nonce, tag, status, state, battery):
    """Build a RESULT; status, state are codes, battery is a percentage 0..100."""
    _check_byte(status, "status")
    _check_byte(state, "state")
    if not 0 <= battery <= 100:
        raise ProtocolError("battery out of range: %d" % battery)
    mac = result_mac(secret, addr, nonce, tag, status, state, battery)
    return bytes((OP_RESULT, status, state, battery)) + mac


def encode_status(secret, addr, counter, state, battery, source):
    if not 0 <= counter <= 0xFFFFFFFF:
        raise ProtocolError("counter out of range")
    head = struct.pack(">BIBBB", OP_STATUS, counter, state, battery, source)
    return head + status_mac(secret, addr, counter, state, battery, source)


def encode_event(secret, addr, counter, event, source, state, battery):
    """Build an EVENT report; event, source, state are codes. Shares STATUS's counter."""
    if not 0 <= counter <= 0xFFFFFFFF:
        raise ProtocolError("counter out of range")
    head = struct.pack(">BIBBBB", OP_EVENT, counter, event, source, state, battery)
    return head + event_mac(secret, addr, counter, event, source, state, battery)


def decode_read_reports(data):
    """Return the counter a READ_REPORTS asks to read after."""
    _check(data, READ_REPORTS_LEN, OP_READ_REPORTS, "READ_REPORTS")
    return struct.unpack_from(">I", data, 1)[0]


def encode_reports_end(secret, addr, nonce, counter):
    """Close a report backlog with the lock's latest report number (0: none yet)."""
    if not 0 <= counter <= 0xFFFFFFFF:
        raise ProtocolError("counter out of range")
    return struct.pack(">BI", OP_REPORTS_END, counter) + reports_end_mac(secret, addr, nonce,
                                                                          counter)


def _ad(ad_type, payload):
    return bytes((len(payload) + 1, ad_type)) + payload


def encode_advert(kind, battery, counter, pairing=False):
    """Advertising payload (30 of 31 bytes): flags, service UUID, manufacturer data.

    ``kind`` is a name from KINDS, ``counter`` the lock's latest report number (sent mod 2**16):
    a central that sees it differ from the last report it read knows there is news to fetch.
    ``pairing``: the lock is in pairing mode (bit 7 of the kind byte).
    """
    flags = _ad(AD_FLAGS, b"\x06")  # LE general discoverable, BR/EDR not supported
    service = _ad(AD_UUID128_COMPLETE, uuid128_le(SERVICE_UUID))
    code = _index(KINDS, kind, "kind") | (0x80 if pairing else 0)  # bit 7: pairing mode
    mfr = struct.pack("<HBBBH", COMPANY_ID, VERSION, code, battery, counter & 0xFFFF)
    return flags + service + _ad(AD_MANUFACTURER, mfr)


def encode_scan_response(name):
    """Scan response carrying the complete local name (it does not fit next to the UUID)."""
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if len(raw) > ADV_MAX - 2:
        raise ProtocolError("name too long for a scan response")
    return _ad(AD_NAME_COMPLETE, raw)

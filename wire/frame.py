"""One frame of the hubd <-> bridge serial link: layout, CRC and COBS framing.

Layout before COBS (big-endian), documented byte by byte in docs/serial-link.md:

    offset  size  field
    0       1     type   (DATA, ACK, HELLO, HEARTBEAT)
    1       1     seq    DATA: its sequence number; ACK: the last in-order DATA seq received
    2       n     body   DATA: application payload; HELLO: see HELLO_* below; else empty
    2+n     2     crc    CRC-16/CCITT-FALSE over bytes 0 .. 1+n

On the line each frame is COBS-encoded and followed by one 0x00 delimiter.
"""

import struct

from wire import cobs
from wire.crc import crc16

T_DATA = 0x01
T_ACK = 0x02
T_HELLO = 0x03
T_HEARTBEAT = 0x04
_TYPES = (T_DATA, T_ACK, T_HELLO, T_HEARTBEAT)

DELIMITER = b"\x00"
HEADER_SIZE = 2
CRC_SIZE = 2
MAX_PAYLOAD = 512
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = cobs.encoded_size(MAX_FRAME)

# HELLO body: major, minor, session, peer session, max payload, window, role, flags, then the
# sender's software version as UTF-8 (at most HELLO_VERSION_MAX bytes).
HELLO_FORMAT = ">BBIIHBBB"
HELLO_FIXED = struct.calcsize(HELLO_FORMAT)
HELLO_VERSION_MAX = 32
HELLO_ANSWER_ME = 0x01  # flag: the sender's link is not up; answer with a HELLO

ROLE_HUB = 0x48  # "H": hubd
ROLE_BRIDGE = 0x42  # "B": the bridge firmware


class FrameError(ValueError):
    """A frame failed its CRC, COBS or layout check; the receiver drops it."""


class CrcError(FrameError):
    """The frame's CRC does not match: corrupted on the line."""


def encode(ftype, seq, body=b""):
    """Return the bytes to write on the line for one frame, delimiter included."""
    if len(body) > MAX_PAYLOAD:
        raise ValueError("frame body of %d bytes exceeds %d" % (len(body), MAX_PAYLOAD))
    raw = bytearray(HEADER_SIZE + len(body) + CRC_SIZE)
    raw[0] = ftype
    raw[1] = seq & 0xFF
    raw[HEADER_SIZE:HEADER_SIZE + len(body)] = body
    crc = crc16(memoryview(raw)[:HEADER_SIZE + len(body)])
    raw[-2] = crc >> 8
    raw[-1] = crc & 0xFF
    return cobs.encode(raw, True)


def decode(block):
    """Decode one COBS block (delimiter stripped) into (type, seq, body)."""
    if len(block) > MAX_ENCODED:
        raise FrameError("frame of %d bytes exceeds %d" % (len(block), MAX_ENCODED))
    try:
        raw = cobs.decode(block)
    except cobs.CobsError as e:
        raise FrameError("bad COBS: %s" % e)
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise FrameError("frame of %d bytes is too short" % len(raw))
    body_end = len(raw) - CRC_SIZE
    if crc16(memoryview(raw)[:body_end]) != (raw[body_end] << 8) | raw[body_end + 1]:
        raise CrcError("CRC mismatch")
    ftype = raw[0]
    if ftype not in _TYPES:
        raise FrameError("unknown frame type 0x%02x" % ftype)
    return ftype, raw[1], raw[HEADER_SIZE:body_end]


def encode_hello(major, minor, session, peer_session, max_payload, window, role, flags, version):
    """Build a HELLO body."""
    v = version.encode()[:HELLO_VERSION_MAX]
    return struct.pack(HELLO_FORMAT, major, minor, session, peer_session, max_payload, window,
                       role, flags) + v


def decode_hello(body):
    """Parse a HELLO body into a dict; raise FrameError when it is malformed (any bytes)."""
    if len(body) < HELLO_FIXED or len(body) > HELLO_FIXED + HELLO_VERSION_MAX:
        raise FrameError("HELLO body of %d bytes" % len(body))
    major, minor, session, peer, max_payload, window, role, flags = struct.unpack(
        HELLO_FORMAT, body[:HELLO_FIXED])
    try:
        version = str(bytes(body[HELLO_FIXED:]), "utf-8")
    except UnicodeError:
        raise FrameError("HELLO version is not UTF-8")
    # Every peer of this protocol takes MAX_PAYLOAD: a smaller limit would make our send() fail.
    if session == 0 or window == 0 or max_payload < MAX_PAYLOAD:
        raise FrameError("HELLO with zero session or window, or max payload under %d"
                         % MAX_PAYLOAD)
    return {"major": major, "minor": minor, "session": session, "peer_session": peer,
            "max_payload": max_payload, "window": window, "role": role, "flags": flags,
            "version": version}

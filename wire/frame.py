"""One frame of the hubd <-> bridge serial link: layout, tag, CRC and COBS framing.

Layout before COBS (big-endian), documented byte by byte in docs/serial-link.md:

    offset  size  field
    0       1     type     (DATA, ACK, HELLO, HEARTBEAT)
    1       1     seq      DATA: its sequence number; ACK: the last in-order DATA seq received
    2       n     body     DATA: application payload; HELLO: see HELLO_* below; else empty
    2+n     4     counter  the sender's frame counter: 1, 2, 3, ... within its session
    6+n     8     tag      HMAC-SHA256(link key, context || bytes 0 .. 5+n), first 8 bytes
    14+n    2     crc      CRC-16/CCITT-FALSE over bytes 0 .. 13+n

``context`` is what the frame is bound to without carrying it: the sender's role, its session and
the receiver's session as the sender knows it (``context()``). The CRC tells line noise from a
frame nobody with the key made (the link counts them apart). On the line each frame is
COBS-encoded and followed by one 0x00 delimiter.
"""

import struct

from wire import cobs
from wire.crc import crc16
from wire.hmac_sha256 import compare_digest

T_DATA = 0x01
T_ACK = 0x02
T_HELLO = 0x03
T_HEARTBEAT = 0x04
_TYPES = (T_DATA, T_ACK, T_HELLO, T_HEARTBEAT)

DELIMITER = b"\x00"
HEADER_SIZE = 2
COUNTER_SIZE = 4
TAG_SIZE = 8
CRC_SIZE = 2
TRAILER_SIZE = COUNTER_SIZE + TAG_SIZE + CRC_SIZE
MAX_PAYLOAD = 512
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + TRAILER_SIZE
MAX_COUNTER = 0xFFFFFFFF
KEY_SIZE = 32  # the link key: 32 random bytes, in hubd.env and bridge.json (hubctl provision)
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


def context(role, sender_session, receiver_session):
    """What a frame's tag binds it to: the sender's role, its session and the receiver's session
    as the sender knows it (0: none yet). A frame replayed into another session, or reflected
    back to its sender, does not verify."""
    return struct.pack(">BII", role, sender_session, receiver_session)


def encode(ftype, seq, body, counter, key, ctx):
    """Return the bytes to write on the line for one frame, delimiter included.

    ``key`` is a ``wire.hmac_sha256.Key`` made from the link key; ``ctx`` comes from ``context()``."""
    n = len(body)
    if n > MAX_PAYLOAD:
        raise ValueError("frame body of %d bytes exceeds %d" % (n, MAX_PAYLOAD))
    if not 0 < counter <= MAX_COUNTER:
        raise ValueError("frame counter %d out of range" % counter)
    raw = bytearray(HEADER_SIZE + n + TRAILER_SIZE)
    raw[0] = ftype
    raw[1] = seq & 0xFF
    raw[HEADER_SIZE:HEADER_SIZE + n] = body
    at = HEADER_SIZE + n
    raw[at:at + COUNTER_SIZE] = struct.pack(">I", counter)
    at += COUNTER_SIZE
    raw[at:at + TAG_SIZE] = key.mac(ctx, memoryview(raw)[:at])[:TAG_SIZE]
    at += TAG_SIZE
    crc = crc16(memoryview(raw)[:at])
    raw[at] = crc >> 8
    raw[at + 1] = crc & 0xFF
    return cobs.encode(raw, True)


def decode(block):
    """Decode one COBS block (delimiter stripped) into (type, seq, counter, body, raw).

    The CRC and the layout are checked here; the tag is not (``authentic(raw, ...)``): only the
    link knows the sessions it binds."""
    if len(block) > MAX_ENCODED:
        raise FrameError("frame of %d bytes exceeds %d" % (len(block), MAX_ENCODED))
    try:
        raw = cobs.decode(block)
    except cobs.CobsError as e:
        raise FrameError("bad COBS: %s" % e)
    if len(raw) < HEADER_SIZE + TRAILER_SIZE:
        raise FrameError("frame of %d bytes is too short" % len(raw))
    crc_at = len(raw) - CRC_SIZE
    if crc16(memoryview(raw)[:crc_at]) != (raw[crc_at] << 8) | raw[crc_at + 1]:
        raise CrcError("CRC mismatch")
    ftype = raw[0]
    if ftype not in _TYPES:
        raise FrameError("unknown frame type 0x%02x" % ftype)
    body_end = crc_at - TAG_SIZE - COUNTER_SIZE
    counter = struct.unpack(">I", raw[body_end:body_end + COUNTER_SIZE])[0]
    return ftype, raw[1], counter, raw[HEADER_SIZE:body_end], raw


def authentic(raw, key, ctx):
    """Whether the decoded frame ``raw`` carries the tag ``key`` gives it in ``ctx``."""
    tag_at = len(raw) - CRC_SIZE - TAG_SIZE
    expected = key.mac(ctx, memoryview(raw)[:tag_at])[:TAG_SIZE]
    return compare_digest(expected, raw[tag_at:tag_at + TAG_SIZE])


def encode_hello(major, minor, session, peer_session, max_payload, window, role, flags, version):
    """Build a HELLO body."""
    v = version.encode()[:HELLO_VERSION_MAX]
    return struct.pack(HELLO_FORMAT, major, minor, session, peer_session, max_payload, window,
                       role, flags) + v


def hello_major(body):
    """The protocol major a HELLO body claims (None if it has none): the one field every version
    keeps in place, read from a HELLO that does not verify to tell a peer of another protocol
    from a forgery."""
    return body[0] if len(body) else None


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

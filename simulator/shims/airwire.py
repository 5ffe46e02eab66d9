"""Wire format between the `bluetooth` shim (MicroPython) and the simulated air (CPython radio).

One frame per message: a big-endian u16 body length, then the body: a u8 kind followed by typed
items, each ``i`` + i32 (big-endian, signed), ``b`` + u16 length + bytes, or ``n`` (None).

Kinds below 100 are BLE events radio -> shim and use MicroPython's IRQ numbers, with the arguments
of MicroPython's event tuple (addresses, payloads and UUIDs as bytes; UUIDs in over-the-air
little-endian order). Kinds from 100 are requests shim -> radio, named after the BLE call they
stand for. Written in the subset MicroPython and CPython share; both ends import it.
"""

import struct

MAX_BODY = 1024

HELLO = 100  # (central address,)
SCAN = 101  # (duration_ms or None to stop, active 0/1)
CONNECT = 102  # (addr_type, addr, scan_duration_ms)
CONNECT_CANCEL = 103  # ()
DISCONNECT = 104  # (conn_handle,)
DISCOVER_SERVICES = 105  # (conn_handle, uuid or None)
DISCOVER_CHARACTERISTICS = 106  # (conn_handle, start, end, uuid or None)
DISCOVER_DESCRIPTORS = 107  # (conn_handle, start, end)
READ = 108  # (conn_handle, value_handle)
WRITE = 109  # (conn_handle, value_handle, mode, data)
EXCHANGE_MTU = 110  # (conn_handle, preferred mtu)
# Start LE security on a link (gap_pair): the shim hands over the peer's stored secret (the
# value its _IRQ_GET_SECRET handler returned for that peer), or None when it has none. The
# radio answers with _IRQ_SET_SECRET events (30: keys to store, after a new pairing) and one
# _IRQ_ENCRYPTION_UPDATE (28: conn_handle, encrypted, authenticated, bonded, key_size).
PAIR = 111  # (conn_handle, stored secret or None, bond 0/1)


class WireError(ValueError):
    """A frame that does not follow this format."""


def encode(kind, args):
    """Return one complete frame (length prefix included)."""
    parts = [bytes((kind,))]
    for a in args:
        if a is None:
            parts.append(b"n")
        elif isinstance(a, int):
            parts.append(b"i" + struct.pack(">i", a))
        else:
            a = bytes(a)
            parts.append(b"b" + struct.pack(">H", len(a)))
            parts.append(a)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise WireError("frame body too long: %d" % len(body))
    return struct.pack(">H", len(body)) + body


def body_length(header):
    """Body length from the 2-byte frame header."""
    if len(header) != 2:
        raise WireError("short frame header")
    n = struct.unpack(">H", header)[0]
    if n == 0 or n > MAX_BODY:
        raise WireError("bad frame length %d" % n)
    return n


def decode(body):
    """Return (kind, list of args) from a frame body (without the length prefix)."""
    if not body:
        raise WireError("empty frame")
    kind = body[0]
    args = []
    i = 1
    n = len(body)
    while i < n:
        t = body[i]
        if t == 0x6E:  # 'n'
            args.append(None)
            i += 1
        elif t == 0x69:  # 'i'
            if i + 5 > n:
                raise WireError("truncated int")
            args.append(struct.unpack_from(">i", body, i + 1)[0])
            i += 5
        elif t == 0x62:  # 'b'
            if i + 3 > n:
                raise WireError("truncated bytes length")
            length = struct.unpack_from(">H", body, i + 1)[0]
            if i + 3 + length > n:
                raise WireError("truncated bytes")
            args.append(bytes(body[i + 3 : i + 3 + length]))
            i += 3 + length
        else:
            raise WireError("unknown item type 0x%02x" % t)
    return kind, args

"""Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999).

COBS removes every 0x00 from a frame so 0x00 can delimit frames on the serial line: a receiver
that lost sync finds the next frame at the next 0x00. Overhead: at most one byte per 254.
"""


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def encoded_size(n):
    """Largest encoded size of `n` raw bytes (without the delimiter)."""
    return n + n // 254 + 1


def encode(data, delimit=False):
    """Encode `data`; the result contains no 0x00 byte, but the delimiter after it when `delimit`
    (written in place: on the bridge's heap every copy of a 520-byte frame counts)."""
    out = bytearray(encoded_size(len(data)) + (1 if delimit else 0))
    code_at = 0
    code = 1
    o = 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
    out[code_at] = code
    if delimit:
        out[o] = 0
        o += 1
    return bytes(memoryview(out)[:o])


def decode(data):
    """Decode one COBS block (without its delimiter); raise CobsError when it is malformed."""
    n = len(data)
    out = bytearray(n)
    i = 0
    o = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError("zero byte inside a COBS block")
        i += 1
        end = i + code - 1
        if end > n:
            raise CobsError("COBS block truncated")
        while i < end:
            b = data[i]
            if b == 0:
                raise CobsError("zero byte inside a COBS block")
            out[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            out[o] = 0
            o += 1
    return bytes(out[:o])

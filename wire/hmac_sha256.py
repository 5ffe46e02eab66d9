"""HMAC-SHA256 (RFC 2104) on ``hashlib.sha256``, for MicroPython (which has no ``hmac``) and CPython.

Both the bridge firmware and hubd import this (the serial link's frame tags, the lock protocol's
MACs; the simulated locks check theirs with it too), so one implementation decides what a valid MAC is.
"""

import hashlib

_BLOCK = 64
DIGEST_SIZE = 32


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    pad = bytearray(_BLOCK)
    pad[: len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = bytes(pad)
    # 0x36 ^ 0x5C turns the inner pad into the outer pad.
    for i in range(_BLOCK):
        pad[i] ^= 0x6A
    return inner, bytes(pad)


class HMAC:
    """Incremental HMAC-SHA256: ``HMAC(key).update(a).update(b).digest()``.

    ``digest()`` may be called once; MicroPython's sha256 cannot be copied or reused after it.
    """

    def __init__(self, key, pads=None):
        inner, self._opad = pads or _pads(key)
        self._inner = hashlib.sha256(inner)

    def update(self, data):
        self._inner.update(data)
        return self

    def digest(self):
        outer = hashlib.sha256(self._opad)
        outer.update(self._inner.digest())
        return outer.digest()


class Key:
    """A key whose pads are computed once: each ``mac()`` then costs two sha256 objects and no
    per-byte loop (the serial link tags every frame with it)."""

    def __init__(self, key):
        self._pads = _pads(key)

    def mac(self, *parts):
        """The HMAC-SHA256 of the concatenated ``parts``."""
        h = HMAC(None, self._pads)
        for part in parts:
            h.update(part)
        return h.digest()


def hmac_sha256(key, data):
    """Return the 32-byte HMAC-SHA256 of ``data`` under ``key``."""
    return HMAC(key).update(data).digest()


def compare_digest(a, b):
    """Compare two byte strings in time that depends only on their lengths, not their contents."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0

"""HMAC-SHA256 (RFC 2104) on ``hashlib.sha256``, for MicroPython (which has no ``hmac``) and CPython.

Both the bridge firmware and the simulated locks import this, so one implementation decides what a
valid lock MAC is.
"""

import hashlib

_BLOCK = 64
DIGEST_SIZE = 32


class HMAC:
    """Incremental HMAC-SHA256: ``HMAC(key).update(a).update(b).digest()``.

    ``digest()`` may be called once; MicroPython's sha256 cannot be copied or reused after it.
    """

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        pad = bytearray(_BLOCK)
        pad[: len(key)] = key
        for i in range(_BLOCK):
            pad[i] ^= 0x36
        self._inner = hashlib.sha256(pad)
        # 0x36 ^ 0x5C turns the inner pad into the outer pad without keeping the key around.
        for i in range(_BLOCK):
            pad[i] ^= 0x6A
        self._outer = hashlib.sha256(pad)

    def update(self, data):
        self._inner.update(data)
        return self

    def digest(self):
        self._outer.update(self._inner.digest())
        return self._outer.digest()


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

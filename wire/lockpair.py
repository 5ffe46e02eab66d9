"""Reference lock protocol, pairing: PAIR and UNPAIR (docs/lock-protocol.md, "Pairing").

Apart from ``wire.lockproto`` because the bridge pairs rarely and its heap is tight: it imports
this module only while pairing and drops it after. The simulated locks import it as well; both
ends share this one definition. Decoders take hostile input and raise only ``ProtocolError``.

PAIR gives the lock a new secret, sealed with a one-time pad and MACed under the lock's factory
setup key, over the link's fresh nonce; UNPAIR, MACed with the secret, makes the lock forget it.
"""

from wire.hmac_sha256 import compare_digest
from wire.lockproto import (ADDR_LEN, MAC_LEN, NONCE_LEN, SECRET_LEN, _check, _check_len,
                            OP_RESULT, _mac)

OP_PAIR = 0x04
OP_UNPAIR = 0x05
PAIR_LEN = 1 + SECRET_LEN + MAC_LEN  # op, sealed secret, MAC
UNPAIR_LEN = 1 + MAC_LEN  # op, MAC
STATUS_NOT_PAIRING = 9  # RESULT status: a PAIR while the lock is not in pairing mode
# The tags the lock's RESULT to PAIR / UNPAIR is MACed over: 7 zero bytes and the opcode (a status
# read uses 8 zero bytes, a COMMAND an HMAC-derived tag).
PAIR_TAG = b"\x00\x00\x00\x00\x00\x00\x00\x04"
UNPAIR_TAG = b"\x00\x00\x00\x00\x00\x00\x00\x05"

_DOMAIN_PAIR = b"homecare-lock/v1/pair"
_DOMAIN_PAIR_PAD = b"homecare-lock/v1/pair-pad"
_DOMAIN_UNPAIR = b"homecare-lock/v1/unpair"


def pair_pad(setup_key, addr, nonce):
    """The one-time pad of a PAIR: HMAC(setup key, pad domain || addr || nonce)."""
    _check_len(setup_key, SECRET_LEN, "setup key")
    _check_len(addr, ADDR_LEN, "lock address")
    _check_len(nonce, NONCE_LEN, "nonce")
    return _mac(setup_key, _DOMAIN_PAIR_PAD, addr, nonce)


def _seal(setup_key, addr, nonce, data):
    """``data`` XOR the pad: seals a secret, and opens a sealed one."""
    _check_len(data, SECRET_LEN, "secret")
    out = bytearray(pair_pad(setup_key, addr, nonce))
    for i in range(SECRET_LEN):
        out[i] ^= data[i]
    return bytes(out)


def encode_pair(setup_key, secret, addr, nonce):
    """Build a PAIR giving the lock ``secret``, sealed and MACed under its ``setup_key``:
    op || sealed || HMAC(setup key, domain || addr || nonce || sealed)."""
    sealed = _seal(setup_key, addr, nonce, secret)
    return bytes((OP_PAIR,)) + sealed + _mac(setup_key, _DOMAIN_PAIR, addr, nonce, sealed)


def open_pair(setup_key, addr, nonce, data):
    """The new secret a PAIR carries, or None if its MAC does not verify under ``setup_key``."""
    _check(data, PAIR_LEN, OP_PAIR, "PAIR")
    sealed = bytes(data[1 : 1 + SECRET_LEN])
    mac = _mac(setup_key, _DOMAIN_PAIR, addr, nonce, sealed)
    if not compare_digest(mac, bytes(data[1 + SECRET_LEN :])):
        return None
    return _seal(setup_key, addr, nonce, sealed)


def encode_unpair(secret, addr, nonce):
    """Build an UNPAIR: op || HMAC(secret, domain || addr || nonce); the lock forgets ``secret``."""
    _check_len(addr, ADDR_LEN, "lock address")
    _check_len(nonce, NONCE_LEN, "nonce")
    return bytes((OP_UNPAIR,)) + _mac(secret, _DOMAIN_UNPAIR, addr, nonce)


def result_without_secret(status, state, battery):
    """The RESULT of a lock that has no secret (not paired; only ever a refusal): its MAC field
    is 32 zero bytes, as it has nothing to MAC with. Lock side."""
    return bytes((OP_RESULT, status, state, battery)) + bytes(MAC_LEN)


def verify_unpair(secret, addr, nonce, data):
    """True if ``data`` is an UNPAIR made with ``secret`` on ``nonce``."""
    _check(data, UNPAIR_LEN, OP_UNPAIR, "UNPAIR")
    return compare_digest(encode_unpair(secret, addr, nonce), bytes(data))

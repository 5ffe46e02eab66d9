"""The BLE stack's bond keys, kept in the bridge's flash (docs/ble-proxy.md, "Bonding").

MicroPython's `bluetooth` leaves the storing of secrets to the application: NimBLE asks for one
with _IRQ_GET_SECRET (sec_type, index, key) and hands new ones over with _IRQ_SET_SECRET
(sec_type, key, value; value None deletes). ``get`` and ``set`` answer those, at IRQ level,
from a copy in RAM; ``save`` writes the copy to flash afterwards, from a task (never from the
IRQ handler), and ``forget`` drops one peer's keys (ble_unpair).

Bounded: at most ``max_peers`` peers (a key of 7 bytes, NimBLE's ble_addr_t: the address type,
then the address least significant byte first), each with its "our" and "peer" secret, and a
few other secrets (NimBLE's own IRK). A secret of a new peer beyond that is refused (the stack
then pairs without storing the bond): a bonded lock is never pushed out by another.

The file: MAGIC, then records of sec_type (1 byte), key length (1), value length (1), key,
value. It is written to a temporary file and renamed over the old one. Whatever the file holds,
loading never raises: a file that is not one of these (truncated, too long, a bad length, too
many records) is ignored as a whole and logged, and the bonds in it are lost (the locks must
pair again), never half-read.
"""

import os

from micropython import const

import log

PATH = "ble_bonds.bin"
MAGIC = b"BND1"
MAX_PEERS = const(8)
_MAX_OTHER = const(2)  # secrets not of a peer (NimBLE's own IRK)
_MAX_KEY = const(16)
_MAX_VALUE = const(128)  # NimBLE's ble_store_value_sec is about 80 bytes
_SEC_OUR = const(1)
_SEC_PEER = const(2)


def peer_key(addr_type, addr):
    """A peer's key in the store (ble_addr_t) from its address type and 6 bytes, MSB first."""
    return bytes((addr_type, addr[5], addr[4], addr[3], addr[2], addr[1], addr[0]))


def remove(path=PATH):
    """Delete the stored bonds (the decommission's wipe)."""
    for name in (path, path + ".tmp"):
        try:
            os.remove(name)
        except OSError:
            pass  # there was none


class Bonds:
    """See the module docstring."""

    def __init__(self, path=PATH, max_peers=MAX_PEERS):
        self.path = path
        self.max_peers = max_peers
        self.dirty = False
        self._recs = []  # (sec_type, key, value); a peer's two share one key object
        self._recs = self._load()

    def _limit(self):
        return 2 * self.max_peers + _MAX_OTHER

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read(len(MAGIC) + self._limit() * (3 + _MAX_KEY + _MAX_VALUE) + 1)
        except OSError:
            return []  # none yet
        recs = _parse(data, self._limit())
        if recs is None:
            log.error("%s is not a bond file (%d bytes): ignored, its bonds are lost"
                      % (self.path, len(data)))
            return []
        return recs

    def peers(self):
        """How many peers have a secret stored."""
        seen = []
        for rec in self._recs:
            if rec[0] in (_SEC_OUR, _SEC_PEER) and rec[1] not in seen:
                seen.append(rec[1])
        return len(seen)

    def holds(self, addr_type, addr):
        """Whether the peer's keys are stored (its bond is here)."""
        key = peer_key(addr_type, addr)
        for rec in self._recs:
            if rec[0] == _SEC_PEER and rec[1] == key:
                return True
        return False

    # --- the stack's questions (IRQ level) --------------------------------------------------

    def get(self, sec_type, index, key):
        """_IRQ_GET_SECRET: the value for (sec_type, key), or with no key the index'th value of
        that sec_type; None if there is none."""
        if key is not None:
            key = bytes(key)
        i = 0
        for rec in self._recs:
            if rec[0] != sec_type:
                continue
            if key is None:
                if i == index:
                    return rec[2]
                i += 1
            elif rec[1] == key:
                return rec[2]
        return None

    def set(self, sec_type, key, value):
        """_IRQ_SET_SECRET: store (or, value None, delete) a secret; False when it does not fit
        (the stack then keeps no bond)."""
        if key is None:
            return False
        key = bytes(key)
        recs = self._recs
        for i in range(len(recs)):
            if recs[i][0] == sec_type and recs[i][1] == key:
                if value is None:
                    recs.pop(i)
                else:
                    if len(value) > _MAX_VALUE:
                        return False
                    recs[i] = (sec_type, recs[i][1], bytes(value))
                self.dirty = True
                return True
        if value is None:
            return False  # nothing to delete
        if not 0 < len(key) <= _MAX_KEY or len(value) > _MAX_VALUE:
            return False
        if sec_type in (_SEC_OUR, _SEC_PEER):
            known = None
            for rec in recs:
                if rec[0] in (_SEC_OUR, _SEC_PEER) and rec[1] == key:
                    known = rec[1]
            if known is None and self.peers() >= self.max_peers:
                return False
            key = known or key
        else:
            others = 0
            for rec in recs:
                others += 0 if rec[0] in (_SEC_OUR, _SEC_PEER) else 1
            if others >= _MAX_OTHER:
                return False
        recs.append((sec_type, key, bytes(value)))
        self.dirty = True
        return True

    # --- hubd's requests and the flash ------------------------------------------------------

    def forget(self, addr_type, addr):
        """Drop every secret of that peer; 1 if it had any, else 0."""
        key = peer_key(addr_type, addr)
        n = len(self._recs)
        self._recs = [rec for rec in self._recs if rec[1] != key]
        if len(self._recs) != n:
            self.dirty = True
            return 1
        return 0

    def save(self):
        """Write the bonds to flash if they changed; raises OSError if the flash would not."""
        if not self.dirty:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            for rec in self._recs:
                f.write(bytes((rec[0], len(rec[1]), len(rec[2]))))
                f.write(rec[1])
                f.write(rec[2])
        if hasattr(os, "sync"):
            os.sync()
        os.rename(tmp, self.path)
        self.dirty = False


def _parse(data, limit):
    # The records of a bond file, or None if it is not one (module docstring).
    if data[: len(MAGIC)] != MAGIC:
        return None
    recs = []
    i = len(MAGIC)
    n = len(data)
    while i < n:
        if i + 3 > n or len(recs) >= limit:
            return None
        klen = data[i + 1]
        vlen = data[i + 2]
        if not 0 < klen <= _MAX_KEY or vlen > _MAX_VALUE or i + 3 + klen + vlen > n:
            return None
        key = data[i + 3 : i + 3 + klen]
        for rec in recs:
            if rec[1] == key:
                if rec[0] == data[i]:
                    return None  # a key twice: not a file this module wrote
                key = rec[1]  # one object for a peer's two secrets
        recs.append((data[i], key, data[i + 3 + klen : i + 3 + klen + vlen]))
        i += 3 + klen + vlen
    return recs

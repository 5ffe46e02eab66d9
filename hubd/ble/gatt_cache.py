"""A lock's GATT database kept across connections through the bridge's proxy, so a reconnect
skips discovery (issue 17: 904 ms of a cold reference-lock command, 1205 ms of a dKey's, on the
realistic air; docs/ble-timing.md, "GATT caching").

When a kept database may be used is the Core spec's (Vol 3 Part G, 2.5.2 "Attribute caching",
2.5.2.1 "Robust caching", 7.1 Service Changed, 7.3 Database Hash), read per peer from what its
own discovery found:

- **no Service Changed characteristic** (0x2A05): "the server's GATT services cannot change
  during its usable lifetime" and "the client does not need to ever perform service discovery
  after the initial service discovery". Kept, bonded or not. Both simulated locks are this (the
  reference lock's layout is ours: docs/lock-protocol.md, "GATT"; the dKey's is the vendor's).
- **Service Changed and a Database Hash** (0x2B2A): kept, and checked at each connect by reading
  the hash (one ATT read, 1-2 connection events instead of a discovery) and comparing it with
  the one read with the discovery; another value (or an error) discards it. The spec's way for a
  client with no bond (robust caching). Through the bridge there is no "read by UUID" (MicroPython
  reads by handle), so the hash is read at its kept handle: a database that moved it answers
  an error or another value there, either a miss.
- **Service Changed without a Database Hash**: not kept. Only a bonded client may rely on the
  server's indication at reconnection, and it comes after the link is encrypted, racing the
  first requests; rediscovered every time (what it costs is said in docs/ble-timing.md).

A kept database is discarded (the next connection discovers again) on:

- an ATT error that says a handle is not the attribute kept for it (:data:`STALE_ATT`: invalid
  handle, read or write not permitted, attribute not found, database out of sync) on any request
  of a connection that used it (hubd.ble.client: a read or a subscription, safe to repeat, is
  repeated once after a fresh discovery on the same connection; a write never: the caller
  decides, and a COMMAND is never written twice, docs/lock-protocol.md "at most once");
- a Service Changed indication on its kept handle (hubd does not subscribe to it itself: a CCCD
  write at every connection would cost what the check saves; a bonded server that kept a
  subscription sends it, and the Database Hash read at connect is what catches a change);
- a connection that used it and ended without hearing the peer once on a subscribed
  characteristic: a lock that broke the spec and moved its handles without Service Changed may
  take a stale write on another attribute silently, and silence is then all that tells
  (both drivers hear the lock on every connection they make: a CHALLENGE, a handshake answer);
- ``unpair()`` (a bond forgotten: a lock reset or decommissioned), :meth:`GattCache.forget`
  (hubd's pairing and decommissioning of a reference lock);
- hubd's restart: the cache is in memory only, per :class:`hubd.ble.proxy.BleProxy`.

What makes the reference lock safe beyond this: its COMMAND is written only after a CHALLENGE
came back on the kept event handle in answer to a write on the kept control handle on the same
connection (hubd.locks.reference), so a COMMAND never goes to a handle the lock has not just
answered on.

The hub's own adapter (direct mode) is bleak's BlueZ backend, which has caches of its own and
needs none of this: BlueZ keeps a bonded device's database on disk and checks it with the
Database Hash and Service Changed (main.conf ``[GATT] Cache``), and bleak's
``dangerous_use_bleak_cache`` (passed by bleak-retry-connector's ``establish_connection`` when
its check of BlueZ's D-Bus objects allows it) returns the services bleak read last without
waiting for ``ServicesResolved``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bleak.backends.service import BleakGATTServiceCollection
from bleak.uuids import normalize_uuid_16

from hubd.ble.gatt import Discovery

log = logging.getLogger(__name__)

SERVICE_CHANGED_UUID = normalize_uuid_16(0x2A05)
DATABASE_HASH_UUID = normalize_uuid_16(0x2B2A)
#: ATT errors (Core spec Vol 3 Part F, 3.4.1.1) that say a handle is not the attribute the cache
#: holds for it: Invalid Handle, Read Not Permitted, Write Not Permitted, Attribute Not Found,
#: Database Out Of Sync.
STALE_ATT = frozenset((0x01, 0x02, 0x03, 0x0A, 0x12))
#: Peers kept at most (a hub's locks; the oldest goes first).
MAX_PEERS = 64


@dataclass(frozen=True)
class Entry:
    """One peer's kept database: the discovery's messages as taken in, and what checks it."""

    messages: tuple[dict[str, Any], ...]
    changed_handle: int | None  # Service Changed's value handle
    hash_handle: int | None  # Database Hash's value handle (kept only with a hash)
    hash: bytes | None

    def services(self, wanted: set[str] | None,
                 write_without_response_size: Callable[[], int]) -> BleakGATTServiceCollection:
        """bleak's collection, built again for this connection (its write sizes are its MTU's)."""
        discovery = Discovery(write_without_response_size)
        for msg in self.messages:
            discovery.take(msg)
        return discovery.services(wanted)


def hash_to_read(discovery: Discovery) -> int | None:
    """The Database Hash's value handle, when keeping ``discovery`` needs its hash read right
    after it: the peer has Service Changed (its database may change) and a hash to tell it by.
    Without Service Changed the database is kept as it is; with it and no hash, not at all."""
    if discovery.value_handle(SERVICE_CHANGED_UUID) is None:
        return None
    return discovery.value_handle(DATABASE_HASH_UUID)


def entry_of(discovery: Discovery, read_hash: bytes | None) -> Entry | None:
    """What may be kept of ``discovery`` (the module docstring); None if nothing may.
    ``read_hash``: the Database Hash read at :func:`hash_to_read`'s handle right after it."""
    changed = discovery.value_handle(SERVICE_CHANGED_UUID)
    if changed is None:
        return Entry(tuple(discovery.taken), None, None, None)
    hash_handle = hash_to_read(discovery)
    if hash_handle is None or not read_hash:
        return None
    return Entry(tuple(discovery.taken), changed, hash_handle, read_hash)


class GattCache:
    """Kept databases by peer address; ``enabled`` False keeps none (every connect discovers).
    The counts say what it did (``hit``, ``miss``, ``kept``, ``not_kept``, and each reason a
    database was discarded)."""

    def __init__(self, enabled: bool = True, max_peers: int = MAX_PEERS) -> None:
        self.enabled = enabled
        self.max_peers = max_peers
        self._entries: dict[str, Entry] = {}
        self.counts: Counter[str] = Counter()

    def get(self, address: str) -> Entry | None:
        entry = self._entries.get(address.upper()) if self.enabled else None
        self.counts["hit" if entry is not None else "miss"] += 1
        return entry

    def keep(self, address: str, entry: Entry | None) -> None:
        if not self.enabled:
            return
        address = address.upper()
        self._entries.pop(address, None)
        if entry is None:
            self.counts["not_kept"] += 1
            return
        self.counts["kept"] += 1
        self._entries[address] = entry
        while len(self._entries) > self.max_peers:
            del self._entries[next(iter(self._entries))]

    def forget(self, address: str, why: str) -> None:
        """Discard ``address``'s database (``why``: counted and logged)."""
        if self._entries.pop(address.upper(), None) is not None:
            self.counts[why] += 1
            log.info("%s: its kept GATT database is discarded (%s): the next connection "
                     "discovers it again", address.upper(), why)

    def __contains__(self, address: str) -> bool:
        return address.upper() in self._entries

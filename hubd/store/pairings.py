"""The locks hubd has paired and drives itself: each one's kind, address, address type, secret
and protocol, and the number of its latest report hubd took in, in the state database's
``pairings`` table.

    pairings = Pairings(store)
    pairings.record("front-door", PairedLock("inside_turner", "C0:FF:EE:00:00:01", secret))
    pairings.all()                 # {"front-door": PairedLock(...)}, what hubd drives at start
    pairings.mark("front-door", 17)  # its report 17 taken in: after a restart, reports from 18
    pairings.forget("front-door")  # decommissioned: the row is gone, its secret overwritten
    paired_kinds(db)               # {"front-door": "inside_turner"}: read-only, no secret (doctor)

The secret (a reference lock's pairing secret, made by hubd; a dKey's association data, key holder
id and association secret, made with the lock: hubd/locks/pairing.py) stays here: not in
hubd.toml, not in hubctl's files, not in a log, not on the local socket. The database file is
private to hubd (hubd/store/database.py); a deleted row is zeroed (``secure_delete``) and the WAL
truncated after a forget, so a secret taken away leaves no copy in free pages or old frames.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from hubd.locks.transport import PairedLock
from hubd.store.database import Store


class Pairings:
    """The ``pairings`` table of ``store``."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def record(self, lock: str, paired: PairedLock) -> None:
        """Keep ``lock``'s pairing (replacing an earlier one of the same lock id or address).
        Raises sqlite3.Error."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM pairings WHERE lock = ? OR address = ?",
                         (lock, paired.address.upper()))
            conn.execute("INSERT INTO pairings (lock, kind, address, addr_type, secret, protocol, "
                         "paired_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (lock, paired.kind, paired.address.upper(), paired.addr_type,
                          paired.secret, paired.protocol, round(self._clock(), 3)))

    def all(self) -> dict[str, PairedLock]:
        """Every pairing, by lock id, with the number of its latest report taken in."""
        rows = self._store.conn.execute(
            "SELECT lock, kind, address, addr_type, secret, protocol, report_counter FROM pairings "
            "ORDER BY lock").fetchall()
        return {lock: PairedLock(kind, address, bytes(secret), addr_type, protocol,
                                 -1 if counter is None else counter)
                for lock, kind, address, addr_type, secret, protocol, counter in rows}

    def mark(self, lock: str, counter: int) -> None:
        """Keep ``counter`` as the number of ``lock``'s latest report taken in (the driver's
        ``on_counter``); nothing if the lock is not paired (any more). Raises sqlite3.Error."""
        with self._store.transaction() as conn:
            conn.execute("UPDATE pairings SET report_counter = ? WHERE lock = ?", (counter, lock))

    def paired_at(self, lock: str) -> float | None:
        row = self._store.conn.execute("SELECT paired_at FROM pairings WHERE lock = ?",
                                       (lock,)).fetchone()
        return None if row is None else row[0]

    def lock_at(self, address: str) -> str | None:
        """The lock id paired at ``address``, if any."""
        row = self._store.conn.execute("SELECT lock FROM pairings WHERE address = ?",
                                       (address.upper(),)).fetchone()
        return None if row is None else row[0]

    def forget(self, lock: str) -> bool:
        """Delete ``lock``'s pairing; True if there was one. The WAL is truncated after it, so
        the secret's old page leaves no frame behind. Raises sqlite3.Error."""
        with self._store.transaction() as conn:
            gone = conn.execute("DELETE FROM pairings WHERE lock = ?", (lock,)).rowcount > 0
        try:
            self._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass  # a reader holds the WAL: the next checkpoint overwrites it
        return gone


def paired_kinds(db: Path) -> dict[str, str]:
    """Each paired lock's kind by lock id, read from the state database file ``db`` without
    opening it for writing and without reading a secret: hubctl doctor checks them against
    hubd.toml's [locks] while hubd runs (WAL: the read never blocks hubd). Raises sqlite3.Error
    (a file that is not there or cannot be opened, a database without the table)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT lock, kind FROM pairings ORDER BY lock").fetchall())
    finally:
        conn.close()


def record_pairing(state_dir: Path, lock: str, paired: PairedLock) -> None:
    """Record one pairing in the state database under ``state_dir`` (creating it as hubd would):
    for tests and tools that set up a hub whose locks were paired before (hubd itself uses
    :class:`Pairings`)."""
    store = Store.open(state_dir)
    try:
        Pairings(store).record(lock, paired)
    finally:
        store.close()

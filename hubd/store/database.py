"""hubd's durable state: one SQLite file (WAL) holding the command journal, the audit chain,
the outbox, the last known lock states, the safety alarms and the devices with their battery watch.

Why these settings:

- ``journal_mode=WAL``: readers (the audit CLI, a test, a technician's ``sqlite3``) never block
  the daemon, and a commit is one append to the WAL.
- ``synchronous=FULL``: a commit is on disk when it returns, power cut included. hubd records a
  command id *before* it answers ``accepted`` and before anything reaches the bridge; with
  ``NORMAL`` the last commits can vanish on power loss (not on a crash), and a command whose record
  vanished could run twice. Commands are rare, so the fsync per commit costs nothing that matters.
- ``secure_delete=ON``: a deleted row (a lock's pairing secret or a dKey's association data above
  all) is overwritten with
  zeros, not left in a free page; forgetting a pairing also truncates the WAL
  (hubd/store/pairings.py).
- The file holds lock secrets: it, its ``-wal`` and ``-shm`` are mode 0600 and the state
  directory is not readable by others (:func:`_private`); a file found with wider modes is
  narrowed at open, and hubd says so.
- Calls run on the event loop: each is a few small statements, and keeping them there keeps the
  order of journal, audit and publish obvious.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` turns version *n* into
*n + 1*. A file written by a newer hubd is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: The file inside ``state_dir``.
DB_NAME = "hubd.sqlite3"

#: ``MIGRATIONS[n]`` turns schema version ``n`` into ``n + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE commands (            -- the journal: one row per accepted command id
        id          TEXT PRIMARY KEY,
        lock        TEXT NOT NULL,
        action      TEXT NOT NULL,
        actor_id    TEXT NOT NULL,
        role        TEXT NOT NULL,
        assignment  TEXT,
        kid         TEXT NOT NULL,
        reply_to    TEXT NOT NULL,
        until       REAL NOT NULL,     -- exp + clock skew: after it the id cannot verify again
        accepted_at REAL NOT NULL,
        written_at  REAL,              -- the bridge attempted the lock write: never resend
        final       TEXT,              -- succeeded | failed | timed_out | incomplete
        reason      TEXT,
        state       TEXT,
        final_at    REAL
    );
    CREATE INDEX commands_open ON commands (final) WHERE final IS NULL;
    CREATE INDEX commands_until ON commands (until);

    CREATE TABLE audit (               -- append-only hash chain; entry is the full JSON
        seq   INTEGER PRIMARY KEY,
        hash  TEXT NOT NULL,
        entry TEXT NOT NULL
    );

    CREATE TABLE outbox (              -- messages that leave only after the broker's PUBACK
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        topic   TEXT NOT NULL,
        payload BLOB NOT NULL,
        created REAL NOT NULL
    );

    CREATE TABLE lock_states (         -- last state per lock, so a restart does not re-report it
        lock    TEXT PRIMARY KEY,
        state   TEXT NOT NULL,
        battery INTEGER,
        source  TEXT NOT NULL,
        at      REAL NOT NULL
    );
    """,
    """
    CREATE TABLE alarms (              -- safety alarms: kept until the alarm centre HANDLED them
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: alarms go out FIFO
        id           TEXT NOT NULL UNIQUE,  -- stable id (wire.alarms.alarm_id, or hubd's own)
        source       TEXT NOT NULL,         -- bridge (journaled there too) | hubd (supervision)
        event        TEXT NOT NULL,
        device       TEXT NOT NULL,
        priority     INTEGER NOT NULL,
        unit_at      INTEGER,               -- the alarm unit's time of the event
        bridge_at    INTEGER,               -- when the bridge journaled it (null: no clock yet)
        received_at  REAL NOT NULL,         -- when hubd stored it
        attempts     INTEGER NOT NULL DEFAULT 0,  -- publishes the broker acknowledged
        published_at REAL,                  -- the last of them
        lte          TEXT,                  -- the second path's last result (ack, nak, duh, failed)
        handled_at   REAL,                  -- the centre's confirmation arrived: the alarm is done
        operator     TEXT,
        bridge_told  INTEGER NOT NULL DEFAULT 0  -- alarm_handled went out on the link
    );
    CREATE INDEX alarms_pending ON alarms (seq) WHERE handled_at IS NULL;
    """,
    """
    CREATE TABLE devices (             -- every device heard of: its last report and its battery watch
        id        TEXT PRIMARY KEY,    -- lock id, alarm unit id, {unit}-pendant, bridge
        kind      TEXT NOT NULL,       -- hubapi.models.DeviceKind
        model     TEXT NOT NULL,       -- hubd.devices.battery.MODELS
        reading   REAL,                -- last battery reading, in unit
        unit      TEXT,
        percent   INTEGER,             -- last battery percent
        state     TEXT NOT NULL DEFAULT 'ok',  -- battery state after hysteresis: ok | low | critical
        warned_at REAL,                -- when the last low/critical/reminder went into the outbox
        warnings  INTEGER NOT NULL DEFAULT 0,  -- warnings issued so far: numbers the warning ids
        mains     INTEGER,             -- mains power present (1/0), for devices that say
        last_seen REAL,                -- last report (null: never heard from)
        rssi      INTEGER,
        firmware  TEXT
    );
    """,
    """
    -- The final answer of a command is owed until the broker acknowledged it: after a kill -9 in
    -- between, the next start publishes it again (hubd/access/journal.py unanswered()).
    ALTER TABLE commands ADD COLUMN answered_at REAL;
    UPDATE commands SET answered_at = final_at WHERE final IS NOT NULL;
    CREATE INDEX commands_unanswered ON commands (final_at) WHERE final IS NOT NULL AND answered_at IS NULL;
    """,
    """
    CREATE TABLE pairings (            -- the locks hubd has paired and drives: hubd/store/pairings.py
        lock      TEXT PRIMARY KEY,    -- the lock id of hubd.toml [locks]
        kind      TEXT NOT NULL,       -- wire.lockkinds
        address   TEXT NOT NULL UNIQUE,  -- C0:FF:EE:00:00:01
        addr_type INTEGER NOT NULL,    -- 0 public, 1 random
        secret    BLOB NOT NULL,       -- the 32-byte pairing secret: whoever has it opens the door
        paired_at REAL NOT NULL
    );
    """,
    """
    -- Which protocol each lock speaks, so hubd picks its driver (wire.lockkinds.PROTOCOLS); every
    -- lock paired before spoke the reference protocol. A dKey's secret is its association data:
    -- its key holder id (4 bytes) then its association secret (32 bytes), kept as any secret is.
    ALTER TABLE pairings ADD COLUMN protocol TEXT NOT NULL DEFAULT 'reference';
    """,
    """
    -- The number of the lock's latest report hubd took in (the reference protocol's, verified),
    -- so that after a restart hubd asks for the reports the lock made meanwhile instead of taking
    -- a new baseline: a key turned by hand while hubd was down is audited as manual. NULL: none
    -- taken in yet with this pairing (the first read takes the lock's number as its baseline).
    ALTER TABLE pairings ADD COLUMN report_counter INTEGER;
    """,
)


class StoreError(Exception):
    """The state file cannot be opened or used; ``str()`` says which file and what to do."""


class Store:
    """The open state database. Use :meth:`transaction` for every write."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating and migrating as needed) ``state_dir/hubd.sqlite3``."""
        path = Path(state_dir) / DB_NAME
        try:
            _private(Path(state_dir), path)
            conn = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open state database {path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA busy_timeout=5000")  # a reader holding a lock briefly is not an error
            store = cls(conn, path)
            store._migrate()
            _private_files(path)  # the -wal and -shm SQLite just made (it gives them the file's mode)
        except OSError as exc:
            conn.close()
            raise StoreError(f"cannot make state database {path} private: {exc}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"state database {path} is unusable ({exc}): move it aside (keep it, it holds the "
                f"audit trail) and start hubd again"
            ) from None
        return store

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"state database {self.path} has schema version {version}, this hubd knows up to "
                f"{len(MIGRATIONS)}: update hubd"
            )
        for target in range(version + 1, len(MIGRATIONS) + 1):
            with self.transaction() as conn:
                for statement in _statements(MIGRATIONS[target - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")
            log.info("state database %s migrated to schema version %d", self.path, target)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back if the block raises)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        """Close the database (the WAL is checkpointed by SQLite)."""
        self.conn.close()


def _private(state_dir: Path, path: Path) -> None:
    """The state directory (made 0750 if new; others' bits taken away if not) and the database
    file (created 0600, or narrowed to it) before SQLite opens it: it holds lock secrets."""
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o007:
        log.warning("state directory %s was open to others (%o): now %o", state_dir, mode,
                    mode & ~0o007)
        state_dir.chmod(mode & ~0o007)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    _private_files(path)


def _private_files(path: Path) -> None:
    """The database and its ``-wal`` / ``-shm``, where they exist, mode 0600."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode != 0o600:
            log.warning("state file %s had mode %o: now 600 (it holds lock secrets)", file, mode)
            file.chmod(0o600)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, current = [], ""
    for line in script.splitlines():
        current += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s.strip(" ;\n")]

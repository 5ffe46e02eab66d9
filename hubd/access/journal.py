"""The command journal: each accepted command id, durably, from ``accepted`` to its final outcome.

It is also the replay guard: an id in the journal has been used, across restarts. The row is
committed (with its ``accepted`` audit entry) *before* ``accepted`` is published and before the
lock driver hears of the command; ``written`` is committed when the driver attempts the lock write; the
final outcome when it is known. A row without a final outcome at start-up is a command hubd was
running when it died: :meth:`Journal.unfinished` lists them so they are answered ``incomplete``
and never run again. A final answer is owed until the broker acknowledged it (``answered``); one
recorded just before a kill -9 is listed by :meth:`Journal.unanswered` and sent after the restart.

Rows are pruned :data:`KEEP_AFTER_EXPIRY_S` after the command's expiry: by then the id could not
verify anyway. The margin covers a hub clock that steps backwards (an NTP correction) and would
otherwise make an expired command valid again after its id was forgotten.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from hubapi.models import AuditOutcome, CommandClaims
from hubd.store.audit import AuditLog
from hubd.store.database import Store
from hubd.access.verify import Rejection

log = logging.getLogger(__name__)

#: How long a finished command's id is kept after ``exp`` + skew.
KEEP_AFTER_EXPIRY_S = 24 * 3600


class AlreadyUsed(Exception):
    """The command id is in the journal: a replay or a redelivery."""


@dataclass(frozen=True)
class JournalEntry:
    """A command as the journal holds it."""

    id: str
    lock: str
    action: str
    actor: str
    role: str
    assignment: str | None
    kid: str
    reply_to: str
    written: bool


class Journal:
    """The ``commands`` table and the audit entries of each step, written together."""

    def __init__(self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    def __contains__(self, command_id: object) -> bool:
        if not isinstance(command_id, str):
            return False
        row = self._store.conn.execute("SELECT 1 FROM commands WHERE id = ?", (command_id,)).fetchone()
        return row is not None

    def accept(self, claims: CommandClaims, kid: str, reply_to: str, until: float) -> None:
        """Record the command and its ``accepted`` audit entry; raises AlreadyUsed or sqlite3.Error."""
        try:
            with self._store.transaction() as conn:
                conn.execute(
                    "INSERT INTO commands (id, lock, action, actor_id, role, assignment, kid, reply_to,"
                    " until, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (claims.id, claims.lock, claims.action.value, claims.actor.id, claims.actor.role.value,
                     claims.assignment, kid, reply_to, until, self._clock()))
                self._audit.append(conn, **_identity(claims, kid), outcome=AuditOutcome.ACCEPTED)
        except sqlite3.IntegrityError:
            raise AlreadyUsed(claims.id) from None

    def spend(self, rejection: Rejection, reply_to: str, until: float) -> None:
        """Record a verified command that was refused, with its ``rejected`` audit entry, so its
        id is spent: the same token later (live after retained, or once the lock is free) is a
        replay. Raises AlreadyUsed (the id was spent before: only the audit entry is written) or
        sqlite3.Error."""
        identity = dict(lock=rejection.lock, source="remote", command=rejection.command_id,
                        action=rejection.action, actor=rejection.actor, role=rejection.role,
                        assignment=rejection.assignment, kid=rejection.kid, verified=True)
        now = self._clock()
        with self._store.transaction() as conn:
            # answered_at: a refusal's answer goes out once, not durably (nothing ran).
            cursor = conn.execute(
                "INSERT OR IGNORE INTO commands (id, lock, action, actor_id, role, assignment, kid,"
                " reply_to, until, accepted_at, final, reason, final_at, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rejection.command_id, rejection.lock, rejection.action, rejection.actor, rejection.role,
                 rejection.assignment, rejection.kid, reply_to, until, now, AuditOutcome.REJECTED.value,
                 rejection.reason.value, now, now))
            self._audit.append(conn, **identity, outcome=AuditOutcome.REJECTED, reason=rejection.reason.value)
        if cursor.rowcount == 0:
            raise AlreadyUsed(rejection.command_id)

    def written(self, command_id: str) -> None:
        """Record that the lock driver attempted the lock write (raises sqlite3.Error)."""
        with self._store.transaction() as conn:
            entry = self._get(conn, command_id)
            conn.execute("UPDATE commands SET written_at = ? WHERE id = ?", (self._clock(), command_id))
            self._audit.append(conn, **_row_identity(entry), outcome=AuditOutcome.WRITTEN)

    def finish(self, command_id: str, outcome: AuditOutcome, reason: str | None, state: str | None,
               battery: int | None) -> None:
        """Record the final outcome (raises sqlite3.Error)."""
        with self._store.transaction() as conn:
            entry = self._get(conn, command_id)
            conn.execute("UPDATE commands SET final = ?, reason = ?, state = ?, final_at = ? WHERE id = ?",
                         (outcome.value, reason, state, self._clock(), command_id))
            self._audit.append(conn, **_row_identity(entry), outcome=outcome, reason=reason, state=state,
                               battery=battery)

    def answered(self, command_id: str) -> None:
        """The broker acknowledged the command's final answer (raises sqlite3.Error)."""
        with self._store.transaction() as conn:
            conn.execute("UPDATE commands SET answered_at = ? WHERE id = ?", (self._clock(), command_id))

    def unanswered(self) -> list[FinalAnswer]:
        """Finished commands whose final answer the broker never acknowledged, oldest first."""
        rows = self._store.conn.execute(
            "SELECT c.id, c.lock, c.reply_to, c.final, c.reason, c.state, c.final_at FROM commands c"
            " WHERE c.final IS NOT NULL AND c.answered_at IS NULL ORDER BY c.final_at").fetchall()
        return [FinalAnswer(*row) for row in rows]

    def unfinished(self) -> list[JournalEntry]:
        """Commands accepted but without a final outcome (hubd died while running them)."""
        rows = self._store.conn.execute(
            "SELECT id FROM commands WHERE final IS NULL ORDER BY accepted_at").fetchall()
        return [self._get(self._store.conn, row[0]) for row in rows]

    def prune(self) -> int:
        """Forget finished commands long past their expiry; returns how many."""
        with self._store.transaction() as conn:
            cursor = conn.execute("DELETE FROM commands WHERE final IS NOT NULL AND until < ?",
                                  (self._clock() - KEEP_AFTER_EXPIRY_S,))
        if cursor.rowcount:
            log.info("journal pruned", extra={"commands": cursor.rowcount})
        return cursor.rowcount

    @staticmethod
    def _get(conn: sqlite3.Connection, command_id: str) -> JournalEntry:
        row = conn.execute(
            "SELECT id, lock, action, actor_id, role, assignment, kid, reply_to, written_at"
            " FROM commands WHERE id = ?", (command_id,)).fetchone()
        if row is None:
            raise KeyError(command_id)
        return JournalEntry(*row[:8], written=row[8] is not None)


@dataclass(frozen=True)
class FinalAnswer:
    """A final answer as the journal holds it (the battery is not kept: the lock state is)."""

    id: str
    lock: str
    reply_to: str
    status: str
    reason: str | None
    state: str | None
    at: float


def _identity(claims: CommandClaims, kid: str) -> dict[str, object]:
    return dict(lock=claims.lock, source="remote", command=claims.id, action=claims.action.value,
                actor=claims.actor.id, role=claims.actor.role.value, assignment=claims.assignment,
                kid=kid, verified=True)


def _row_identity(entry: JournalEntry) -> dict[str, object]:
    return dict(lock=entry.lock, source="remote", command=entry.id, action=entry.action,
                actor=entry.actor, role=entry.role, assignment=entry.assignment, kid=entry.kid,
                verified=True)

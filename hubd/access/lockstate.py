"""The last known state of each lock: stored, published retained, and audited when it changes
without a command (a key turned by hand, the handle, auto-lock, a poll that found a change) or
when a lock reports an event (key box opened, key taken, door opened, ...) to hubd's lock driver.

A lock's reports are input from a device: an unknown lock, state or event is still audited, with a
reason saying what was wrong, and never becomes retained state.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from hubapi import topics
from hubapi.models import AuditOutcome, LockState
from hubd.store.audit import AuditLog
from hubd.store.database import Store
from wire import lockkinds

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where retained state goes (``hubd.mqtt.HubMqtt``)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


class LockStates:
    """Lock states of one hub; ``locks`` maps each configured lock id to its kind."""

    def __init__(self, store: Store, audit: AuditLog, hub_id: str, locks: Mapping[str, str],
                 publisher: Publisher, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._audit = audit
        self._hub_id = hub_id
        self._locks = locks  # live: hubctl pair and decommission change it (hubd/technician/commissioning.py)
        self._publisher = publisher
        self._clock = clock
        rows = store.conn.execute("SELECT lock, state, battery FROM lock_states").fetchall()
        self._last: dict[str, tuple[str, int | None]] = {lock: (state, battery) for lock, state, battery in rows}

    def publish_all(self) -> None:
        """Publish every lock's last known state again, retained, as stored (each broker session:
        a state published before the session was up may not have reached the broker)."""
        rows = self._store.conn.execute(
            "SELECT lock, state, battery, source, at FROM lock_states ORDER BY lock").fetchall()
        for lock, state, battery, source, at in rows:
            if lock in self._locks:  # a decommissioned lock's state is not the hub's to publish
                self._publish(lock, state, battery, source, at)

    def last(self, lock: str) -> str | None:
        """The last known state of ``lock`` (None if never seen)."""
        known = self._last.get(lock)
        return known[0] if known else None

    def after_command(self, lock: str, state: str, battery: int | None) -> None:
        """A command's result told the state (its audit entry already holds it): store and publish."""
        if state not in lockkinds.STATES:
            log.warning("command result has an unknown lock state %r; not published", state, extra={"lock": lock})
            return
        try:
            with self._store.transaction() as conn:
                self._save(conn, lock, state, battery, lockkinds.SOURCE_REMOTE)
        except sqlite3.Error as exc:
            log.error("cannot store the state of %s: %s", lock, exc)
        self._publish(lock, state, battery, lockkinds.SOURCE_REMOTE)

    def reported(self, lock: str, state: str, battery: int | None, source: str) -> None:
        """A lock reported a state without a command (hubd's lock driver: a report, a poll)."""
        problem = self._problem(lock, source) or (None if state in lockkinds.STATES else "unrecognised_state")
        battery = _battery(battery)
        if problem is None and source == lockkinds.SOURCE_POLL and self._last.get(lock) == (state, battery):
            return  # a poll that found nothing new is not an operation
        fields = {"lock": lock, "state": state, "battery": battery, "source": source}
        self._audit_report(problem, fields, publish=problem is None)

    def event(self, lock: str, event: str, source: str, state: str | None, battery: int | None) -> None:
        """A lock reported an event (hubd's lock driver passes its report on)."""
        problem = self._problem(lock, source) or (None if event in lockkinds.EVENTS else "unrecognised_event")
        if problem is None and state is not None and state not in lockkinds.STATES:
            problem = "unrecognised_state"
        fields = {"lock": lock, "event": event, "state": state, "battery": _battery(battery), "source": source}
        self._audit_report(problem, fields, publish=problem is None and state is not None)

    def _problem(self, lock: str, source: str) -> str | None:
        if lock not in self._locks:
            return "unconfigured_lock"
        if source not in lockkinds.SOURCES:
            return "unrecognised_source"
        return None

    def _audit_report(self, problem: str | None, fields: dict, publish: bool) -> None:
        if problem is not None:
            log.warning("lock report with %s: %s", problem, fields)
        try:
            with self._store.transaction() as conn:
                self._audit.append(conn, outcome=AuditOutcome.REPORTED, reason=problem, **fields)
                if publish:
                    self._save(conn, fields["lock"], fields["state"], fields["battery"], fields["source"])
        except sqlite3.Error as exc:
            log.error("cannot audit a lock report: %s", exc, extra={"report": fields})
        if publish:
            self._publish(fields["lock"], fields["state"], fields["battery"], fields["source"])

    def _save(self, conn: sqlite3.Connection, lock: str, state: str, battery: int | None, source: str) -> None:
        conn.execute("INSERT INTO lock_states (lock, state, battery, source, at) VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (lock) DO UPDATE SET state = excluded.state, battery = excluded.battery,"
                     " source = excluded.source, at = excluded.at",
                     (lock, state, battery, source, self._clock()))
        self._last[lock] = (state, battery)

    def _publish(self, lock: str, state: str, battery: int | None, source: str,
                 at: float | None = None) -> None:
        payload = LockState(lock=lock, state=state, battery=battery, source=source,
                            at=self._clock() if at is None else at)
        self._publisher.publish(topics.lock_state(self._hub_id, lock), payload.model_dump_json().encode(), retain=True)


def _battery(value: int | None) -> int | None:
    return value if type(value) is int and 0 <= value <= 100 else None

"""The durable outbox: messages that must reach the broker, kept in SQLite until it says PUBACK.

A message is added inside the same transaction as the record it carries (an audit entry), so it
exists exactly when the record does. :class:`OutboxSender` publishes the oldest row at QoS 1,
waits for the broker's PUBACK, and only then deletes it; one message is in flight at a time, so
the backend receives them in order. A lost connection, a timeout or a refusal is retried with
backoff; a hubd crash leaves the rows in place for the next start. Delivery is therefore at least
once (a PUBACK lost with the connection means the message goes again): receivers deduplicate by
the payload's own id (``seq`` for audit entries).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Protocol

from hubd.store.database import Store

log = logging.getLogger(__name__)

#: How long to wait for a PUBACK before sending the message again.
PUBACK_TIMEOUT_S = 15.0
#: Backoff after a failed attempt: doubles from the first value up to the second.
BACKOFF_S = (0.5, 30.0)


class PublishFailed(Exception):
    """The broker refused a publish or never acknowledged it."""


class AckingPublisher(Protocol):
    """What the sender needs from the MQTT connection (``hubd.mqtt.HubMqtt``)."""

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    async def publish_acked(self, topic: str, payload: bytes, timeout: float) -> None: ...


class Outbox:
    """The ``outbox`` table. :meth:`add` runs inside the caller's transaction."""

    def __init__(self, store: Store, clock=time.time) -> None:
        self._store = store
        self._clock = clock
        self.changed = asyncio.Event()  # set whenever a row is added

    def add(self, conn: sqlite3.Connection, topic: str, payload: bytes) -> None:
        """Queue ``payload`` for ``topic`` (call inside :meth:`Store.transaction`)."""
        conn.execute("INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)",
                     (topic, payload, self._clock()))
        # No await can run between this and the caller's COMMIT: the sender sees the row committed.
        self.changed.set()

    def oldest(self) -> tuple[int, str, bytes] | None:
        """The next row to send: (id, topic, payload), or None when the outbox is empty."""
        row = self._store.conn.execute(
            "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def remove(self, row_id: int) -> None:
        """Delete a row the broker acknowledged."""
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def __len__(self) -> int:
        return self._store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def oldest_at(self) -> float | None:
        """When the oldest row still waiting was queued (None when the outbox is empty)."""
        row = self._store.conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])


class OutboxSender:
    """Empties the outbox into the broker, oldest first, one message in flight."""

    def __init__(self, outbox: Outbox, publisher: AckingPublisher) -> None:
        self._outbox = outbox
        self._publisher = publisher

    async def run(self) -> None:
        """Send until cancelled."""
        delay = BACKOFF_S[0]
        while True:
            try:
                row = self._outbox.oldest()
            except sqlite3.Error as exc:
                log.error("cannot read the outbox: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            if row is None:
                self._outbox.changed.clear()
                if self._outbox.oldest() is None:  # nothing slipped in between
                    await self._outbox.changed.wait()
                continue
            row_id, topic, payload = row
            await self._publisher.wait_connected()
            try:
                await self._publisher.publish_acked(topic, payload, PUBACK_TIMEOUT_S)
            except PublishFailed as exc:
                log.warning("outbox message %d to %s not acknowledged: %s; retrying in %.1f s",
                            row_id, topic, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            delay = BACKOFF_S[0]
            try:
                self._outbox.remove(row_id)
            except sqlite3.Error as exc:
                # It stays and goes again later: a duplicate, never a loss.
                log.error("cannot remove acknowledged outbox message %d: %s", row_id, exc)
                await asyncio.sleep(delay)

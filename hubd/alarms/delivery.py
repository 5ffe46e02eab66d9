"""Safety alarms: hubd's durable alarm outbox between the bridge and the alarm centre.

The delivery rule (docs/architecture.md, "Delivery") and how hubd keeps it:

- An ``alarm`` from the bridge is committed to the ``alarms`` table (SQLite, WAL,
  ``synchronous=FULL``) *before* hubd answers ``alarm_stored``: that answer means hubd holds it.
  An alarm hubd cannot store or cannot carry (a field the API refuses) gets no answer, so it stays
  in the bridge's journal and the bridge's own deadline sends it over LTE: refused, never lost.
- It is published at QoS 1 on ``hubs/{hub}/v1/alarms/raised`` and published again, with the same
  id, every ``resend_s`` (SCAIP's practice: resend the same reference after 5-20 s, keep trying)
  until the alarm centre publishes :class:`hubapi.models.AlarmHandled` for it. A PUBACK only says
  the broker has it; the row stays. The confirmation marks the row handled (kept as an archive for
  ``keep_handled_days``) and hubd tells the bridge ``alarm_handled``.
- Order: alarms go out in arrival order (FIFO per hub), one publish in flight, every resend round
  oldest first. Priority is carried in the payload for the centre to sort its queue; hubd does not
  reorder, because a reordered stream makes "which came first" a question for the operator.
- The second path: an ``alarm_lte`` "ack" says the centre's DC-09 receiver got the alarm, not that
  anyone handled it, so hubd records it (it travels in the payload's ``lte``) and keeps resending
  over MQTT until the handled-confirmation: the centre sees the same id twice and knows it is one
  alarm. Treating the LTE ack as delivered would let an alarm end with nobody having acted on it.
- Supervision of hubd's hops: a heartbeat every ``heartbeat_s`` on ``alarms/heartbeat``; the loss
  and the return of the bridge link become alarms of their own (``hub_link_lost``,
  ``hub_link_restored``) with hubd's own id per incident, delivered like any other.
- Restart: rows survive a kill -9 and every unhandled one is published again on start.

Bad input (a malformed confirmation, an unknown id, a bogus alarm) is logged and answered with an
error string from the method that took it; nothing is dropped that was stored, and nothing raises
into the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from hubapi import topics
from hubapi.models import AlarmEvent, AlarmHandled, HubHeartbeat
from hubd import inputs
from hubd.config import AlarmsConfig
from hubd.mqtt import Inbound, Route
from hubd.store.outbox import PublishFailed
from hubd.store.database import Store
from wire import alarms as vocabulary

log = logging.getLogger(__name__)

#: How long to wait for the broker's PUBACK of one alarm publish.
PUBACK_TIMEOUT_S = 10.0
#: Pause after a failed publish before the next attempt (the connection is usually down).
RETRY_PAUSE_S = 1.0
#: The device name of alarms hubd raises itself (link supervision).
HUBD_DEVICE = "hubd"

_SOURCE_BRIDGE = "bridge"
_SOURCE_HUBD = "hubd"
_COLUMNS = ("seq, id, source, event, device, priority, unit_at, bridge_at, received_at, attempts, "
            "published_at, lte, handled_at")


class AlarmBridge(Protocol):
    """What the alarm outbox needs from the bridge (:class:`hubd.link.bridge.Bridge`)."""

    @property
    def is_up(self) -> bool: ...

    def send_alarm_stored(self, alarm_id: str) -> bool: ...

    def send_alarm_handled(self, alarm_id: str) -> bool: ...

    def send_clock(self, unix: int | None = None) -> bool: ...


class AlarmPublisher(Protocol):
    """What the alarm outbox needs from the broker connection (:class:`hubd.mqtt.HubMqtt`)."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    async def publish_acked(self, topic: str, payload: bytes, timeout: float) -> None: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


class Alarms:
    """The alarm outbox of one hub: take alarms, deliver them until handled, supervise the hops."""

    def __init__(self, store: Store, hub_id: str, config: AlarmsConfig, bridge: AlarmBridge,
                 publisher: AlarmPublisher, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._hub = hub_id
        self._config = config
        self._bridge = bridge
        self._publisher = publisher
        self._clock = clock
        self._raised_topic = topics.alarms_raised(hub_id)
        self._wake = asyncio.Event()
        self._overdue_logged: set[str] = set()
        self._closing = False

    # --- intake -----------------------------------------------------------------------------------

    def received(self, message: dict[str, Any]) -> str | None:
        """Take an ``alarm`` link message: store it, then answer the bridge ``alarm_stored``.

        Returns None, or why the alarm was not taken (then the bridge keeps it and its second path
        carries it). An id hubd already has is answered again (the bridge missed the answer), with
        ``alarm_handled`` if the centre has handled it already.
        """
        now = self._clock()
        try:
            alarm_id, event, device = message["id"], message["event"], message["device"]
            unit_at, bridge_at = message["unit_at"], message.get("bridge_at")
        except (KeyError, TypeError):
            return self._refuse(message, "not an alarm message")
        error = self._check(alarm_id, event, device, unit_at, bridge_at, now)
        if error is not None:
            return self._refuse(message, error)
        try:
            with self._store.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO alarms (id, source, event, device, priority, unit_at, bridge_at, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (alarm_id, _SOURCE_BRIDGE, event, device, vocabulary.priority(event), unit_at,
                     bridge_at, now))
                handled = conn.execute("SELECT handled_at FROM alarms WHERE id = ?",
                                       (alarm_id,)).fetchone()[0]
        except sqlite3.Error as exc:
            return self._refuse(message, f"cannot store it: {exc}")
        # Stored (committed) before the bridge hears so: from here on hubd answers for it.
        self._bridge.send_alarm_stored(alarm_id)
        if handled is not None:
            self._tell_bridge_handled(alarm_id)
        log.info("alarm %s stored", alarm_id, extra={"alarm": alarm_id, "event": event, "device": device})
        self._wake.set()
        return None

    def lte_reported(self, message: dict[str, Any]) -> str | None:
        """Take an ``alarm_lte`` link message: record what the second path did with an alarm;
        None, or why it was not recorded.

        The alarm keeps waiting for the MQTT handled-confirmation (see the module docstring).
        """
        alarm_id, result = message["id"], message["result"]
        try:
            with self._store.transaction() as conn:
                changed = conn.execute("UPDATE alarms SET lte = ? WHERE id = ?", (result, alarm_id)).rowcount
        except sqlite3.Error as exc:
            log.error("cannot record the LTE result of alarm %s: %s", alarm_id, exc)
            return f"cannot record it: {exc}"
        if not changed:
            log.warning("LTE result %r for alarm %s, which hubd does not have", result, alarm_id)
            return "unknown alarm id"
        log.info("alarm %s over LTE: %s", alarm_id, result, extra={"alarm": alarm_id, "lte": result})
        return None

    def raise_own(self, event: str) -> str | None:
        """Raise an alarm of hubd's own (link supervision) with a fresh id; returns the id or None."""
        now = self._clock()
        alarm_id = vocabulary.alarm_id(f"{self._hub}~{HUBD_DEVICE}", int(now * 1000))
        try:
            with self._store.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO alarms (id, source, event, device, priority, unit_at, bridge_at, "
                    "received_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                    (alarm_id, _SOURCE_HUBD, event, HUBD_DEVICE, vocabulary.priority(event), int(now), now))
        except sqlite3.Error as exc:
            log.error("cannot store hubd's %s alarm: %s", event, exc)
            return None
        log.warning("raised %s", event, extra={"alarm": alarm_id, "event": event})
        self._wake.set()
        return alarm_id

    def link_changed(self, up: bool) -> None:
        """The bridge link went up or down (:meth:`hubd.link.bridge.Bridge.on_link_change`).

        Either way the alarm centre hears it. When it comes back, the bridge gets hubd's time and
        the answers it may have missed while the link was down.
        """
        if self._closing:
            return  # hubd is stopping: the link goes down on purpose
        self.raise_own(vocabulary.HUB_LINK_RESTORED if up else vocabulary.HUB_LINK_LOST)
        if up:
            self._bridge.send_clock()
            self._retell_bridge()

    def route(self) -> Route:
        """The alarm centre's confirmations, for hubd's MQTT routes."""
        def confirmed(message: Inbound) -> str | None:
            return self.confirmation(message.payload)

        return Route(topics.alarms_confirmed(self._hub), inputs.ALARM_CONFIRMATIONS, confirmed)

    def confirmation(self, payload: bytes) -> str | None:
        """Take an :class:`AlarmHandled` from the alarm centre; None, or why it was refused."""
        # A refusal is logged (rate-limited) and counted by hubd.inputs' guard.
        try:
            handled = AlarmHandled.model_validate_json(payload)
        except ValidationError as exc:
            return f"malformed confirmation: {exc.errors()[0]['msg']}"
        if handled.hub != self._hub:
            return f"confirmation for another hub: {handled.hub}"
        try:
            with self._store.transaction() as conn:
                row = conn.execute("SELECT source, handled_at FROM alarms WHERE id = ?",
                                   (handled.id,)).fetchone()
                if row is not None and row[1] is None:
                    conn.execute("UPDATE alarms SET handled_at = ?, operator = ? WHERE id = ?",
                                 (self._clock(), handled.operator, handled.id))
        except sqlite3.Error as exc:
            # Not marked: the alarm goes out again and the centre confirms it again.
            log.error("cannot mark alarm %s handled: %s", handled.id, exc)
            return f"cannot record it: {exc}"
        if row is None:
            return f"unknown alarm id: {handled.id}"
        if row[1] is None:
            log.info("alarm %s handled", handled.id, extra={"alarm": handled.id, "operator": handled.operator})
        if row[0] == _SOURCE_BRIDGE:
            self._tell_bridge_handled(handled.id)
        return None

    # --- queries ----------------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        """Unhandled alarms, oldest first, as dicts of their stored columns."""
        rows = self._store.conn.execute(
            f"SELECT {_COLUMNS} FROM alarms WHERE handled_at IS NULL ORDER BY seq").fetchall()
        names = [c.strip() for c in _COLUMNS.split(",")]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def get(self, alarm_id: str) -> dict[str, Any] | None:
        """One alarm's stored columns, or None."""
        row = self._store.conn.execute(f"SELECT {_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        names = [c.strip() for c in _COLUMNS.split(",")]
        return None if row is None else dict(zip(names, row, strict=True))

    # --- the loops --------------------------------------------------------------------------------

    async def deliver(self) -> None:
        """Publish unhandled alarms, oldest first, and again every ``resend_s``, until cancelled."""
        while True:
            await self._publisher.wait_connected()
            try:
                await self._publish_due()
                pending = self.pending()
            except sqlite3.Error as exc:
                log.error("cannot read the alarm outbox: %s; retrying", exc)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            except PublishFailed as exc:
                log.warning("alarm publish not acknowledged: %s; retrying", exc)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self._wake.clear()
            now = self._clock()
            # An alarm stored while the last publish was out has no publish time yet: due now.
            due = [0.0 if row["published_at"] is None else row["published_at"] + self._config.resend_s - now
                   for row in pending]
            try:
                async with asyncio.timeout(max(0.0, min(due)) if due else None):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _publish_due(self) -> None:
        for row in self.pending():
            now = self._clock()
            self._note_overdue(row, now)
            if row["published_at"] is not None and row["published_at"] + self._config.resend_s > now:
                continue
            attempt = row["attempts"] + 1
            payload = self._event(row, now, attempt).model_dump_json().encode()
            await self._publisher.publish_acked(self._raised_topic, payload, PUBACK_TIMEOUT_S)
            with self._store.transaction() as conn:
                conn.execute("UPDATE alarms SET attempts = ?, published_at = ? WHERE seq = ?",
                             (attempt, now, row["seq"]))
            if attempt > 1:
                log.info("alarm %s published again (attempt %d)", row["id"], attempt,
                         extra={"alarm": row["id"], "attempt": attempt})

    async def heartbeat(self) -> None:
        """Publish a :class:`HubHeartbeat` every ``heartbeat_s`` while connected, until cancelled."""
        while True:
            if self._publisher.connected:
                self._publisher.publish(topics.alarms_heartbeat(self._hub), self.heartbeat_payload())
            await asyncio.sleep(self._config.heartbeat_s)

    def heartbeat_payload(self) -> bytes:
        """The heartbeat as it would go out now."""
        now = self._clock()
        pending, _, overdue = self.backlog(now)
        return HubHeartbeat(hub=self._hub, at=now, interval_s=self._config.heartbeat_s, pending=pending,
                            overdue=overdue, bridge_link=self._bridge.is_up).model_dump_json().encode()

    def backlog(self, now: float | None = None) -> tuple[int, float | None, int]:
        """Alarms not yet handled: (how many, when the oldest was received, how many are past
        the confirmation deadline)."""
        now = self._clock() if now is None else now
        received = [row["received_at"] for row in self.pending()]
        overdue = sum(1 for at in received if now - at > self._config.deadline_s)
        return len(received), min(received, default=None), overdue

    async def clock(self) -> None:
        """Send the bridge hubd's time every ``clock_s`` (and on link up, see :meth:`link_changed`)."""
        while True:
            self._bridge.send_clock()
            await asyncio.sleep(self._config.clock_s)

    def prune(self) -> int:
        """Delete handled alarms older than ``keep_handled_days``; returns how many."""
        cutoff = self._clock() - self._config.keep_handled_days * 86400
        with self._store.transaction() as conn:
            return conn.execute("DELETE FROM alarms WHERE handled_at IS NOT NULL AND handled_at < ?",
                                (cutoff,)).rowcount

    def close(self) -> None:
        """hubd is stopping: the bridge link going down now is not an incident."""
        self._closing = True

    # --- helpers ----------------------------------------------------------------------------------

    def _event(self, row: dict[str, Any], now: float, attempt: int) -> AlarmEvent:
        return AlarmEvent(id=row["id"], hub=self._hub, resident=self._config.resident, device=row["device"],
                          event=row["event"], priority=row["priority"], test=row["event"] == vocabulary.TEST,
                          unit_at=row["unit_at"], bridge_at=row["bridge_at"], received_at=row["received_at"],
                          published_at=now, attempt=attempt, lte=row["lte"])

    def _check(self, alarm_id: Any, event: Any, device: Any, unit_at: Any, bridge_at: Any, now: float) -> str | None:
        # Build the payload once as a dry run: what the API would refuse later must be refused
        # now, while the bridge still holds the alarm, not after it was acknowledged.
        row = {"id": alarm_id, "device": device, "event": event, "priority": vocabulary.priority(event)
               if isinstance(event, str) else 1, "unit_at": unit_at, "bridge_at": bridge_at, "received_at": now,
               "lte": None}
        try:
            self._event(row, now, 1)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return None

    def _refuse(self, message: Any, why: str) -> str:
        log.error("alarm not taken (%s); the bridge keeps it for its second path: %r", why, message)
        return why

    def _note_overdue(self, row: dict[str, Any], now: float) -> None:
        if now - row["received_at"] > self._config.deadline_s and row["id"] not in self._overdue_logged:
            self._overdue_logged.add(row["id"])
            log.error("alarm %s not handled after %.0f s", row["id"], now - row["received_at"],
                      extra={"alarm": row["id"], "attempts": row["attempts"], "lte": row["lte"]})

    def _tell_bridge_handled(self, alarm_id: str) -> None:
        if not self._bridge.send_alarm_handled(alarm_id):
            return  # link down: told when it comes back (_retell_bridge)
        try:
            with self._store.transaction() as conn:
                conn.execute("UPDATE alarms SET bridge_told = 1 WHERE id = ?", (alarm_id,))
        except sqlite3.Error as exc:
            log.error("cannot note that the bridge was told alarm %s is handled: %s", alarm_id, exc)

    def _retell_bridge(self) -> None:
        # The bridge may have lost answers with the link: both are idempotent on its side.
        rows = self._store.conn.execute(
            "SELECT id, handled_at FROM alarms WHERE source = ? AND (handled_at IS NULL OR bridge_told = 0) "
            "ORDER BY seq", (_SOURCE_BRIDGE,)).fetchall()
        for alarm_id, handled_at in rows:
            if handled_at is None:
                self._bridge.send_alarm_stored(alarm_id)
            else:
                self._tell_bridge_handled(alarm_id)

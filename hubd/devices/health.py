"""The hub's health: one snapshot of hubd, the bridge, every device and the durable queues.

    health = Health(hub_id, bridge, devices, outbox, alarms, mqtt)
    bridge.on_message(messages.HEALTH, health.bridge_reported)   # the bridge's own reports
    bridge.on_link_change(health.link_changed)                   # republish at once
    health.snapshot()                   # a hubapi.models.HubStatus, now
    health.request(payload)             # a StatusRequest from MQTT: answer on status/replies
                                        # now, and ask the bridge for a fresh report for the next
    await health.publish_every(300)     # the retained `status` topic, refreshed

The bridge sends its own report (``health`` link message: uptime, reset cause, heap, link
counters, BLE restarts, LTE registration and signal, the alarm unit's link, journal depths)
every ``health_ms``; hubd keeps the last one and when it came. The link's state is hubd's own
view: it goes down within the link's dead time (3.5 s) of a silent bridge, and the retained
``status`` is republished then, so a killed bridge link shows within one heartbeat period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from hubapi import topics
from hubapi.models import BridgeHealth, BridgeStatus, HubStatus, QueueStatus, StatusRequest
from hubd import __version__, inputs
from hubd.supervisor import Supervisor

log = logging.getLogger(__name__)

#: A status request asks the bridge for a fresh health report at most this often.
HEALTH_REQUEST_MIN_S = 1.0

# The link counters hubd reports from its own end of the serial link (wire/link.py stats).
_LINK_COUNTERS = ("frames_rx", "frames_tx", "crc_errors", "framing_errors", "retransmits", "duplicates",
                  "out_of_order", "peer_resets", "auth_errors", "replays", "foreign_hellos")


class _Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


class Health:
    """Gathers the snapshot and answers status requests. Every source is read when asked, so the
    snapshot is never staler than its parts."""

    def __init__(self, hub_id: str, bridge: Any, devices: Any, outbox: Any, alarms: Any,
                 publisher: _Publisher, guard: inputs.Inputs | None = None,
                 supervisor: Supervisor | None = None, clock: Callable[[], float] = time.time,
                 uplink: Any = None) -> None:
        self._hub = hub_id
        self._uplink = uplink  # hubd.uplink.Uplink: the path and the LTE bytes today
        self._inputs = guard if guard is not None else inputs.Inputs()
        self._supervisor = supervisor
        self._bridge = bridge
        self._devices = devices
        self._outbox = outbox
        self._alarms = alarms
        self._publisher = publisher
        self._clock = clock
        self._started = time.monotonic()
        self._health_asked = float("-inf")  # monotonic time of the last health_request sent
        self._link_since = clock()
        self._bridge_health: BridgeHealth | None = None
        self._bridge_health_at: float | None = None

    # --- what comes in ----------------------------------------------------------------------------

    def bridge_reported(self, message: dict[str, Any]) -> str | None:
        """The bridge's ``health`` link message; returns why it was refused, or None."""
        try:
            self._bridge_health = BridgeHealth.model_validate(
                {k: v for k, v in message.items() if k != "m"})
        except ValidationError as exc:
            why = f"bridge health report refused: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            log.warning(why)
            return why
        self._bridge_health_at = self._clock()
        return None

    def link_changed(self, up: bool) -> None:
        """The bridge link went up or down: note when, and republish the retained snapshot."""
        self._link_since = self._clock()
        if up:
            self._bridge.request_health()  # a fresh report now, not within health_ms
        else:
            self._bridge_health = None  # the last report describes a bridge that is gone
            self._bridge_health_at = None
        self.publish()

    def request(self, payload: bytes) -> str | None:
        """A :class:`StatusRequest` from MQTT: answer it; returns why it was refused, or None
        (counted and logged by hubd.inputs)."""
        try:
            req = StatusRequest.model_validate_json(payload)
        except ValidationError as exc:
            return f"invalid: {exc.errors()[0]['msg']}"
        status = self.snapshot(request_id=req.id)
        self._publisher.publish(topics.status_reply_topic(self._hub, req.reply_to),
                                status.model_dump_json().encode())
        # So the next snapshot carries a fresh report of the bridge's; at most one a second, however
        # many requests arrive (each would be a message on the serial link).
        now = time.monotonic()
        if now - self._health_asked >= HEALTH_REQUEST_MIN_S:
            self._health_asked = now
            self._bridge.request_health()
        return None

    # --- what goes out ----------------------------------------------------------------------------

    async def answer(self, _request: object, _progress: object) -> HubStatus:
        """The local socket's ``status`` request (hubctl status, doctor)."""
        return self.snapshot()

    def snapshot(self, request_id: str | None = None) -> HubStatus:
        now = self._clock()
        peer = self._bridge.peer if self._bridge.is_up else None
        stats = self._bridge.link.engine.stats
        pending, oldest_alarm, overdue = self._alarms.backlog(now)
        return HubStatus(
            hub=self._hub, request_id=request_id, at=now, hubd_version=__version__,
            hubd_up_s=round(time.monotonic() - self._started, 1),
            broker_connected=self._publisher.connected,
            bridge=BridgeStatus(
                link_up=self._bridge.is_up, since=self._link_since, clock_offset_s=self._clock_offset(),
                firmware=str(peer["version"])[:64] if peer else None,
                protocol=f"{peer['major']}.{peer['minor']}" if peer else None,
                link={name: int(stats.get(name, 0)) for name in _LINK_COUNTERS},
                health=self._bridge_health, health_at=self._bridge_health_at),
            devices=self._devices.states(now),
            outbox=QueueStatus(depth=len(self._outbox), oldest_at=self._outbox.oldest_at()),
            alarms=QueueStatus(depth=pending, oldest_at=oldest_alarm),
            alarms_overdue=overdue,
            inputs=self._inputs.snapshot(),
            task_restarts=dict(self._supervisor.restarts) if self._supervisor is not None else {},
            uplink=self._uplink.status() if self._uplink is not None else None)

    def _clock_offset(self) -> float | None:
        health, at = self._bridge_health, self._bridge_health_at
        if health is None or health.clock is None or at is None:
            return None
        return round(health.clock - at)

    def publish(self) -> None:
        """Publish the snapshot, retained (queued by paho while the broker is away)."""
        self._publisher.publish(topics.status(self._hub), self.snapshot().model_dump_json().encode(),
                                retain=True)

    async def publish_every(self, interval_s: float) -> None:
        """Refresh the retained snapshot every ``interval_s`` while connected, until cancelled."""
        while True:
            if self._publisher.connected:
                self.publish()
            await asyncio.sleep(interval_s)

"""A reference alarm centre: receives the hubs' safety alarms and confirms it handled them.

The MQTT side subscribes to ``alarms/raised`` and ``alarms/heartbeat`` of every hub, records every
copy of every alarm (a second copy of an id is a duplicate: one alarm, counted once), and, after
``handling_delay_s``, publishes :class:`hubapi.models.AlarmHandled` for it. A copy that arrives
after the alarm was handled is confirmed again: the hub evidently missed the confirmation.

Knobs for fault tests: :meth:`AlarmCentre.stop_confirming` (receive, never confirm: the hub must
keep resending and the bridge's deadline must trigger the second path), :meth:`AlarmCentre.resume_confirming`,
and ``handling_delay_s`` (confirm late). :meth:`AlarmCentre.report` gives, per alarm, the time of
each hop for the benchmark.

The second path (SIA DC-09 over LTE) arrives at the centre's DC-09 receiver
(simulator/dc09_receiver.py: pysiaalarm): given ``dc09_accounts`` the centre runs one on
``dc09_port`` and files what it receives with the MQTT copies
(:meth:`AlarmCentre.received_over_dc09`), so both paths land in one record and a copy over either
path after the first is a duplicate.

Supervision of the hub: the centre watches each hub's heartbeat and retained online state and
records in ``hub_events`` when a hub falls silent (two heartbeats missed), is heard again, or its
last will says ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from hubapi import topics
from hubapi.client import BackendClient, Message
from hubapi.models import AlarmEvent, AlarmHandled, HubHeartbeat, Online
from simulator.dc09_receiver import Dc09Receiver

log = logging.getLogger(__name__)

PRIMARY = "mqtt"
SECOND_PATH = "dc09"

# What the centre records about a hub's presence (``hub_events``).
HUB_ONLINE = "online"  # its retained online state says so
HUB_OFFLINE = "offline"  # its last will (or a clean stop) says so
HUB_SILENT = "silent"  # two heartbeats in a row missing
HUB_HEARD = "heard"  # a heartbeat again after silence


@dataclass
class AlarmRecord:
    """Everything the centre knows about one alarm id."""

    id: str
    first: AlarmEvent | None  # the first MQTT copy (None while it came only over DC-09)
    first_path: str
    arrived_at: float  # when the first copy arrived, over either path
    copies: Counter[str] = field(default_factory=Counter)  # copies per path
    handled_at: float | None = None  # when the centre published AlarmHandled (the first time)

    @property
    def test(self) -> bool:
        """A test alarm (hubctl test-alarm): the MQTT copy says so (its ``test``), and the centre
        files it as a test, not as an emergency. Over DC-09 a test carries Contact ID 601."""
        return self.first is not None and self.first.test

    @property
    def duplicates(self) -> int:
        """Copies beyond the first, over both paths."""
        return sum(self.copies.values()) - 1


class AlarmCentre:
    """The alarm centre's MQTT side. ``async with AlarmCentre(host, port) as centre: ...``."""

    def __init__(self, host: str = "localhost", port: int = 1883, *, username: str | None = None,
                 password: str | None = None, protocol: Literal["3.1.1", "5"] = "5",
                 handling_delay_s: float = 0.0, operator: str = "operator-sim",
                 dc09_accounts: dict[str, str | None] | None = None, dc09_port: int | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self._client = BackendClient(host, port, username=username, password=password, protocol=protocol,
                                     client_id="alarm-centre-sim", tls=tls)
        # The second path's receiver (account -> AES key or None), when this centre runs one.
        self.dc09 = (Dc09Receiver(dc09_accounts, port=dc09_port, on_alarm=self.received_over_dc09)
                     if dc09_accounts else None)
        self.handling_delay_s = handling_delay_s
        self.operator = operator
        self.confirming = True
        self.alarms: dict[str, AlarmRecord] = {}
        self.copies: list[tuple[float, AlarmEvent]] = []  # every MQTT copy as it arrived
        self.heartbeats: list[tuple[float, HubHeartbeat]] = []
        self.refused: list[tuple[str, str]] = []  # (topic, why) for payloads that were not alarms
        self.hub_events: list[tuple[float, str, str]] = []  # (at, hub, HUB_*) as they happened
        self._last_beat: dict[str, tuple[float, float]] = {}  # hub -> (arrived, interval_s)
        self._silent: set[str] = set()
        self._online: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []  # told at once of every change (the demo's narration)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # ids with a confirmation scheduled or out
        self._pump: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AlarmCentre:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the DC-09 receiver (if any), connect, and subscribe to every hub's alarms,
        heartbeats and online state."""
        if self.dc09 is not None:
            await self.dc09.start()
        await self._client.connect()
        ready = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._receive(ready), name="alarm-centre")
        await asyncio.wait([ready, self._pump], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await self._pump  # it ended before subscribing: raise what ended it
        self._watchdog = asyncio.create_task(self._supervise(), name="alarm-centre-supervision")

    async def stop(self) -> None:
        """Stop confirming and disconnect."""
        running = [*self._tasks, *(t for t in (self._pump, self._watchdog) if t is not None)]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.close()
        if self.dc09 is not None:
            await self.dc09.stop()

    def stop_confirming(self) -> None:
        """Keep receiving alarms but confirm none (a centre that got stuck)."""
        self.confirming = False

    def resume_confirming(self) -> None:
        """Confirm again, starting with every alarm received while not confirming."""
        self.confirming = True
        for record in self.alarms.values():
            if record.handled_at is None and record.first is not None and record.id not in self._in_flight:
                self._schedule(record.first)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` at once whenever an alarm, a copy, a confirmation or a hub event is
        recorded: a narration printed by polling came after hubd's own lines about the same alarm."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        self._changed.set()
        for listener in self._listeners:
            listener()

    def received_over_dc09(self, alarm_id: str, at: float | None = None) -> AlarmRecord:
        """The DC-09 receiver got this alarm id over the second path: record it with the MQTT copies."""
        return self._record(alarm_id, None, SECOND_PATH, time.time() if at is None else at)

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(centre)`` is true (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def hub_state(self, hub: str) -> str | None:
        """The last thing recorded about this hub's presence (a HUB_* value), or None."""
        return next((what for _, h, what in reversed(self.hub_events) if h == hub), None)

    def duplicates(self) -> int:
        """Copies beyond the first, summed over all alarms."""
        return sum(record.duplicates for record in self.alarms.values())

    def report(self) -> list[dict[str, Any]]:
        """Per alarm: its id, event, whether it is a test, copies, and the time of each hop (Unix
        seconds).

        ``unit_at``/``bridge_at`` are whole seconds (the link's resolution); ``received_at`` (hubd
        stored it), ``published_at`` (hubd's first publish), ``arrived_at`` and ``handled_at`` (the
        centre) are sub-second.
        """
        rows = []
        for record in self.alarms.values():
            first = record.first
            rows.append({
                "id": record.id, "event": first.event if first else None, "test": record.test,
                "first_path": record.first_path,
                "copies": dict(record.copies), "unit_at": first.unit_at if first else None,
                "bridge_at": first.bridge_at if first else None, "received_at": first.received_at if first else None,
                "published_at": first.published_at if first else None, "arrived_at": record.arrived_at,
                "handled_at": record.handled_at,
            })
        return rows

    # --- receiving --------------------------------------------------------------------------------

    async def _receive(self, ready: asyncio.Future[None]) -> None:
        raised, heartbeat = topics.every_hubs_alarms()
        async with self._client.watch(raised) as alarms, self._client.watch(heartbeat) as beats, \
                self._client.watch(topics.every_hubs_online()) as presence:
            ready.set_result(None)
            merged: asyncio.Queue[Message] = asyncio.Queue()

            async def forward(queue: asyncio.Queue[Message]) -> None:
                while True:
                    merged.put_nowait(await queue.get())

            forwarders = [asyncio.create_task(forward(q)) for q in (alarms, beats, presence)]
            try:
                while True:
                    self._take(await merged.get())
            finally:
                for task in forwarders:
                    task.cancel()

    def _take(self, message: Message) -> None:
        now = time.time()
        try:
            if message.topic.endswith("/alarms/heartbeat"):
                beat = HubHeartbeat.model_validate_json(message.payload)
                self.heartbeats.append((now, beat))
                self._heard(beat, now)
            elif message.topic.endswith("/online"):
                self._presence(Online.model_validate_json(message.payload), now)
            else:
                event = AlarmEvent.model_validate_json(message.payload)
                if message.topic != topics.alarms_raised(event.hub):
                    raise ValueError(f"alarm of hub {event.hub} on another hub's topic")
                self.copies.append((now, event))
                record = self._record(event.id, event, PRIMARY, now)
                if record.handled_at is not None:
                    self._schedule(event, delay=0.0)  # the hub missed our confirmation: again
                elif event.id not in self._in_flight:
                    self._schedule(event)
        except (ValidationError, ValueError) as exc:
            log.warning("alarm centre refused a payload on %s: %s", message.topic, exc)
            self.refused.append((message.topic, str(exc)))
        self._notify()

    # --- supervision of the hubs ----------------------------------------------------------------

    def _hub_event(self, hub: str, what: str, at: float, why: str) -> None:
        self.hub_events.append((at, hub, what))
        (log.info if what in (HUB_ONLINE, HUB_HEARD) else log.warning)("hub %s %s: %s", hub, what, why)
        self._notify()

    def _heard(self, beat: HubHeartbeat, now: float) -> None:
        self._last_beat[beat.hub] = (now, beat.interval_s)
        if beat.hub in self._silent:
            self._silent.discard(beat.hub)
            self._hub_event(beat.hub, HUB_HEARD, now, "its heartbeat is back")

    def _presence(self, online: Online, now: float) -> None:
        if self._online.get(online.hub) != online.status:
            self._online[online.hub] = online.status
            self._hub_event(online.hub, HUB_ONLINE if online.status == "online" else HUB_OFFLINE, now,
                            "its retained online state" if online.at else "its last will")

    async def _supervise(self) -> None:
        """Raise the centre's own alarm when a hub misses two heartbeats in a row."""
        while True:
            await asyncio.sleep(0.2)
            now = time.time()
            for hub, (arrived, interval) in self._last_beat.items():
                if hub not in self._silent and now - arrived > 2 * interval + 0.5:
                    self._silent.add(hub)
                    self._hub_event(hub, HUB_SILENT, now, f"no heartbeat for {now - arrived:.1f} s "
                                                          f"(every {interval:g} s expected)")

    def _record(self, alarm_id: str, event: AlarmEvent | None, path: str, at: float) -> AlarmRecord:
        record = self.alarms.get(alarm_id)
        if record is None:
            record = self.alarms[alarm_id] = AlarmRecord(alarm_id, event, path, at)
        elif record.first is None and event is not None:
            record.first = event
        record.copies[path] += 1
        self._notify()
        return record

    def _schedule(self, event: AlarmEvent, delay: float | None = None) -> None:
        if not self.confirming:
            return
        self._in_flight.add(event.id)
        task = asyncio.create_task(self._confirm(event, self.handling_delay_s if delay is None else delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _confirm(self, event: AlarmEvent, delay: float) -> None:
        try:
            await self._confirm_now(event, delay)
        finally:
            self._in_flight.discard(event.id)

    async def _confirm_now(self, event: AlarmEvent, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self.confirming:
            return
        handled = AlarmHandled(id=event.id, hub=event.hub, handled_at=time.time(), operator=self.operator)
        try:
            await self._client.publish(topics.alarms_confirmed(event.hub), handled.model_dump_json())
        except (TimeoutError, PermissionError) as exc:
            # The hub resends until confirmed, and its next copy brings us back here.
            log.warning("confirmation of %s not acknowledged: %s", event.id, exc)
            return
        record = self.alarms[event.id]
        if record.handled_at is None:
            record.handled_at = handled.handled_at
        self._notify()

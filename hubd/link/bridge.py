"""hubd's client for the bridge over the serial link: its messages in, hubd's out.

The bridge is the locks' Bluetooth proxy (hubd drives every lock itself: hubd/ble/proxy.py,
hubd/locks/), the alarm unit's gateway with its LTE second path, and a device that reports its
own health. This module keeps the link, dispatches each message the bridge sends to whoever
listens for its kind, and sends hubd's; a message that is part of a lock operation may use the
queue slots kept for lock operations (:meth:`Bridge.send_lock_message`).

The LTE uplink's bytes (wire/uplink.py) share the link as bulk payloads: :meth:`Bridge.send_uplink`
queues hubd's behind every message, and a DATA payload from the bridge goes to the one
:meth:`Bridge.on_uplink_data` callback (hubd/link/uplink.py), never to ``messages.decode``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from hubd import __version__, inputs
from hubd.link.serial_port import SerialLink
from wire import hubside, link, messages
from wire import uplink as wire_uplink

log = logging.getLogger(__name__)

#: Slots of the link's send queue that only lock operations' messages may take: a flood of
#: housekeeping (health requests for every status request, confirmations replayed by a broker
#: user) once filled the queue and the nurse's command failed ``bridge_busy``.
OP_RESERVE = 8

#: callback(message): a decoded link message of the kind it was registered for.
MessageCallback = Callable[[dict[str, Any]], Any]
#: callback(chunk): stream bytes of the LTE uplink from the bridge (1..wire.uplink.MAX_CHUNK);
#: a str it returns is a refusal, counted under inputs.BRIDGE.
DataCallback = Callable[[bytes], Any]


class Bridge:
    """The bridge as hubd sees it: hear its messages by kind, send hubd's, know whether it is
    there."""

    def __init__(self, port: str, key: bytes, baudrate: int = 115200, guard: inputs.Inputs | None = None) -> None:
        self.link = SerialLink(port, baudrate, f"hubd {__version__}", key, self._on_link_event)
        # Every message from the bridge is handled inside it (counted under inputs.BRIDGE).
        self._guard = guard if guard is not None else inputs.Inputs()
        self.peer: dict[str, Any] | None = None
        self._link_callbacks: list[Callable[[bool], None]] = []
        self._listeners: dict[str, list[MessageCallback]] = {}
        self._uplink_data: DataCallback | None = None

    @classmethod
    async def open(cls, port: str, key: bytes, baudrate: int = 115200,
                   guard: inputs.Inputs | None = None) -> Bridge:
        """Open the port and start the link (it comes up when the bridge answers); ``key`` is the
        link key (hubd.config.SerialConfig.key)."""
        bridge = cls(port, key, baudrate, guard)
        await bridge.link.start()
        return bridge

    async def close(self) -> None:
        await self.link.close()

    @property
    def is_up(self) -> bool:
        return self.link.state == link.UP

    def on_link_change(self, callback: Callable[[bool], None]) -> None:
        """Hear the link going up (True) or down (False)."""
        self._link_callbacks.append(callback)

    def on_message(self, kind: str, callback: MessageCallback) -> None:
        """Hear every link message of ``kind`` (``messages.ALARM``, ``ALARM_LTE``, ``DEVICE``,
        ``HEALTH``, the Bluetooth proxy's ``BLE_*``): callback(message) with its decoded fields.
        A str the callback returns is a refusal, counted under inputs.BRIDGE."""
        self._listeners.setdefault(kind, []).append(callback)

    def on_uplink_data(self, callback: DataCallback) -> None:
        """Hear the LTE uplink's stream bytes from the bridge (one listener: the channel,
        hubd/link/uplink.py); without one a DATA payload is refused ``not_taken``."""
        self._uplink_data = callback

    def uplink_room(self) -> int:
        """How many more uplink chunks :meth:`send_uplink` takes now (0 while the link is down)."""
        return self.link.engine.bulk_room() if self.is_up else 0

    def send_uplink(self, chunk: bytes) -> bool:
        """Queue 1..wire.uplink.MAX_CHUNK bytes of the uplink's stream for the bridge, behind every
        message (wire.link's bulk); False if the link is down or holds max_bulk of them already:
        then it was not sent (the channel waits for :meth:`uplink_room`)."""
        if not self.is_up:
            return False
        try:
            self.link.send(wire_uplink.data(chunk))
        except link.LinkFull:
            return False
        return True

    def request_health(self) -> bool:
        """Ask the bridge for its `health` report now; False if the link cannot take it now."""
        return self._send(hubside.health_request())

    def send_alarm_stored(self, alarm_id: str) -> bool:
        """Tell the bridge hubd holds the alarm durably; False if the link cannot take it now."""
        return self._send(hubside.alarm_stored(alarm_id))

    def send_alarm_handled(self, alarm_id: str) -> bool:
        """Tell the bridge the alarm centre handled the alarm; False if the link cannot take it now."""
        return self._send(hubside.alarm_handled(alarm_id))

    def send(self, payload: bytes) -> bool:
        """Send one link message (built with wire.messages); False if the link cannot take it now."""
        return self._send(payload)

    def send_lock_message(self, payload: bytes) -> bool:
        """Send one message that is part of a lock operation (a Bluetooth proxy request,
        docs/ble-proxy.md): it may take the queue slots kept for lock operations (OP_RESERVE).
        False if the link is down or its queue is full: then it was not sent."""
        if not self.is_up:
            return False
        try:
            self.link.send(payload)
        except link.LinkFull:
            log.warning("bridge link queue full: dropped a lock operation's %s", payload[:80])
            return False
        return True

    def send_clock(self, unix: int | None = None) -> bool:
        """Give the bridge hubd's time (default: now); False if the link cannot take it now."""
        return self._send(hubside.clock(int(time.time()) if unix is None else unix))

    def _send(self, payload: bytes) -> bool:
        # Only while up: a message queued on a down link would arrive after the bridge's restart,
        # out of context. Callers send again when the link comes back.
        if not self.is_up:
            return False
        if self.link.engine.pending() >= self.link.engine.max_queue - OP_RESERVE:
            log.warning("bridge link queue nearly full: kept the rest for lock operations; dropped %s",
                        payload[:80])
            return False
        try:
            self.link.send(payload)
        except link.LinkFull:
            log.warning("bridge link queue full: dropped %s", payload[:80])
            return False
        return True

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the link is up; False if it did not come up in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.is_up and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.is_up

    def _on_link_event(self, kind: str, value: Any) -> None:
        if kind == link.EV_DATA:
            self._on_payload(value)
        elif kind == link.EV_UP:
            self.peer = value
            log.info("bridge link up: firmware %r, link protocol %d.%d",
                     value["version"], value["major"], value["minor"])
            self._tell_link(True)
        elif kind == link.EV_DOWN:
            log.warning("bridge link down: %s", value)
            # The proxy answers every request out as lost (hubd/ble/proxy.py hears this), so none
            # of it may arrive when the link is back (the link would resend it: a proxy write
            # reported unknown would go out late and move a lock). A new session drops it; the
            # bridge takes it as a restarted hubd and drops its BLE connections
            # (docs/serial-link.md).
            # (A bridge that restarted, "peer_reset", has a new session already: nothing of the
            # old one reaches it.)
            if value == "silent":
                dropped = self.link.restart_session()
                if dropped:
                    log.warning("dropped %d message(s) for the bridge with the lost link", len(dropped))
            self._tell_link(False)
        elif kind == link.EV_RESET:
            in_flight, unsent = value
            log.warning("bridge restarted; %d message(s) may not have arrived, %d never sent "
                        "(each is asked again when the link is up)", len(in_flight), len(unsent))
        elif kind == link.EV_INCOMPATIBLE:
            log.error("bridge firmware %r speaks link protocol %d.%d, hubd speaks %d.%d: "
                      "flash matching firmware (hubctl flash) or update hubd",
                      value["version"], value["major"], value["minor"],
                      link.PROTOCOL_MAJOR, link.PROTOCOL_MINOR)
            self._tell_link(False)

    def _tell_link(self, up: bool) -> None:
        for cb in self._link_callbacks:
            self._listen(cb, up)

    def _on_payload(self, payload: bytes) -> None:
        self._guard.guard(inputs.BRIDGE, self._take, payload, shown_input=payload)

    def _take(self, payload: bytes) -> str | None:
        if wire_uplink.is_data(payload):  # the uplink's bytes: never JSON, never decoded
            if self._uplink_data is None:
                return "not_taken: uplink data"
            return self._uplink_data(wire_uplink.chunk(payload))
        try:
            msg = messages.decode(payload)
        except messages.MessageError as e:
            return f"bad_message: {e}"  # counted as bad_message, the detail goes to the log
        kind = msg["m"]
        if kind in self._listeners:
            for mcb in self._listeners[kind]:
                self._listen(mcb, msg)
        else:
            return f"not_taken: {kind}"
        return None

    def _listen(self, callback: Callable[..., Any], *args: Any) -> None:
        # Each listener in its own guard: one listener's bug neither stops the others nor the link.
        self._guard.run(inputs.BRIDGE, callback, *args, shown_input=repr(args))

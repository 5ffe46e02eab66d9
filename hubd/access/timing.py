"""Where one command's time went, hop by hop: hubd logs it as "command timing" when the command
is answered; benchmarks/roundtrip.py and the demo read that line's ``*_ms`` figures.

Marks are ``time.perf_counter()`` readings taken as the command passes each point; the bridge
reports its own share (receipt to result, and of that the lock driver's) in its result.

The line's fields: ``verify_ms``, ``record_ms``, ``queue_ms``, ``bridge_rtt_ms`` (the lock
transport, handed the operation to its result), ``finish_ms``; ``mqtt_at`` and ``answered_at``
(wall clock); then what the transport reports. With the firmware's drivers (``lock_driver =
"bridge"``): ``bridge_ms`` (on the bridge) and ``ble_ms`` (of that, its lock driver). With
hubd's (``"hubd"``): ``ble_ms`` (hubd's lock driver), and of that ``ble_requests_ms``, the
driver's ``ble_requests`` BLE requests waiting for their answers through the Bluetooth proxy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class CommandTiming:
    mqtt_at: float  # wall clock when the command's MQTT message arrived
    started: float  # verification began
    verified: float
    recorded: float  # journaled and queued for its lock
    sent: float | None = None  # handed to the bridge
    result: float | None = None  # the bridge's result arrived
    bridge_ms: int | None = None  # on the bridge, receipt to result
    ble_ms: float | None = None  # of that, in the lock driver (the radio and the lock)
    ble_requests_ms: float | None = None  # of ble_ms, hubd's driver waiting for its BLE requests
    ble_requests: int | None = None  # how many it made

    def mark_sent(self) -> None:
        self.sent = time.perf_counter()

    def mark_result(self, bridge_ms: int | None, ble_ms: float | None, *,
                    ble_requests_ms: float | None = None, ble_requests: int | None = None) -> None:
        self.result = time.perf_counter()
        self.bridge_ms, self.ble_ms = bridge_ms, ble_ms
        self.ble_requests_ms, self.ble_requests = ble_requests_ms, ble_requests

    def log_fields(self, now: float | None = None) -> dict[str, Any] | None:
        """The "command timing" line's fields (milliseconds per hop, and when it arrived and was
        answered), or None for a command that got no result from the bridge."""
        if self.sent is None or self.result is None:
            return None
        now = time.perf_counter() if now is None else now
        hops = {"verify_ms": _ms(self.verified - self.started),
                "record_ms": _ms(self.recorded - self.verified),
                "queue_ms": _ms(self.sent - self.recorded),
                "bridge_rtt_ms": _ms(self.result - self.sent),
                "finish_ms": _ms(now - self.result)}
        if self.bridge_ms is not None:
            hops["bridge_ms"] = float(self.bridge_ms)
        if self.ble_ms is not None:
            hops["ble_ms"] = float(self.ble_ms)
        if self.ble_requests_ms is not None:
            hops["ble_requests_ms"] = float(self.ble_requests_ms)
        if self.ble_requests is not None:
            hops["ble_requests"] = self.ble_requests
        return {"mqtt_at": self.mqtt_at, "answered_at": time.time(), **hops}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)

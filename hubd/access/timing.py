"""Where one command's time went, hop by hop: hubd logs it as "command timing" when the command
is answered; benchmarks/roundtrip.py and the demo read that line's ``*_ms`` figures.

Marks are ``time.perf_counter()`` readings taken as the command passes each point; the lock
driver reports its own share in its result.

The line's fields: ``verify_ms``, ``record_ms``, ``queue_ms``, ``operate_ms`` (the lock
transport, handed the operation to its result), ``finish_ms``; ``mqtt_at`` and ``answered_at``
(wall clock); then what hubd's lock driver reports: ``ble_ms`` (its time on the operation),
and of that ``ble_requests_ms``, its ``ble_requests`` BLE requests waiting for their answers
through the Bluetooth proxy (each a round trip over the serial link to the bridge's radio).
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
    sent: float | None = None  # handed to the lock transport
    result: float | None = None  # its result arrived
    ble_ms: float | None = None  # of that, in the lock driver (the proxy, the radio and the lock)
    ble_requests_ms: float | None = None  # of ble_ms, the driver waiting for its BLE requests
    ble_requests: int | None = None  # how many it made

    def mark_sent(self) -> None:
        self.sent = time.perf_counter()

    def mark_result(self, ble_ms: float | None, *, ble_requests_ms: float | None = None,
                    ble_requests: int | None = None) -> None:
        self.result = time.perf_counter()
        self.ble_ms = ble_ms
        self.ble_requests_ms, self.ble_requests = ble_requests_ms, ble_requests

    def log_fields(self, now: float | None = None) -> dict[str, Any] | None:
        """The "command timing" line's fields (milliseconds per hop, and when it arrived and was
        answered), or None for a command that got no result from its lock transport."""
        if self.sent is None or self.result is None:
            return None
        now = time.perf_counter() if now is None else now
        hops = {"verify_ms": _ms(self.verified - self.started),
                "record_ms": _ms(self.recorded - self.verified),
                "queue_ms": _ms(self.sent - self.recorded),
                "operate_ms": _ms(self.result - self.sent),
                "finish_ms": _ms(now - self.result)}
        if self.ble_ms is not None:
            hops["ble_ms"] = float(self.ble_ms)
        if self.ble_requests_ms is not None:
            hops["ble_requests_ms"] = float(self.ble_requests_ms)
        if self.ble_requests is not None:
            hops["ble_requests"] = self.ble_requests
        return {"mqtt_at": self.mqtt_at, "answered_at": time.time(), **hops}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)

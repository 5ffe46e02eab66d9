"""The lock-transport seam: what the command path needs to run one operation on one lock, and
what it gets back.

hubd's own lock drivers on bleak implement it (``hubd.locks.transport.BleLocks``), through the
bridge as a Bluetooth proxy; the hub's own adapter (direct mode, docs/direct-mode.md) is the
next backend under the same drivers (docs/architecture.md, "Where lock protocols run"). As with
bleak's ``BaseBleakClient`` behind ``BleakClient``, or Home Assistant's connector per proxy, the
command path (``hubd.access.commands``) never knows what runs an operation: it relies only on
what this module promises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from wire import outcomes


@dataclass(frozen=True)
class OpResult:
    """The final result of one lock operation, typed once where it enters hubd: the outcome and
    reason are wire.outcomes' (anything else is a bug in a transport, refused here)."""

    outcome: str  # wire.outcomes.OUTCOMES
    reason: str | None  # None or wire.outcomes.REASONS
    state: str | None  # the lock state after the operation, e.g. "locked", "unknown"
    battery: int | None
    ble_ms: float | None = None  # time in the lock driver (the proxy, the radio and the lock)
    # Of ble_ms, the time spent waiting for the answers to the driver's BLE requests (connect
    # with discovery, subscribe, writes), and how many it made; through the Bluetooth proxy each
    # is a round trip over the serial link to the bridge and its radio.
    ble_requests_ms: float | None = None
    ble_requests: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in outcomes.OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of wire.outcomes.OUTCOMES")
        if self.reason is not None and self.reason not in outcomes.REASONS:
            raise ValueError(f"reason {self.reason!r} is not one of wire.outcomes.REASONS")


@runtime_checkable
class LockTransport(Protocol):
    """Runs operations on locks. The at-most-once contract: ``on_written`` is called once, when
    the command's write to the lock is attempted; from then on the operation is never sent
    again, and a result that is lost is ``incomplete`` (wire.outcomes.unfinished)."""

    @property
    def is_up(self) -> bool:
        """Whether an operation sent now can reach its lock (the bridge's link is up)."""
        ...

    async def wait_up(self, timeout: float) -> bool:
        """Wait until ``is_up``; False if it is not within ``timeout`` seconds."""
        ...

    async def operate(self, lock: str, action: str, command_id: str,
                      on_written: Callable[[], None], timeout: float) -> OpResult:
        """Run ``action`` (wire.lockkinds' actions, or "status") on ``lock`` for the command
        ``command_id`` and return its final result within about ``timeout`` seconds. The lock's
        and the transport's failures are results, never exceptions."""
        ...

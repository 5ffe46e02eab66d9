"""A simulated home whose bridge is only the locks' Bluetooth proxy: hubd drives the locks.

The bridge runs the real firmware, but its bridge.json names no lock, as in a hub whose
hubd.toml says ``lock_driver = "hubd"``: otherwise the firmware's own drivers would poll the
same locks beside hubd's (docs/ble-proxy.md, "hubd's lock drivers").
"""

from __future__ import annotations

from typing import Any

from hubd.locks import PairedLock
from simulator.home import SimulatedHome
from simulator.locks import ReferenceProtocolLock


class ProxyOnlyHome(SimulatedHome):
    """A SimulatedHome whose bridge knows no lock of its own."""

    def bridge_config(self) -> dict[str, Any]:
        return {**super().bridge_config(), "locks": []}


def address(lock: ReferenceProtocolLock) -> str:
    """The lock's address as hubd writes it."""
    return ":".join(f"{b:02X}" for b in lock.address)


def paired(lock: ReferenceProtocolLock, secret: bytes | None = None) -> PairedLock:
    """What pairing gave hubd for ``lock`` (``secret``: another one, a wrong pairing)."""
    assert lock.secret is not None
    return PairedLock(lock.kind, address(lock), secret or lock.secret, lock.addr_type)


def unpaired_lock(lock_id: str, kind: type[ReferenceProtocolLock], addr: str,
                  pairing_window_s: float = 600.0, **kwargs: Any) -> ReferenceProtocolLock:
    """A lock fresh from the box (no secret), its pairing button just held: it takes a PAIR
    sealed with its ``setup_key`` for ``pairing_window_s``."""
    lock = kind(lock_id, addr, None, **kwargs)
    lock.press_pairing_button(pairing_window_s)
    return lock

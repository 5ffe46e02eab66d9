"""The one seam between hubd's lock drivers and however hubd reaches Bluetooth.

Two ways exist (docs/ble-proxy.md): through the bridge's Bluetooth proxy over the serial link
(:class:`hubd.ble.proxy.BleProxy`), or through the hub's own adapter on bleak's platform backend
(:class:`hubd.ble.direct.DirectRadio`, "direct mode"). A lock driver needs the same few things
from either, and nothing else:

    client = BleakClient(address, disconnected_callback, services, timeout=...,
                         backend=radio.client_backend,
                         **radio.client_kwargs(addr_type, gatt_timeout))
    scanner = BleakScanner(on_found, backend=radio.scanner_backend, **radio.scanner_kwargs())
    stop = radio.on_advert(heard)       # the watched addresses' adverts
    await radio.scan(10)                # ... and, for 10 s, every advert in reach
    await radio.watch(address)          # hear this lock without connecting

``client_backend`` and ``scanner_backend`` are None for bleak's platform backend (BlueZ on the
hub), which ``BleakClient`` and ``BleakScanner`` then pick themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

from hubd.ble.advert import Advert

AdvertCallback = Callable[[str, int, int, Advert, dict[str, Any]], None]
"""callback(address, address type, rssi, what the advert says, the advert as heard).

The last is the bridge's `ble_adv` message through the proxy; in direct mode a dict of the same
keys (``addr``, ``addr_type``, ``rssi``, ``data``, ``resp``) whose ``data`` and ``resp`` are the
raw advertising data in hex when the backend gives it, else None (BlueZ parses adverts itself
and gives no raw bytes): read what an advert says from the parsed :class:`Advert`."""


class Answer(Protocol):
    """How a request to the radio ended (``BleProxy``'s ``Done`` is one)."""

    @property
    def status(self) -> str: ...

    @property
    def ok(self) -> bool: ...


@runtime_checkable
class Radio(Protocol):
    """What hubd's lock drivers use of Bluetooth, whichever way hubd reaches it."""

    @property
    def name(self) -> str:
        """What it is, as logs and the technician are told ("the bridge's Bluetooth proxy")."""
        ...

    @property
    def down_reason(self) -> str | None:
        """Why it is not up now (one line), None while it is."""
        ...

    @property
    def is_up(self) -> bool:
        """Whether anything sent now can reach the air (the link to the bridge is up; the
        adapter is usable)."""
        ...

    async def wait_up(self, timeout: float) -> bool:
        """Wait until :attr:`is_up`; False if it did not come up within ``timeout`` s."""
        ...

    @property
    def client_backend(self) -> type[BaseBleakClient] | None:
        """bleak's client backend for ``BleakClient(..., backend=)``; None: the platform's."""
        ...

    def client_kwargs(self, addr_type: int, gatt_timeout: float) -> dict[str, Any]:
        """``BleakClient``'s extra keyword arguments to reach an address of ``addr_type``
        (0 public, 1 random), each GATT read or write given ``gatt_timeout`` s."""
        ...

    @property
    def scanner_backend(self) -> type[BaseBleakScanner] | None:
        """bleak's scanner backend for ``BleakScanner(..., backend=)``; None: the platform's."""
        ...

    def scanner_kwargs(self) -> dict[str, Any]:
        """``BleakScanner``'s extra keyword arguments."""
        ...

    def ble_device(self, address: str) -> BLEDevice:
        """The ``BLEDevice`` to hand a library that takes one (py-dormakaba-dkey): on the
        platform backend the one its scan heard last (BlueZ's client needs its D-Bus path),
        else one made of the address."""
        ...

    def on_advert(self, callback: AdvertCallback) -> Callable[[], None]:
        """Hear adverts (those of watched addresses at least); returns the way to stop."""
        ...

    def forget(self, address: str, why: str) -> None:
        """Discard what the radio keeps of ``address``'s GATT database (``why`` goes to the log),
        so the next connection discovers it afresh: a lock paired, unpaired or reset may run
        other firmware. The bridge's proxy keeps one (hubd.ble.gatt_cache); on the hub's adapter
        BlueZ keeps its own, and this does nothing."""
        ...

    async def scan(self, seconds: float) -> Answer:
        """Hear every advert in reach (not only the watched addresses') through
        :meth:`on_advert` for ``seconds``, then return (``hubctl pair --scan``)."""
        ...

    async def watch(self, address: str, on: bool = True) -> Answer:
        """Hear ``address``'s adverts from now on, without a scan of one's own (on False:
        stop); kept until stopped, whatever happens to the radio meanwhile."""
        ...

"""Sightings of hubd's locks in their adverts, without a connection: battery, signal, and the
report number that tells a lock kept reports nobody heard (a reference-protocol lock); presence
and signal only (a dormakaba dKey, whose advert carries nothing more).

The bridge does not know the locks (it is only their Bluetooth proxy); hubd asks the radio to
watch each lock's address (hubd.ble.radio ``watch``: the proxy sends it again whenever the link
comes back; the hub's own adapter serves it from its background scan) and hands every advert of
the lock's protocol it hears to ``on_sighting(lock, battery, rssi)`` (``battery`` None for a
dKey) and a reference lock's report number to ``on_counter(lock, counter)``
(hubd.locks.transport.BleLocks.advertised). An advert is not authenticated: its battery is a
hint that the next authenticated answer corrects, its counter only a reason to look
(docs/lock-protocol.md, "Connection policy").

The adverts are read as bleak parses them (``AdvertisementData``, hubd.ble.advert.Advert:
manufacturer data by company id), so the same :meth:`LockSightings.heard` serves a hub whose
own adapter scans (bleak's platform backend gives nothing else) and the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from py_dormakaba_dkey import device_filter

from hubd.ble.advert import Advert
from hubd.ble.radio import Radio
from hubd.locks.transport import PairedLock
from wire import lockkinds
from wire import lockproto as lp

log = logging.getLogger(__name__)

#: on_sighting(lock id, battery percent or None (a dKey's advert has none), rssi)
SightingCallback = Callable[[str, "int | None", int], None]
#: on_counter(lock id, the report number in its advert, low 16 bits)
CounterCallback = Callable[[str, int], None]


class ParsedAdvert(Protocol):
    """What a sighting needs of an advert: bleak's ``AdvertisementData`` or hubd.ble's Advert."""

    @property
    def manufacturer_data(self) -> dict[int, bytes]: ...

    @property
    def service_uuids(self) -> list[str]: ...


def reference_advert(advert: ParsedAdvert) -> tuple[str, int, int, bool] | None:
    """(kind, battery, report counter, pairing) from a reference lock's advert as bleak parsed
    it (wire.lockproto.decode_manufacturer), or None for any other advert, malformed or hostile
    ones included."""
    data = advert.manufacturer_data.get(lp.COMPANY_ID)
    if data is None:
        return None
    try:
        return lp.decode_manufacturer(lp.COMPANY_ID, bytes(data))
    except lp.ProtocolError:
        return None


def dkey_advert(advert: ParsedAdvert) -> bool:
    """Whether an advert as bleak parsed it is a dormakaba dKey's: py-dormakaba-dkey's own
    ``device_filter`` (the dKey's service UUID, or its command characteristic's, among the
    advert's service UUIDs; docs/dkey.md). A dKey's advert carries nothing else hubd reads: no
    battery, no report number."""
    try:
        return bool(device_filter(advert))  # type: ignore[arg-type]  # it reads service_uuids
    except (AttributeError, TypeError):
        return False


class LockSightings:
    """Watches ``locks``' adverts through ``radio`` (the bridge's proxy, or the hub's own
    adapter: hubd.ble.radio) from :meth:`start` until :meth:`stop`.

    With ``radio`` None nothing is watched or listened to: a scanner of the caller's hands each
    advert it hears to :meth:`heard`
    (``BleakScanner(detection_callback=lambda d, a: sightings.heard(d.address, a.rssi, a))``).
    """

    def __init__(self, radio: Radio | None, locks: Mapping[str, PairedLock],
                 on_sighting: SightingCallback, on_counter: CounterCallback | None = None) -> None:
        self._radio = radio
        self._by_address = {paired.address.upper(): lock_id for lock_id, paired in locks.items()}
        self._protocols = {lock_id: paired.protocol for lock_id, paired in locks.items()}
        self._on_sighting = on_sighting
        self._on_counter = on_counter
        self._stop_listening: Callable[[], None] | None = None

    async def start(self) -> None:
        """Listen, and ask the radio to watch every lock (the proxy keeps a watch asked while
        the link is down and sends it when it is up)."""
        if self._radio is None:
            return
        self._stop_listening = self._radio.on_advert(self._heard)
        for address in sorted(self._by_address):
            done = await self._radio.watch(address)
            if not done.ok:
                log.info("watching lock %s: %s (sent again when the link is up)", address, done.status)

    async def add(self, lock_id: str, paired: PairedLock) -> None:
        """Watch a lock just paired (kept across link drops)."""
        self._by_address[paired.address.upper()] = lock_id
        self._protocols[lock_id] = paired.protocol
        if self._radio is None:
            return
        done = await self._radio.watch(paired.address.upper())
        if not done.ok:
            log.info("watching lock %s: %s (sent again when the link is up)", paired.address, done.status)

    async def remove(self, lock_id: str) -> None:
        """Stop watching a decommissioned lock."""
        self._protocols.pop(lock_id, None)
        for address in [a for a, lock in self._by_address.items() if lock == lock_id]:
            del self._by_address[address]
            if self._radio is not None:
                await self._radio.watch(address, on=False)

    def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def heard(self, address: str, rssi: int, advert: ParsedAdvert) -> None:
        """One advert from ``address`` as bleak parsed it; anything but a watched lock's
        well-formed advert of its own protocol is ignored."""
        lock_id = self._by_address.get(address.upper())
        if lock_id is None:
            return
        if self._protocols.get(lock_id) == lockkinds.DKEY:
            if dkey_advert(advert):
                self._on_sighting(lock_id, None, rssi)
            return
        read = reference_advert(advert)
        if read is None:
            return  # a foreign, malformed or hostile advert under a lock's address
        _, battery, counter, _ = read
        self._on_sighting(lock_id, battery, rssi)
        if self._on_counter is not None:
            self._on_counter(lock_id, counter)

    def _heard(self, address: str, addr_type: int, rssi: int, advert: Advert,
               msg: dict[str, Any]) -> None:
        self.heard(address, rssi, advert)

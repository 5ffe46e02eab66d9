"""A peer's GATT database, as bleak holds it, from the proxy's discovery messages.

The bridge sends every primary service (`ble_service`), then characteristics (`ble_char`, each
naming its service's start handle) and descriptors (`ble_desc`, each naming its
characteristic's value handle), then the `ble_done` (docs/ble-proxy.md). Anything that names a
service or characteristic that was not sent, repeats a handle or carries a UUID of the wrong
size is left out and counted: a peer's database is radio input too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection

from hubd.ble import uuids
from wire import messages

#: The largest ATT handle.
MAX_HANDLE = 0xFFFF


def properties(bits: int) -> list[CharacteristicPropertyName]:
    """bleak's names for a characteristic's GATT property bits."""
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if bits & bit and bit <= 0x80]


def _handle(value: int) -> bool:
    return 0 < value <= MAX_HANDLE


class Discovery:
    """Collects one discovery's messages; :meth:`services` builds bleak's collection.

    ``write_without_response_size`` gives a characteristic's largest write without response
    (the proxy's MTU less 3, bounded by MAX_DATA)."""

    def __init__(self, write_without_response_size: Callable[[], int]) -> None:
        self._wwr = write_without_response_size
        self.collection = BleakGATTServiceCollection()
        self.received = 0  # messages taken in or dropped: ble_done's count is compared with it
        self.dropped: Counter[str] = Counter()
        self.taken: list[dict[str, Any]] = []  # the messages taken in, in order (hubd.ble.gatt_cache)

    def take(self, msg: dict[str, Any]) -> str | None:
        """Take one ble_service, ble_char or ble_desc; a refusal reason if it was left out."""
        self.received += 1
        why = self._take(msg)
        if why is not None:
            self.dropped[why] += 1
        else:
            self.taken.append(msg)
        return why

    def _take(self, msg: dict[str, Any]) -> str | None:
        uuid = uuids.from_wire(msg["uuid"])
        if uuid is None:
            return "discovery_bad_uuid"
        kind = msg["m"]
        col = self.collection
        if kind == messages.BLE_SERVICE:
            if not (_handle(msg["start"]) and msg["start"] <= msg["end"] <= MAX_HANDLE):
                return "discovery_bad_handle"
            if msg["start"] in col.services:
                return "discovery_repeated"
            col.add_service(BleakGATTService(msg, msg["start"], uuid))
        elif kind == messages.BLE_CHAR:
            service = col.services.get(msg["service"])
            if service is None:
                return "discovery_orphan"
            if not _handle(msg["handle"]) or not 0 <= msg["props"] <= 0xFF:
                return "discovery_bad_handle"
            if msg["handle"] in col.characteristics:
                return "discovery_repeated"
            col.add_characteristic(BleakGATTCharacteristic(
                msg, msg["handle"], uuid, properties(msg["props"]), self._wwr, service))
        else:
            char = col.characteristics.get(msg["char"])
            if char is None:
                return "discovery_orphan"
            if not _handle(msg["handle"]):
                return "discovery_bad_handle"
            if msg["handle"] in col.descriptors or msg["handle"] in col.characteristics:
                return "discovery_repeated"
            col.add_descriptor(BleakGATTDescriptor(msg, msg["handle"], uuid, char))
        return None

    def value_handle(self, uuid: str) -> int | None:
        """The value handle of the first characteristic of ``uuid`` (bleak's normalised form)."""
        return next((c.handle for c in self.collection.characteristics.values()
                     if c.uuid == uuid), None)

    def services(self, wanted: set[str] | None = None) -> BleakGATTServiceCollection:
        """The collection; with ``wanted`` (bleak's normalised UUIDs), only those services."""
        if wanted is None:
            return self.collection
        kept = BleakGATTServiceCollection()
        for service in self.collection:
            if service.uuid in wanted:
                kept.add_service(service)
                for char in service.characteristics:
                    kept.characteristics[char.handle] = char
                    for desc in char.descriptors:
                        kept.descriptors[desc.handle] = desc
        return kept

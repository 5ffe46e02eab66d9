"""Advertising data: the raw AD structures a `ble_adv` carries, read into bleak's
``AdvertisementData``.

An advert is radio input from anyone nearby: every byte sequence is read without raising.
A structure whose length runs past the data, or a zero length (the rest is padding), ends the
reading; a structure too short for its type, a UUID list with a partial UUID at its end, or a
name that is not UTF-8 keeps what can be read of it and loses the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bleak.backends.scanner import AdvertisementData

from hubd.ble import uuids

# AD types (Bluetooth Assigned Numbers, "Common Data Types").
AD_UUID16_SOME = 0x02
AD_UUID16_ALL = 0x03
AD_UUID32_SOME = 0x04
AD_UUID32_ALL = 0x05
AD_UUID128_SOME = 0x06
AD_UUID128_ALL = 0x07
AD_NAME_SHORT = 0x08
AD_NAME_COMPLETE = 0x09
AD_TX_POWER = 0x0A
AD_SERVICE_DATA16 = 0x16
AD_SERVICE_DATA32 = 0x20
AD_SERVICE_DATA128 = 0x21
AD_MANUFACTURER = 0xFF

_UUID_LISTS = {AD_UUID16_SOME: 2, AD_UUID16_ALL: 2, AD_UUID32_SOME: 4, AD_UUID32_ALL: 4,
               AD_UUID128_SOME: 16, AD_UUID128_ALL: 16}
_SERVICE_DATA = {AD_SERVICE_DATA16: 2, AD_SERVICE_DATA32: 4, AD_SERVICE_DATA128: 16}


def structures(data: bytes) -> list[tuple[int, bytes]]:
    """The (AD type, payload) pairs in ``data``, in order."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0 or i + 1 + length > len(data):
            break
        out.append((data[i + 1], data[i + 2:i + 1 + length]))
        i += 1 + length
    return out


@dataclass
class Advert:
    """What one advert (and its scan response) says."""

    local_name: str | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: list[str] = field(default_factory=list)
    tx_power: int | None = None

    def to_bleak(self, rssi: int, platform_data: tuple[object, ...] = ()) -> AdvertisementData:
        return AdvertisementData(
            local_name=self.local_name,
            manufacturer_data=dict(self.manufacturer_data),
            service_data=dict(self.service_data),
            service_uuids=list(self.service_uuids),
            tx_power=self.tx_power,
            rssi=rssi,
            platform_data=platform_data,
        )


def parse(*chunks: bytes | None) -> Advert:
    """Read the advertising data and, if given, the scan response (later chunks win for
    single values: a complete name over a shortened one in any case)."""
    advert = Advert()
    short_name: str | None = None
    for chunk in chunks:
        if not chunk:
            continue
        for ad_type, payload in structures(chunk):
            if ad_type in _UUID_LISTS:
                width = _UUID_LISTS[ad_type]
                for at in range(0, len(payload) - width + 1, width):
                    uuid = uuids.from_air(payload[at:at + width])
                    if uuid is not None and uuid not in advert.service_uuids:
                        advert.service_uuids.append(uuid)
            elif ad_type == AD_NAME_COMPLETE:
                advert.local_name = payload.decode("utf-8", "replace")
            elif ad_type == AD_NAME_SHORT:
                short_name = payload.decode("utf-8", "replace")
            elif ad_type == AD_TX_POWER and len(payload) >= 1:
                advert.tx_power = int.from_bytes(payload[:1], "little", signed=True)
            elif ad_type in _SERVICE_DATA and len(payload) >= _SERVICE_DATA[ad_type]:
                width = _SERVICE_DATA[ad_type]
                uuid = uuids.from_air(payload[:width])
                if uuid is not None:
                    advert.service_data[uuid] = payload[width:]
            elif ad_type == AD_MANUFACTURER and len(payload) >= 2:
                advert.manufacturer_data[int.from_bytes(payload[:2], "little")] = payload[2:]
    if advert.local_name is None:
        advert.local_name = short_name
    return advert

"""A lock's advert as bleak parses it (manufacturer data by company id, all a hub with its own
adapter gets): wire.lockproto.decode_manufacturer reads it as decode_advert reads the raw AD
structures, and hubd.locks.sightings.LockSightings.heard turns it into a sighting and a report
number, ignoring whatever else is on the air under a lock's address.

Through the proxy the same sightings are tested against the real firmware in
test_locks_transport.py and test_locks_upkeep.py.
"""

from __future__ import annotations

import pytest
from bleak.backends.scanner import AdvertisementData

from hubd.ble.advert import parse
from hubd.locks.sightings import LockSightings
from hubd.locks.transport import PairedLock
from wire import lockkinds
from wire import lockproto as lp
from wire import lockside

ADDRESS = "C0:FF:EE:00:00:01"


def _parsed(raw: bytes, rssi: int = -61) -> AdvertisementData:
    return parse(raw).to_bleak(rssi)


@pytest.mark.parametrize("kind", lockkinds.KINDS)
@pytest.mark.parametrize("battery, counter, pairing", [(0, 0, False), (57, 0x1234, True),
                                                       (100, 0xFFFF, False)])
def test_the_parsed_advert_reads_as_the_raw_one(kind: str, battery: int, counter: int,
                                                pairing: bool) -> None:
    raw = lockside.encode_advert(kind, battery, counter, pairing)
    data = _parsed(raw).manufacturer_data
    assert lp.decode_manufacturer(lp.COMPANY_ID, data[lp.COMPANY_ID]) == lp.decode_advert(raw) \
        == (kind, battery, counter, pairing)


@pytest.mark.parametrize("company, data", [
    (0x004C, bytes([1, 1, 50, 7, 0])),  # another company's data
    (lp.COMPANY_ID, bytes([1, 1, 50, 7])),  # one byte short
    (lp.COMPANY_ID, bytes([1, 1, 50, 7, 0, 0])),  # one byte long
    (lp.COMPANY_ID, bytes([2, 1, 50, 7, 0])),  # another protocol version
    (lp.COMPANY_ID, bytes([1, 1, 101, 7, 0])),  # battery over 100
    (lp.COMPANY_ID, bytes([1, 9, 50, 7, 0])),  # no such kind
])
def test_malformed_manufacturer_data_is_a_protocol_error(company: int, data: bytes) -> None:
    with pytest.raises(lp.ProtocolError):
        lp.decode_manufacturer(company, data)


def _sightings() -> tuple[LockSightings, list[tuple[str, int, int]], list[tuple[str, int]]]:
    seen: list[tuple[str, int, int]] = []
    counters: list[tuple[str, int]] = []
    locks = {"front-door": PairedLock(lockkinds.INSIDE_TURNER, ADDRESS, bytes(32))}
    sightings = LockSightings(None, locks, lambda *s: seen.append(s),
                              lambda *c: counters.append(c))
    return sightings, seen, counters


async def test_a_parsed_advert_is_a_sighting_with_its_report_number() -> None:
    sightings, seen, counters = _sightings()
    await sightings.start()  # no proxy: nothing to watch, the hub's scanner calls heard()
    sightings.heard(ADDRESS.lower(), -61,
                    _parsed(lockside.encode_advert(lockkinds.INSIDE_TURNER, 42, 0x10007)))
    assert seen == [("front-door", 42, -61)] and counters == [("front-door", 7)]


async def test_anything_else_under_or_beside_a_locks_address_is_ignored() -> None:
    sightings, seen, counters = _sightings()
    good = lockside.encode_advert(lockkinds.INSIDE_TURNER, 42, 7)
    sightings.heard("C0:FF:EE:00:00:99", -61, _parsed(good))  # not a watched lock
    sightings.heard(ADDRESS, -61, _parsed(b"\x02\x01\x06"))  # no manufacturer data
    sightings.heard(ADDRESS, -61, _parsed(b"\x06\xff\x4c\x00\x01\x02\x03"))  # another company's
    sightings.heard(ADDRESS, -61, _parsed(b"\x08\xff\xff\xff\x01\x01\x65\x07\x00"))  # battery 101
    sightings.heard(ADDRESS, -61, AdvertisementData(None, {lp.COMPANY_ID: b"\x01"}, {}, [], None,
                                                    -61, ()))  # short
    assert seen == [] and counters == []
    await sightings.remove("front-door")
    sightings.heard(ADDRESS, -61, _parsed(good))
    assert seen == [], "a removed lock is no longer sighted"
    await sightings.add("front-door", PairedLock(lockkinds.INSIDE_TURNER, ADDRESS, bytes(32)))
    sightings.heard(ADDRESS, -61, _parsed(good))
    assert seen == [("front-door", 42, -61)]

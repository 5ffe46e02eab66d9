"""ble_central pieces that need no radio: advert filtering on hostile input, UUID handling."""

import ble_central
import bluetooth
from wire import lockproto as lp

SERVICE_LE = lp.uuid128_le(lp.SERVICE_UUID)


def test_service_filter_finds_the_uuid_in_a_real_advert():
    adv = lp.encode_advert("inside_turner", 50, 1)
    assert ble_central._lists_uuid128(memoryview(adv), SERVICE_LE)
    assert not ble_central._lists_uuid128(memoryview(adv), bytes(16))


def test_service_filter_survives_hostile_adverts():
    for adv in (b"", b"\x00", b"\xff\x07", b"\x11\x07" + SERVICE_LE[:10], b"\x02\x07\x01"):
        assert not ble_central._lists_uuid128(memoryview(adv), SERVICE_LE)


def test_uuid_from_string_matches_over_the_air_bytes():
    assert bluetooth.UUID(lp.SERVICE_UUID) == bluetooth.UUID(SERVICE_LE)
    assert bluetooth.UUID(0x2902) == ble_central.CCCD_UUID
    assert bluetooth.UUID(lp.SERVICE_UUID) != bluetooth.UUID(lp.CONTROL_UUID)

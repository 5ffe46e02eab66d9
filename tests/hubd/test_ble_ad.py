"""hubd reads a `ble_adv`'s raw AD structures into bleak's AdvertisementData (hubd/ble/advert.py):
the reference lock's advert as the spec's example bytes, every field bleak has, and hostile or
truncated AD data, which is read as far as it goes and never raises (docs/architecture.md,
"Robustness"; fuzzed with hypothesis, deterministic as tests/wire/test_fuzz_wire.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubd.ble import advert, uuids
from wire import lockproto, lockside

FUZZ = settings(max_examples=500, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# docs/lock-protocol.md, "Example exchange"
SPEC_ADVERT = bytes.fromhex("0201061107927b0e1f4c6a2e8d1a4b7e9c01003b5f08ffffff0101570c00")
SPEC_RESPONSE = bytes.fromhex("0b0946726f6e7420646f6f72")


def _ad(ad_type: int, payload: bytes) -> bytes:
    return bytes([len(payload) + 1, ad_type]) + payload


def test_the_reference_locks_advert_gives_its_service_name_and_manufacturer_data() -> None:
    data = advert.parse(SPEC_ADVERT, SPEC_RESPONSE).to_bleak(-60)
    assert data.service_uuids == [lockproto.SERVICE_UUID]
    assert data.local_name == "Front door"
    assert data.manufacturer_data == {0xFFFF: bytes.fromhex("0101570c00")}
    assert data.rssi == -60 and data.tx_power is None and data.service_data == {}


def test_the_lock_sides_own_encoder_reads_back() -> None:
    data = advert.parse(lockside.encode_advert("key_box", 42, 7, pairing=True),
                        lockside.encode_scan_response("Key box")).to_bleak(-70)
    assert data.local_name == "Key box"
    assert data.manufacturer_data[lockproto.COMPANY_ID][1] == 0x83  # key box, pairing bit


def test_every_field_bleak_has_is_read() -> None:
    data = (_ad(0x03, bytes.fromhex("0d18 0f18")) + _ad(0x05, bytes.fromhex("78563412"))
            + _ad(0x08, b"Sho") + _ad(0x0A, bytes([0xF4]))
            + _ad(0x16, bytes.fromhex("0f18") + b"\x55")
            + _ad(0x20, bytes.fromhex("78563412") + b"\x01\x02")
            + _ad(0x21, bytes(range(16)) + b"x")
            + _ad(0xFF, bytes.fromhex("4c00") + b"apple"))
    got = advert.parse(data).to_bleak(-40)
    assert got.service_uuids == ["0000180d-0000-1000-8000-00805f9b34fb",
                                 "0000180f-0000-1000-8000-00805f9b34fb",
                                 "12345678-0000-1000-8000-00805f9b34fb"]
    assert got.local_name == "Sho"  # only a shortened name: it stands
    assert got.tx_power == -12
    assert got.service_data == {"0000180f-0000-1000-8000-00805f9b34fb": b"\x55",
                                "12345678-0000-1000-8000-00805f9b34fb": b"\x01\x02",
                                uuids.from_air(bytes(range(16))): b"x"}
    assert got.manufacturer_data == {0x004C: b"apple"}


def test_a_complete_name_wins_over_a_shortened_one_in_either_order() -> None:
    assert advert.parse(_ad(0x09, b"Complete") + _ad(0x08, b"Sh")).local_name == "Complete"
    assert advert.parse(_ad(0x08, b"Sh"), _ad(0x09, b"Complete")).local_name == "Complete"


def test_a_structure_running_past_the_end_ends_the_reading_and_keeps_what_came_before() -> None:
    data = _ad(0x09, b"Lock") + bytes([0x11, 0x07]) + bytes(10)  # 16 bytes promised, 10 there
    got = advert.parse(data)
    assert got.local_name == "Lock" and got.service_uuids == []


def test_a_zero_length_ends_the_significant_part() -> None:
    assert advert.parse(_ad(0x09, b"A") + b"\x00" + _ad(0xFF, b"\x01\x02x")).manufacturer_data == {}


def test_short_or_partial_structures_keep_what_can_be_read() -> None:
    got = advert.parse(_ad(0x03, bytes.fromhex("0d180f")) + _ad(0xFF, b"\x01")
                       + _ad(0x16, b"\x0f") + _ad(0x0A, b"") + _ad(0x09, b"\xff\xfeok"))
    assert got.service_uuids == ["0000180d-0000-1000-8000-00805f9b34fb"]
    assert got.manufacturer_data == {} and got.service_data == {} and got.tx_power is None
    assert got.local_name == "\ufffd\ufffdok"


def test_wire_uuids_are_the_hex_of_their_little_endian_bytes() -> None:
    assert uuids.from_wire("0229") == "00002902-0000-1000-8000-00805f9b34fb"
    assert uuids.from_wire(lockproto.uuid128_le(lockproto.SERVICE_UUID).hex()) == lockproto.SERVICE_UUID
    for bad in ("", "02", "022", "12345678", "zz29", "00" * 17):
        assert uuids.from_wire(bad) is None


ad_structure = st.builds(lambda t, p: _ad(t, p), st.sampled_from(
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x16, 0x20, 0x21, 0xFF, 0x00, 0x42]),
    st.binary(max_size=29))


@st.composite
def hostile_ad(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(ad_structure, max_size=6))))
    for _ in range(draw(st.integers(0, 4))):  # damage: flip, cut, or lie about a length
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@FUZZ
@given(st.one_of(hostile_ad(), st.binary(max_size=62)), st.one_of(st.none(), hostile_ad()))
def test_any_bytes_read_into_advertisement_data_without_raising(data: bytes, resp: bytes | None) -> None:
    got = advert.parse(data, resp).to_bleak(-50)
    assert all(isinstance(u, str) and len(u) == 36 for u in got.service_uuids)
    assert all(0 <= k <= 0xFFFF for k in got.manufacturer_data)
    assert got.tx_power is None or -128 <= got.tx_power <= 127
    assert sum(len(v) for v in got.manufacturer_data.values()) <= len(data) + len(resp or b"")


@FUZZ
@given(st.lists(ad_structure, max_size=4))
def test_well_formed_structures_are_all_seen(structs: list[bytes]) -> None:
    assert advert.structures(b"".join(structs)) == [(s[1], s[2:]) for s in structs]

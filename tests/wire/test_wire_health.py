"""The device and health link messages (wire/messages.py) and the alarm unit's heartbeat with its
status (wire/alarmunit.py), in CPython, against the byte layouts in docs/serial-link.md and
docs/alarm-unit.md."""

from __future__ import annotations

import json

import pytest

from wire import alarmunit, cobs, frame, hubside, link, messages, unitside
from wire.hmac_sha256 import Key

BLE = {"restarts": 1, "last_restart": "silent", "connected": 0}
JOURNALS = {"commands": 3, "alarms": 1}


def _health(**over):
    args = {"up_s": 3600, "reset": "wdt", "heap_free": 11840, "heap_min": 10272,
            "heap_blk": 9216,
            "link_stats": {name: 0 for name in messages.LINK_COUNTERS}, "ble": BLE,
            "lte": {"registered": "home", "rssi": -73}, "unit": {"up": True, "last_heard_s": 4},
            "journals": JOURNALS, "clock": 1700003600}
    args.update(over)
    return messages.make(messages.HEALTH, *args.values())  # in the order of the fields


def test_a_device_reading_round_trips():
    payload = messages.make(messages.DEVICE, "au5a000001", "base_unit", "base-nimh-4.8v", 5040,
                            "mV", False, None, True, "1.4.2")
    assert messages.decode(payload) == {
        "m": "device", "id": "au5a000001", "kind": "base_unit", "model": "base-nimh-4.8v",
        "battery": 5040, "unit": "mV", "mains": False, "rssi": None, "present": True,
        "firmware": "1.4.2"}


def test_health_round_trips_compact_and_health_request_has_no_fields():
    payload = _health()
    assert b": " not in payload and b", " not in payload
    msg = messages.decode(payload)
    assert (msg["reset"], msg["ble"], msg["journals"], msg["lte"]["registered"]) == (
        "wdt", BLE, JOURNALS, "home")
    assert messages.decode(_health(lte=None, unit=None, clock=None))["lte"] is None
    assert messages.decode(hubside.health_request()) == {"m": "health_request"}


def _device(*values):
    return messages.make(messages.DEVICE, *values)


@pytest.mark.parametrize("payload", [
    _device("a", "pendant", "pendant-cr2032", 2900, "V", None, None, None, None),
    _device("a", "pendant", "pendant-cr2032", 2900, "mV", 1, None, None, None),
    _device("a", "pendant", "pendant-cr2032", True, "mV", None, None, None, None),
    _device("", "pendant", "pendant-cr2032", 2900, "mV", None, None, None, None),
    _health(reset="brownout"),
    _health(ble={"restarts": 1, "connected": 0, "last_restart": 5}),
    _health(ble=None),
    _health(unit={"up": "yes", "last_heard_s": 1}),
    _health(link_stats={"frames_rx": 1.5}),
    _health(link_stats={f"c{i}": 0 for i in range(17)}),
    json.dumps({"m": ".ble", "restarts": 0, "last_restart": None, "connected": 0}).encode(),
])
def test_a_malformed_device_or_health_is_refused(payload):
    with pytest.raises(messages.MessageError):
        messages.decode(payload)


def test_health_at_its_longest_fits_one_link_frame():
    cap = messages.COUNT_CAP
    payload = messages.make(
        messages.HEALTH, cap, "deepsleep", 9_999_999, 9_999_999, 9_999_999,
        {k: cap for k in messages.LINK_COUNTERS},
        {"restarts": cap, "last_restart": "refusing", "connected": 99},
        {"registered": "searching", "rssi": -128}, {"up": False, "last_heard_s": cap},
        {"commands": 999, "alarms": 999}, 2**31 - 1)
    assert len(payload) <= frame.MAX_PAYLOAD
    assert len(payload) == 511  # docs/serial-link.md, "Byte budget"


def test_the_write_of_the_serial_link_example_is_byte_for_byte_what_the_docs_show():
    payload = messages.make(messages.BLE_WRITE, 1, 1, 3, "01", True, 2000)
    assert payload == (b'{"m": "ble_write", "rid": 1, "conn": 1, "handle": 3, "data": "01", '
                       b'"response": true, "ms": 2000}')
    line = frame.encode(frame.T_DATA, 0, payload, 5, Key(bytes(range(32))),
                        frame.context(frame.ROLE_HUB, 0x1A2B3C4D, 0x0BADCAFE))
    raw = cobs.decode(line[:-1])
    # docs/serial-link.md: counter 5, tag dd7eeb17e01ee49e, CRC 0x2868
    assert raw[-14:] == bytes.fromhex("00000005 dd7eeb17e01ee49e 2868")
    assert line[:3] == bytes.fromhex("020161") and line[-15:] == bytes.fromhex("01010c05 dd7eeb17e01ee49e 2868 00")


def test_the_ack_hello_and_heartbeat_examples_are_byte_for_byte_what_the_docs_show():
    key = Key(bytes(range(32)))
    hub, bridge = 0x1A2B3C4D, 0x0BADCAFE
    ack = frame.encode(frame.T_ACK, 0, b"", 3, key, frame.context(frame.ROLE_BRIDGE, bridge, hub))
    assert ack.hex(" ") == "02 02 01 01 01 0c 03 b6 17 dc d5 86 a2 fc b6 64 4b 00"
    body = frame.encode_hello(link.PROTOCOL_MAJOR, 0, hub, 0, 512, 4, frame.ROLE_HUB, frame.HELLO_ANSWER_ME,
                              "hubd 0.1.0")
    assert body.hex(" ") == "02 00 1a 2b 3c 4d 00 00 00 00 02 00 04 48 01 68 75 62 64 20 30 2e 31 2e 30"
    hello = frame.encode(frame.T_HELLO, 0, body, 1, key, frame.context(frame.ROLE_HUB, hub, 0))
    assert hello.hex(" ") == ("02 03 02 02 05 1a 2b 3c 4d 01 01 01 02 02 0e 04 48 01 68 75 62 64 20 30 2e 31 "
                              "2e 30 01 01 0c 01 93 02 d7 e1 61 97 8f fe 3b 0c 00")
    beat = frame.encode(frame.T_HEARTBEAT, 0, b"", 6, key, frame.context(frame.ROLE_HUB, hub, bridge))
    assert beat.hex(" ") == "02 04 01 01 01 0c 06 24 f3 38 ac 79 02 ef 86 20 79 00"


def test_the_heartbeat_example_is_byte_for_byte_what_the_docs_show():
    line = unitside.heartbeat(0x5A0000AB, 1700000000, False, 5200, 2950, -71, (1, 4, 2))
    assert line.hex(" ").upper() == (
        "03 02 5A 01 05 AB 65 53 F1 01 0B 14 50 0B 86 B9 01 04 02 C6 61 00")
    assert cobs.decode(line[:-1]).hex(" ").upper() == (
        "02 5A 00 00 AB 65 53 F1 00 00 14 50 0B 86 B9 01 04 02 C6 61")
    assert alarmunit.decode(line[:-1]) == (alarmunit.T_HEARTBEAT, 0x5A0000AB, 1700000000, False,
                                           5200, 2950, -71, "1.4.2")


def test_a_heartbeat_without_readings_decodes_them_as_none():
    line = unitside.heartbeat(1, 0)
    assert alarmunit.decode(line[:-1])[3:] == (True, None, None, None, "0.0.0")
    assert len(cobs.decode(line[:-1])) == alarmunit.MAX_RAW

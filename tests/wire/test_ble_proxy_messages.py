"""The Bluetooth proxy's messages (wire/messages.py, docs/ble-proxy.md): every one fits a link
payload at its largest, and hex data is checked as strictly as any other field."""

from __future__ import annotations

import pytest

from wire import frame, messages as m

BIG = 2**31 - 1


def test_the_largest_of_every_proxy_message_fits_a_link_payload() -> None:
    data = "ab" * m.MAX_DATA
    uuid = "ab" * 16
    largest = [
        m.make(m.BLE_SCAN, BIG, BIG, True), m.make(m.BLE_WATCH, BIG, "C0:FF:EE:00:00:01", False),
        m.make(m.BLE_CONNECT, BIG, "C0:FF:EE:00:00:01", 255, BIG), m.make(m.BLE_DISCONNECT, BIG, BIG),
        m.make(m.BLE_DISCOVER, BIG, BIG), m.make(m.BLE_READ, BIG, BIG, BIG, BIG),
        m.make(m.BLE_WRITE, BIG, BIG, BIG, data, False, BIG), m.make(m.BLE_SUBSCRIBE, BIG, BIG, BIG, 2),
        m.make(m.BLE_DONE, BIG, "disconnected", BIG, data, BIG, BIG, BIG),
        m.make(m.BLE_SERVICE, BIG, uuid, BIG, BIG), m.make(m.BLE_CHAR, BIG, uuid, BIG, BIG, BIG),
        m.make(m.BLE_DESC, BIG, uuid, BIG, BIG),
        m.make(m.BLE_ADV, "C0:FF:EE:00:00:01", 255, -(2**31), "ab" * 31, "cd" * 31),
        m.make(m.BLE_NOTIFY, BIG, BIG, data), m.make(m.BLE_LOST, BIG, "ble_restart"),
    ]
    for payload in largest:
        assert len(payload) <= frame.MAX_PAYLOAD, payload[:40]
        assert m.decode(payload)["m"].startswith("ble_")


@pytest.mark.parametrize("data", ["a", "zz", "ab" * (m.MAX_DATA + 1), 5, ["ab"], "ab cd"])
def test_hex_data_that_is_not_even_hex_within_the_limit_is_refused(data: object) -> None:
    payload = m.make(m.BLE_NOTIFY, 1, 3, "00")
    payload = payload.replace(b'"00"', __import__("json").dumps(data).encode())
    with pytest.raises(m.MessageError, match="data"):
        m.decode(payload)


def test_empty_and_mixed_case_hex_are_data() -> None:
    assert m.decode(m.make(m.BLE_NOTIFY, 1, 3, ""))["data"] == ""
    assert m.decode(m.make(m.BLE_NOTIFY, 1, 3, "aBcD"))["data"] == "aBcD"


@pytest.mark.parametrize("kind, field, value", [(m.BLE_DONE, "status", "maybe"), (m.BLE_LOST, "reason", "bored")])
def test_an_unknown_status_or_reason_is_refused(kind: str, field: str, value: str) -> None:
    valid = m.make(m.BLE_DONE, 1, "ok") if kind == m.BLE_DONE else m.make(m.BLE_LOST, 1, "peer")
    bad = valid.replace(b'"ok"' if kind == m.BLE_DONE else b'"peer"', f'"{value}"'.encode())
    with pytest.raises(m.MessageError, match=field):
        m.decode(bad)

"""The technician's link messages (wire/messages.py): built with make(), checked by decode()."""

from __future__ import annotations

import pytest

from wire import messages

SECRET = "ab" * 32


@pytest.mark.parametrize("kind,values", [
    (messages.TEST_ALARM, ("hubctl-test-1a2b3c", True)),
    (messages.SCAN, (8000,)),
    (messages.FOUND, ("C0:FF:EE:00:00:07", 0, "in_cylinder", -61, 97, "Front door", True, None)),
    (messages.SCAN_DONE, (1,)),
    (messages.PAIR, ("front-door", "in_cylinder", "C0:FF:EE:00:00:07", 0, SECRET, SECRET)),
    (messages.PAIRED, ("front-door", "ok", "locked", 97)),
    (messages.UNPAIR, ("front-door",)),
    (messages.UNPAIRED, ("front-door", "unreachable")),
    (messages.WIPE, ()),
    (messages.WIPED, (2,)),
])
def test_each_technician_message_round_trips(kind: str, values: tuple) -> None:
    msg = messages.decode(messages.make(kind, *values))
    assert msg.pop("m") == kind
    assert tuple(msg.values()) == values


def test_left_out_trailing_fields_are_null() -> None:
    assert messages.decode(messages.make(messages.PAIRED, "front-door", "not_pairing")) == {
        "m": "paired", "lock": "front-door", "result": "not_pairing", "state": None, "battery": None}


@pytest.mark.parametrize("payload,words", [
    (b'{"m":"paired","lock":"x","result":"maybe","state":null,"battery":null}', "unknown result"),
    (b'{"m":"unpaired","lock":"x","result":"ok!"}', "unknown result"),
    (b'{"m":"pair","lock":"x","kind":"in_cylinder","addr":"C0:FF:EE:00:00:07","addr_type":0,'
     b'"secret":"' + b"a" * 65 + b'","setup":"00"}', "'secret'"),
    (b'{"m":"test_alarm","ref":"r","lte":"yes"}', "'lte'"),
    (b'{"m":"scan"}', "'ms'"),
])
def test_malformed_technician_messages_are_refused(payload: bytes, words: str) -> None:
    with pytest.raises(messages.MessageError, match=words):
        messages.decode(payload)

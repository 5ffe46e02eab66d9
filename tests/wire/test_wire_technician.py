"""The technician's link messages (wire/messages.py): built with make(), checked by decode().

Scanning, pairing and unpairing locks are hubd's, through the Bluetooth proxy: the bridge takes
only `test_alarm` and `wipe` from a technician."""

from __future__ import annotations

import pytest

from wire import messages


@pytest.mark.parametrize("kind,values", [
    (messages.TEST_ALARM, ("hubctl-test-1a2b3c", True)),
    (messages.WIPE, ()),
    (messages.WIPED, (2,)),
])
def test_each_technician_message_round_trips(kind: str, values: tuple) -> None:
    msg = messages.decode(messages.make(kind, *values))
    assert msg.pop("m") == kind
    assert tuple(msg.values()) == values


@pytest.mark.parametrize("payload,words", [
    (b'{"m":"test_alarm","ref":"r","lte":"yes"}', "'lte'"),
    (b'{"m":"wiped","locks":"2"}', "'locks'"),
    # The bridge's former lock messages are no messages any more: hubd drives the locks.
    (b'{"m":"scan","ms":8000}', "unknown message kind"),
    (b'{"m":"pair","lock":"x","kind":"in_cylinder","addr":"C0:FF:EE:00:00:07","addr_type":0,'
     b'"secret":"' + b"a" * 64 + b'","setup":"' + b"b" * 64 + b'"}', "unknown message kind"),
    (b'{"m":"unpair","lock":"x"}', "unknown message kind"),
    (b'{"m":"paired","lock":"x","result":"ok"}', "unknown message kind"),
])
def test_malformed_and_retired_technician_messages_are_refused(payload: bytes,
                                                               words: str) -> None:
    with pytest.raises(messages.MessageError, match=words):
        messages.decode(payload)

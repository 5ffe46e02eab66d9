"""The serial link engine as the bridge runs it: in MicroPython, on its wrapping tick clock."""

import time

from wire import cobs, frame, link, messages
from wire.crc import crc16


KEY = b"K" * 32  # the link key of these tests


def _pair(now):
    return (link.Link(frame.ROLE_HUB, "hub", now, KEY),
            link.Link(frame.ROLE_BRIDGE, "fw", now, KEY))


def _run(a, b, now, ms, got, corrupt_every=0):
    n = 0
    for _ in range(ms // 10):
        now = time.ticks_add(now, 10)
        for src, dst, key in ((a, b, "b"), (b, a, "a")):
            data = b""
            while True:  # poll gives one frame per call
                f = src.poll(now)
                if not f:
                    break
                data += f
            if data:
                n += 1
                if corrupt_every and n % corrupt_every == 0 and len(data) > 4:
                    data = bytearray(data)
                    data[len(data) // 2] ^= 0x40
                    data = bytes(data)
                dst.feed(data, now)
        for key, end in (("a", a), ("b", b)):
            for kind, value in end.events():
                if kind == link.EV_DATA:
                    got[key].append(value)
    return now


def test_crc_and_cobs_match_the_cpython_results():
    assert crc16(b"123456789") == 0x29B1
    data = bytes(range(256)) + b"\x00" * 10
    assert cobs.decode(cobs.encode(data)) == data


def test_link_delivers_in_order_across_the_tick_wraparound():
    now = time.ticks_add(0, -1500)  # the tick counter wraps during this test
    a, b = _pair(now)
    got = {"a": [], "b": []}
    now = _run(a, b, now, 200, got)
    assert a.state == link.UP and b.state == link.UP
    for i in range(20):
        a.send(messages.make(messages.BLE_WRITE, i, 1, 3, "%04x" % i, True, 2000))
        now = _run(a, b, now, 20, got)
    now = _run(a, b, now, 3000, got)
    assert [messages.decode(p)["rid"] for p in got["b"]] == list(range(20))
    assert a.state == link.UP, "heartbeats must keep the link up across the wrap"


def test_corrupted_frames_are_rejected_by_crc_and_retransmitted():
    now = time.ticks_ms()
    a, b = _pair(now)
    got = {"a": [], "b": []}
    now = _run(a, b, now, 200, got)
    for i in range(10):
        b.send(messages.make(messages.BLE_DONE, i, "ok"))
    _run(a, b, now, 5000, got, corrupt_every=3)
    assert [messages.decode(p)["rid"] for p in got["a"]] == list(range(10))
    assert a.stats["crc_errors"] + b.stats["crc_errors"] > 0
    assert b.stats["retransmits"] + a.stats["retransmits"] > 0


def test_hostile_payloads_raise_message_error():
    for bad in (b"", b"[]", b"{}", b'{"m":"ble_read","rid":"1"}', b"\xff\xfe",
                b'{"m":"ble_subscribe","rid":1,"conn":1,"handle":"x","mode":1}',
                b'{"m":"ble_done","rid":1,"status":"exploded"}',
                b'{"m":"op","rid":1,"lock":"x","action":"unlock","cmd":"c","ttl":1}'):
        try:
            messages.decode(bad)
        except messages.MessageError:
            continue
        raise AssertionError("accepted %r" % bad)


def test_after_hubd_restarts_what_never_left_is_queued_again_but_alarms():
    # wire.link hands back what was queued for the old hubd (RESET). Alarms come again from the
    # journal (the alarm flow), and one confirmed over LTE meanwhile must not reach hubd: an
    # alarm queued for the old hubd is let go; the rest is sent to the new one.
    from hostlink import HostLink

    host = HostLink(None, "fw-test", KEY)
    seen = []
    host.on_state = lambda kind, value: seen.append(kind)
    turned = messages.make(messages.DEVICE, "au00000001", "base_unit", "base-nimh-4.8v", 5000,
                           "mV", False)
    state = messages.make(messages.DEVICE, "bridge", "bridge", "bridge-liion-1s", 3900, "mV")
    alarm = messages.make(messages.ALARM, "au00000001-5", "button", "pendant", 0)
    lte = messages.make(messages.ALARM_LTE, "au00000001-5", "ack")
    host._overflow = [turned, lte]
    host.link._events = [(link.EV_RESET, ([alarm], [state, alarm, b"not a message"]))]
    host._dispatch()
    assert host.link._queue == [state, turned], host.link._queue
    assert host._overflow == []
    assert seen == [link.EV_RESET], "the alarm flow hears the reset too"


def test_forged_and_replayed_frames_are_refused_in_micropython():
    # The tag is checked by the same code the chip runs (hashlib.sha256 on memoryviews).
    from wire.hmac_sha256 import Key

    now = time.ticks_ms()
    a, b = _pair(now)
    got = {"a": [], "b": []}
    now = _run(a, b, now, 200, got)
    ctx = frame.context(frame.ROLE_HUB, a.session, b.session)
    forged = frame.encode(frame.T_DATA, b._rx_expect,
                          messages.make(messages.BLE_WRITE, 9, 1, 3, "ff", True, 2000),
                          a._tx_counter + 1, Key(b"F" * 32), ctx)
    b.feed(b"\x00" + forged, now)
    a.send(messages.make(messages.BLE_WRITE, 1, 1, 3, "01", True, 2000))
    real = a.poll(now)
    b.feed(real, now)
    b.feed(b"\x00" + real, now)  # played back at once
    now = _run(a, b, now, 300, got)
    assert [messages.decode(p)["rid"] for p in got["b"]] == [1], got["b"]
    assert b.stats["auth_errors"] == 1 and b.stats["replays"] == 1, b.stats

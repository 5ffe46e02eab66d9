"""Fuzzing wire.messages.decode() inside MicroPython, as the bridge runs it on every payload from
hubd: any bytes end in a message or a MessageError, nothing else (tests/firmware/fuzz.py)."""

import json

import fuzz
from fuzz import chain, fail, mutants, noise
from wire import hubside, messages

_LINK = {name: 7 for name in messages.LINK_COUNTERS}
# One valid message of every kind (what each end sends), built as the senders build them.
VALID = [
    hubside.alarm_stored("au5a0000ab-1"), hubside.alarm_handled("au5a0000ab-1"),
    hubside.clock(1700000000), hubside.health_request(),
    messages.make(messages.ALARM, "au5a0000ab-1", "button", "pendant", 1700000000, None),
    messages.make(messages.ALARM_LTE, "au5a0000ab-1", "ack"),
    messages.make(messages.DEVICE, "au5a0000ab", "base_unit", "base-nimh-4.8v", 5040, "mV",
                  False, None, True, "1.4.2"),
    messages.make(messages.HEALTH, 3600, "wdt", 11840, 10272, 9216, _LINK,
                  {"restarts": 1, "last_restart": "silent", "connected": 0},
                  {"registered": "home", "rssi": -73}, {"up": True, "last_heard_s": 4},
                  {"commands": 3, "alarms": 1}, 1700003600),
    messages.make(messages.TEST_ALARM, "tech-1", True),
    messages.make(messages.WIPE), messages.make(messages.WIPED, 0),
    # The Bluetooth proxy's (docs/ble-proxy.md), both ways.
    messages.make(messages.BLE_SCAN, 8, 5000, True),
    messages.make(messages.BLE_WATCH, 9, "C0:FF:EE:00:00:01", False),
    messages.make(messages.BLE_CONNECT, 10, "C0:FF:EE:00:00:01", 1, 3000),
    messages.make(messages.BLE_DISCONNECT, 11, 1),
    messages.make(messages.BLE_DISCOVER, 12, 1),
    messages.make(messages.BLE_READ, 13, 1, 6, 2000),
    messages.make(messages.BLE_WRITE, 14, 1, 3, "0102ff" * 58, True, 2000),
    messages.make(messages.BLE_SUBSCRIBE, 15, 1, 6, 2),
    messages.make(messages.BLE_DONE, 13, "gatt_error", None, None, None, None, 14),
    messages.make(messages.BLE_DONE, 10, "ok", 1, "ab" * 176, 177, 4, None),
    messages.make(messages.BLE_SERVICE, 12, "00112233445566778899aabbccddeeff", 1, 6),
    messages.make(messages.BLE_CHAR, 12, "f1ff", 3, 0x08, 1),
    messages.make(messages.BLE_DESC, 12, "0229", 6, 5),
    messages.make(messages.BLE_ADV, "C0:FF:EE:00:00:01", 0, -60, "020106", None),
    messages.make(messages.BLE_NOTIFY, 1, 5, "81" + "00" * 16),
    messages.make(messages.BLE_LOST, 1, "host_link"),
]
# Values of every JSON type, and the edges of each: a field takes only its own.
ODD = [None, True, False, 0, -1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1, 10 ** 40, 1.5, 1e300,
       "", "x", "x" * 64, "x" * 65, "\u00e9", [], [1], {}, {"a": 1}]


def _decode(payload):
    """decode()'s message, or None for a MessageError; anything else fails the test."""
    try:
        msg = messages.decode(payload)
    except messages.MessageError:
        return None
    except Exception as e:  # noqa: BLE001 - anything else is the failure we look for
        raise AssertionError(fail(payload, "raised %r" % e))
    assert isinstance(msg, dict) and msg.get("m") in messages.kinds(), fail(payload, repr(msg))
    # Its fields, encoded again, decode to the same: decode() gave something it accepts (other
    # keys are let through as they are; MicroPython's parser even takes a number as a key).
    known = {"m": msg["m"]}
    for field in messages.fields(msg["m"]).split():
        name = field.split(":")[0]
        known[name] = msg[name]
    assert messages.decode(json.dumps(known).encode()) == known, fail(payload, "not stable")
    return msg


def _allowed(kind, value):
    """Whether ``value`` has the type a field of ``kind`` ("int", "str?"...) takes, decided
    here independently of wire/messages.py (enumerations aside)."""
    if value is None:
        return kind.endswith("?")
    base = kind.rstrip("?")
    if base == "int":
        return type(value) is int and -(2 ** 31) <= value < 2 ** 31
    if base == "str":
        return type(value) is str and 0 < len(value) <= messages.MAX_ID
    if base == "bool":
        return type(value) is bool
    if base == "hex":
        return type(value) is str and len(value) % 2 == 0 and len(value) <= 2 * messages.MAX_DATA \
            and not [c for c in value if c not in "0123456789abcdefABCDEF"]
    return None  # an object: its own fields decide


def test_every_valid_message_decodes():
    for payload in VALID:
        assert _decode(payload) is not None, payload


def test_a_field_that_may_be_null_and_is_left_out_is_there_as_null():
    msg = _decode(b'{"m": "device", "id": "x", "kind": "pendant", "model": "m"}')
    assert msg["unit"] is None and msg["firmware"] is None
    msg = _decode(b'{"m": "ble_done", "rid": 1, "status": "ok"}')
    assert (msg["conn"], msg["data"], msg["mtu"], msg["count"], msg["att"]) == (None,) * 5


def test_the_lock_messages_of_the_bridges_former_drivers_are_unknown_kinds():
    # hubd drives the locks through the proxy: an op (or any of them) is no message any more.
    for kind in ("op", "written", "result", "state", "event", "scan", "found", "scan_done",
                 "pair", "paired", "unpair", "unpaired"):
        assert kind not in messages.kinds()
        assert _decode(('{"m": "%s", "rid": 1}' % kind).encode()) is None


def test_mutated_and_random_bytes_decode_or_raise_message_error():
    fuzz.start()
    for payload in VALID:
        for m in mutants(payload, 40):
            _decode(m)
    for m in noise(200, 120):
        _decode(m)


def test_every_field_with_every_type_is_checked():
    fuzz.start()
    for payload in VALID:
        msg = json.loads(payload)
        for field in messages.fields(msg["m"]).split():
            name, kind = field.split(":")
            for value in ODD:
                obj = dict(msg)
                obj[name] = value
                data = json.dumps(obj).encode()
                got = _decode(data)
                if _allowed(kind, value) is False:
                    assert got is None, fail(data, "%s=%r was accepted" % (name, value))
                # A field left out is a field of null.
                del obj[name]
                if not kind.endswith("?"):
                    assert _decode(json.dumps(obj).encode()) is None, fail(data, "no " + name)


def test_nesting_is_bounded_before_parsing():
    fuzz.start()
    for depth in range(1, 40):
        inner = "[" * depth + "]" * depth
        data = ('{"m": "clock", "unix": 5, "x": %s}' % inner).encode()
        got = _decode(data)
        assert (got is not None) == (depth + 1 <= messages.MAX_NESTED), fail(data, repr(got))
        # Brackets inside a string are text: any number of them (escaped quotes too).
        text = ('{"m": "clock", "unix": 5, "x": "\\"%s\\\\"}' % ("[{" * depth)).encode()
        assert _decode(text) is not None, fail(text, "refused")
    for data in (b"[" * 2000, b"[" * 256 + b"]" * 256, b'{"a":' * 100 + b"1" + b"}" * 100,
                 b'{"m": "clock", "unix": 5, "x": ' + b"[" * 500 + b"]" * 500 + b"}"):
        assert _decode(data) is None, fail(data, "deep nesting accepted")


def test_size_numbers_floats_and_strings_at_their_edges():
    fuzz.start()
    pad = '{"m": "clock", "unix": 5, "x": "%s"}'
    fits = (pad % ("y" * (messages.MAX_SIZE - len(pad) + 2))).encode()
    assert len(fits) == messages.MAX_SIZE and _decode(fits) is not None
    assert _decode((pad % ("y" * (messages.MAX_SIZE - len(pad) + 3))).encode()) is None
    for text in ("1" * 600, "1" * 40, "-" + "9" * 30, "2147483648", "1.0", "1e400", "-1e400",
                 "NaN", "Infinity", "-Infinity", "0x10", "1_000", "true", '"5"', "[5]"):
        data = ('{"m": "clock", "unix": %s}' % text).encode()
        assert _decode(data) is None, fail(data, "accepted")
    for ok in ("0", "-2147483648", "2147483647"):
        assert _decode(('{"m": "clock", "unix": %s}' % ok).encode())["unix"] == int(ok)


def test_non_utf8_surrogates_and_duplicate_keys():
    fuzz.start()
    for bad in (b'{"m": "alarm_stored", "id": "a\xff"}', b'{"m": "alarm\x80_stored", "id": "a"}',
                b'{"m": "clock", "unix": 5, "\xc3": 1}', b'\xef\xbb\xbf{"m": "clock", "unix": 5}',
                b'{"m": "alarm_stored", "id": "\xed\xa0"}'):
        assert _decode(bad) is None, fail(bad, "accepted")
    # MicroPython's parser ends at a NUL byte (CPython's refuses it): nothing may raise.
    _decode(b'{"m": "clock", "unix": 5}\x00')
    # A lone surrogate escape: the bridge (MicroPython) may keep it, nothing may raise.
    _decode(b'{"m": "alarm_stored", "id": "\\ud800"}')
    _decode(b'{"m": "alarm_stored", "id": "\\udfff\\ud800"}')
    # A repeated key: the last one counts, on both ends alike.
    assert _decode(b'{"m": "clock", "unix": "x", "unix": 1}') == {"m": "clock", "unix": 1}
    assert _decode(b'{"m": "clock", "unix": 1, "unix": "x"}') is None
    assert _decode(b'{"m": "clock", "m": "wipe", "unix": 1}')["m"] == "wipe"
    # Random JSON-ish text built of the bytes that matter to a parser.
    for data in chain(noise(150, 60), mutants(b'{"m": "clock", "unix": 5}', 150, 6)):
        _decode(data)

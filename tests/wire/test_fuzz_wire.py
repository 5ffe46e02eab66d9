"""Property-based fuzzing (hypothesis) of the decoders hubd and the bridge share, in CPython.

Structure-aware: strategies build valid frames, HELLOs, messages, alarm unit frames and DC-09
answers and mutate them byte by byte, beside raw bytes. Every decoder must give a valid result
or its typed rejection (FrameError, MessageError, UnitFrameError, dc09.BAD, ConfigError) and
nothing else, whatever the bytes (docs/architecture.md, "Robustness"). The firmware side of the
same rule runs inside MicroPython: tests/firmware/mp_test_fuzz_*.py.

Deterministic for CI: derandomize=True (the examples follow from the test's code, no database),
no deadline (a loaded machine is slow, not wrong).
"""

from __future__ import annotations

import binascii
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubctl.bundle import firmware_config
from wire import alarms, alarmunit, cobs, dc09, frame, link, messages
from wire.crc import crc16
from wire.hmac_sha256 import Key

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Bytes that mean something to one of the decoders: delimiters, quotes, escapes, brackets.
SPECIAL = b'\x00\xff\x80\n\r"\\[]{}:,|*#_>+-0123456789 eE.'


# -- mutation -----------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, most: int = 4) -> bytes:
    """``valid`` with 1..``most`` changes: a byte replaced, flipped, removed, inserted or
    duplicated, a cut, a splice of random bytes, or a special byte dropped in."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, most))):
        if not data:
            data = bytearray(draw(st.binary(min_size=1, max_size=8)))
            continue
        i = draw(st.integers(0, len(data) - 1))
        how = draw(st.integers(0, 7))
        if how == 0:
            data[i] = draw(st.integers(0, 255))
        elif how == 1:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == 2:
            del data[i]
        elif how == 3:
            data.insert(i, draw(st.integers(0, 255)))
        elif how == 4:
            data[i:i] = data[i:i + draw(st.integers(1, 8))]
        elif how == 5:
            del data[i:]
        elif how == 6:
            data[i:i + draw(st.integers(0, 3))] = draw(st.binary(min_size=1, max_size=6))
        else:
            data[i] = draw(st.sampled_from(SPECIAL))
    return bytes(data)


def mutants(valid: st.SearchStrategy[bytes], most: int = 4) -> st.SearchStrategy[bytes]:
    return valid.flatmap(lambda v: mutated(v, most))


# -- frames and the link ------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)


@st.composite
def hellos(draw: st.DrawFn) -> bytes:
    return frame.encode_hello(
        draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(1, 2**32 - 1)),
        draw(u32), draw(st.integers(frame.MAX_PAYLOAD, 0xFFFF)), draw(st.integers(1, 255)),
        draw(st.sampled_from((frame.ROLE_HUB, frame.ROLE_BRIDGE))), draw(st.integers(0, 255)),
        draw(st.text(max_size=32).filter(lambda v: len(v.encode()) <= 32)))


LINK_KEY = Key(bytes(range(32)))  # the link key of the fuzzed link
HUB, BRIDGE = 0x1A2B3C4D, 0x0BADCAFE
HUB_CTX = frame.context(frame.ROLE_HUB, HUB, BRIDGE)  # what hubd's frames to that bridge are bound to
counters = st.integers(1, frame.MAX_COUNTER)


def _ctx(ftype: int, body: bytes) -> bytes:
    # A HELLO is bound to the sessions it names; every other frame to the link's.
    if ftype == frame.T_HELLO:
        hello = frame.decode_hello(body)
        return frame.context(frame.ROLE_HUB, hello["session"], hello["peer_session"])
    return HUB_CTX


def signed(ftype: int, seq: int, body: bytes, counter: int) -> bytes:
    """A frame from hubd, tagged with the link's key: what hubd, or a hubd gone wrong, could send."""
    return frame.encode(ftype, seq, body, counter, LINK_KEY, _ctx(ftype, body))


frames = st.one_of(
    st.builds(signed, st.just(frame.T_DATA), st.integers(0, 255), st.binary(max_size=frame.MAX_PAYLOAD),
              counters),
    st.builds(signed, st.sampled_from((frame.T_ACK, frame.T_HEARTBEAT)), st.integers(0, 255),
              st.just(b""), counters),
    st.builds(lambda body, n: signed(frame.T_HELLO, 0, body, n), hellos(), counters))


def _frame_or_error(block: bytes) -> tuple[int, int, int, bytes] | None:
    try:
        ftype, seq, counter, body, raw = frame.decode(block)
    except frame.FrameError:
        return None
    assert ftype in (frame.T_DATA, frame.T_ACK, frame.T_HELLO, frame.T_HEARTBEAT)
    assert 0 <= seq <= 255 and 0 <= counter <= frame.MAX_COUNTER and len(body) <= frame.MAX_PAYLOAD
    assert len(raw) == len(body) + frame.HEADER_SIZE + frame.TRAILER_SIZE
    return ftype, seq, counter, bytes(body)


@FUZZ
@given(frames)
def test_a_valid_frame_decodes_to_what_was_encoded_and_verifies(line: bytes) -> None:
    got = _frame_or_error(line[:-1])
    assert got is not None
    ftype, seq, counter, body = got
    assert signed(ftype, seq, body, counter) == line
    assert frame.authentic(frame.decode(line[:-1])[4], LINK_KEY, _ctx(ftype, body))


@FUZZ
@given(frames, st.data())
def test_a_frame_changed_anywhere_does_not_verify_even_with_a_good_crc(line: bytes, data: st.DataObject) -> None:
    # What someone on the wire without the key can do: change bytes and make the CRC right.
    raw = bytearray(cobs.decode(line[:-1]))
    ftype, body = raw[0], bytes(raw[frame.HEADER_SIZE:len(raw) - frame.TRAILER_SIZE])
    ctx = _ctx(ftype, body)
    i = data.draw(st.integers(0, len(raw) - frame.CRC_SIZE - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    raw[-2:] = crc16(raw[:-2]).to_bytes(2, "big")
    try:
        _, _, _, _, decoded = frame.decode(cobs.encode(bytes(raw)))
    except frame.FrameError:
        return  # the type byte became no type
    assert not frame.authentic(decoded, LINK_KEY, ctx)
    assert not frame.authentic(decoded, Key(bytes(32)), ctx)


@FUZZ
@given(st.one_of(mutants(frames.map(lambda f: f[:-1])), st.binary(max_size=700)))
def test_any_block_is_a_frame_or_a_frame_error(block: bytes) -> None:
    _frame_or_error(block)


@FUZZ
@given(st.one_of(hellos(), mutants(hellos()), st.binary(max_size=60)))
def test_any_hello_body_is_a_hello_or_a_frame_error(body: bytes) -> None:
    try:
        hello = frame.decode_hello(body)
    except frame.FrameError:
        return
    assert hello["session"] != 0 and hello["window"] != 0
    assert hello["max_payload"] >= frame.MAX_PAYLOAD  # a smaller one would break our send()
    assert len(hello["version"].encode()) <= frame.HELLO_VERSION_MAX


def _hub_hello(**kw: int) -> bytes:
    f = {"major": link.PROTOCOL_MAJOR, "session": HUB, "peer": BRIDGE, "max_payload": frame.MAX_PAYLOAD,
         "window": 4, "flags": 0, "counter": 1}
    f.update(kw)
    return signed(frame.T_HELLO, 0, frame.encode_hello(
        f["major"], 0, f["session"], f["peer"], f["max_payload"], f["window"], frame.ROLE_HUB,
        f["flags"], "hubd 0.1.0"), f["counter"])


hostile_hellos = st.builds(
    lambda major, session, peer, max_payload, window, flags, counter: _hub_hello(
        major=major, session=session, peer=peer, max_payload=max_payload, window=window,
        flags=flags, counter=counter),
    st.sampled_from((0, 1, 2, 3, 255)), st.sampled_from((1, HUB, HUB + 1)),
    st.sampled_from((0, BRIDGE, 7)), st.sampled_from((512, 0xFFFF)),
    st.sampled_from((1, 4, 255)), st.integers(0, 255), st.sampled_from((1, 2, 1000, frame.MAX_COUNTER)))


def _up_bridge_end() -> link.Link:
    end = link.Link(frame.ROLE_BRIDGE, "fw", 0, bytes(range(32)), session=BRIDGE)
    end.feed(_hub_hello(), 0)
    while end.poll(0):
        pass
    assert end.state == link.UP
    return end


@FUZZ
@given(st.lists(st.one_of(frames, hostile_hellos, mutants(frames), st.binary(max_size=120),
                          st.just(b"\x01" * (frame.MAX_ENCODED + 20))), max_size=30),
       st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_link_feed_never_raises_whatever_arrives(parts: list[bytes], cuts: list[int]) -> None:
    end = _up_bridge_end()
    data = b"".join(parts)
    now, i, k = 0, 0, 0
    while i < len(data):  # in pieces of any size, as a serial port reads them
        n = cuts[k % len(cuts)]
        now += 7
        end.feed(data[i:i + n], now)
        while end.poll(now):
            pass
        for kind, value in end.events():
            assert kind in (link.EV_DATA, link.EV_UP, link.EV_DOWN, link.EV_RESET,
                            link.EV_INCOMPATIBLE, link.EV_FOREIGN)
            if kind == link.EV_DATA:
                assert len(value) <= frame.MAX_PAYLOAD
        assert len(end._rxbuf) <= frame.MAX_ENCODED
        i += n
        k += 1
    try:
        end.send(b"p" * frame.MAX_PAYLOAD)  # whatever the peer offered in a HELLO
    except link.LinkFull:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=frame.MAX_PAYLOAD), min_size=1, max_size=8),
       st.lists(st.binary(max_size=60), min_size=8, max_size=8))
def test_data_between_noise_arrives_once_and_in_order(payloads: list[bytes],
                                                      noise: list[bytes]) -> None:
    end = _up_bridge_end()
    for seq, (payload, junk) in enumerate(zip(payloads, noise)):
        # Noise ends at a delimiter, as line noise does before the sender's next frame.
        end.feed(junk + b"\x00" + signed(frame.T_DATA, seq, payload, seq + 2), seq + 1)
    got = [v for kind, v in end.events() if kind == link.EV_DATA]
    assert got == payloads


# -- link messages ------------------------------------------------------------------------

ints = st.integers(-(2**31), 2**31 - 1)
texts = st.text(min_size=1, max_size=messages.MAX_ID)
ENUMS = {("device", "unit"): messages.UNITS, ("health", "reset"): messages.RESETS,
         ("ble_done", "status"): messages.BLE_STATUSES,
         ("ble_lost", "reason"): messages.BLE_LOST_REASONS,
         ("uplink_state", "state"): messages.UPLINK_STATES,
         ("uplink_state", "why"): messages.UPLINK_WHY}


def _value(kind: str, field: str, ftype: str) -> st.SearchStrategy[Any]:
    base = ftype.rstrip("?")
    if (kind, field) in ENUMS:
        strategy: st.SearchStrategy[Any] = st.sampled_from(ENUMS[kind, field])
    elif base == "int":
        strategy = ints
    elif base == "str":
        strategy = texts
    elif base == "bool":
        strategy = st.booleans()
    elif base == "hex":
        strategy = st.binary(max_size=messages.MAX_DATA).map(lambda b: b.hex())
    elif base == "counters":
        strategy = st.dictionaries(texts, ints, max_size=16)
    else:
        strategy = _object(base, base)
    return st.one_of(st.none(), strategy) if ftype.endswith("?") else strategy


def _object(kind: str, fields_of: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = [f.split(":") for f in messages.fields(fields_of).split()]
    return st.fixed_dictionaries({name: _value(kind, name, ftype) for name, ftype in fields})


KINDS = sorted(k for k in messages.kinds() if not k.startswith("."))


def test_every_kind_the_module_names_has_fields_and_a_separator_makes_no_kind() -> None:
    # _FIELDS is one "|kind=fields" string (the bridge's heap): each named kind is in it once,
    # and a kind smuggling its separators in does not find another kind's fields. The one
    # upper-case string that is no kind: the addresses' pattern.
    named = {v for k, v in vars(messages).items()
             if k.isupper() and k[0] != "_" and isinstance(v, str) and k != "ADDR_PATTERN"}
    assert named == set(KINDS)
    assert len(messages.kinds()) == len(set(messages.kinds()))
    assert messages.fields(messages.HEALTH_REQUEST) == ""
    assert messages.fields(messages.CLOCK) == "unix:int"
    for hostile in ("", "=", "|", "alarm=", "clock=unix:int|alarm", "wipe=|wiped", "ALARM", "alar"):
        assert messages.fields(hostile) is None, hostile


@st.composite
def valid_messages(draw: st.DrawFn) -> bytes:
    """A message of any kind as make() builds it, every field of its own type."""
    kind = draw(st.sampled_from(KINDS))
    obj = draw(_object(kind, kind))
    return messages.make(kind, *[obj[f.split(":")[0]] for f in messages.fields(kind).split()])


def _message_or_error(payload: bytes) -> dict[str, Any] | None:
    try:
        msg = messages.decode(payload)
    except messages.MessageError:
        return None
    assert isinstance(msg, dict) and msg["m"] in messages.kinds()
    for field in messages.fields(msg["m"]).split():  # every declared field is there
        assert field.split(":")[0] in msg
    return msg


@FUZZ
@given(valid_messages())
def test_a_valid_message_decodes_unless_it_is_over_the_size(payload: bytes) -> None:
    msg = _message_or_error(payload)
    if len(payload) <= messages.MAX_SIZE:
        assert msg == json.loads(payload)
    else:
        assert msg is None


@FUZZ
@given(st.sampled_from(KINDS), st.data())
def test_a_message_without_its_optional_fields_has_them_as_null(kind: str,
                                                                data: st.DataObject) -> None:
    obj = data.draw(_object(kind, kind))
    optional = [f.split(":")[0] for f in messages.fields(kind).split() if f.endswith("?")]
    left_out = data.draw(st.lists(st.sampled_from(optional), unique=True) if optional
                         else st.just([]))
    sent = {"m": kind, **{k: v for k, v in obj.items() if k not in left_out}}
    payload = json.dumps(sent).encode()
    if len(payload) <= messages.MAX_SIZE:
        assert _message_or_error(payload) == {"m": kind, **obj, **dict.fromkeys(left_out)}


@FUZZ
@given(st.one_of(mutants(valid_messages(), 6), st.binary(max_size=600),
                 mutants(st.just(b'{"m": "clock", "unix": 5}'), 8)))
def test_any_payload_is_a_message_or_a_message_error(payload: bytes) -> None:
    _message_or_error(payload)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=40)


@FUZZ
@given(st.sampled_from(KINDS), st.dictionaries(st.sampled_from(
    sorted({f.split(":")[0] for kind in messages.kinds() for f in messages.fields(kind).split()})),
    json_values, max_size=12))
def test_any_json_object_with_a_kind_is_a_message_or_a_message_error(
        kind: str, fields: dict[str, Any]) -> None:
    obj = {"m": kind, **fields}
    msg = _message_or_error(json.dumps(obj).encode())
    if msg is not None:  # what passes has each declared field of its declared type
        for field in messages.fields(kind).split():
            name, ftype = field.split(":")
            value = msg[name]
            if ftype.rstrip("?") == "int" and value is not None:
                assert type(value) is int and -(2**31) <= value < 2**31
            if ftype.rstrip("?") == "str" and value is not None:
                assert type(value) is str and 0 < len(value) <= messages.MAX_ID
                value.encode()  # UTF-8 text: hubd can store and publish it


@FUZZ
@given(st.integers(1, 3000), st.sampled_from((b"[", b'{"a":', b'[{"a":')))
def test_deep_nesting_is_refused_before_parsing(depth: int, opener: bytes) -> None:
    payload = b'{"m": "clock", "unix": 5, "x": ' + opener * depth
    got = _message_or_error(payload)  # CPython's parser would raise RecursionError past ~1000
    assert got is None


@FUZZ
@given(st.sampled_from(["alarm_stored", "alarm_lte", "ble_watch"]),
       st.characters(categories=["Cs"]), st.text(max_size=5), st.text(max_size=5))
def test_a_lone_surrogate_in_a_string_is_refused(kind: str, surrogate: str, before: str,
                                                 after: str) -> None:
    values = {"alarm_stored": ["x"], "alarm_lte": ["x", "ack"],
              "ble_watch": [1, "C0:FF:EE:00:00:01", True]}[kind]
    at = 1 if kind == "ble_watch" else 0  # its first string
    values[at] = before + surrogate + after  # one alone: a high and a low one would be a pair
    payload = json.dumps({"m": kind, **dict(zip(
        [f.split(":")[0] for f in messages.fields(kind).split()], values))}).encode()
    assert _message_or_error(payload) is None


# -- the alarm unit's frames --------------------------------------------------------------

unit_frames = st.one_of(
    st.builds(lambda s, e, t, c, d: alarmunit.frame(alarmunit.T_EVENT, s, e, t, c, d), u32, u32,
              u32, st.integers(1, len(alarmunit.EVENT_CODES)),
              st.integers(1, len(alarmunit.DEVICES))),
    st.builds(lambda s, t, f, b, p, r, v: alarmunit.frame(alarmunit.T_HEARTBEAT, s, t, f, b, p, r,
                                                          *v),
              u32, u32, st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
              st.integers(-128, 127), st.tuples(*[st.integers(0, 255)] * 3)),
    st.builds(lambda s, p, e: alarmunit.frame(alarmunit.T_HEARD, s, p, e), u32,
              st.sampled_from(alarmunit.PROMPTS), u32),
    st.builds(alarmunit.frame, st.sampled_from((alarmunit.T_ACK, alarmunit.T_ALARM_RECEIVED,
                                                alarmunit.T_HELP_ON_THE_WAY)), u32))


def _unit_frame_or_error(block: bytes) -> tuple[Any, ...] | None:
    try:
        fr = alarmunit.decode(block)
    except alarmunit.UnitFrameError:
        return None
    if fr[0] == alarmunit.T_EVENT:
        assert fr[4] in alarms.EVENTS and fr[5] in alarmunit.DEVICES
    elif fr[0] == alarmunit.T_HEARTBEAT:
        assert isinstance(fr[3], bool) and fr[6] != alarmunit.NO_RSSI
    elif fr[0] == alarmunit.T_HEARD:
        assert fr[2] in alarmunit.PROMPTS
    else:
        assert fr[0] in (alarmunit.T_ACK, alarmunit.T_ALARM_RECEIVED,
                         alarmunit.T_HELP_ON_THE_WAY) and len(fr) == 2
    return fr


@FUZZ
@given(st.one_of(unit_frames.map(lambda f: f[:-1]), mutants(unit_frames.map(lambda f: f[:-1])),
                 st.binary(max_size=80)))
def test_any_unit_block_is_a_frame_or_a_unit_frame_error(block: bytes) -> None:
    _unit_frame_or_error(block)


@FUZZ
@given(st.lists(st.tuples(unit_frames, st.binary(max_size=40)), min_size=1, max_size=8),
       st.integers(1, 64))
def test_the_unit_decoder_finds_every_frame_after_garbage(
        pairs: list[tuple[bytes, bytes]], piece: int) -> None:
    d = alarmunit.Decoder()
    stream = b"".join(junk + b"\x00" + fr for fr, junk in pairs)
    got: list[tuple[Any, ...]] = []
    for i in range(0, len(stream), piece):
        got += d.feed(stream[i:i + piece])
    expected = [alarmunit.decode(fr[:-1]) for fr, _ in pairs]
    it = iter(got)
    assert all(any(fr == g for g in it) for fr in expected), (expected, got)
    assert len(d._buf) == alarmunit.MAX_ENCODED


# -- DC-09 answers ------------------------------------------------------------------------

KEY = b"0123456789ABCDEF"
accounts = st.text("0123456789ABCDEF", min_size=3, max_size=16)
seqs = st.integers(0, 9999)


def _framed(body: str) -> bytes:
    return f"\n{dc09.crc16(body.encode()):04X}{len(body):04X}{body}\r".encode()


def _sealed_ack(seq: int, account: str, unix: int) -> bytes:
    clear = "]" + dc09.timestamp(unix)
    clear = "0" * (-len(clear) % 16) + clear
    hexed = binascii.hexlify(dc09._aes_cbc(KEY, clear.encode(), True)).decode().upper()
    return _framed(f'"*ACK"{seq:04d}L0#{account}[{hexed}')


def _answer(data: bytes, seq: int, account: str, key: bytes | None = None) -> str:
    kind, their = dc09.parse_answer(data, seq, account, key)
    assert kind in (dc09.ACK, dc09.NAK, dc09.DUH, dc09.BAD)
    assert their is None or (kind == dc09.NAK and 0 <= their < 7258118400)
    assert dc09.answer_complete(data) in (True, False)
    return kind


@FUZZ
@given(seqs, accounts, st.sampled_from(("ACK", "DUH")), st.integers(0, 9999))
def test_an_ack_or_duh_counts_only_for_its_own_sequence(seq: int, account: str, word: str,
                                                        other: int) -> None:
    data = _framed(f'"{word}"{seq:04d}L0#{account}[]')
    assert _answer(data, seq, account) == word.lower()
    assert _answer(data, other, account) == (word.lower() if other == seq else dc09.BAD)


@FUZZ
@given(st.integers(0, 7258118399))
def test_a_nak_carries_the_receivers_clock(unix: int) -> None:
    data = _framed('"NAK"0000R0L0A0[]' + dc09.timestamp(unix))
    assert dc09.parse_answer(data, 1, "12AB") == (dc09.NAK, unix)


@FUZZ
@given(seqs, accounts, st.integers(0, 4102444800), st.data())
def test_one_changed_byte_inside_the_crc_is_never_trusted(seq: int, account: str, unix: int,
                                                          data: st.DataObject) -> None:
    answer = data.draw(st.sampled_from((_framed(f'"ACK"{seq:04d}L0#{account}[]'),
                                        _sealed_ack(seq, account, unix))))
    key = KEY if answer[10:11] == b"*" else None
    assert _answer(answer, seq, account, key) == dc09.ACK
    i = data.draw(st.integers(9, len(answer) - 2))  # the CRC covers these
    b = data.draw(st.integers(0, 255).filter(lambda v: v != answer[i]))
    assert _answer(answer[:i] + bytes([b]) + answer[i + 1:], seq, account, key) == dc09.BAD


@FUZZ
@given(st.one_of(st.binary(max_size=700),
                 mutants(st.builds(_sealed_ack, seqs, accounts, st.integers(0, 4102444800)), 6),
                 mutants(st.builds(lambda s, a: _framed(f'"ACK"{s:04d}L0#{a}[]'), seqs,
                                   accounts), 6),
                 mutants(st.just(_framed('"NAK"0000R0L0A0[]_22:13:20,11-14-2023')), 6)))
def test_any_answer_is_classified_without_raising(data: bytes) -> None:
    _answer(data, 3, "12AB")
    _answer(data, 3, "12AB", KEY)


# -- bridge.json, as hubctl checks it in CPython ------------------------------------------


CONFIG = firmware_config("fuzzed_bridge_config")
# "policy" and "locks": what an older provisioning wrote, ignored whatever they hold.
SECTIONS = ("link", "log", "policy", "locks", "alarm_unit", "lte", "health", "supply", "proxy")


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS), json_values, max_size=6))
def test_any_json_bridge_config_is_a_configuration_or_one_config_error(obj: dict[str, Any]) -> None:
    try:
        CONFIG.parse(obj)
    except CONFIG.ConfigError as e:
        assert "\n" not in str(e) and 0 < len(str(e)) <= 300


@pytest.mark.parametrize("text", [b"[" * 3000, b'{"locks": ' + b"[" * 2000, b"\xff\xfe{}"])
def test_a_bridge_config_file_that_would_break_the_parser_is_one_config_error(
        tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "bridge.json"
    path.write_bytes(text)
    with pytest.raises(CONFIG.ConfigError):
        CONFIG.load(str(path))

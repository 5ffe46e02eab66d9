"""wire.dc09 inside MicroPython (run by tests/firmware/runner.py); interop with pysiaalarm and
the CPython build of the same module is in tests/wire/test_dc09.py."""

import binascii

from wire import dc09

KEY = b"0123456789ABCDEF"


def _framed(body):
    return ("\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body)).encode()


def test_crc_check_value():
    assert dc09.crc16(b"123456789") == 0xBB3D


def test_a_plain_alarm_frame_matches_the_reference_bytes():
    f = dc09.alarm_frame(7, "12AB", "button", "unit1-42", 1700000000, receiver="1", line="2")
    assert f == _framed('"ADM-CID"0007R1L2#12AB[#12AB|1101 01 001][Iunit1-42]'
                        '_22:13:20,11-14-2023')


def test_restore_events_use_qualifier_3():
    f = dc09.alarm_frame(1, "12AB", "mains_restored", "u-2", 1700000000)
    assert b"|3301 01 001]" in f


def test_encrypted_frame_decrypts_to_pad_data_and_timestamp():
    f = dc09.alarm_frame(2, "12AB", "smoke", "u-3", 1700000000, key=KEY, pad="PAD")
    body = f[9:-1].decode()
    assert body.startswith('"*ADM-CID"0002L0#12AB[')
    enc = binascii.unhexlify(body[body.index("[") + 1:])
    clear = dc09._aes_cbc(KEY, enc, False).decode()
    assert clear == "PAD|#12AB|1111 01 001][Iu-3]_22:13:20,11-14-2023"


def test_random_pad_fills_whole_blocks():
    for n in range(1, 20):
        f = dc09.alarm_frame(1, "12AB", "fall", "u" * n, 1700000000, key=KEY)
        hexpart = f[f.index(b"[") + 1:-1]
        assert len(hexpart) % 32 == 0


def test_answers_are_classified():
    assert dc09.parse_answer(_framed('"ACK"0003L0#12AB[]'), 3, "12AB") == (dc09.ACK, None)
    assert dc09.parse_answer(_framed('"DUH"0003L0#12AB[]'), 3, "12AB") == (dc09.DUH, None)
    nak = _framed('"NAK"0000R0L0A0[]_22:13:20,11-14-2023')
    assert dc09.parse_answer(nak, 3, "12AB") == (dc09.NAK, 1700000000)
    assert dc09.parse_answer(b'"NAK"', 3, "12AB") == (dc09.NAK, None)


def test_hostile_answers_never_raise():
    for junk in (b"", b"\n\r", b"\xff" * 40, b"\n" + b"9" * 600 + b"\r", b'\nFFFF0005"ACK"\r',
                 _framed('"ACK"0003L0#12AB[]')[:-4], _framed('"ACK"0003L0#12AB[zz]')):
        kind, _ = dc09.parse_answer(junk, 3, "12AB", KEY)
        assert kind == dc09.BAD, junk


def test_bad_ids_are_refused():
    for bad in ("", "a]", "a|b", "x" * 65):
        try:
            dc09.alarm_frame(1, "12AB", "button", bad, 1700000000)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_every_event_keeps_its_contact_id_code_and_priority_on_the_bridge():
    # tests/wire/test_dc09.py holds CPython's end to the same table.
    from wire import alarms

    expected = {
        alarms.BUTTON: (1, 101, 1), alarms.PULL_CORD: (1, 101, 1), alarms.FALL: (1, 100, 1),
        alarms.SMOKE: (1, 111, 1), alarms.MAINS_LOST: (1, 301, 2),
        alarms.MAINS_RESTORED: (3, 301, 3), alarms.LOW_BATTERY: (1, 302, 2),
        alarms.TAMPER: (1, 137, 2), alarms.TEST: (1, 601, 3),
        alarms.UNIT_LINK_LOST: (1, 330, 2), alarms.UNIT_LINK_RESTORED: (3, 330, 3),
        alarms.HUB_LINK_LOST: (1, 350, 2), alarms.HUB_LINK_RESTORED: (3, 350, 3),
    }
    assert len(expected) == len(alarms.EVENTS + alarms.SUPERVISION)
    for event, (q, code, priority) in expected.items():
        assert dc09.cid(event) + (alarms.priority(event),) == (q, code, priority), event
    for unknown in ("not-yet-known", "", None):
        assert dc09.cid(unknown) + (alarms.priority(unknown),) == (1, 140, 1), unknown

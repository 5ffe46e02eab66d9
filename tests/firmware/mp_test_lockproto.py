"""The reference lock protocol codec and HMAC, inside MicroPython (run by tests/firmware/runner.py)."""

import binascii

from wire import lockproto as lp
from wire import lockside
from wire.hmac_sha256 import compare_digest, hmac_sha256

SECRET = bytes(range(32))
ADDR = binascii.unhexlify("aabbccddee01")
NONCE = bytes(range(100, 116))
TAG = lp.command_tag("cmd-1")


def _raises(fn, *args):
    try:
        fn(*args)
    except lp.ProtocolError:
        return True
    return False


def test_hmac_matches_rfc4231_vectors():
    vectors = (
        (b"\x0b" * 20, b"Hi There",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    )
    for key, msg, expected in vectors:
        assert binascii.hexlify(hmac_sha256(key, msg)).decode() == expected


def test_compare_digest():
    assert compare_digest(b"abc", b"abc")
    assert not compare_digest(b"abc", b"abd")
    assert not compare_digest(b"ab", b"abc")


def test_command_round_trip_from_a_memoryview():
    pdu = lp.encode_command(SECRET, ADDR, NONCE, lp.action_code("unlatch"), TAG)
    action, tag, mac = lockside.decode_command(memoryview(pdu))
    assert lp.action_name(action) == "unlatch" and tag == TAG
    assert lockside.verify_command(SECRET, ADDR, NONCE, action, tag, mac)
    assert not lockside.verify_command(SECRET, ADDR, bytes(16), action, tag, mac)


def test_result_and_status_round_trip():
    pdu = lockside.encode_result(SECRET, ADDR, NONCE, TAG, lp.STATUS_BUSY, lockside.state_code("moving"), 42)
    status, state, battery, mac = lp.decode_result(memoryview(pdu))
    assert (lp.status_name(status), lp.state_name(state), battery) == ("busy", "moving", 42)
    assert lp.verify_result(SECRET, ADDR, NONCE, TAG, status, state, battery, mac)
    pdu = lockside.encode_status(SECRET, ADDR, 0x01020304, 1, 99, lockside.source_code("auto"))
    counter, state, battery, source, mac = lp.decode_status(memoryview(pdu))
    assert counter == 0x01020304 and lp.source_name(source) == "auto"
    assert lp.verify_status(SECRET, ADDR, counter, state, battery, source, mac)


def test_every_truncation_is_a_protocol_error():
    pdus = (
        (lp.decode_challenge, lockside.encode_challenge(NONCE)),
        (lockside.decode_command, lp.encode_command(SECRET, ADDR, NONCE, 1, TAG)),
        (lp.decode_result, lockside.encode_result(SECRET, ADDR, NONCE, TAG, 0, 1, 50)),
        (lp.decode_status, lockside.encode_status(SECRET, ADDR, 1, 1, 50, 0)),
    )
    for decode, pdu in pdus:
        for n in range(len(pdu)):
            assert _raises(decode, pdu[:n])
        assert _raises(decode, pdu + b"\x00")
        assert _raises(decode, bytes((pdu[0] ^ 0x40,)) + pdu[1:])


def test_out_of_range_fields_are_protocol_errors():
    assert _raises(lockside.decode_command, bytes((lp.OP_COMMAND, 9)) + bytes(40))
    assert _raises(lp.decode_result, bytes((lp.OP_RESULT, 200, 1, 50)) + bytes(32))
    assert _raises(lp.decode_result, bytes((lp.OP_RESULT, 0, 1, 101)) + bytes(32))
    assert _raises(lockside.decode_challenge_request, bytes((lp.OP_CHALLENGE_REQUEST, 2)))
    assert _raises(lp.action_code, "open_sesame")


def test_advert_round_trip_and_hostile_adverts():
    adv = lockside.encode_advert("key_box", 7, 0x10203)
    assert len(adv) <= lp.ADV_MAX
    assert lp.decode_advert(memoryview(adv)) == ("key_box", 7, 0x0203, False)
    adv = lockside.encode_advert("key_box", 7, 3, True)
    assert lp.decode_advert(memoryview(adv)) == ("key_box", 7, 3, True)
    assert _raises(lp.decode_advert, b"\x05\xff\xff\xff")
    assert _raises(lp.decode_advert, b"")
    assert _raises(lp.decode_name, b"\x03\x09\xff\xfe")


def test_event_and_report_pdus_round_trip_in_micropython():
    pdu = lockside.encode_event(SECRET, ADDR, 6, lockside.event_code("key_taken"), lockside.source_code("manual"),
                          lockside.state_code("unlocked"), 87)
    counter, event, source, state, battery, mac = lp.decode_event(pdu)
    assert (counter, lp.event_name(event), battery) == (6, "key_taken", 87)
    assert lp.verify_event(SECRET, ADDR, counter, event, source, state, battery, mac)
    assert binascii.hexlify(pdu).decode() == (
        "840000000602010257"
        "42cb2fefea854cb6dbaec3626743f6debd6ff5ff30aa990eef23a21dd0c86b58")
    assert lockside.decode_read_reports(lp.encode_read_reports(5)) == 5
    counter, mac = lp.decode_reports_end(lockside.encode_reports_end(SECRET, ADDR, NONCE, 6))
    assert lp.verify_reports_end(SECRET, ADDR, NONCE, counter, mac)
    assert not lp.verify_reports_end(SECRET, ADDR, bytes(16), counter, mac)


def test_hostile_report_pdus_are_protocol_errors():
    good = lockside.encode_event(SECRET, ADDR, 1, 0, 1, 1, 50)
    for n in range(len(good)):
        assert _raises(lp.decode_event, good[:n])
    assert _raises(lp.decode_event, good[:5] + b"\x09" + good[6:])
    assert _raises(lp.decode_reports_end, b"\x85\x00")
    assert _raises(lockside.decode_read_reports, b"\x03\x00\x00\x00")


def test_pair_and_unpair_in_micropython_match_the_documented_example():
    from wire import lockpair

    setup = bytes(range(32, 64))
    new = bytes(range(64, 96))
    nonce = binascii.unhexlify("8f1e6a0c3b2d4e5f60718293a4b5c6d7")
    pdu = lockpair.encode_pair(setup, new, ADDR, nonce)
    assert binascii.hexlify(pdu).decode() == (
        "04"
        "5aa819067a6533d2a03b0d56a54686a630060ddfb4d680130fdd3a3e856ab1be"
        "c579f1eadb6974799ca2ffbab624fa0f50ed0ba0e3704b37189cff695a5690e6")
    assert lockpair.open_pair(setup, ADDR, nonce, memoryview(pdu)) == new
    assert lockpair.open_pair(bytes(32), ADDR, nonce, pdu) is None
    pdu = lockpair.encode_unpair(new, ADDR, nonce)
    assert lockpair.verify_unpair(new, ADDR, nonce, memoryview(pdu))
    assert not lockpair.verify_unpair(setup, ADDR, nonce, pdu)
    assert _raises(lockpair.open_pair, setup, ADDR, nonce, pdu)
    assert _raises(lockpair.verify_unpair, new, ADDR, nonce, pdu[:-1])
    assert _raises(lockpair.encode_pair, setup[:31], new, ADDR, nonce)

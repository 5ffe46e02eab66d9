"""The reference lock protocol codec (wire/lockproto.py) and the simulated lock's nonce rules."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os

import pytest

from simulator.locks import InsideTurnerLock
from simulator.radio import Radio
from simulator.shims import airwire
from wire import lockpair
from wire import lockproto as lp
from wire import lockside
from wire.hmac_sha256 import HMAC, compare_digest, hmac_sha256

SECRET = bytes(range(32))
ADDR = bytes.fromhex("AABBCCDDEE01")
NONCE = bytes(range(100, 116))
TAG = lp.command_tag("cmd-1")


# --- HMAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_matches_cpython_hmac_module(key_len):
    key = os.urandom(key_len)
    msg = os.urandom(300)
    assert hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
    assert HMAC(key).update(msg[:7]).update(msg[7:]).digest() == hmac_sha256(key, msg)


def test_compare_digest_tells_equal_from_different():
    assert compare_digest(b"abc", b"abc")
    assert not compare_digest(b"abc", b"abd")
    assert not compare_digest(b"abc", b"abcd")


# --- round trips ------------------------------------------------------------------------------


def test_challenge_round_trip():
    lockside.decode_challenge_request(lp.encode_challenge_request())
    assert lp.decode_challenge(lockside.encode_challenge(NONCE)) == NONCE


def test_command_round_trip_and_mac_binds_every_field():
    pdu = lp.encode_command(SECRET, ADDR, NONCE, lp.action_code("unlock"), TAG)
    assert len(pdu) == lp.COMMAND_LEN == 42
    action, tag, mac = lockside.decode_command(pdu)
    assert (lp.action_name(action), tag) == ("unlock", TAG)
    assert lockside.verify_command(SECRET, ADDR, NONCE, action, tag, mac)
    other_nonce = bytes(16)
    assert not lockside.verify_command(SECRET, ADDR, other_nonce, action, tag, mac)
    assert not lockside.verify_command(SECRET, bytes(6), NONCE, action, tag, mac)
    assert not lockside.verify_command(SECRET, ADDR, NONCE, lp.action_code("unlatch"), tag, mac)
    assert not lockside.verify_command(SECRET, ADDR, NONCE, action, bytes(8), mac)
    assert not lockside.verify_command(bytes(32), ADDR, NONCE, action, tag, mac)


def test_command_mac_is_hmac_over_documented_input():
    expected = hmac.new(
        SECRET, b"homecare-lock/v1/command" + ADDR + NONCE + b"\x01" + TAG, hashlib.sha256
    ).digest()
    assert lp.command_mac(SECRET, ADDR, NONCE, 1, TAG) == expected


def test_result_round_trip():
    pdu = lockside.encode_result(SECRET, ADDR, NONCE, TAG, lp.STATUS_OK, lockside.state_code("unlocked"), 87)
    assert len(pdu) == lp.RESULT_LEN
    status, state, battery, mac = lp.decode_result(pdu)
    assert (status, lp.state_name(state), battery) == (0, "unlocked", 87)
    assert lp.verify_result(SECRET, ADDR, NONCE, TAG, status, state, battery, mac)
    assert not lp.verify_result(SECRET, ADDR, NONCE, TAG, status, lockside.state_code("locked"), 87, mac)


def test_status_round_trip():
    pdu = lockside.encode_status(SECRET, ADDR, 7, lockside.state_code("locked"), 55, lockside.source_code("manual"))
    counter, state, battery, source, mac = lp.decode_status(pdu)
    assert (counter, lp.state_name(state), battery, lp.source_name(source)) == (
        7, "locked", 55, "manual")
    assert lp.verify_status(SECRET, ADDR, counter, state, battery, source, mac)
    assert not lp.verify_status(SECRET, ADDR, counter + 1, state, battery, source, mac)


def test_event_round_trip_and_mac_binds_every_field():
    fields = (9, lockside.event_code("key_taken"), lockside.source_code("manual"), lockside.state_code("unlocked"),
              61)
    pdu = lockside.encode_event(SECRET, ADDR, *fields)
    assert len(pdu) == lp.EVENT_LEN == 41
    counter, event, source, state, battery, mac = lp.decode_event(pdu)
    assert (counter, lp.event_name(event), lp.source_name(source), lp.state_name(state),
            battery) == (9, "key_taken", "manual", "unlocked", 61)
    assert lp.verify_event(SECRET, ADDR, *fields, mac)
    for i in range(len(fields)):
        changed = list(fields)
        changed[i] += 1
        assert not lp.verify_event(SECRET, ADDR, *changed, mac)
    assert not lp.verify_event(bytes(32), ADDR, *fields, mac)


def test_event_mac_is_hmac_over_documented_input():
    expected = hmac.new(SECRET, b"homecare-lock/v1/event" + ADDR + bytes.fromhex("0000000902010237"),
                        hashlib.sha256).digest()
    assert lp.event_mac(SECRET, ADDR, 9, 2, 1, 2, 0x37) == expected


def test_event_names_are_the_lock_kinds_contract():
    from wire import lockkinds

    assert set(lp.EVENTS) == set(lockkinds.EVENTS)
    assert set(lp.KINDS[1:]) == set(lockkinds.KINDS)
    assert set(lp.STATES) <= set(lockkinds.STATES)
    assert set(lp.SOURCES) - {"motor"} <= set(lockkinds.SOURCES)


def test_read_reports_and_reports_end_round_trip():
    assert lockside.decode_read_reports(lp.encode_read_reports(41)) == 41
    assert lockside.decode_read_reports(lp.encode_read_reports(lp.COUNTER_NONE)) == 0xFFFFFFFF
    pdu = lockside.encode_reports_end(SECRET, ADDR, NONCE, 42)
    assert len(pdu) == lp.REPORTS_END_LEN == 37
    counter, mac = lp.decode_reports_end(pdu)
    assert counter == 42
    assert lp.verify_reports_end(SECRET, ADDR, NONCE, 42, mac)
    assert not lp.verify_reports_end(SECRET, ADDR, bytes(16), 42, mac)  # another link's nonce
    assert not lp.verify_reports_end(SECRET, ADDR, NONCE, 43, mac)


def test_advert_fits_legacy_advertising_and_round_trips():
    adv = lockside.encode_advert("inside_turner", 64, 0x1234)
    assert len(adv) <= lp.ADV_MAX
    assert lp.decode_advert(adv) == ("inside_turner", 64, 0x1234, False)
    assert lp.decode_name(lockside.encode_scan_response("Front door")) == "Front door"


@pytest.mark.parametrize("kind", lp.KINDS)
def test_pairing_flag_is_bit_7_of_the_kind_byte_and_keeps_the_advert_length(kind):
    plain = lockside.encode_advert(kind, 50, 7)
    pairing = lockside.encode_advert(kind, 50, 7, pairing=True)
    assert len(pairing) == len(plain)
    diff = [i for i in range(len(plain)) if plain[i] != pairing[i]]
    assert len(diff) == 1 and pairing[diff[0]] == plain[diff[0]] | 0x80
    assert lp.decode_advert(pairing) == (kind, 50, 7, True)
    assert lp.decode_advert(plain) == (kind, 50, 7, False)


# --- PAIR / UNPAIR ----------------------------------------------------------------------------

SETUP_KEY = bytes(range(32, 64))
NEW_SECRET = bytes(range(64, 96))


def test_pair_seals_the_secret_with_the_documented_pad_and_mac():
    pad = hmac.new(SETUP_KEY, b"homecare-lock/v1/pair-pad" + ADDR + NONCE, hashlib.sha256).digest()
    assert lockpair.pair_pad(SETUP_KEY, ADDR, NONCE) == pad
    sealed = bytes(a ^ b for a, b in zip(NEW_SECRET, pad))
    mac = hmac.new(SETUP_KEY, b"homecare-lock/v1/pair" + ADDR + NONCE + sealed,
                   hashlib.sha256).digest()
    pdu = lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, NONCE)
    assert pdu == b"\x04" + sealed + mac
    assert len(pdu) == lockpair.PAIR_LEN == 65
    assert NEW_SECRET not in pdu


def test_pair_round_trip_opens_only_with_the_setup_key_nonce_and_address():
    pdu = lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, NONCE)
    assert lockpair.open_pair(SETUP_KEY, ADDR, NONCE, memoryview(pdu)) == NEW_SECRET
    assert lockpair.open_pair(bytes(32), ADDR, NONCE, pdu) is None
    assert lockpair.open_pair(SETUP_KEY, ADDR, bytes(16), pdu) is None
    assert lockpair.open_pair(SETUP_KEY, bytes.fromhex("AABBCCDDEE02"), NONCE, pdu) is None
    for i in (1, 32, 33, 64):  # a flipped bit in the sealed secret or in the MAC
        tampered = bytearray(pdu)
        tampered[i] ^= 1
        assert lockpair.open_pair(SETUP_KEY, ADDR, NONCE, bytes(tampered)) is None


def test_unpair_mac_is_hmac_over_documented_input_and_round_trips():
    mac = hmac.new(SECRET, b"homecare-lock/v1/unpair" + ADDR + NONCE, hashlib.sha256).digest()
    pdu = lockpair.encode_unpair(SECRET, ADDR, NONCE)
    assert pdu == b"\x05" + mac
    assert len(pdu) == lockpair.UNPAIR_LEN == 33
    assert lockpair.verify_unpair(SECRET, ADDR, NONCE, memoryview(pdu))
    assert not lockpair.verify_unpair(bytes(32), ADDR, NONCE, pdu)
    assert not lockpair.verify_unpair(SECRET, ADDR, bytes(16), pdu)
    assert not lockpair.verify_unpair(SECRET, bytes(6), NONCE, pdu)


def test_pair_and_unpair_results_use_their_own_tags():
    assert lockpair.PAIR_TAG == bytes.fromhex("0000000000000004")
    assert lockpair.UNPAIR_TAG == bytes.fromhex("0000000000000005")
    assert lp.status_name(lockpair.STATUS_NOT_PAIRING) == "not_pairing" == lp.status_name(9)
    pdu = lockside.encode_result(NEW_SECRET, ADDR, NONCE, lockpair.PAIR_TAG, 0, 1, 80)
    status, state, battery, mac = lp.decode_result(pdu)
    assert lp.verify_result(NEW_SECRET, ADDR, NONCE, lockpair.PAIR_TAG, status, state, battery, mac)
    assert not lp.verify_result(NEW_SECRET, ADDR, NONCE, lockpair.UNPAIR_TAG, status, state, battery,
                                mac)
    assert not lp.verify_result(NEW_SECRET, ADDR, NONCE, bytes(8), status, state, battery, mac)


def test_a_lock_without_a_secret_sends_a_zero_mac():
    pdu = lockpair.result_without_secret(lp.STATUS_AUTH_FAILED, 1, 50)
    assert pdu == bytes([lp.OP_RESULT, lp.STATUS_AUTH_FAILED, 1, 50]) + bytes(32)
    assert lp.decode_result(pdu)[0] == lp.STATUS_AUTH_FAILED


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (lockpair.encode_pair, (bytes(31), NEW_SECRET, ADDR, NONCE)),  # short setup key
        (lockpair.encode_pair, (SETUP_KEY, bytes(33), ADDR, NONCE)),  # long secret
        (lockpair.encode_pair, (SETUP_KEY, NEW_SECRET, bytes(5), NONCE)),
        (lockpair.encode_pair, (SETUP_KEY, NEW_SECRET, ADDR, bytes(15))),
        (lockpair.encode_unpair, (SECRET, ADDR, bytes(17))),
    ],
)
def test_pairing_encoders_refuse_wrong_lengths(fn, args):
    with pytest.raises(lp.ProtocolError):
        fn(*args)


def test_command_tag_is_stable_and_distinct():
    assert lp.command_tag("a") == lp.command_tag(b"a")
    assert lp.command_tag("a") != lp.command_tag("b")
    assert len(lp.command_tag("a")) == lp.TAG_LEN


# --- hostile input ----------------------------------------------------------------------------

GOOD = {
    "challenge": (lp.decode_challenge, lockside.encode_challenge(NONCE)),
    "command": (lockside.decode_command, lp.encode_command(SECRET, ADDR, NONCE, 1, TAG)),
    "result": (lp.decode_result, lockside.encode_result(SECRET, ADDR, NONCE, TAG, 0, 1, 50)),
    "status": (lp.decode_status, lockside.encode_status(SECRET, ADDR, 1, 1, 50, 0)),
    "event": (lp.decode_event, lockside.encode_event(SECRET, ADDR, 1, 0, 1, 1, 50)),
    "read_reports": (lockside.decode_read_reports, lp.encode_read_reports(3)),
    "reports_end": (lp.decode_reports_end, lockside.encode_reports_end(SECRET, ADDR, NONCE, 3)),
    "pair": (lambda pdu: lockpair.open_pair(SECRET, ADDR, NONCE, pdu),
             lockpair.encode_pair(SECRET, SECRET, ADDR, NONCE)),
    "unpair": (lambda pdu: lockpair.verify_unpair(SECRET, ADDR, NONCE, pdu),
               lockpair.encode_unpair(SECRET, ADDR, NONCE)),
}


@pytest.mark.parametrize("kind", GOOD)
def test_truncated_or_padded_pdus_are_rejected(kind):
    decode, pdu = GOOD[kind]
    for n in range(len(pdu)):
        with pytest.raises(lp.ProtocolError):
            decode(pdu[:n])
    with pytest.raises(lp.ProtocolError):
        decode(pdu + b"\x00")


@pytest.mark.parametrize("kind", GOOD)
def test_wrong_opcode_is_rejected(kind):
    decode, pdu = GOOD[kind]
    with pytest.raises(lp.ProtocolError):
        decode(bytes([pdu[0] ^ 0x40]) + pdu[1:])


@pytest.mark.parametrize(
    ("decode", "pdu"),
    [
        (lockside.decode_command, bytes([lp.OP_COMMAND, 9]) + bytes(40)),  # unknown action
        (lp.decode_result, bytes([lp.OP_RESULT, 200, 1, 50]) + bytes(32)),  # unknown status
        (lp.decode_result, bytes([lp.OP_RESULT, 10, 1, 50]) + bytes(32)),  # first unknown status
        (lp.decode_result, bytes([lp.OP_RESULT, 0, 77, 50]) + bytes(32)),  # unknown state
        (lp.decode_result, bytes([lp.OP_RESULT, 0, 1, 101]) + bytes(32)),  # battery > 100
        (lp.decode_status, bytes([lp.OP_STATUS, 0, 0, 0, 1, 1, 50, 9]) + bytes(32)),  # source
        (lockside.decode_challenge_request, bytes([lp.OP_CHALLENGE_REQUEST, 2])),  # version
        (lp.decode_event, bytes([lp.OP_EVENT, 0, 0, 0, 1, 6, 1, 1, 50]) + bytes(32)),  # event
        (lp.decode_event, bytes([lp.OP_EVENT, 0, 0, 0, 1, 0, 4, 1, 50]) + bytes(32)),  # source
        (lp.decode_event, bytes([lp.OP_EVENT, 0, 0, 0, 1, 0, 1, 6, 50]) + bytes(32)),  # state
        (lp.decode_event, bytes([lp.OP_EVENT, 0, 0, 0, 1, 0, 1, 1, 101]) + bytes(32)),
    ],
)
def test_out_of_range_fields_are_rejected(decode, pdu):
    with pytest.raises(lp.ProtocolError):
        decode(pdu)


@pytest.mark.parametrize(
    "adv",
    [
        b"\x05\xff\xff\xff",  # AD length overruns the advert
        b"",  # no manufacturer data at all
        b"\x07\xff\xff\xff\x01\x01\x32\x00",  # manufacturer data one byte short
        b"\x08\xff\xff\xff\x02\x01\x32\x00\x00",  # unknown protocol version
        b"\x08\xff\xff\xff\x01\x09\x32\x00\x00",  # unknown lock kind
        b"\x08\xff\xff\xff\x01\x89\x32\x00\x00",  # unknown lock kind, pairing flag set
        b"\x08\xff\xff\xff\x01\x41\x32\x00\x00",  # a kind byte bit that means nothing
        b"\x08\xff\xff\xff\x01\x01\xc8\x00\x00",  # battery 200 %
    ],
)
def test_hostile_adverts_are_rejected(adv):
    with pytest.raises(lp.ProtocolError):
        lp.decode_advert(adv)


@pytest.mark.parametrize("resp", [b"\x03\x09\xff\xfe", b"\x05\x09ab"])
def test_hostile_names_are_rejected(resp):
    with pytest.raises(lp.ProtocolError):
        lp.decode_name(resp)


def test_opcode_of_empty_pdu_is_a_protocol_error():
    with pytest.raises(lp.ProtocolError):
        lp.opcode(b"")


# --- the simulated lock refuses replays and stale nonces ---------------------------------------


class AirCentral:
    """A bare central on the radio socket, speaking airwire, to drive a lock PDU by PDU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: str) -> AirCentral:
        return cls(*await asyncio.open_unix_connection(path))

    def send(self, kind: int, *args) -> None:
        self.writer.write(airwire.encode(kind, args))

    async def expect(self, kind: int) -> list:
        """Next event of ``kind`` (others are skipped); fail after 5 s."""
        async with asyncio.timeout(5):
            while True:
                header = await self.reader.readexactly(2)
                got, args = airwire.decode(await self.reader.readexactly(
                    airwire.body_length(header)))
                if got == kind:
                    return args

    async def connect(self, lock: InsideTurnerLock) -> int:
        self.send(airwire.CONNECT, 0, lock.address, 2000)
        conn = (await self.expect(7))[0]
        self.send(airwire.EXCHANGE_MTU, conn, lp.PREFERRED_MTU)
        await self.expect(21)
        self.send(airwire.WRITE, conn, lock.events.cccd_handle, 1, b"\x01\x00")
        await self.expect(17)
        return conn

    async def request(self, lock: InsideTurnerLock, conn: int, pdu: bytes) -> bytes:
        """Write a PDU to the control point and return the next notification."""
        self.send(airwire.WRITE, conn, lock.control.value_handle, 1, pdu)
        return (await self.expect(18))[2]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def air(tmp_path):
    radio = Radio(str(tmp_path / "radio.sock"))
    await radio.start()
    now = [1000.0]
    lock = InsideTurnerLock("front-door", ADDR, SECRET, travel_time_s=0, clock=lambda: now[0])
    radio.add(lock)
    central = await AirCentral.open(radio.socket_path)
    yield central, lock, now
    central.close()
    await radio.stop()


async def _challenge(central, lock, conn):
    return lp.decode_challenge(await central.request(lock, conn, lp.encode_challenge_request()))


def _status(pdu):
    return lp.status_name(lp.decode_result(pdu)[0])


async def test_replayed_command_is_refused_and_does_not_move(air):
    central, lock, _ = air
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    command = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, command)) == "ok"
    assert lock.motor_moves == 1

    # Same bytes again on the same link: the nonce is spent.
    assert _status(await central.request(lock, conn, command)) == "challenge_expired"
    # Same bytes after a fresh challenge (a recording replayed later): MAC is over the old nonce.
    await _challenge(central, lock, conn)
    assert _status(await central.request(lock, conn, command)) == "auth_failed"
    assert lock.motor_moves == 1


async def test_expired_nonce_is_refused(air):
    central, lock, now = air
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    now[0] += lp.NONCE_LIFETIME_MS / 1000 + 0.001
    command = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, command)) == "challenge_expired"
    assert lock.motor_moves == 0


async def test_failed_attempt_burns_the_nonce(air):
    central, lock, _ = air
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    forged = lp.encode_command(bytes(32), ADDR, nonce, lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, forged)) == "auth_failed"
    genuine = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, genuine)) == "challenge_expired"
    assert lock.motor_moves == 0


async def test_command_without_challenge_is_refused(air):
    central, lock, _ = air
    conn = await central.connect(lock)
    command = lp.encode_command(SECRET, ADDR, bytes(16), lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, command)) == "challenge_expired"
    assert lock.motor_moves == 0


async def test_manual_turn_notifies_an_authentic_status(air):
    central, lock, _ = air
    await central.connect(lock)
    lock.turn_manually("unlocked")
    pdu = (await central.expect(18))[2]
    counter, state, battery, source, mac = lp.decode_status(pdu)
    assert (lp.state_name(state), lp.source_name(source), counter) == ("unlocked", "manual", 1)
    assert lp.verify_status(SECRET, ADDR, counter, state, battery, source, mac)
    assert lock.motor_moves == 0


async def test_reports_kept_while_nobody_listened_are_read_back_in_order(air):
    central, lock, _ = air
    lock.turn_manually("unlocked")
    lock.turn_manually("locked")
    assert lp.decode_advert(lock.advertising_data())[2] == 2  # the advert announces the news
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    central.send(airwire.WRITE, conn, lock.control.value_handle, 1, lp.encode_read_reports(1))
    report = (await central.expect(18))[2]
    counter, state, _, source, _ = lp.decode_status(report)
    assert (counter, lp.state_name(state), lp.source_name(source)) == (2, "locked", "manual")
    counter, mac = lp.decode_reports_end((await central.expect(18))[2])
    assert counter == 2
    assert lp.verify_reports_end(SECRET, ADDR, nonce, counter, mac)


async def test_reading_reports_does_not_spend_the_nonce(air):
    central, lock, _ = air
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    central.send(airwire.WRITE, conn, lock.control.value_handle, 1,
                 lp.encode_read_reports(lp.COUNTER_NONE))
    assert lp.decode_reports_end((await central.expect(18))[2])[0] == 0
    pdu = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("unlock"), TAG)
    assert _status(await central.request(lock, conn, pdu)) == "ok"


async def test_command_longer_than_default_mtu_needs_the_mtu_exchange(air):
    central, lock, _ = air
    central.send(airwire.CONNECT, 0, lock.address, 2000)
    conn = (await central.expect(7))[0]
    central.send(airwire.WRITE, conn, lock.control.value_handle, 1, bytes(lp.COMMAND_LEN))
    assert (await central.expect(17))[2] == 0x0D  # invalid attribute value length


# --- the simulated lock's pairing rules --------------------------------------------------------


def test_simulated_lock_pairing_mode_lasts_its_window_and_shows_in_the_advert():
    now = [50.0]
    lock = InsideTurnerLock("l", ADDR, SECRET, setup_key=SETUP_KEY, clock=lambda: now[0])
    assert lock.setup_key == SETUP_KEY and lock.paired and not lock.pairing
    assert lp.decode_advert(lock.advertising_data())[3] is False
    lock.press_pairing_button(window_s=10)
    assert lock.pairing and lp.decode_advert(lock.advertising_data())[3] is True
    now[0] += 10
    assert not lock.pairing and lp.decode_advert(lock.advertising_data())[3] is False


def test_simulated_locks_have_their_own_random_setup_keys_and_may_start_unpaired():
    a = InsideTurnerLock("a", ADDR, None)
    b = InsideTurnerLock("b", ADDR, SECRET)
    assert not a.paired and a.secret is None and b.paired
    assert len(a.setup_key) == 32 and a.setup_key != b.setup_key
    with pytest.raises(ValueError):
        InsideTurnerLock("c", ADDR, SECRET, setup_key=bytes(31))


async def test_pair_on_a_spent_or_stale_nonce_is_refused(air):
    central, lock, now = air
    lock.setup_key = SETUP_KEY
    lock.press_pairing_button()
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    status = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("status"), TAG)
    assert _status(await central.request(lock, conn, status)) == "ok"  # spends the nonce
    pdu = lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, nonce)
    assert _status(await central.request(lock, conn, pdu)) == "challenge_expired"
    nonce = await _challenge(central, lock, conn)
    now[0] += lp.NONCE_LIFETIME_MS / 1000 + 0.001
    pdu = lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, nonce)
    assert _status(await central.request(lock, conn, pdu)) == "challenge_expired"
    assert lock.secret == SECRET and lock.pairing


async def test_paired_lock_drops_its_old_reports_and_answers_under_the_new_secret(air):
    central, lock, _ = air
    lock.setup_key = SETUP_KEY
    lock.turn_manually("unlocked")
    lock.press_pairing_button()
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    answer = await central.request(lock, conn, lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, nonce))
    status, state, battery, mac = lp.decode_result(answer)
    assert lp.status_name(status) == "ok"
    assert lp.verify_result(NEW_SECRET, ADDR, nonce, lockpair.PAIR_TAG, status, state, battery, mac)
    assert lock.secret == NEW_SECRET and not lock.pairing
    # The report made under the old secret is gone; the numbering goes on.
    central.send(airwire.WRITE, conn, lock.control.value_handle, 1, lp.encode_read_reports(0))
    counter, mac = lp.decode_reports_end((await central.expect(18))[2])
    assert counter == 1
    assert lp.verify_reports_end(NEW_SECRET, ADDR, nonce, counter, mac)


async def test_unpaired_lock_refuses_everything_but_still_turns_by_hand(air):
    central, lock, _ = air
    conn = await central.connect(lock)
    nonce = await _challenge(central, lock, conn)
    answer = await central.request(lock, conn, lockpair.encode_unpair(SECRET, ADDR, nonce))
    status, state, battery, mac = lp.decode_result(answer)
    assert lp.status_name(status) == "ok"
    assert lp.verify_result(SECRET, ADDR, nonce, lockpair.UNPAIR_TAG, status, state, battery, mac)
    assert not lock.paired
    nonce = await _challenge(central, lock, conn)
    command = lp.encode_command(SECRET, ADDR, nonce, lp.action_code("unlock"), TAG)
    answer = await central.request(lock, conn, command)
    assert _status(answer) == "auth_failed" and answer[4:] == bytes(32)
    assert _status(await central.request(lock, conn, lp.encode_read_reports(0))) == "auth_failed"
    lock.turn_manually("unlocked")
    assert lock.state == "unlocked" and lock.status_counter == 0 and lock.motor_moves == 0


def test_documented_example_exchange_matches_the_code():
    """docs/lock-protocol.md shows these bytes; keep the document and the codec equal."""
    nonce = bytes.fromhex("8f1e6a0c3b2d4e5f60718293a4b5c6d7")
    tag = lp.command_tag("3f2a9c4e-5b1d-4c8e-9a7f-0e6d2b1c4a58")
    assert tag.hex() == "f6a685664a356388"
    assert lp.encode_command(SECRET, ADDR, nonce, 1, tag).hex() == (
        "0201f6a685664a356388"
        "da9d89c73b19690dac0e47c3fe0caafc2761f1d8fdd64a6492d801cfc333f9a9"
    )
    assert lockside.encode_result(SECRET, ADDR, nonce, tag, 0, 2, 87).hex() == (
        "82000257d1e910785eb9dad8f0a8aeed121997b709c02388bea16c88cde0dbed154b31b7"
    )
    assert lockside.encode_status(SECRET, ADDR, 5, 1, 87, 1).hex() == (
        "830000000501570137"
        "4d99160c316ac1dbbcef9d71d41152488b506fd6eb1c972168c03f7fabcc80"
    )
    assert lockside.encode_advert("inside_turner", 87, 12).hex() == (
        "0201061107927b0e1f4c6a2e8d1a4b7e9c01003b5f08ffffff0101570c00"
    )
    assert lockside.encode_scan_response("Front door").hex() == "0b0946726f6e7420646f6f72"
    assert lockside.encode_event(SECRET, ADDR, 6, 2, 1, 2, 87).hex() == (
        "840000000602010257"
        "42cb2fefea854cb6dbaec3626743f6debd6ff5ff30aa990eef23a21dd0c86b58"
    )
    assert lockside.encode_reports_end(SECRET, ADDR, nonce, 6).hex() == (
        "8500000006"
        "ae7cf976fc2a67a84b77ea2578f59cf02e170f7d746632d7d5cd1510df23db8e"
    )


def test_documented_pairing_example_matches_the_code():
    """docs/lock-protocol.md, "Pairing": setup key 20..3f, new secret 40..5f, the nonce above."""
    nonce = bytes.fromhex("8f1e6a0c3b2d4e5f60718293a4b5c6d7")
    assert lockside.encode_advert("inside_turner", 87, 12, pairing=True).hex() == (
        "0201061107927b0e1f4c6a2e8d1a4b7e9c01003b5f08ffffff0181570c00"
    )
    assert lockpair.pair_pad(SETUP_KEY, ADDR, nonce).hex() == (
        "1ae95b453e207595e872471de90bc8e960575f8ce083d64457846065d937efe1"
    )
    assert lockpair.encode_pair(SETUP_KEY, NEW_SECRET, ADDR, nonce).hex() == (
        "04"
        "5aa819067a6533d2a03b0d56a54686a630060ddfb4d680130fdd3a3e856ab1be"
        "c579f1eadb6974799ca2ffbab624fa0f50ed0ba0e3704b37189cff695a5690e6"
    )
    assert lockside.encode_result(NEW_SECRET, ADDR, nonce, lockpair.PAIR_TAG, 0, 1, 87).hex() == (
        "82000157c3d56698bbe589baeb498d5f34a46e9f6762e8399fd1eb0fa4bf43734fc84c9f"
    )
    assert lockside.encode_result(SECRET, ADDR, nonce, lockpair.PAIR_TAG, 9, 1, 87).hex() == (
        "82090157aca278ac294a86c7555001f7b27b4503fc1c2f8449461b7ef472d1d8ca521847"
    )
    assert lockpair.encode_unpair(NEW_SECRET, ADDR, nonce).hex() == (
        "05664fa0033e154b1a358c0da1ff822fc397f45b981c5b3b38ba21fc81f0379f78"
    )
    assert lockside.encode_result(NEW_SECRET, ADDR, nonce, lockpair.UNPAIR_TAG, 0, 1, 87).hex() == (
        "82000157a6f0d5c6d33af19df87f47a683f4e37ed589407269142626e43321424bd3e887"
    )

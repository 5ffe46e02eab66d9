"""wire.dc09 against pysiaalarm, run as the alarm centre's receiver on loopback: the project's
frames must be accepted unmodified, plain and encrypted; its answers must be understood."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from tests.micropython import HEAP, micropython_binary, micropython_env
from tests.sia_receiver import ACCOUNT, KEY, KEY_B, Receiver, require_pysiaalarm
from wire import alarms, dc09


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with r:
        yield r


@pytest.fixture
async def keyed_receiver() -> AsyncIterator[Receiver]:
    r = Receiver(KEY)
    async with r:
        yield r


def test_crc_is_crc16_arc() -> None:
    assert dc09.crc16(b"123456789") == 0xBB3D
    assert dc09.crc16(b"") == 0


def test_a_frame_byte_by_byte() -> None:
    f = dc09.alarm_frame(7, ACCOUNT, alarms.BUTTON, "unit1-42", 1700000000, receiver="1",
                         line="2")
    body = '"ADM-CID"0007R1L2#12AB[#12AB|1101 01 001][Iunit1-42]_22:13:20,11-14-2023'
    assert f == ("\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body)).encode()


def test_timestamps_round_trip_across_leap_days() -> None:
    for unix in (0, 951782400, 951868799, 1709164800, 1700000000, 4102444799):
        assert dc09.parse_timestamp(dc09.timestamp(unix)) == unix
    assert dc09.timestamp(951782400) == "_00:00:00,02-29-2000"
    for bad in ("", "25:00:00,01-01-2024", "10:00:00,02-30-2024", "aa:bb:cc,dd-ee-ffff",
                "10:00:00/01-01-2024"):
        assert dc09.parse_timestamp(bad) is None


def test_every_event_has_a_contact_id_code_pysiaalarm_knows() -> None:
    require_pysiaalarm()
    from pysiaalarm.utils import ADM_MAPPING
    for event in alarms.EVENTS + alarms.SUPERVISION + ("not-yet-known",):
        q, code = dc09.cid(event)
        assert str(q) in ADM_MAPPING["%03d" % code], event
    assert dc09.cid(alarms.MAINS_RESTORED) == (3, 301)
    assert dc09.cid(alarms.HUB_LINK_RESTORED)[0] == 3


def test_ids_that_dc09_cannot_carry_are_refused() -> None:
    for bad in ("", "a]b", "a[b", "a|b", "x" * 65, "é"):
        with pytest.raises(ValueError):
            dc09.alarm_frame(1, ACCOUNT, alarms.BUTTON, bad, 1700000000)
    with pytest.raises(ValueError):
        dc09.alarm_frame(1, "12ab", alarms.BUTTON, "u-1", 1700000000)


async def test_pysiaalarm_acks_a_plain_alarm_with_id_account_code_and_time(
        receiver: Receiver) -> None:
    now = int(time.time())
    f = dc09.alarm_frame(1, ACCOUNT, alarms.FALL, "unit1-42", now, receiver="1", line="1")
    (answer,) = await receiver.exchange(f)
    assert dc09.parse_answer(answer, 1, ACCOUNT) == (dc09.ACK, None)
    (ev,) = receiver.events
    assert ev.account == ACCOUNT and ev.code == "MA" and ev.event_type == "100"
    assert ev.event_qualifier == "1" and ev.ri == "001" and ev.sequence == "0001"
    assert ev.x_data == "Iunit1-42" and ev.extended_data[0].value == "unit1-42"
    assert int(ev.timestamp.timestamp()) == now and ev.valid_message


async def test_pysiaalarm_acks_encrypted_alarms_and_we_verify_its_encrypted_ack(
        keyed_receiver: Receiver) -> None:
    now = int(time.time())
    frames = [dc09.alarm_frame(s, ACCOUNT, ev, "unit1-%d" % s, now, key=KEY_B)
              for s, ev in enumerate((alarms.BUTTON, alarms.SMOKE, alarms.MAINS_RESTORED), 1)]
    answers = await keyed_receiver.exchange(*frames)
    for s, answer in enumerate(answers, 1):
        assert answer.startswith(b"\n") and b'"*ACK"' in answer
        assert dc09.parse_answer(answer, s, ACCOUNT, KEY_B) == (dc09.ACK, None)
        assert dc09.parse_answer(answer, s, ACCOUNT, b"F" * 16) == (dc09.BAD, None)
    assert [(e.code, e.x_data) for e in keyed_receiver.events] == [
        ("QA", "Iunit1-1"), ("FA", "Iunit1-2"), ("AR", "Iunit1-3")]


async def test_the_null_supervision_message_is_acked(receiver: Receiver,
                                                     keyed_receiver: Receiver) -> None:
    now = int(time.time())
    (a,) = await receiver.exchange(dc09.null_frame(9, ACCOUNT, now))
    assert dc09.parse_answer(a, 9, ACCOUNT) == (dc09.ACK, None)
    (a,) = await keyed_receiver.exchange(dc09.null_frame(10, ACCOUNT, now, key=KEY_B))
    assert dc09.parse_answer(a, 10, ACCOUNT, KEY_B) == (dc09.ACK, None)


async def test_a_stale_clock_gets_a_nak_with_the_receivers_time(receiver: Receiver) -> None:
    now = int(time.time())
    (a,) = await receiver.exchange(
        dc09.alarm_frame(3, ACCOUNT, alarms.BUTTON, "u-1", now - 3600))
    kind, their = dc09.parse_answer(a, 3, ACCOUNT)
    assert kind == dc09.NAK and abs(their - now) <= 2
    (a,) = await receiver.exchange(dc09.alarm_frame(3, ACCOUNT, alarms.BUTTON, "u-1", their))
    assert dc09.parse_answer(a, 3, ACCOUNT)[0] == dc09.ACK
    assert [e.x_data for e in receiver.events] == ["Iu-1"]


async def test_an_unknown_code_is_a_duh_and_an_unknown_account_a_nak(receiver: Receiver) -> None:
    now = int(time.time())
    # pysiaalarm maps any ADM-CID code (unknown ones to "YN"); a SIA code it lacks gets DUH
    odd = dc09.frame("SIA-DCS", 4, ACCOUNT, "#12AB|NQQ01]", now)
    stranger = dc09.alarm_frame(5, "FFF1", alarms.BUTTON, "u-1", now)
    duh, nak = await receiver.exchange(odd, stranger)
    assert dc09.parse_answer(duh, 4, ACCOUNT) == (dc09.DUH, None)
    assert dc09.parse_answer(nak, 5, "FFF1") == (dc09.NAK, None)
    assert receiver.events == []


async def test_two_frames_in_one_write_are_refused_so_we_never_send_them(
        receiver: Receiver) -> None:
    now = int(time.time())
    both = (dc09.alarm_frame(1, ACCOUNT, alarms.BUTTON, "u-1", now)
            + dc09.alarm_frame(2, ACCOUNT, alarms.BUTTON, "u-2", now))
    (a,) = await receiver.exchange(both)
    assert dc09.parse_answer(a, 1, ACCOUNT)[0] != dc09.ACK


@pytest.mark.parametrize("garbage", [
    b"", b"\n\r", b"\x00" * 600, b'"ACK"', b'"DUH"', b"\nZZZZ0004\"ACK\"\r", b"\xff\xfe",
    b'\n00000010"ACK"0001L0#12AB[]\r',  # wrong CRC
])
def test_hostile_answers_are_bad_never_an_exception(garbage: bytes) -> None:
    assert dc09.parse_answer(garbage, 1, ACCOUNT)[0] == dc09.BAD


def test_an_ack_for_another_sequence_or_account_is_not_ours() -> None:
    body = '"ACK"0002L0#12AB[]'
    a = ("\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body)).encode()
    assert dc09.parse_answer(a, 2, ACCOUNT)[0] == dc09.ACK
    assert dc09.parse_answer(a, 1, ACCOUNT)[0] == dc09.BAD
    assert dc09.parse_answer(a, 2, "12AC")[0] == dc09.BAD
    assert dc09.parse_answer(a, 2, ACCOUNT, KEY_B)[0] == dc09.BAD  # unencrypted ACK to a keyed


async def test_an_encrypted_frame_built_by_micropython_is_accepted(
        keyed_receiver: Receiver) -> None:
    now = int(time.time())
    code = ("from wire import dc09\nimport sys\n"
            "sys.stdout.write(dc09.alarm_frame(3, %r, 'button', 'mp-1', %d, key=%r).hex())\n"
            % (ACCOUNT, now, KEY_B))
    out = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP}", "-c", code],
                         env=micropython_env(), capture_output=True, text=True, timeout=30,
                         check=True).stdout
    f = bytes.fromhex(out)
    (a,) = await keyed_receiver.exchange(f)
    assert dc09.parse_answer(a, 3, ACCOUNT, KEY_B) == (dc09.ACK, None)
    assert keyed_receiver.events[0].x_data == "Imp-1"


# Each event's Contact ID code and priority as they were when both were dicts (issue 15 made
# them tuples read by cid() and priority(), for the bridge's heap): the same answers, any input.
EXPECTED = {
    alarms.BUTTON: ((1, 101), 1), alarms.PULL_CORD: ((1, 101), 1), alarms.FALL: ((1, 100), 1),
    alarms.SMOKE: ((1, 111), 1), alarms.MAINS_LOST: ((1, 301), 2),
    alarms.MAINS_RESTORED: ((3, 301), 3), alarms.LOW_BATTERY: ((1, 302), 2),
    alarms.TAMPER: ((1, 137), 2), alarms.TEST: ((1, 601), 3),
    alarms.UNIT_LINK_LOST: ((1, 330), 2), alarms.UNIT_LINK_RESTORED: ((3, 330), 3),
    alarms.HUB_LINK_LOST: ((1, 350), 2), alarms.HUB_LINK_RESTORED: ((3, 350), 3),
}


def test_every_event_keeps_its_contact_id_code_and_priority_and_unknown_ones_are_alarms() -> None:
    assert set(EXPECTED) == set(alarms.EVENTS + alarms.SUPERVISION)
    for event, (code, priority) in EXPECTED.items():
        assert (dc09.cid(event), alarms.priority(event)) == (code, priority), event
    for unknown in ("not-yet-known", "", "button ", "BUTTON", None, 1):
        assert (dc09.cid(unknown), alarms.priority(unknown)) == ((1, 140), 1), unknown

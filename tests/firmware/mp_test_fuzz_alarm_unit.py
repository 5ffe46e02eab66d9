"""Fuzzing the alarm unit link inside MicroPython: wire.alarmunit's decoder and the bridge's
UnitLink reader take any bytes; a frame decodes or is counted bad, a good frame after garbage
still decodes, and nothing a frame carries stops the reader (tests/firmware/fuzz.py)."""

import asyncio

import fuzz
from fuzz import Ended, Reader, chain, fail, mutants, noise, rand, rbytes
from wire import alarms, alarmunit, unitside

from alarm_unit import UnitLink

KINDS = (alarmunit.T_EVENT, alarmunit.T_HEARTBEAT, alarmunit.T_HEARD, alarmunit.T_ACK,
         alarmunit.T_ALARM_RECEIVED, alarmunit.T_HELP_ON_THE_WAY)


def _valid():
    # Event ids from 1001: a mutant that stays a valid frame must not pass for one of the events
    # a test sends in order (ids 1..150): FUZZ_SEED=159248624 made an early copy of event 52.
    return [unitside.event(0x5A0000AB, 1001 + rand(1000), 1700000000, alarms.EVENTS[rand(9)],
                           alarmunit.DEVICES[rand(6)]),
            unitside.heartbeat(0x5A0000AB, 1700000000, bool(rand(2)), rand(6000), rand(3300),
                               rand(256) - 128, (rand(256), rand(256), rand(256))),
            unitside.heard(0x5A0000AB, alarmunit.PROMPTS[rand(2)], rand(1 << 30) * 4 + rand(4)),
            alarmunit.frame(alarmunit.T_ACK, rand(1 << 30) * 4 + rand(4)),
            alarmunit.frame(alarmunit.T_HELP_ON_THE_WAY, 7)]


def _well_formed(fr):
    if fr[0] == alarmunit.T_EVENT:
        return len(fr) == 6 and fr[4] in alarmunit.EVENT_CODES and fr[5] in alarmunit.DEVICES
    if fr[0] == alarmunit.T_HEARTBEAT:
        return len(fr) == 8 and isinstance(fr[3], bool) and isinstance(fr[7], str)
    if fr[0] == alarmunit.T_HEARD:
        return len(fr) == 4 and fr[2] in alarmunit.PROMPTS
    return fr[0] in KINDS and len(fr) == 2


def test_decode_takes_any_block():
    fuzz.start()
    blocks = chain(noise(200, 40), [rbytes(alarmunit.MAX_ENCODED + 1 + rand(500)), b"", b"\x01"])
    for valid in _valid():
        blocks = chain(blocks, mutants(valid[:-1], 60))
    for block in blocks:
        try:
            fr = alarmunit.decode(block)
        except alarmunit.UnitFrameError:
            continue
        except Exception as e:  # noqa: BLE001 - anything else is the failure we look for
            raise AssertionError(fail(block, "raised %r" % e))
        assert _well_formed(fr), fail(block, "decoded to %r" % (fr,))


def test_the_decoder_resynchronises_and_counts_what_it_drops():
    fuzz.start()
    for round_ in range(40):
        d = alarmunit.Decoder()
        good = []
        stream = b""
        for _ in range(6):
            if rand(2):
                fr = _valid()[rand(5)]
                good.append(alarmunit.decode(fr[:-1]))
                stream += fr
            else:  # garbage, then a delimiter: the frame after it must still decode
                stream += next(mutants(_valid()[rand(5)][:-1], 1)) + rbytes(rand(30)) + b"\x00"
        got = []
        i = 0
        while i < len(stream):
            n = 1 + rand(40)
            try:
                got += d.feed(stream[i:i + n])
            except Exception as e:  # noqa: BLE001
                raise AssertionError(fail(stream, "round %d: feed raised %r" % (round_, e)))
            i += n
        for fr in got:
            assert _well_formed(fr), fail(stream, "decoded to %r" % (fr,))
        # Every intact frame is among what came out, in its order.
        it = iter(got)
        for fr in good:
            assert any(fr == g for g in it), fail(stream, "lost %r; got %r" % (fr, got))
        assert len(d._buf) == alarmunit.MAX_ENCODED, "the decoder's buffer is allocated once"


async def test_the_unit_link_reader_survives_any_bytes_and_raising_handlers():
    fuzz.start()
    heard = []

    def on_event(serial, event_id, unit_time, event, device):
        heard.append(event_id)
        if event_id % 3 == 0:
            raise ValueError("a handler's bug")

    def on_status(fr):
        raise KeyError("another one")

    unit = UnitLink(None, on_event, lambda up: None, 1000, 3, on_status, lambda *a: None)
    chunks = [b"\x01\x02\x03\x00"]  # at least one bad frame
    sent = []
    for k in range(150):
        pick = rand(4)
        if pick == 0:
            chunks.append(rbytes(1 + rand(80)))
        elif pick == 1:
            chunks.append(next(mutants(_valid()[rand(5)], 1)))
        else:
            event_id = 1 + k
            sent.append(event_id)
            chunks.append(b"\x00" + unitside.event(0x5A0000AB, event_id, 1700000000, "fall",
                                                   "pendant"))
    try:
        await unit._read_loop(Reader(chunks))
    except Ended:
        pass
    except Exception as e:  # noqa: BLE001
        raise AssertionError(fail(b"", "the reader stopped with %r" % e))
    # Every intact event reached the flow, the ones whose handler raised too.
    assert [i for i in heard if i in sent] == sent, fail(b"", "heard %r of %r" % (heard, sent))
    assert unit.bad_frames >= 1 and unit.serial == 0x5A0000AB

"""Fuzzing the DC-09 receiver's answers inside MicroPython: wire.dc09.parse_answer and
answer_complete take any bytes, only an intact answer is trusted, and the bridge's second path
(firmware/second_path.py) ends every alarm in one of its results whatever the receiver says
(tests/firmware/fuzz.py)."""

import binascii

import fuzz
from fuzz import chain, fail, mutants, noise, rand, rbytes
from wire import dc09

from second_path import SecondPath, carry

KEY = b"0123456789ABCDEF"
SEQ = 3
ACCOUNT = "12AB"
KINDS = (dc09.ACK, dc09.NAK, dc09.DUH, dc09.BAD)


def _framed(body):
    return ("\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body)).encode()


def _encrypted_ack():
    clear = "]_22:13:20,11-14-2023"
    clear = "0" * (32 - len(clear)) + clear  # pysiaalarm pads on the left with "0"
    sealed = binascii.hexlify(dc09._aes_cbc(KEY, clear.encode(), True)).decode().upper()
    return _framed('"*ACK"%04dL0#%s[%s' % (SEQ, ACCOUNT, sealed))


PLAIN = [_framed('"ACK"%04dL0#%s[]' % (SEQ, ACCOUNT)), _framed('"DUH"%04dL0#%s[]' % (SEQ, ACCOUNT)),
         _framed('"NAK"0000R0L0A0[]_22:13:20,11-14-2023'), b'"NAK"']


def _parse(data, key=None):
    try:
        kind, their = dc09.parse_answer(data, SEQ, ACCOUNT, key)
    except Exception as e:  # noqa: BLE001 - it promises never to raise
        raise AssertionError(fail(data, "raised %r" % e))
    assert kind in KINDS, fail(data, "kind %r" % (kind,))
    assert their is None or (kind == dc09.NAK and isinstance(their, int)
                             and 0 <= their < 7258118400), fail(data, "their %r" % (their,))
    try:
        done = dc09.answer_complete(data)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(fail(data, "answer_complete raised %r" % e))
    assert done in (True, False)
    return kind


def test_intact_answers_are_classified():
    assert [_parse(a) for a in PLAIN] == [dc09.ACK, dc09.DUH, dc09.NAK, dc09.NAK]
    assert _parse(_encrypted_ack(), KEY) == dc09.ACK
    assert _parse(PLAIN[0], KEY) == dc09.BAD  # with a key, only an encrypted ACK is trusted


def test_one_changed_byte_inside_the_crc_is_never_trusted():
    fuzz.start()
    for answer, key in ((PLAIN[0], None), (PLAIN[1], None), (PLAIN[2], None),
                        (_encrypted_ack(), KEY)):
        body = range(9, len(answer) - 1)  # what the CRC and the length cover
        for _ in range(80):
            i = body[rand(len(body))]
            b = rand(256)
            if b == answer[i]:
                continue
            data = answer[:i] + bytes([b]) + answer[i + 1:]
            # CRC-16 finds every error within one byte; a stripped blank changes the length.
            assert _parse(data, key) == dc09.BAD, fail(data, "trusted after byte %d changed" % i)


def test_any_bytes_give_a_kind():
    fuzz.start()
    inputs = chain(noise(200, 80), [rbytes(dc09.MAX_ANSWER + 1 + rand(200)),
                                    b"\n" + b"9" * 600 + b"\r", b"\n\r", b""])
    for answer in PLAIN + [_encrypted_ack()]:
        inputs = chain(inputs, mutants(answer, 60, 5))
    for data in inputs:
        _parse(data)
        _parse(data, KEY)


class _Modem:
    """An LTE stand-in whose receiver answers with the given byte strings, one per frame."""

    attach_timeout_ms = 100
    open_timeout_ms = 100

    def __init__(self, answers):
        self.answers = answers
        self.connected = False
        self.pdp_up = False
        self.rx = b""
        self.sent = 0

    async def attach(self, timeout_ms):
        self.pdp_up = True

    async def open(self, host, port, timeout_ms):
        self.connected = True

    async def send(self, data):
        self.sent += 1
        self.rx = self.answers.pop(0) if self.answers else b""

    async def recv(self, timeout_ms):
        data, self.rx = self.rx, b""
        if not data:
            self.connected = False
            return b"", "closed"
        return data, None

    async def close(self):
        self.connected = False


async def test_the_second_path_ends_every_alarm_in_a_result_whatever_the_receiver_says():
    fuzz.start()
    for round_ in range(40):
        answers = []
        for _ in range(1 + rand(6)):
            pick = rand(3)
            if pick == 0:
                answers.append(next(noise(1, 60)))
            else:
                answers.append(next(mutants(PLAIN[rand(4)], 1, 2)))
        if rand(2):
            answers.append(PLAIN[0])
        shown = b"|".join(answers)
        modem = _Modem(list(answers))
        path = SecondPath(modem, "receiver.example", 12000, ACCOUNT, deadline_ms=100,
                          answer_timeout_ms=20, retry_ms=5, now=lambda: 1700000000)
        try:
            result = await path.send_alarm({"id": "au5a0000ab-%d" % round_, "event": "fall"})
        except Exception as e:  # noqa: BLE001
            raise AssertionError(fail(shown, "round %d: send_alarm raised %r" % (round_, e)))
        assert result in ("ack", "nak", "duh", "failed"), fail(shown, repr(result))
        assert result != "ack" or PLAIN[0] in answers, fail(shown, "acked by an untrusted answer")


class _Flow:
    """The alarm flow as carry() sees it: one alarm due, results kept; the first send raises."""

    def __init__(self):
        self.results = []

    def now(self):
        return None

    def for_second_path(self):
        return [] if self.results else [("au5a0000ab-1", "fall", "pendant", 0, None)]

    def second_path_result(self, alarm_id, result):
        self.results.append(result)


class _Broken:
    offset = 1
    calls = 0

    async def send_alarm(self, alarm):
        _Broken.calls += 1
        if _Broken.calls == 1:
            raise OSError(5)  # the UART, the modem: whatever goes wrong with one alarm
        return "ack"


async def test_carrying_goes_on_after_one_alarm_raised():
    import asyncio

    flow = _Flow()
    task = asyncio.create_task(carry(flow, _Broken(), retry_ms=10, tick_ms=5))
    for _ in range(100):
        await asyncio.sleep_ms(5)
        if flow.results:
            break
    task.cancel()
    assert flow.results == ["ack"] and _Broken.calls == 2

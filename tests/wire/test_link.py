"""The serial link engine (wire/link.py) under loss, corruption, truncation and restarts."""

from __future__ import annotations

import random

import pytest

from wire import cobs, frame, link
from wire.crc import crc16


def drain(end: link.Link, now: int) -> bytes:
    """Every frame the end has to write now (poll gives one per call)."""
    return b"".join(iter(lambda: end.poll(now), b""))


class Line:
    """Two link ends joined by a line that can corrupt, truncate or drop what crosses it."""

    def __init__(self, seed: int = 0, corrupt: float = 0.0, drop: float = 0.0,
                 truncate: float = 0.0) -> None:
        self.now = 0
        self.rng = random.Random(seed)
        self.corrupt, self.drop, self.truncate = corrupt, drop, truncate
        self.a = link.Link(frame.ROLE_HUB, "hubd-test", self.now)
        self.b = link.Link(frame.ROLE_BRIDGE, "fw-test", self.now)
        self.got: dict[str, list[bytes]] = {"a": [], "b": []}
        self.events: dict[str, list[tuple]] = {"a": [], "b": []}

    def _noisy(self, data: bytes) -> bytes:
        out = bytearray()
        for chunk in data.split(b"\x00"):
            if not chunk:
                out += b"\x00"
                continue
            chunk = bytearray(chunk)
            r = self.rng.random()
            if r < self.drop:
                continue
            if r < self.drop + self.corrupt:
                i = self.rng.randrange(len(chunk))
                chunk[i] ^= 1 << self.rng.randrange(8)
            elif r < self.drop + self.corrupt + self.truncate:
                chunk = chunk[: self.rng.randrange(len(chunk))]
            out += chunk + b"\x00"
        return bytes(out)

    def step(self, ms: int = 10) -> None:
        self.now += ms
        for name, src, dst in (("a", self.a, self.b), ("b", self.b, self.a)):
            data = drain(src, self.now)
            if data:
                dst.feed(self._noisy(data), self.now)
        for name, end in (("a", self.a), ("b", self.b)):
            for kind, value in end.events():
                self.events[name].append((kind, value))
                if kind == link.EV_DATA:
                    self.got[name].append(value)

    def run(self, ms: int) -> None:
        for _ in range(ms // 10):
            self.step()


def test_crc16_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"a\x00b", bytes(range(256)) * 3,
                                  b"\x01" * 254, b"\x01" * 255, b"\x00" * 600])
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs.encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= cobs.encoded_size(len(data))
    assert cobs.decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x05ab", b"\x02\x00", b"\x00"])
def test_cobs_rejects_malformed_blocks(bad: bytes) -> None:
    with pytest.raises(cobs.CobsError):
        cobs.decode(bad)


def test_frame_with_a_flipped_bit_fails_its_crc() -> None:
    wire_bytes = bytearray(frame.encode(frame.T_DATA, 7, b"unlock front-door"))
    wire_bytes[5] ^= 0x10
    with pytest.raises(frame.CrcError):
        frame.decode(bytes(wire_bytes[:-1]))


def test_oversized_payload_is_refused_by_the_sender() -> None:
    end = link.Link(frame.ROLE_HUB, "x", 0)
    with pytest.raises(ValueError, match="exceeds"):
        end.send(b"x" * (frame.MAX_PAYLOAD + 1))


def test_handshake_exchanges_versions_and_roles() -> None:
    line = Line()
    line.run(200)
    assert line.a.state == link.UP and line.b.state == link.UP
    up_a = [v for k, v in line.events["a"] if k == link.EV_UP]
    assert up_a[0]["version"] == "fw-test" and up_a[0]["role"] == frame.ROLE_BRIDGE
    assert up_a[0]["major"] == link.PROTOCOL_MAJOR


def test_payloads_arrive_once_and_in_order_over_a_clean_line() -> None:
    line = Line()
    line.run(100)
    for i in range(50):
        while line.a.pending() >= line.a.max_queue:
            line.step()
        line.a.send(b"msg %d" % i)
    line.run(2000)
    assert line.got["b"] == [b"msg %d" % i for i in range(50)]
    assert line.a.pending() == 0
    assert line.a.stats["retransmits"] == 0


@pytest.mark.parametrize("seed", range(8))
def test_corrupted_truncated_and_dropped_frames_are_retransmitted(seed: int) -> None:
    line = Line(seed=seed, corrupt=0.1, drop=0.1, truncate=0.1)
    line.run(3000)
    assert line.a.state == link.UP
    sent_a = [b"a%03d" % i for i in range(40)]
    sent_b = [b"b%03d" % i for i in range(40)]
    for i in range(40):
        while max(line.a.pending(), line.b.pending()) >= line.a.max_queue:
            line.step()
        line.a.send(sent_a[i])
        line.b.send(sent_b[i])
        line.run(30)
    line.run(20000)
    assert line.got["b"] == sent_a
    assert line.got["a"] == sent_b
    errors = line.b.stats["crc_errors"] + line.b.stats["framing_errors"]
    assert errors > 0, "the noisy line should have damaged some frames"
    assert line.a.stats["retransmits"] > 0


def test_line_noise_between_frames_is_skipped() -> None:
    line = Line()
    line.run(100)
    line.b.feed(b"\xff\x13garbage-without-delimiter" * 10 + b"\x00", line.now)
    line.b.feed(b"\x01" * 5000 + b"\x00", line.now)  # oversized: dropped up to the delimiter
    line.a.send(b"after noise")
    line.run(200)
    assert line.got["b"] == [b"after noise"]
    assert line.b.stats["framing_errors"] >= 2


def test_silence_takes_the_link_down_and_traffic_brings_it_back() -> None:
    line = Line()
    line.run(100)
    saved_poll = line.b.poll
    line.b.poll = lambda now: b""  # the bridge stops talking (cable pulled)
    line.run(line.a.dead_ms + 500)
    assert line.a.state == link.DOWN
    assert (link.EV_DOWN, "silent") in line.events["a"]
    line.a.send(b"queued while down")
    line.b.poll = saved_poll
    line.run(3000)
    assert line.a.state == link.UP
    assert line.got["b"] == [b"queued while down"]


def test_a_restarted_peer_is_detected_and_unacked_payloads_are_handed_back() -> None:
    line = Line()
    line.run(100)
    line.a.send(b"in flight")
    drain(line.a, line.now)  # written to the line, never reaches the bridge
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now)  # bridge reboots
    line.run(3000)  # the old session says nothing more: believed after 1.5 s of quiet
    resets = [v for k, v in line.events["a"] if k == link.EV_RESET]
    assert resets == [([b"in flight"], [])]
    assert line.got["b"] == [], "an unacked payload must not be resent to a new session"
    line.a.send(b"after reboot")
    line.run(500)
    assert line.got["b"] == [b"after reboot"]


def test_payloads_queued_for_a_peer_that_restarted_are_handed_back_never_sent_to_the_new_one() -> None:
    # The peer (hubd) died with the window full: what waited behind it was written for that peer.
    # Delivered to the next one, an alarm the bridge had sent over LTE meanwhile reached the
    # centre a second time (the failure the hubd-killed scenario hit under load).
    line = Line()
    line.run(100)
    line.b.poll = lambda now: b""  # hubd is dead: nothing is acked any more
    for n in range(line.a.window + 2):
        line.a.send(b"alarm %d" % n)
    line.run(line.a.dead_ms + 500)
    assert line.a.state == link.DOWN
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now)  # the peer starts again
    line.got["b"] = []
    line.run(1000)
    assert line.a.state == link.UP
    in_flight, unsent = next(v for k, v in line.events["a"] if k == link.EV_RESET)
    assert in_flight == [b"alarm %d" % n for n in range(line.a.window)]
    assert unsent == [b"alarm 4", b"alarm 5"]
    assert line.got["b"] == [], "nothing written for the old session reaches the new one"
    line.a.send(b"for the new hubd")
    line.run(500)
    assert line.got["b"] == [b"for the new hubd"]


def test_a_peer_with_another_protocol_major_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = Line()
    real = frame.encode_hello

    def future_hello(major, *rest):  # the bridge speaks protocol 2
        return real(2 if rest[-1] == "fw-test" else major, *rest)

    monkeypatch.setattr(frame, "encode_hello", future_hello)
    line.run(500)
    assert line.a.state == link.INCOMPATIBLE
    incompatible = [v for k, v in line.events["a"] if k == link.EV_INCOMPATIBLE]
    assert incompatible and incompatible[0]["major"] == 2
    line.a.send(b"must not pass")
    line.run(500)
    assert line.got["b"] == []


def test_send_queue_is_bounded() -> None:
    end = link.Link(frame.ROLE_HUB, "x", 0, max_queue=3)
    for _ in range(3):
        end.send(b"x")
    with pytest.raises(link.LinkFull):
        end.send(b"x")


@pytest.mark.parametrize("major", [link.PROTOCOL_MAJOR, link.PROTOCOL_MAJOR + 7])
def test_a_forged_hello_while_the_peer_talks_is_ignored_and_the_link_stays_up(major: int) -> None:
    # A HELLO of another session (or protocol) that passed the CRC while the current peer still
    # talks is damage or forgery: believed, it would drop the payloads in flight (a peer restart)
    # or take the link down (incompatible), and a nurse's command with them.
    line = Line()
    line.run(500)
    assert line.a.state == link.UP
    forged = frame.encode(frame.T_HELLO, 0, frame.encode_hello(
        major, 0, 0x0BADF00D, line.a.session, frame.MAX_PAYLOAD, 4, frame.ROLE_BRIDGE, 0, "forger"))
    line.a.send(b"in flight")
    drain(line.a, line.now)
    for _ in range(10):
        line.a.feed(b"\x00" + forged + b"\x00", line.now)
        line.run(100)
    assert line.a.state == link.UP
    assert [k for k, _ in line.events["a"] if k != link.EV_DATA] == [link.EV_UP]
    assert line.got["b"] == [b"in flight"]
    assert line.a.stats["hellos_ignored"] == 10

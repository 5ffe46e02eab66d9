"""The serial link engine (wire/link.py) under loss, corruption, truncation, restarts, and
someone on the wire forging, replaying and reflecting frames."""

from __future__ import annotations

import random

import pytest

from wire import cobs, frame, link
from wire.crc import crc16
from wire.hmac_sha256 import Key

KEY = bytes(range(32))  # the link key both ends of a test line share


def drain(end: link.Link, now: int) -> bytes:
    """Every frame the end has to write now (poll gives one per call)."""
    return b"".join(iter(lambda: end.poll(now), b""))


class Line:
    """Two link ends joined by a line that can corrupt, truncate or drop what crosses it."""

    def __init__(self, seed: int = 0, corrupt: float = 0.0, drop: float = 0.0,
                 truncate: float = 0.0, b_key: bytes = KEY) -> None:
        self.now = 0
        self.rng = random.Random(seed)
        self.corrupt, self.drop, self.truncate = corrupt, drop, truncate
        self.a = link.Link(frame.ROLE_HUB, "hubd-test", self.now, KEY)
        self.b = link.Link(frame.ROLE_BRIDGE, "fw-test", self.now, b_key)
        self.wire: dict[str, list[bytes]] = {"a": [], "b": []}  # every frame each end wrote
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
            self.wire[name] += [b + b"\x00" for b in data.split(b"\x00") if b]
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
    wire_bytes = bytearray(frame.encode(frame.T_DATA, 7, b"unlock front-door", 1, Key(KEY),
                                        frame.context(frame.ROLE_HUB, 1, 2)))
    wire_bytes[5] ^= 0x10
    with pytest.raises(frame.CrcError):
        frame.decode(bytes(wire_bytes[:-1]))


def test_oversized_payload_is_refused_by_the_sender() -> None:
    end = link.Link(frame.ROLE_HUB, "x", 0, KEY)
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
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now, KEY)  # bridge reboots
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
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now, KEY)  # the peer starts again
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

    def future_hello(major, *rest):  # the bridge speaks the next protocol
        return real(major + 1 if rest[-1] == "fw-test" else major, *rest)

    monkeypatch.setattr(frame, "encode_hello", future_hello)
    line.run(500)
    assert line.a.state == link.INCOMPATIBLE
    incompatible = [v for k, v in line.events["a"] if k == link.EV_INCOMPATIBLE]
    assert incompatible and incompatible[0]["major"] == link.PROTOCOL_MAJOR + 1
    line.a.send(b"must not pass")
    line.run(500)
    assert line.got["b"] == []


def test_send_queue_is_bounded() -> None:
    end = link.Link(frame.ROLE_HUB, "x", 0, KEY, max_queue=3)
    for _ in range(3):
        end.send(b"x")
    with pytest.raises(link.LinkFull):
        end.send(b"x")


def test_a_hello_of_an_earlier_session_while_the_peer_talks_is_ignored_and_the_link_stays_up() -> None:
    # A HELLO of another session that verifies while the current peer still talks: one recorded
    # from the bridge's previous boot and played back. Believed, it would drop the payloads in
    # flight (a peer restart), and a nurse's command with them.
    line = Line()
    line.run(500)
    old_hellos = [f for f in line.wire["b"] if frame.decode(f[:-1])[0] == frame.T_HELLO]
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now, KEY)  # the bridge reboots
    line.run(3000)
    assert line.a.state == link.UP and line.a.peer["session"] == line.b.session
    events_before = len(line.events["a"])
    ignored_before = line.a.stats["hellos_ignored"]
    line.a.send(b"in flight")
    drain(line.a, line.now)
    for _ in range(10):
        line.a.feed(b"\x00" + old_hellos[-1], line.now)
        line.run(100)
    assert line.a.state == link.UP
    assert [k for k, _ in line.events["a"][events_before:] if k != link.EV_DATA] == []
    assert line.got["b"] == [b"in flight"]
    assert line.a.stats["hellos_ignored"] - ignored_before == 10


def _forgeries(line: Line, key: bytes) -> list[bytes]:
    """What someone on the wire with ``key`` (not the link's) and the sessions read off the line
    makes: the next DATA, an ACK of everything, a HELLO of a new session, heartbeats."""
    a, b = line.a, line.b
    ctx = frame.context(frame.ROLE_BRIDGE, b.session, a.session)
    k = Key(key)
    counter = b._tx_counter + 1
    return [frame.encode(frame.T_DATA, a._rx_expect, b'{"m":"result"}', counter, k, ctx),
            frame.encode(frame.T_ACK, (a._tx_next - 1) % 256, b"", counter + 1, k, ctx),
            frame.encode(frame.T_HEARTBEAT, 0, b"", counter + 2, k, ctx),
            frame.encode(frame.T_HELLO, 0, frame.encode_hello(
                link.PROTOCOL_MAJOR, 0, 0x0BADF00D, a.session, frame.MAX_PAYLOAD, 4, frame.ROLE_BRIDGE,
                0, "forger"), counter + 3, k, frame.context(frame.ROLE_BRIDGE, 0x0BADF00D, a.session))]


def test_frames_forged_without_the_key_change_nothing() -> None:
    # The fuzz bench's finding under CRC-16 alone: a CRC-valid DATA frame with the next sequence
    # number took a lock operation's place. With tags, nothing a forger makes reaches the engine.
    line = Line()
    line.run(500)
    line.a.send(b"op 1")
    line.b.send(b"result 0")
    for forged in _forgeries(line, bytes(32)) * 5:
        line.a.feed(b"\x00" + forged, line.now)
        line.b.feed(b"\x00" + forged, line.now)
    line.run(1000)
    assert line.got == {"a": [b"result 0"], "b": [b"op 1"]}
    assert line.a.stats["auth_errors"] == 20 and line.b.stats["auth_errors"] == 20
    assert [k for k, _ in line.events["a"] if k != link.EV_DATA] == [link.EV_UP]
    assert line.a.stats["retransmits"] == line.b.stats["retransmits"] == 0


def test_a_recorded_frame_played_back_is_refused_even_when_its_sequence_number_comes_round() -> None:
    # Sequence numbers wrap at 256: a recorded "unlock" would be the expected frame again 256
    # frames later. The tag covers a counter that never repeats within a session.
    line = Line()
    line.run(200)
    line.a.send(b"unlock front-door")
    line.run(100)
    recorded = [f for f in line.wire["a"] if frame.decode(f[:-1])[0] == frame.T_DATA][-1]
    for i in range(255):
        while line.a.pending() >= line.a.max_queue:
            line.step()
        line.a.send(b"status %d" % i)
    line.run(3000)
    assert line.b._rx_expect == frame.decode(recorded[:-1])[1], "the recorded seq is expected next"
    line.b.feed(b"\x00" + recorded, line.now)
    line.run(300)
    assert line.got["b"].count(b"unlock front-door") == 1
    assert line.b.stats["replays"] == 1


def test_a_frame_reflected_back_to_its_sender_is_refused() -> None:
    line = Line()
    line.run(200)
    line.a.send(b"op")
    line.run(100)
    written = line.wire["a"]  # its HELLOs and the DATA frame
    assert len(written) >= 3
    for f in written:
        line.a.feed(b"\x00" + f, line.now)
    line.run(100)
    assert line.got["a"] == []
    assert line.a.stats["auth_errors"] == len(written)


def test_peers_with_different_keys_never_come_up_and_count_why() -> None:
    line = Line(b_key=bytes(32))
    line.run(3000)
    assert line.a.state == line.b.state == link.DOWN
    assert line.a.stats["auth_errors"] >= 5 and line.b.stats["auth_errors"] >= 5
    assert line.events == {"a": [], "b": []}


def test_a_peer_of_protocol_1_is_named_but_changes_nothing() -> None:
    # Protocol 1 frames had no counter or tag: its HELLO cannot verify, but its major is where it
    # always was, so the application can say "flash matching firmware" instead of "wrong key".
    end = link.Link(frame.ROLE_HUB, "hubd", 0, KEY)
    v1_body = frame.encode_hello(1, 0, 0x0B0B0B0B, 0, frame.MAX_PAYLOAD, 4, frame.ROLE_BRIDGE,
                                 frame.HELLO_ANSWER_ME, "0.9.0")
    raw = bytes([frame.T_HELLO, 0]) + v1_body
    v1_frame = cobs.encode(raw + crc16(raw).to_bytes(2, "big")) + b"\x00"
    end.feed(v1_frame * 3, 10)
    assert end.events() == [(link.EV_FOREIGN, 1)] * 3
    assert end.state == link.DOWN and end.peer is None
    assert end.stats["foreign_hellos"] == 3 and end.stats["auth_errors"] == 0


def test_a_session_whose_frame_counter_runs_out_starts_a_new_one_and_hands_back_its_queue() -> None:
    line = Line()
    line.run(200)
    old = line.a.session
    line.b.poll = lambda now: b""  # nothing is acked while the counter runs out
    line.a._tx_counter = frame.MAX_COUNTER - 2
    for i in range(3):
        line.a.send(b"late %d" % i)
    b_poll = link.Link.poll.__get__(line.b)
    line.run(50)
    line.b.poll = b_poll
    line.run(3000)
    assert line.a.session != old and line.a.state == line.b.state == link.UP
    resets = [v for k, v in line.events["a"] if k == link.EV_RESET]
    assert len(resets) == 1 and sorted(resets[0][0] + resets[0][1]) == [b"late 0", b"late 1", b"late 2"]
    assert line.a._tx_counter < 100
    line.a.send(b"after")
    line.run(300)
    assert line.got["b"][-1] == b"after"


def test_after_a_restart_nothing_queued_or_in_flight_reaches_the_peer_and_the_link_comes_back() -> None:
    # hubd answers everything out on a link that went silent as lost; were it resent when the
    # link is back, an op answered `incomplete` would move the lock after that answer.
    line = Line()
    line.run(200)
    line.drop = 1.0  # the cable is pulled: nothing crosses either way
    line.a.send(b"unlock, then lost")
    line.run(line.a.dead_ms + 200)
    assert line.a.state == link.DOWN
    old = line.a.session
    assert line.a.restart(line.now) == [b"unlock, then lost"]
    assert line.a.session != old and line.a.pending() == 0
    line.drop = 0.0
    line.run(4000)
    assert line.a.state == line.b.state == link.UP
    assert line.got["b"] == [], "nothing of the old session arrives"
    assert [v for k, v in line.events["b"] if k == link.EV_RESET], "the bridge sees a restarted hubd"
    line.a.send(b"after")
    line.b.send(b"to the new hubd")
    line.run(500)
    assert line.got["b"] == [b"after"] and line.got["a"][-1] == b"to the new hubd"


# -- bulk: the LTE uplink's bytes go after every message ------------------------------------

def _frames_in_order(line: Line, name: str) -> list[bytes]:
    """The DATA payloads `name` wrote on the line, in order, first writes only."""
    seen: list[bytes] = []
    for block in line.wire[name]:
        ftype, _seq, _counter, body, _raw = frame.decode(block[:-1])
        if ftype == frame.T_DATA and bytes(body) not in seen:
            seen.append(bytes(body))
    return seen


def test_a_message_overtakes_queued_bulk_and_waits_for_at_most_bulk_window_frames() -> None:
    line = Line()
    line.a.max_bulk = 8
    line.run(100)
    bulk = [b"\x01stream %d" % n for n in range(8)]
    for payload in bulk:
        line.a.send(payload)
    line.step()  # the stream is flowing: some delivered, bulk_window more on their way
    before = len(_frames_in_order(line, "a"))
    assert 0 < before < len(bulk)
    line.a.send(b'{"m":"alarm"}')  # queued behind what is left of the stream
    line.run(500)
    after = _frames_in_order(line, "a")[before:]
    assert after.index(b'{"m":"alarm"}') <= line.a.bulk_window, after
    assert sorted(line.got["b"]) == sorted(bulk + [b'{"m":"alarm"}'])


def test_bulk_never_takes_the_whole_window() -> None:
    line = Line()
    line.run(100)
    line.b.poll = lambda now: b""  # nothing is acked: what is in flight stays there
    for n in range(line.a.max_bulk):
        line.a.send(b"\x01%d" % n)
    line.step()
    assert line.a._bulk_in_flight() == line.a.bulk_window
    assert line.a.pending() == 0, "pending() counts messages, not bulk"
    for n in range(3):
        line.a.send(b'{"n":%d}' % n)
    line.step()
    assert line.a.pending() == 3
    assert len(line.a._unacked) == line.a.window, "messages take the slots bulk left free"


def test_the_bulk_queue_is_bounded_and_says_its_room() -> None:
    end = link.Link(frame.ROLE_HUB, "x", 0, KEY, max_bulk=2)
    assert end.bulk_room() == 2
    end.send(b"\x01a")
    end.send(b"\x01b")
    assert end.bulk_room() == 0
    with pytest.raises(link.LinkFull):
        end.send(b"\x01c")
    end.send(b'{"still":"fine"}')  # messages have their own bound


@pytest.mark.parametrize("bad", [0, 4, 5])
def test_bulk_window_must_leave_a_message_slot(bad: int) -> None:
    with pytest.raises(ValueError):
        link.Link(frame.ROLE_HUB, "x", 0, KEY, window=4, bulk_window=bad)


def test_bulk_is_dropped_not_handed_back_when_the_peer_restarts() -> None:
    line = Line()
    line.run(100)
    line.b.poll = lambda now: b""  # the bridge dies: nothing is acked
    line.a.send(b"\x01in flight")
    line.a.send(b'{"m":"alarm"}')
    line.a.send(b"\x01queued 1")
    line.a.send(b"\x01queued 2")
    line.a.send(b"\x01queued 3")
    line.run(line.a.dead_ms + 500)
    line.b = link.Link(frame.ROLE_BRIDGE, "fw-test", line.now, KEY)
    line.got["b"] = []
    line.run(1000)
    resets = [v for k, v in line.events["a"] if k == link.EV_RESET]
    assert resets == [([b'{"m":"alarm"}'], [])], "only the message is handed back"
    assert line.a.stats["bulk_dropped"] == 4
    assert line.got["b"] == []
    assert line.a.bulk_room() == line.a.max_bulk


def test_a_stream_of_bulk_arrives_whole_and_in_order_over_a_noisy_line() -> None:
    line = Line(seed=3, corrupt=0.05, drop=0.05, truncate=0.05)
    line.run(100)
    sent = []
    n = 0
    while n < 60:
        while line.a.bulk_room() and n < 60:
            payload = b"\x01" + bytes([n]) * 200
            line.a.send(payload)
            sent.append(payload)
            n += 1
        line.step()
    line.run(5000)
    assert line.got["b"] == sent

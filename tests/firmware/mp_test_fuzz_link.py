"""Fuzzing the serial link's frames and engine inside MicroPython: whatever bytes arrive, a frame
decodes or raises FrameError, and Link.feed() never raises (tests/firmware/fuzz.py: FUZZ_SEED)."""

import fuzz
from fuzz import chain, fail, mutants, noise, rand, rbytes
from wire import frame, link, messages
from wire.hmac_sha256 import Key

HUB_SESSION = 0x1A2B3C4D
BRIDGE_SESSION = 0x0BADCAFE
KEY = b"K" * 32  # the fuzzed link's key: the frames below are what a hubd gone wrong could send
_KEY = Key(KEY)
HUB_CTX = frame.context(frame.ROLE_HUB, HUB_SESSION, BRIDGE_SESSION)
_counter = [1]


def _next():
    _counter[0] += 1
    return _counter[0]


def _hello(session=HUB_SESSION, peer=BRIDGE_SESSION, major=link.PROTOCOL_MAJOR,
           max_payload=frame.MAX_PAYLOAD, window=4, flags=0, version="hubd 0.1.0"):
    return frame.encode_hello(major, 0, session, peer, max_payload, window, frame.ROLE_HUB, flags,
                              version)


def _signed(ftype, seq, body=b""):
    return frame.encode(ftype, seq, body, _next(), _KEY, HUB_CTX)


def _hello_frame(session=HUB_SESSION, peer=BRIDGE_SESSION, **kw):
    return frame.encode(frame.T_HELLO, 0, _hello(session, peer, **kw), _next(), _KEY,
                        frame.context(frame.ROLE_HUB, session, peer))


def _valid_frames():
    write = messages.make(messages.BLE_WRITE, 7, 1, 3, "0102", True, 2000)
    return [_signed(frame.T_DATA, 0, write), _signed(frame.T_DATA, 200, b"x" * 512),
            _signed(frame.T_ACK, 3), _signed(frame.T_HEARTBEAT, 0), _hello_frame(),
            _signed(frame.T_DATA, 1, b"")]


def _check_decode(block):
    try:
        ftype, seq, counter, body, raw = frame.decode(block)
    except frame.FrameError:
        return
    except Exception as e:  # noqa: BLE001 - anything else is the failure we look for
        raise AssertionError(fail(block, "raised %r" % e))
    # What decodes is a frame we could have sent: it encodes again and decodes the same.
    if not 0 < counter:
        return  # a counter of 0 is never sent; the link refuses it as a replay
    again = frame.decode(frame.encode(ftype, seq, body, counter, _KEY, HUB_CTX)[:-1])[:4]
    assert again == (ftype, seq, counter, body), fail(block, "decoded to %r" % (again,))
    assert len(raw) == len(body) + frame.HEADER_SIZE + frame.TRAILER_SIZE, fail(block, "raw")


def test_frame_decode_takes_any_block():
    fuzz.start()
    for block in noise(200, 80):
        _check_decode(block)
    for block in (rbytes(frame.MAX_ENCODED + 1 + rand(600)), b""):
        _check_decode(block)
    for valid in _valid_frames():
        for block in mutants(valid[:-1], 60):
            _check_decode(block)


def test_decode_hello_takes_any_body():
    fuzz.start()
    special = [_hello(max_payload=1), _hello(max_payload=0), _hello(window=0), _hello(session=0),
               _hello(major=255), _hello(version="v" * 40), _hello() + b"\xff\xfe"]
    for body in chain(noise(150, 60), mutants(_hello(), 250), special):
        try:
            hello = frame.decode_hello(body)
        except frame.FrameError:
            continue
        except Exception as e:  # noqa: BLE001
            raise AssertionError(fail(body, "raised %r" % e))
        assert hello["max_payload"] >= frame.MAX_PAYLOAD and hello["session"] and \
            hello["window"] and len(hello["version"].encode()) <= frame.HELLO_VERSION_MAX, \
            fail(body, "accepted as %r" % hello)


def _up_link():
    end = link.Link(frame.ROLE_BRIDGE, "fw", 0, KEY, session=BRIDGE_SESSION)
    end.feed(_hello_frame(), 0)
    assert end.state == link.UP
    while end.poll(0):
        pass
    return end


def _parts():
    """Valid frames, hostile HELLOs, mutated frames and noise, in a random order."""
    hostile = [_hello_frame(max_payload=1), _hello_frame(major=link.PROTOCOL_MAJOR + 1),
               _hello_frame(session=HUB_SESSION + 1), _hello_frame(major=1),
               _hello_frame(peer=0, flags=frame.HELLO_ANSWER_ME), _hello_frame(window=255),
               _hello_frame(version="\u00e9" * 16)]
    parts = _valid_frames() + hostile
    parts += [m + b"\x00" for m in mutants(_valid_frames()[rand(6)][:-1], 30)]
    parts += list(noise(20, 100)) + [b"\x01" * (frame.MAX_ENCODED + 50)]
    while parts:
        yield parts.pop(rand(len(parts)))


def test_link_feed_never_raises_and_a_full_payload_still_goes_out():
    fuzz.start()
    for round_ in range(10):
        end = _up_link()
        now = 0
        for data in _parts():
            i = 0
            while i < len(data):  # as the line delivers it: in pieces of any size
                n = 1 + rand(200)
                now += 10
                try:
                    end.feed(data[i:i + n], now)
                    while end.poll(now):
                        pass
                    events = end.events()
                except Exception as e:  # noqa: BLE001
                    raise AssertionError(fail(data, "round %d: feed/poll raised %r" % (round_, e)))
                i += n
                for kind, value in events:
                    assert kind in (link.EV_DATA, link.EV_UP, link.EV_DOWN, link.EV_RESET,
                                    link.EV_INCOMPATIBLE, link.EV_FOREIGN), fail(data, "event %r" % kind)
                    if kind == link.EV_DATA:
                        assert len(value) <= frame.MAX_PAYLOAD, fail(data, "a payload too long")
                assert len(end._rxbuf) <= frame.MAX_ENCODED, fail(data, "the buffer grew")
        assert end.state in (link.UP, link.DOWN, link.INCOMPATIBLE)
        # Whatever a peer said (a HELLO offering 1 byte of payload among them), the application
        # can still queue a payload of the protocol's size.
        try:
            end.send(b"p" * frame.MAX_PAYLOAD)
        except link.LinkFull:
            pass
        except Exception as e:  # noqa: BLE001
            raise AssertionError(fail(b"", "round %d: send after the stream raised %r"
                                      % (round_, e)))


def test_a_hello_offering_one_byte_of_payload_is_dropped():
    fuzz.start()
    end = _up_link()
    errors = end.stats["framing_errors"]
    end.feed(_hello_frame(session=HUB_SESSION + 9, max_payload=1), 5)
    assert end.stats["framing_errors"] == errors + 1
    assert end.peer["session"] == HUB_SESSION and end.state == link.UP
    end.send(b"p" * frame.MAX_PAYLOAD)

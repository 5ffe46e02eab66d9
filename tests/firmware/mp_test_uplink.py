"""firmware/uplink.py's own rules inside MicroPython, without a modem's answers: which hosts go
into AT+QIOPEN, hubd's window, and what the host link's events and the modem's URCs do to the
socket's state. The whole uplink against the simulated modem: tests/firmware/test_uplink.py."""

import asyncio

import lte
import uplink
from uplink_host import Host
from wire import link
from wire.uplink import MAX_CHUNK, WINDOW, data


def _open_uplink():
    host = Host()
    up = uplink.Uplink(lte.Lte(None, "internet.m2m"), host)
    up.open = True  # as after +QIOPEN: 1,0
    return up, host


def test_hosts_that_could_break_the_at_command_are_refused():
    for good in ("broker.example", "10.0.0.1", "a", "x" * 63):
        assert uplink.host_ok(good), good
    for bad in ("", 'bro"ker', "a,b", "a;b", "a b", "x" * 64, "br\u00f6ker", "a\r\nAT", None, 5):
        assert not uplink.host_ok(bad), bad


def test_hubds_window_is_kept_and_one_byte_more_ends_the_socket():
    up, _ = _open_uplink()
    chunk = b"c" * MAX_CHUNK
    for _ in range(WINDOW // MAX_CHUNK):
        up.on_data(data(chunk))
    assert up._held == (WINDOW // MAX_CHUNK) * MAX_CHUNK and up._ended is None
    up.on_data(data(b"d" * (WINDOW - up._held)))
    assert up._held == WINDOW and up._ended is None  # exactly the window: allowed
    up.on_data(data(b"e"))
    assert up._ended == "error" and up._held == 0 and not up._tx


def test_bytes_for_a_socket_that_is_not_open_are_dropped():
    up, _ = _open_uplink()
    up.open = False
    up.on_data(data(b"late"))
    up.on_data(b"\x01")  # a DATA payload with no bytes: nothing
    assert up._held == 0 and not up._tx


def test_the_modems_urcs_end_the_socket_with_their_why():
    up, _ = _open_uplink()
    up.urc("recv")
    assert up._more and up._ended is None
    up.urc("closed")  # the peer's last bytes are read first
    assert up._eof and up._more and up._ended is None
    up, _ = _open_uplink()
    up.urc("pdpdeact")
    assert up._ended == "network"
    up, _ = _open_uplink()
    up.open = False
    up.urc("pdpdeact")  # no socket: nothing to end
    assert up._ended is None


def test_the_host_link_going_down_is_told_to_the_next_session_once():
    up, host = _open_uplink()
    up.on_data(data(b"held"))
    host.link.state = link.DOWN
    up.on_link(link.EV_DOWN)
    up.on_link(link.EV_RESET)
    assert up._ended == "host_link" and up._held == 0 and host.sent == []
    up.open = False  # the task closed the socket (AT+QICLOSE=1) meanwhile
    up._ended = None
    up.on_link(link.EV_UP)  # the link reports up, but its state is still down: not yet
    assert host.sent == []
    host.link.state = link.UP
    up.on_link(link.EV_UP)
    up.on_link(link.EV_UP)
    assert host.sent == [{"m": "uplink_state", "state": "closed", "why": "host_link"}]


def test_a_link_event_with_no_socket_and_no_request_says_nothing():
    up, host = _open_uplink()
    up.open = False
    up.on_link(link.EV_DOWN)
    up.on_link(link.EV_UP)
    assert host.sent == [] and up._tell is None


def test_hubds_requests_keep_the_latest():
    up, _ = _open_uplink()
    up.on_message({"m": "uplink_open", "host": "a.example", "port": 1})
    up.on_message({"m": "uplink_close"})
    assert up._request == "close"
    up.on_message({"m": "uplink_open", "host": "b.example", "port": 2})
    assert up._request == ("b.example", 2)


def test_closed_by_the_peer_waits_until_the_streams_last_bytes_have_left():
    # Messages overtake waiting bulk on the link: "closed" sent while the peer's last bytes
    # wait would reach hubd first, and hubd would drop them with the stream.
    up, host = _open_uplink()

    async def closed(cid):
        return None

    up._lte.close = closed
    up._eof = True  # the modem said "closed" and its buffer was read empty
    host.waiting = True
    asyncio.run(up._round())
    assert up.open and not host.sent, host.sent
    host.waiting = False
    asyncio.run(up._round())
    assert not up.open
    assert host.sent == [{"m": "uplink_state", "state": "closed", "why": "peer"}], host.sent


def test_a_recv_that_comes_during_an_empty_read_is_kept():
    # The BG95 says "recv" once until its buffer was read empty: lost, the stream stalls.
    up, host = _open_uplink()

    async def read(cid, n):
        up.urc("recv")  # new bytes came after the modem answered 0, before the read returned
        return None, b""

    up._lte.read = read
    up._more = True
    asyncio.run(up._read())
    assert up._more, "the recv during the read was overwritten"

"""The hubd <-> bridge serial link: a sans-IO protocol engine both ends run.

The engine owns no file, socket or clock. Its driver (firmware/hostlink.py on the bridge,
hubd/link/serial_port.py on the hub) feeds it the bytes read from the line with `feed(data, now)`, writes what
`poll(now)` returns, sleeps at most `next_poll_ms(now)` and drains `events()`. `now` is a
millisecond tick (time.ticks_ms() on MicroPython, a monotonic clock on CPython).

What it guarantees (docs/serial-link.md says how):
- frames are checked by CRC and resynchronised on 0x00 after line noise;
- every frame is authenticated: a tag made with the link key both ends share, bound to both
  sessions and to a per-session frame counter that only goes up, so a frame nobody with the key
  made, or one replayed, reflected or carried over from another session, is dropped and counted
  (auth_errors, replays) before it can touch sequence numbers, acks or sessions;
- application payloads arrive once and in order while a session lasts (go-back-N: sequence
  numbers, cumulative acks, retransmission after `rto_ms`, at most `window` frames in flight);
- a HELLO exchange carries protocol and software versions; a peer with another protocol major is
  refused (state INCOMPATIBLE); a peer that restarted is detected by its new session id, and
  every payload queued for the old session is handed back in a RESET event, never delivered to
  the new one: those in flight (the old peer may or may not have received them) and those not yet
  sent (written for a peer that is gone: an alarm queued for a hubd that died may have been
  delivered over LTE since, so only the application can tell what is still worth sending);
- heartbeats keep an idle link supervised: silence for `dead_ms` takes the link DOWN;
- **bulk** payloads (first byte BULK: the LTE uplink's bytes, wire/uplink.py) go after every
  other payload: one enters the window only when no message waits and then at most
  `bulk_window` of them are in flight, so a message (an alarm, a lock operation) queued behind a
  stream of bulk waits for at most `bulk_window` frames already on the line. A bulk payload is
  never handed back (its stream belonged to the session that ended) but dropped and counted
  (bulk_dropped).
"""

import os

from wire import frame
from wire.hmac_sha256 import Key

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython: a monotonic millisecond clock does not wrap

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b


PROTOCOL_MAJOR = 2  # 2: frames carry a counter and a tag (1: a CRC only)
PROTOCOL_MINOR = 0

# Link states.
DOWN = "down"
UP = "up"
INCOMPATIBLE = "incompatible"

# Event kinds returned by events(): (kind, value).
EV_DATA = "data"  # value: the payload (bytes)
EV_UP = "up"  # value: the peer's HELLO as a dict (versions, session, role)
EV_DOWN = "down"  # value: the reason, "silent" or "peer_reset"
EV_RESET = "reset"  # value: (in flight: the old peer may or may not have them, never sent)
EV_INCOMPATIBLE = "incompatible"  # value: the peer's HELLO as a dict
# A HELLO that does not verify but claims another protocol major (value: that major): most
# likely a peer of an older protocol (1 had no tags), possibly a forgery, so it changes nothing
# but what the application logs.
EV_FOREIGN = "foreign"

_SEQ_MOD = 256
BULK = 0x01  # a payload starting with this byte is bulk; messages (JSON) start with "{"


def is_bulk(payload):
    """Whether a payload is bulk (the one test of BULK both ends and every layer use)."""
    return len(payload) > 0 and payload[0] == BULK


class LinkFull(Exception):
    """The send queue is at its bound; the caller must wait or refuse the work."""


def _new_session():
    while True:
        b = os.urandom(4)
        s = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
        if s:
            return s


class Link:
    """One end of the link. See the module docstring for how a driver uses it."""

    def __init__(self, role, version, now, key, window=4, rto_ms=300, hello_ms=500,
                 heartbeat_ms=1000, dead_ms=3500, max_queue=32, session=None, bulk_window=2,
                 max_bulk=4):
        if not 0 < window < _SEQ_MOD // 2:
            raise ValueError("window must be 1..127")
        if len(key) != frame.KEY_SIZE:
            raise ValueError("the link key must be %d bytes" % frame.KEY_SIZE)
        self.role = role
        self._peer_role = frame.ROLE_BRIDGE if role == frame.ROLE_HUB else frame.ROLE_HUB
        self._key = Key(key)
        self._tx_counter = 0  # the last frame counter sent in this session
        self._rx_counter = 0  # the last frame counter accepted from the peer's session
        self._rx_ctx = None  # what the current peer's frames are bound to (frame.context)
        self._exhausted = False  # the counter reached its end: poll() takes a new session
        self.version = version
        self.session = session or _new_session()
        self.window = window
        self.rto_ms = rto_ms
        self.hello_ms = hello_ms
        self.heartbeat_ms = heartbeat_ms
        self.dead_ms = dead_ms
        self.max_queue = max_queue
        if not 0 < bulk_window < window:
            raise ValueError("bulk_window must be 1..window - 1")
        self.bulk_window = bulk_window
        self.max_bulk = max_bulk
        self.state = DOWN
        self.peer = None  # the peer's last HELLO (dict) once one arrived
        self.stats = {
            "frames_tx": 0, "frames_rx": 0, "bytes_rx": 0, "crc_errors": 0,
            "framing_errors": 0, "retransmits": 0, "duplicates": 0, "out_of_order": 0,
            "peer_resets": 0, "payloads_tx": 0, "payloads_rx": 0, "hellos_ignored": 0,
            "auth_errors": 0, "replays": 0, "foreign_hellos": 0, "bulk_dropped": 0,
        }
        self._tx_next = 0
        self._unacked = []  # [(seq, payload)], oldest first
        self._queue = []  # payloads waiting for the link and a window slot
        self._bulk = []  # bulk payloads waiting, behind every message
        self._rx_expect = 0
        self._rxbuf = bytearray()
        self._rx_discard = False  # dropping an oversized block until the next delimiter
        # Frames to write, each its own small buffer: a window of four 520-byte frames in one
        # growing buffer asked the bridge's fragmented heap for 2 KB in one piece (a MemoryError
        # under line noise). A leading 0x00 flushes line noise at the peer.
        self._out = [frame.DELIMITER]
        self._events = []
        self._last_rx = now
        self._last_tx = now
        self._rto_at = None
        self._hello_at = now
        self._answer_peer = False

    # -- application side ---------------------------------------------------------------

    def send(self, payload):
        """Queue one application payload for reliable, in-order delivery; a bulk one (first
        byte BULK) behind every message, at most `max_bulk` of them waiting."""
        # A peer's HELLO never offers less (frame.decode_hello), so its limit is not checked.
        if len(payload) > frame.MAX_PAYLOAD:
            raise ValueError("payload of %d bytes exceeds %d" % (len(payload), frame.MAX_PAYLOAD))
        if is_bulk(payload):
            if len(self._bulk) >= self.max_bulk:
                raise LinkFull("%d bulk payloads already waiting" % self.max_bulk)
            self._bulk.append(bytes(payload))
            return
        if len(self._queue) + len(self._unacked) >= self.max_queue:
            raise LinkFull("%d payloads already waiting" % self.max_queue)
        self._queue.append(bytes(payload))

    def pending(self):
        """How many messages (not bulk) are queued or in flight."""
        return len(self._queue) + len(self._unacked) - self._bulk_in_flight()

    def bulk_room(self):
        """How many more bulk payloads send() takes now."""
        return self.max_bulk - len(self._bulk)

    def _bulk_in_flight(self):
        n = 0
        for _, p in self._unacked:
            if is_bulk(p):
                n += 1
        return n

    def _lost(self):
        # What this session had queued or in flight, as (in flight, never sent), without bulk
        # (dropped and counted); the queues are emptied.
        n = len(self._unacked) + len(self._bulk)
        in_flight = [p for _, p in self._unacked if not is_bulk(p)]
        self.stats["bulk_dropped"] += n - len(in_flight)
        lost = (in_flight, self._queue)
        self._unacked = []
        self._queue = []
        self._bulk = []
        return lost

    def restart(self, now):
        """Take a new session as a restart would, discarding what is queued or in flight, and
        return it (a list of payloads, oldest first). The peer sees a new session: it hands back
        what it had queued for this end and delivers none of it, and none of this end's old
        payloads reaches it. For a driver that has answered everything in flight as lost (hubd,
        when the link went down) and must not have it arrive late when the link comes back."""
        in_flight, unsent = self._new_own_session("restarted", now)
        return in_flight + unsent

    def _new_own_session(self, reason, now):
        # This end starts a new session as a restart would; returns (in flight, never sent).
        lost = self._lost()
        self._rto_at = None
        self._tx_next = 0
        self._rx_expect = 0
        self.session = _new_session()
        self._tx_counter = 0
        self._exhausted = False
        if self.peer is not None:
            self._set_peer(self.peer)  # the same peer, bound to our new session
        if self.state == UP:
            self._events.append((EV_DOWN, reason))
        if self.state != INCOMPATIBLE:
            self.state = DOWN
        self._hello_at = now
        self._answer_peer = True
        return lost

    def events(self):
        """Return and clear the events since the last call."""
        ev = self._events
        self._events = []
        return ev

    # -- line side ----------------------------------------------------------------------

    def feed(self, data, now):
        """Take bytes read from the line (bytes). Never raises: whatever is not a valid frame is
        dropped and counted (crc_errors, framing_errors)."""
        self.stats["bytes_rx"] += len(data)
        start = 0
        n = len(data)
        while start < n:
            end = data.find(frame.DELIMITER, start)
            if end < 0:
                self._buffer(data[start:])
                return
            self._buffer(data[start:end])
            self._end_of_block(now)
            start = end + 1

    def poll(self, now):
        """Run the timers and return the next frame to write on the line (bytes; empty when there
        is nothing to write). One frame per call: call again while it returns one."""
        if self._exhausted:
            self._end_session(now)
        if self.state == UP:
            if ticks_diff(now, self._last_rx) >= self.dead_ms:
                self._go_down("silent", now)
            else:
                self._fill_window(now)
                if self._rto_at is not None and ticks_diff(now, self._rto_at) >= 0:
                    self._retransmit(now)
                if ticks_diff(now, self._last_tx) >= self.heartbeat_ms:
                    self._emit(frame.T_HEARTBEAT, 0, b"", now)
        if self.state != UP or self._answer_peer:
            if self._answer_peer or ticks_diff(now, self._hello_at) >= 0:
                self._send_hello(now)
        return self._out.pop(0) if self._out else b""

    def next_poll_ms(self, now):
        """Milliseconds until poll() has timer work to do (0: call it now)."""
        if self._out or self._answer_peer:
            return 0
        if self.state != UP:
            return max(0, ticks_diff(self._hello_at, now))
        if self._queue and len(self._unacked) < self.window or self._bulk_may_go():
            return 0
        wait = min(self.heartbeat_ms - ticks_diff(now, self._last_tx),
                   self.dead_ms - ticks_diff(now, self._last_rx))
        if self._rto_at is not None:
            wait = min(wait, ticks_diff(self._rto_at, now))
        return max(0, wait)

    # -- internals ----------------------------------------------------------------------

    def _buffer(self, chunk):
        if self._rx_discard:
            return
        if len(self._rxbuf) + len(chunk) > frame.MAX_ENCODED:
            self._rx_discard = True
            self._rxbuf = bytearray()
            return
        self._rxbuf.extend(chunk)

    def _end_of_block(self, now):
        block = self._rxbuf
        self._rxbuf = bytearray()
        if self._rx_discard:
            self._rx_discard = False
            self.stats["framing_errors"] += 1
            return
        if not block:
            return  # back-to-back delimiters: idle line or a flush
        try:
            ftype, seq, counter, body, raw = frame.decode(block)
        except frame.CrcError:
            self.stats["crc_errors"] += 1
            return
        except frame.FrameError:
            self.stats["framing_errors"] += 1
            return
        self.stats["frames_rx"] += 1
        if ftype == frame.T_HELLO:
            self._on_hello(body, counter, raw, now)
            return
        if self.state != UP:
            return  # no session confirmed: the peer resends once it is
        if not frame.authentic(raw, self._key, self._rx_ctx):
            self.stats["auth_errors"] += 1
            return
        if counter <= self._rx_counter:
            self.stats["replays"] += 1
            return
        self._rx_counter = counter
        if ftype == frame.T_DATA:
            self._last_rx = now
            self._on_data(seq, body, now)
        elif ftype == frame.T_ACK:
            self._last_rx = now
            self._on_ack(seq, now)
        else:
            self._last_rx = now

    def _on_hello(self, body, counter, raw, now):
        try:
            hello = frame.decode_hello(body)
        except frame.FrameError:
            hello = None
        if hello is None or not frame.authentic(
                raw, self._key, frame.context(self._peer_role, hello["session"],
                                              hello["peer_session"])):
            major = frame.hello_major(body)
            if major is not None and major != PROTOCOL_MAJOR:
                self.stats["foreign_hellos"] += 1
                self._events.append((EV_FOREIGN, major))
            elif hello is None:
                self.stats["framing_errors"] += 1
            else:
                self.stats["auth_errors"] += 1
            return
        if (self.peer is not None and hello["session"] == self.peer["session"]
                and counter <= self._rx_counter):
            self.stats["replays"] += 1
            return
        if (self.state == UP and (hello["major"] != PROTOCOL_MAJOR
                                  or hello["session"] != self.peer["session"])
                and ticks_diff(now, self._last_rx) < self.hello_ms * 3):
            # Another peer, or another protocol, while the current peer still talks: a restarted
            # or re-flashed peer has gone quiet first (its old session says nothing more), so
            # this is a damaged or forged frame that passed the CRC. Believed once the current
            # peer has been silent for three HELLO periods.
            self.stats["hellos_ignored"] += 1
            return
        self._rx_counter = counter
        if hello["major"] != PROTOCOL_MAJOR:
            if self.state != INCOMPATIBLE:
                self.state = INCOMPATIBLE
                self._events.append((EV_INCOMPATIBLE, hello))
            self._set_peer(hello)  # periodic HELLOs go on, so a re-flashed peer is found
            return
        known = self.peer is not None and self.peer["session"] == hello["session"] \
            and self.state != INCOMPATIBLE
        if not known:
            if self.peer is not None and self.state != INCOMPATIBLE:
                self._hand_back("peer_reset")
            self._set_peer(hello)
            self._rx_expect = 0
            if self.state == INCOMPATIBLE:
                self.state = DOWN
        else:
            self._set_peer(hello)
        if hello["peer_session"] != self.session:
            self._answer_peer = True  # the peer does not know this session yet
            return
        if hello["flags"] & frame.HELLO_ANSWER_ME:
            self._answer_peer = True
        self._last_rx = now
        if self.state != UP:
            self.state = UP
            self._last_tx = now
            self._events.append((EV_UP, hello))
            if self._unacked:
                self._retransmit(now)

    def _set_peer(self, hello):
        self.peer = hello
        self._rx_ctx = frame.context(self._peer_role, hello["session"], self.session)

    def _hand_back(self, reason):
        # The session that carried what is queued is over (the peer's, or ours): hand it all back.
        self.stats["peer_resets"] += 1
        lost = self._lost()
        self._rto_at = None
        self._tx_next = 0
        if self.state == UP:
            self.state = DOWN
            self._events.append((EV_DOWN, reason))
        self._events.append((EV_RESET, lost))

    def _end_session(self, now):
        # 2**32 frames sent in one session (months at the line's top rate): a frame counter must
        # never repeat under one key and session, so this end starts a new session, as a restart
        # would; the peer sees a new session and both hand back what was queued.
        self.stats["peer_resets"] += 1
        self._events.append((EV_RESET, self._new_own_session("session_end", now)))

    def _on_data(self, seq, body, now):
        if seq == self._rx_expect:
            self._rx_expect = (seq + 1) % _SEQ_MOD
            self.stats["payloads_rx"] += 1
            self._events.append((EV_DATA, bytes(body)))
        elif (self._rx_expect - seq) % _SEQ_MOD <= self.window * 2:
            self.stats["duplicates"] += 1  # our ACK was lost: say again what we have
        else:
            self.stats["out_of_order"] += 1
        self._emit(frame.T_ACK, (self._rx_expect - 1) % _SEQ_MOD, b"", now)

    def _on_ack(self, seq, now):
        if not self._unacked:
            return
        base = self._unacked[0][0]
        acked = (seq - base) % _SEQ_MOD + 1
        if acked > len(self._unacked):
            return  # an ack of something older than the window: nothing new
        del self._unacked[:acked]
        self._rto_at = ticks_add(now, self.rto_ms) if self._unacked else None
        self._fill_window(now)

    def _bulk_may_go(self):
        return self._bulk and not self._queue and len(self._unacked) < self.window \
            and self._bulk_in_flight() < self.bulk_window

    def _fill_window(self, now):
        while self._queue and len(self._unacked) < self.window or self._bulk_may_go():
            payload = (self._queue or self._bulk).pop(0)
            seq = self._tx_next
            self._tx_next = (seq + 1) % _SEQ_MOD
            self._unacked.append((seq, payload))
            self.stats["payloads_tx"] += 1
            self._emit(frame.T_DATA, seq, payload, now)
            if self._rto_at is None:
                self._rto_at = ticks_add(now, self.rto_ms)

    def _retransmit(self, now):
        for seq, payload in self._unacked:
            self.stats["retransmits"] += 1
            self._emit(frame.T_DATA, seq, payload, now)
        self._rto_at = ticks_add(now, self.rto_ms)

    def _go_down(self, reason, now):
        self.state = DOWN
        # HELLOs from now: an old _hello_at is more than half the tick period (6 days on the
        # chip) in the past after a long session, where ticks_diff would call it the future.
        self._hello_at = now
        self._events.append((EV_DOWN, reason))

    def _send_hello(self, now):
        peer_session = self.peer["session"] if self.peer is not None else 0
        flags = 0 if self.state == UP else frame.HELLO_ANSWER_ME
        body = frame.encode_hello(PROTOCOL_MAJOR, PROTOCOL_MINOR, self.session, peer_session,
                                  frame.MAX_PAYLOAD, self.window, self.role, flags, self.version)
        self._emit(frame.T_HELLO, 0, body, now)
        self._answer_peer = False
        self._hello_at = ticks_add(now, self.hello_ms)

    def _emit(self, ftype, seq, body, now):
        if self._tx_counter >= frame.MAX_COUNTER:
            self._exhausted = True  # not sent: a DATA frame stays in the window, handed back
            return
        self._tx_counter += 1
        peer_session = self.peer["session"] if self.peer is not None else 0
        ctx = frame.context(self.role, self.session, peer_session)
        self._out.append(frame.encode(ftype, seq, body, self._tx_counter, self._key, ctx))
        self.stats["frames_tx"] += 1
        self._last_tx = now

"""hubd's uplink: a TCP socket on the LTE modem (connect id 1) whose bytes hubd's MQTT client
sends and receives through the serial link, for a home without broadband (issue 16;
docs/second-path.md, "The uplink"; the wire: wire/uplink.py and wire/messages.py).

The bridge carries ciphertext (TLS runs between hubd and the broker) and keeps little of it:

- hubd -> modem: hubd's DATA chunks wait here until the one task of the uplink writes them with
  AT+QISEND (several chunks in one write, at most 1460 bytes, the BG95's limit); after SEND OK,
  uplink_ack tells hubd how many bytes the modem took. hubd has at most wire.uplink.WINDOW bytes
  unacknowledged: more is a protocol violation, and the socket is closed (why "error"). A full
  send buffer in the modem (SEND FAIL: the network is slower than the serial line) is waited
  out and tried again; the window stops hubd meanwhile.
- modem -> hubd: after +QIURC "recv" the task reads the modem (AT+QIRD, at most
  wire.uplink.MAX_CHUNK bytes at a time) until it holds nothing, but only while the host link
  has room for bulk (HostLink.bulk_room): the modem holds the rest, TCP's window slows the
  broker, and the bridge's heap holds at most the link's few bulk payloads.
- One task issues the uplink's AT commands, one at a time, so the second path's DC-09 exchange
  (an alarm) waits for at most the one uplink command in progress for each of its own (the
  modem's lock hands it over in turn: firmware/lte.py).
- Closing, on every cause, with uplink_state closed and its why: hubd asked ("hubd"), the peer
  ("peer") or the network ("network": the PDP context went) closed it, the modem failed a
  command ("timeout", "error"), the host link went down or hubd restarted ("host_link": the
  stream belonged to that session; the next session is told once the link is up again).

Imported on hubd's first uplink_* message (firmware/bridge.py): a bridge whose hubd never uses
LTE pays nothing for it.
"""

import asyncio

import heap
import log
import lte
import timed
import vital
from wire import link, messages
from wire.uplink import MAX_CHUNK, WINDOW, chunk, data

CID = 1  # the BG95 connect id of the uplink's socket (0 is the second path's)
MAX_SEND = 1460  # bytes in one AT+QISEND (the BG95's limit)
_FULL_RETRY_MS = 200  # after SEND FAIL (the modem's send buffer is full)
_FULL_GIVE_UP = 150  # SEND FAILs in a row (about 30 s of a modem taking nothing): closed

# Lte errors -> why the uplink is closed (wire.messages.UPLINK_WHY)
_WHY = {lte.E_TIMEOUT: "timeout", lte.E_NO_SIM: "no_sim", lte.E_NOT_REGISTERED: "not_registered",
        lte.E_PDP: "pdp_failed", lte.E_OPEN: "open_failed", lte.E_CLOSED: "peer"}


def host_ok(host):
    """Whether `host` may go into AT+QIOPEN's quotes: 1..63 printable ASCII characters without
    quotes, commas or semicolons, as firmware/config.py checks the second path's host."""
    if not isinstance(host, str) or not 0 < len(host) <= 63:
        return False
    for c in host:
        if not " " < c <= "~" or c in '",;':
            return False
    return True


class Uplink:
    """The uplink on `modem` (a started firmware.lte.Lte), for hubd at the other end of `host`
    (firmware.hostlink.HostLink: send, send_bulk, bulk_room). Call start() once."""

    def __init__(self, modem, host):
        self._lte = modem
        self._host = host
        self.cid = CID
        self.opened = asyncio.Event()  # +QIOPEN for our connect id (firmware/lte.py sets it)
        self.open_err = None
        self.open = False
        self._request = None  # hubd's latest: (host, port) to open, or "close"
        self._ended = None  # why the socket ended (a URC, a violation, the host link)
        self._tell = None  # a why to tell hubd once the host link is up
        self._tx = []  # hubd's chunks the modem has not taken, oldest first
        self._held = 0  # their bytes: what hubd has sent and not had acknowledged
        self._more = False  # the modem said it holds bytes for us ("recv") not yet read
        self._eof = False  # the peer closed ("closed"): once read empty, the socket ends
        self._full = 0  # SEND FAILs in a row
        self._cuts = 0  # host link sessions ended (DOWN or RESET): an open under way sees one
        self._wake = asyncio.Event()
        # No counters of its own: hubd counts the uplink's bytes (its health's LTE bytes a day),
        # and each violation and close is logged.
        modem.other = self

    def start(self):
        vital.start(self._run(), "the uplink")

    # -- from hubd (the host link's dispatch: never awaits) --------------------------------

    def on_message(self, msg):
        kind = msg["m"]
        if kind == messages.UPLINK_OPEN:
            self._request = (msg["host"], msg["port"])
        elif kind == messages.UPLINK_CLOSE:
            self._request = "close"
        self._wake.set()

    def on_data(self, payload):
        """A DATA payload from hubd (wire.uplink.data): the host link's on_bulk."""
        piece = chunk(payload)
        if not self.open or self._ended is not None or not piece:
            return  # for a socket that is gone: hubd hears closed (or has)
        if self._held + len(piece) > WINDOW:
            log.warn("uplink: hubd sent over its window (%d + %d bytes)"
                     % (self._held, len(piece)))
            self._ended = "error"
            self._tx, self._held = [], 0
        else:
            self._tx.append(piece)
            self._held += len(piece)
        self._wake.set()

    def on_link(self, kind):
        """The host link's events: DOWN or RESET end the socket's stream; UP tells the new
        session."""
        if kind == link.EV_DOWN or kind == link.EV_RESET:
            self._cuts += 1
            if self.open or self._request is not None:
                self._request = None
                if self.open:
                    self._ended = "host_link"
                self._tell = "host_link"
            self._tx, self._held = [], 0
        elif kind == link.EV_UP and not self.open:
            self._tell_host_link()
        self._wake.set()

    def _tell_host_link(self):
        # The socket the old session had is closed: the new one hears so once, when it is up.
        if self._tell is not None and self._host.link.state == link.UP:
            self._tell = None
            self._state("closed", "host_link")

    # -- from the modem (firmware/lte.py's reader: never awaits) ---------------------------

    def urc(self, kind):
        if kind == "recv":
            self._more = True
        elif kind == "closed":
            # The peer's last bytes may still be in the modem: read them, then close.
            self._eof = True
            self._more = True
        elif self.open and self._ended is None:
            self._ended = "network"  # the PDP context went, and with it what the modem held
        self._wake.set()

    # -- the task ---------------------------------------------------------------------------

    async def _run(self):
        while True:
            try:
                await self._round()
            except MemoryError:
                self._tx, self._held = [], 0
                heap.survive("uplink")
                await asyncio.sleep_ms(10)
            except Exception as e:  # a bug or a modem's surprise must not end the uplink
                log.error("uplink: %r" % (e,))
                if self.open:
                    self._ended = "error"
                await asyncio.sleep_ms(10)

    async def _round(self):
        req = self._request
        if req is not None:
            self._request = None
            if req == "close":
                await self._close("hubd")
            else:
                await self._open(req[0], req[1])
            return
        if self._ended is not None:
            why, self._ended = self._ended, None
            if self.open:
                await self._close(why)
            return
        if self._eof and not self._more and self.open:
            # Messages overtake waiting bulk on the link: "closed" goes once the peer's last
            # bytes have left the queue (those in flight arrive first, in order).
            if self._host.bulk_waiting():
                await asyncio.sleep_ms(10)
                return
            await self._close("peer")
            return
        if self.open and self._tx and not self._eof:
            await self._write()
        if self.open and self._ended is None and self._more and self._host.bulk_room() > 0:
            await self._read()
            return
        if self.open and self._tx and not self._full and not self._eof:
            return
        self._wake.clear()
        # Waiting for the link's bulk room, the modem's send buffer or hubd: the link tells
        # nothing when bulk leaves, so a short nap while the modem holds bytes for hubd.
        await timed.wait(self._wake, _FULL_RETRY_MS if self._tx else (10 if self._more else
                                                                      5000))

    async def _open(self, host, port):
        if self.open:
            await self._close(None)  # hubd reconnects: the old stream is over
        self._ended = None
        self._tell = None
        if not host_ok(host) or not 0 < port < 65536:
            log.warn("uplink: refused to open %r:%r" % (host, port))
            self._state("closed", "error")
            return
        cuts = self._cuts
        modem = self._lte
        err = None
        if not modem.pdp_up:
            err = await modem.attach()
            if err and modem.pdp_up:
                err = None  # the second path attached meanwhile (its QIACT=1 came first)
        if not err:
            self._more = False
            self._eof = False
            err = await modem.open(host, port, None, CID)
        if cuts != self._cuts:
            # The session that asked ended meanwhile: its socket is closed, and the next
            # session hears so, not of an open it did not ask for.
            self._tell = "host_link"
            if not err:
                self.open = True
                await self._close("host_link")
            else:
                self._tell_host_link()
            return
        if err:
            self._state("closed", _WHY.get(err, "error"))
            return
        self.open = True
        self._ended = None  # a URC for the socket's previous life is not this one's
        log.info("uplink: open to %s:%d" % (host, port))
        self._state("open", None)

    async def _close(self, why):
        was = self.open
        self.open = False
        self._more = False
        self._eof = False
        self._full = 0
        self._tx, self._held = [], 0
        await self._lte.close(CID)
        if why is not None and (was or why == "hubd"):
            log.info("uplink: closed (%s)" % why)
            if why == "host_link":
                self._tell = why  # said to the next session once the link is up
                self._tell_host_link()
            else:
                self._state("closed", why)

    async def _write(self):
        # As many whole chunks as one AT+QISEND takes (at least one: a chunk is <= 511 bytes).
        n = 0
        k = 0
        for c in self._tx:
            if n + len(c) > MAX_SEND:
                break
            n += len(c)
            k += 1
        tx = self._tx
        # The chunks as they are, written one after the other: a joined copy held up to 1460
        # bytes of heap more while the modem took them.
        err = await self._lte.send(tx[:k], CID)
        if err == lte.E_SEND:  # the modem's send buffer is full: wait for the network
            self._full += 1
            if self._full >= _FULL_GIVE_UP:
                self._ended = "network"
            return
        self._full = 0
        if err:
            if self._ended is None:
                self._ended = _WHY.get(err, "error")
            return
        if self._tx is tx:  # not dropped meanwhile (a violation, the host link)
            self._tx = tx[k:]
            self._held -= n
            self._host.send(messages.make(messages.UPLINK_ACK, n))

    async def _read(self):
        # Cleared before the read: a "recv" that comes while it runs (the modem's buffer was read
        # empty, then new bytes came) must survive it, or the stream stalls for good (the BG95
        # says "recv" once until its buffer is read empty).
        self._more = False
        err, got = await self._lte.read(CID, MAX_CHUNK)
        if err:
            if self._ended is None:
                self._ended = "peer" if self._eof else _WHY.get(err, "error")
            return
        if not got:
            return  # read empty: the modem says "recv" again for new bytes
        self._more = True  # there may be more: read until the modem says 0
        try:
            self._host.send_bulk(data(got))
        except link.LinkFull:  # room was checked: only a session that ended meanwhile
            log.warn("uplink: %d bytes for hubd dropped" % len(got))

    def _state(self, state, why):
        self._host.send(messages.make(messages.UPLINK_STATE, state, why))

"""The bridge's end of the serial link to hubd: wire.link driven over a machine.UART.

When hubd restarts, the link hands back what was queued for the old hubd (wire/link.py, RESET).
What never left the bridge is queued again for the new hubd (a device report, a health report),
but for alarm messages: the alarm flow sends its pending alarms again from the journal,
and one it has confirmed over LTE since must not reach hubd (and the centre) a second time; and
but for the Bluetooth proxy's (ble_*): they answer the old hubd's requests and tell of its
connections, which the bridge has dropped; and but for the uplink's (uplink_*): its socket was
the old hubd's (firmware/uplink.py tells the new one it is closed).

Besides messages the link carries bulk payloads (the uplink's bytes, wire/uplink.py): they reach
`on_bulk(payload)`, never wire.messages.decode, and go out with send_bulk() behind every message,
while bulk_room() says there is room.
"""

import time

import asyncio

from micropython import const

import heap
import log
import timed
import vital
from wire import frame, link, messages

_READ_CHUNK = const(128)
_OVERFLOW_MAX = const(32)
_SPARE = const(2)  # messages queued beyond the window before busy(): the next ones are ready
# Queued for a hubd that restarted, these are not sent to the next one: the alarm flow sends its
# pending alarms again from the journal, and one it confirmed over LTE meanwhile must not go.
_FOR_THE_OLD_HUBD = (messages.ALARM, messages.ALARM_LTE)


class HostLink:
    """Runs the link engine on a UART; hands decoded messages to `on_message(msg)`.

    `on_state(kind, value)` hears the link's up/down/reset/incompatible events. Both may be set
    after construction, before `run()`. `beat` is the
    ticks_ms when the writing task last went round (at least every second while it is alive):
    the watchdog feeds the chip's WDT only while it is recent.
    """

    def __init__(self, uart, version, key, on_message=None, on_state=None):
        self.link = link.Link(frame.ROLE_BRIDGE, version, time.ticks_ms(), key, max_bulk=2)
        self._uart = uart
        self.on_message = on_message
        self.on_state = on_state
        self.on_bulk = None  # bulk payloads from hubd (the uplink's, once it exists)
        self._wake = asyncio.Event()
        self._overflow = []  # kept in order until the link's queue has room
        self.bad_messages = 0  # payloads from hubd that were not a valid message
        self.downs = 0  # times the link went down
        self.beat = time.ticks_ms()
        self._foreign_said = None

    @property
    def heap_drops(self):
        """Inputs the bridge dropped for want of heap (firmware/heap.py), for health."""
        return heap.drops

    def send(self, payload):
        """Queue one message for hubd, in order; raises link.LinkFull when far behind."""
        if self._overflow or self.link.pending() >= self.link.max_queue:
            if len(self._overflow) >= _OVERFLOW_MAX:
                raise link.LinkFull("host link backlog full")
            self._overflow.append(payload)
        else:
            self.link.send(payload)
        self._wake.set()

    def send_bulk(self, payload):
        """Queue one bulk payload (wire.uplink.data) behind every message; raises
        link.LinkFull when bulk_room() is 0."""
        self.link.send(payload)
        self._wake.set()

    def bulk_room(self):
        """How many bulk payloads send_bulk() takes now: none while the link is not up (what
        was queued would be dropped with the session)."""
        return self.link.bulk_room() if self.link.state == link.UP else 0

    def bulk_waiting(self):
        """Whether bulk payloads wait to enter the window (a message sent now overtakes them)
        on a link that is up (a link that went down drops them)."""
        return self.link.state == link.UP and self.link.bulk_room() < self.link.max_bulk

    def busy(self):
        """Whether a window's worth of messages and more waits for hubd (queued or unacked): a
        producer that can wait (the Bluetooth proxy) holds its next message back, in its own
        smaller form, until the link has sent some; alarms, health and the link's own frames
        never wait for it. Each message waiting here is JSON, and an encoded frame too once in
        the window."""
        link_ = self.link
        # A link that is down is not busy: what is said meanwhile waits in its queue (as before),
        # not in a task of the proxy's each, which costs more heap than the message.
        return link_.state == link.UP and (bool(self._overflow)
                                           or link_.pending() >= link_.window + _SPARE)

    def idle(self):
        """Whether the link is up with nothing queued or in flight: reports that can wait (device
        readings) go out one at a time, behind everything else, and never make the link build
        several frames into one buffer on a short heap."""
        return self.link.state == link.UP and not self._overflow and not self.link.pending()

    async def run(self):
        """Read, write and time the link until cancelled. The reader is a task of its own (one
        that ends resets the chip: vital.py), the writer runs here; both on one stream. Not
        asyncio.gather: its bookkeeping cost about 680 bytes of heap on 64-bit for two loops."""
        stream = asyncio.StreamReader(self._uart)  # MicroPython's streams read and write
        reader = vital.start(self._read_loop(stream), "host link reader")
        try:
            await self._write_loop(stream)
        finally:
            reader.cancel()

    # In both loops a MemoryError anywhere in one round loses that round's frame (the link
    # resends it), not the bridge: firmware/heap.py.

    async def _read_loop(self, reader):
        while True:
            try:
                data = await reader.read(_READ_CHUNK)
                if data:
                    self.link.feed(data, time.ticks_ms())
                    self._dispatch()
                    self._wake.set()
                else:
                    await asyncio.sleep_ms(10)  # the line reported end of file: keep listening
            except MemoryError:
                heap.survive("host link in")
                await asyncio.sleep_ms(10)

    async def _write_loop(self, writer):
        while True:
            try:
                await self._write_round(writer)
            except MemoryError:
                heap.survive("host link out")
                await asyncio.sleep_ms(10)

    async def _write_round(self, writer):
        self.beat = time.ticks_ms()
        while self._overflow and self.link.pending() < self.link.max_queue:
            self.link.send(self._overflow.pop(0))
        # A frame that could not be built stays in the window: the retransmission timer sends it.
        out = self.link.poll(time.ticks_ms())
        self._dispatch()
        if out:
            writer.write(out)
            await writer.drain()
            return
        self._wake.clear()
        wait = self.link.next_poll_ms(time.ticks_ms())
        if wait > 0:
            await timed.wait(self._wake, wait)

    def _requeue(self, unsent):
        old = unsent + self._overflow
        self._overflow = []
        for payload in old:
            try:
                kind = messages.decode(payload)["m"]
                if kind in _FOR_THE_OLD_HUBD or kind[:4] == "ble_" or kind[:7] == "uplink_":
                    continue
                self.send(payload)
            except (messages.MessageError, link.LinkFull):
                pass
        log.warn("host link: hubd restarted; %d queued message(s) were for the old hubd"
                 % len(old))

    def _foreign(self, major):
        # A HELLO of another protocol that does not verify: hubd of an older release (protocol
        # 1 had no tags) or a forgery. Said once a minute, never acted on.
        now = time.ticks_ms()
        if self._foreign_said is None or time.ticks_diff(now, self._foreign_said) >= 60000:
            self._foreign_said = now
            log.error("a peer speaks link protocol %d (unauthenticated), this firmware %d.%d: "
                      "update hubd or flash matching firmware" % (major, link.PROTOCOL_MAJOR,
                                                                  link.PROTOCOL_MINOR))

    def _dispatch(self):
        for kind, value in self.link.events():
            if kind == link.EV_DATA:
                # One message at a time: whatever it does (a MessageError, a handler's bug), it
                # is dropped and counted, and the link and the bridge go on.
                try:
                    if link.is_bulk(value):  # the uplink's bytes, not a message
                        if self.on_bulk is not None:
                            self.on_bulk(value)
                        continue
                    self.on_message(messages.decode(value))
                except MemoryError:
                    self.bad_messages += 1
                    heap.survive("message from hubd")
                except Exception as e:
                    self.bad_messages += 1
                    log.warn("dropped a bad message from hubd: %r" % e)
            else:
                if kind == link.EV_UP:
                    log.info("host link up: hubd %s, protocol %d.%d"
                             % (value["version"], value["major"], value["minor"]))
                elif kind == link.EV_INCOMPATIBLE:
                    log.error("hubd speaks link protocol %d.%d, this firmware %d.%d: update one"
                              % (value["major"], value["minor"], link.PROTOCOL_MAJOR,
                                 link.PROTOCOL_MINOR))
                elif kind == link.EV_RESET:
                    self._requeue(value[1])
                elif kind == link.EV_FOREIGN:
                    self._foreign(value)
                    continue
                else:
                    if kind == link.EV_DOWN:
                        self.downs += 1
                    log.warn("host link %s: %s" % (kind, value))
                if self.on_state is not None:
                    self.on_state(kind, value)

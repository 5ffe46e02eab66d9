"""The bridge's end of the alarm unit link (wire/alarmunit.py) on a machine.UART.

Hands each valid EVENT to ``on_event(serial, event_id, unit_time, event, device)``, each
HEARTBEAT (the unit's status: mains, batteries, pendant signal, firmware) to ``on_status(frame)``
as wire.alarmunit.decode() returns it, each HEARD to ``on_heard(serial, prompt, event_id)``, and
supervises the unit: any valid frame counts as a sign of life; ``missed`` heartbeat intervals
without one call ``on_link(False)``, the next valid frame ``on_link(True)``. Frames for the unit
wait in a short bounded queue; every one of them is idempotent, so one lost under overload costs
only a repetition (the unit resends an event until it is acked, the alarm flow a prompt until
the unit says HEARD).

With ``serial`` (bridge.json's ``alarm_unit.serial``, read off the unit at commissioning) frames
of any other unit are dropped and counted: the unit protocol has no authentication, and a frame
from someone else on the wire must not become the unit the bridge owes its prompts to. Without
it the bridge follows whichever unit it last heard.
"""

import time

import asyncio

from micropython import const

import heap
import log
import vital
from wire import alarmunit

_READ_CHUNK = const(64)
_OUT_MAX = const(16)


class UnitLink:
    """Reads and writes the alarm unit's UART; see the module docstring for the callbacks."""

    def __init__(self, uart, on_event, on_link, heartbeat_ms=10000, missed=3, on_status=None,
                 on_heard=None, serial=None):
        self._uart = uart
        self._pinned = serial
        self.foreign = 0  # frames of another unit than the pinned one, dropped
        self._foreign_said = None
        self._on_event = on_event
        self._on_link = on_link
        self._on_status = on_status
        self._on_heard = on_heard
        self._lost_after = heartbeat_ms * missed
        self._decoder = alarmunit.Decoder()
        self._out = []
        self._wake = asyncio.Event()
        self._last_heard = time.ticks_ms()  # boot counts as heard: the unit gets a full window
        self.up = True
        self.serial = None  # the unit's serial, once heard

    @property
    def bad_frames(self):
        """Frames rejected so far (CRC, length, unknown codes, overlong noise, another unit's)."""
        return self._decoder.bad + self.foreign

    def heard_s(self):
        """Seconds since the unit was last heard, or None before it was heard at all."""
        if self.serial is None:
            return None
        return time.ticks_diff(time.ticks_ms(), self._last_heard) // 1000

    def _queue(self, data):
        if len(self._out) >= _OUT_MAX:
            log.warn("alarm unit: output queue full, dropped a frame (the unit will resend)")
            return
        self._out.append(data)
        self._wake.set()

    def say(self, ftype, event_id):
        """Send the unit alarmunit.T_ACK (the event is journaled: stop resending it),
        T_ALARM_RECEIVED or T_HELP_ON_THE_WAY (a prompt: sent again until the unit says HEARD)."""
        self._queue(alarmunit.frame(ftype, event_id))

    async def run(self):
        """Read, write and supervise the link until cancelled: the reader and the supervision
        are tasks of their own (one that ends resets the chip: vital.py), the writer runs here;
        reading and writing on one stream (not asyncio.gather: it costs heap, hostlink.py)."""
        stream = asyncio.StreamReader(self._uart)  # MicroPython's streams read and write
        beside = (vital.start(self._read_loop(stream), "alarm unit reader"),
                  vital.start(self._watch(), "alarm unit supervision"))
        try:
            await self._write_loop(stream)
        finally:
            for task in beside:
                task.cancel()

    async def _read_loop(self, reader):
        while True:
            try:
                data = await reader.read(_READ_CHUNK)
            except MemoryError:
                heap.survive("alarm unit in")  # what arrived is lost: the unit resends it
                data = b""
            if not data:
                await asyncio.sleep_ms(10)  # the line reported end of file: keep listening
                continue
            try:
                frames = self._decoder.feed(data)
            except MemoryError:
                heap.survive("alarm unit in")  # the unit resends what it is not answered
                continue
            for fr in frames:
                try:
                    self._heard(fr)
                except MemoryError:
                    heap.survive("alarm unit frame")
                except Exception as e:  # a bug must not stop the unit link: the unit resends
                    log.error("alarm unit: handling a frame raised %r" % e)

    def _heard(self, fr):
        ftype = fr[0]
        if ftype & 0x80:
            return  # a bridge frame (0x81-0x83) echoed back: not a sign of the unit
        if self._pinned is not None and fr[1] != self._pinned:
            self._not_ours(fr[1])
            return
        if self.serial != fr[1]:
            log.info("alarm unit %s on the line" % alarmunit.unit_name(fr[1]))
            self.serial = fr[1]
        self._last_heard = time.ticks_ms()
        if not self.up:
            self.up = True
            log.info("alarm unit link restored")
            self._on_link(True)
        if ftype == alarmunit.T_EVENT:
            self._on_event(fr[1], fr[2], fr[3], fr[4], fr[5])
        elif ftype == alarmunit.T_HEARD:
            if self._on_heard is not None:
                self._on_heard(fr[1], fr[2], fr[3])
        elif self._on_status is not None:
            self._on_status(fr)

    def _not_ours(self, serial):
        self.foreign += 1
        now = time.ticks_ms()
        if self._foreign_said is None or time.ticks_diff(now, self._foreign_said) >= 60000:
            self._foreign_said = now
            log.warn("alarm unit: dropped %d frame(s) of unit %s; this bridge serves %s"
                     % (self.foreign, alarmunit.unit_name(serial), alarmunit.unit_name(self._pinned)))

    async def _write_loop(self, writer):
        while True:
            while self._out:
                try:
                    writer.write(self._out.pop(0))
                    await writer.drain()
                except MemoryError:
                    heap.survive("alarm unit out")  # an ACK lost: the unit resends; a prompt: resent
            self._wake.clear()
            await self._wake.wait()

    async def _watch(self):
        while True:
            await asyncio.sleep_ms(200)
            if self.up and time.ticks_diff(time.ticks_ms(), self._last_heard) > self._lost_after:
                self.up = False
                log.error("alarm unit link lost: nothing heard for %d ms" % self._lost_after)
                self._on_link(False)

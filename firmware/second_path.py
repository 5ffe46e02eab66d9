"""The second path: the bridge sends an alarm itself, as SIA DC-09 over the LTE modem, to the
alarm centre's receiver, when the primary path (hubd -> MQTT) has not confirmed it in time.

One frame per write, then wait for the receiver's answer before anything else is sent (pysiaalarm
refuses two frames in one write). ACK: delivered. NAK: the receiver's clock says ours is off (or
it refused the frame): correct the clock and resend, a bounded number of times. DUH: the receiver
does not understand the frame; resending the same bytes cannot help. A lost socket or no coverage:
retry until the deadline. docs/second-path.md has the whole sequence.
"""

import time

import asyncio

import log
from wire import dc09

ACK = "ack"
NAK = "nak"
DUH = "duh"
FAILED = "failed"


class SecondPath:
    """Sends alarms over `lte` (a firmware.lte.Lte, started) to the receiver at host:port.

    `account`: the DC-09 account (3-16 upper-case hex digits); `key`: the AES key as bytes (16,
    24 or 32 ASCII characters, as the receiver has it) or None for plain frames; `receiver` and
    `line`: the R and L fields; `now`: Unix seconds (the bridge's clock, corrected by NAKs).
    """

    def __init__(self, lte, host, port, account, key=None, receiver="", line="1", now=time.time,
                 deadline_ms=120000, answer_timeout_ms=10000, retry_ms=2000, max_naks=2):
        self.lte = lte
        self.host = host
        self.port = port
        self.account = account
        self.key = key
        self.receiver = receiver
        self.line = line
        self._now = now
        self.offset = 0  # seconds to add to now(): learned from the receiver's NAK
        self.deadline_ms = deadline_ms
        self.answer_timeout_ms = answer_timeout_ms
        self.retry_ms = retry_ms
        self.max_naks = max_naks
        self._seq = 0
        self._lock = asyncio.Lock()
        self.stats = {"ack": 0, "nak": 0, "duh": 0, "failed": 0, "resent": 0}

    def set_clock(self, unix):
        """Align the DC-09 timestamps with a trusted clock (hubd's "clock" message)."""
        self.offset = int(unix) - int(self._now())

    def now(self):
        """The Unix time DC-09 frames are stamped with."""
        return int(self._now()) + self.offset

    def _next_seq(self):
        self._seq = self._seq % 9999 + 1  # 0001-9999, then round again
        return self._seq

    async def send_alarm(self, alarm, deadline_ms=None):
        """Deliver `alarm` (a dict with "id" and "event", as in wire.messages.alarm) to the
        receiver. Returns "ack", "nak" (refused after resends), "duh" or "failed" (no answer
        within the deadline: coverage, socket or receiver)."""
        try:
            build = self._builder(alarm["event"], alarm["id"])
        except (KeyError, TypeError, ValueError) as e:
            log.error("second path: cannot encode alarm %r: %s" % (alarm, e))
            return DUH
        result = await self._deliver(build, deadline_ms or self.deadline_ms)
        self.stats[result] += 1
        log.info("second path: alarm %s -> %s" % (alarm["id"], result))
        return result

    async def supervise(self, deadline_ms=None):
        """Send the NULL supervision message: "ack" when the path to the receiver works."""
        def build(seq, unix):
            return dc09.null_frame(seq, self.account, unix, self.receiver, self.line, self.key)

        return await self._deliver(build, deadline_ms or self.answer_timeout_ms * 2)

    def _builder(self, event, alarm_id):
        dc09.alarm_frame(0, self.account, event, alarm_id, 0)  # refuse what cannot be encoded now

        def build(seq, unix):
            return dc09.alarm_frame(seq, self.account, event, alarm_id, unix, self.receiver,
                                    self.line, self.key)

        return build

    async def _deliver(self, build, deadline_ms):
        async with self._lock:  # one exchange on the socket at a time
            start = time.ticks_ms()
            seq = self._next_seq()  # a resend of the same alarm keeps its sequence number
            naks = 0
            attempts = 0
            while True:
                left = deadline_ms - time.ticks_diff(time.ticks_ms(), start)
                if left <= 0:
                    return FAILED
                if attempts:
                    self.stats["resent"] += 1
                attempts += 1
                err = await self._connect(left)
                if err:
                    log.warn("second path: no connection to the receiver: %s" % err)
                    await asyncio.sleep_ms(min(self.retry_ms, max(0, left)))
                    continue
                answer = await self._exchange(build(seq, self.now()), left)
                if answer is None:
                    await self.lte.close()  # a half-dead socket: start afresh
                    continue
                kind, their = dc09.parse_answer(answer, seq, self.account, self.key)
                if kind == dc09.ACK:
                    return ACK
                if kind == dc09.DUH:
                    return DUH
                if kind == dc09.NAK:
                    naks += 1
                    if their is not None:
                        self.offset = their - int(self._now())
                        log.warn("second path: receiver NAK, clock corrected by its time")
                    if naks > self.max_naks:
                        return NAK
                    continue
                log.warn("second path: answer not trusted: %r" % answer[:40])
                await self.lte.close()

    async def _connect(self, left_ms):
        if self.lte.connected:
            return None
        if not self.lte.pdp_up:
            err = await self.lte.attach(min(left_ms, self.lte.attach_timeout_ms))
            if err:
                return err
        err = await self.lte.open(self.host, self.port, min(left_ms, self.lte.open_timeout_ms))
        if err:
            self.lte.pdp_up = False  # check registration and the context again next time
        return err

    async def _exchange(self, frame, left_ms):
        """Send one frame, return the receiver's whole answer, or None on a lost socket."""
        self.lte.rx = b""  # an answer that arrived late for an earlier frame is not this one's
        if await self.lte.send(frame):
            return None
        start = time.ticks_ms()
        limit = min(left_ms, self.answer_timeout_ms)
        buf = b""
        while not dc09.answer_complete(buf):
            left = limit - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0 or len(buf) > dc09.MAX_ANSWER:
                return None
            data, err = await self.lte.recv(left)
            if err:
                return None
            buf += data
        return buf


async def carry(flow, path, retry_ms, tick_ms=500):
    """Send every alarm the flow hands to the second path (firmware.alarms.AlarmFlow
    .for_second_path), one at a time, and report each result back to the flow. An alarm that
    was not acknowledged is tried again `retry_ms` later (ten times that after a DUH, which a
    plain resend will not cure), for as long as it stays pending."""
    next_try = {}  # alarm id -> ticks_ms before which it is not tried again
    while True:
        await asyncio.sleep_ms(tick_ms)
        hub_time = flow.now()
        if hub_time is not None and path.offset == 0:
            path.set_clock(hub_time)
        due = flow.for_second_path()
        for stale in [i for i in next_try if i not in [a[0] for a in due]]:
            del next_try[stale]
        for alarm_id, event, _device, _unit_at, _bridge_at in due:
            now = time.ticks_ms()
            if alarm_id in next_try and time.ticks_diff(next_try[alarm_id], now) > 0:
                continue
            try:  # one alarm at a time: whatever the modem or receiver did, carrying goes on
                result = await path.send_alarm({"id": alarm_id, "event": event})
                flow.second_path_result(alarm_id, result)
            except Exception as e:
                log.error("second path: alarm %s: %r" % (alarm_id, e))
                result = FAILED
            if result != ACK:
                wait = retry_ms * (10 if result == DUH else 1)
                next_try[alarm_id] = time.ticks_add(time.ticks_ms(), wait)

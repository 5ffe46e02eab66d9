"""Driver for locks speaking the reference lock protocol (docs/lock-protocol.md, wire/lockproto.py).

One ``operate`` call is one command, at most once: connecting and fetching a challenge may be
retried until the deadline, but once ``on_written`` has been called the COMMAND is never sent
again. If its RESULT does not arrive, the outcome is ``incomplete`` and the lock's state is read
back with a fresh challenge and a ``status`` COMMAND, once the lock's state has settled.

The connection outlives an operation: ``service`` (called often by the connection policy)
passes on reports that arrive meanwhile and drops the link once it has been idle long enough.
``refresh`` reads the reports the lock kept while nobody was connected, and its state.
"""

import asyncio
import time

import bluetooth

import ble_central
from locks import kinds
from wire import lockproto as lp
from wire import outcomes as oc

_SERVICE = bluetooth.UUID(lp.SERVICE_UUID)
_CONTROL = bluetooth.UUID(lp.CONTROL_UUID)
_EVENT = bluetooth.UUID(lp.EVENT_UUID)
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010

_GATT_TIMEOUT_MS = 2000
_RETRY_PAUSE_MS = 200
# The read-back after a lost RESULT gets at least this much beyond the connect timeout, even if
# the command's deadline has passed: reporting the real state matters more than answering early.
_READBACK_EXTRA_MS = 3000
_POLL_TAG = bytes(lp.TAG_LEN)  # a status read moves nothing, so its tag identifies nothing

_LINK_ERRORS = (ble_central.BLEError, lp.ProtocolError)


def _outcome(outcome, reason=None, state="unknown", battery=None):
    return {"outcome": outcome, "reason": reason, "state": state, "battery": battery}


def _left(deadline):
    return time.ticks_diff(deadline, time.ticks_ms())


class ReferenceLock:
    """One reference-protocol lock of a ``wire.lockkinds`` kind, reached through a ``Central``.

    ``on_report``: optional ``on_report(lock_id, what, name, state, battery, source)`` for each
    authenticated report the lock makes on its own: ``what`` is "state" (``name`` is None) or
    "event" (``name`` is the event); ``source`` is a ``wire.lockkinds`` source.
    """

    def __init__(self, central, lock_id, kind, addr_type, addr, secret, connect_timeout_ms=3000,
                 deadline_ms=10000, result_timeout_ms=8000, settle_ms=6000):
        if len(addr) != lp.ADDR_LEN:
            raise ValueError("addr must be 6 bytes")
        if len(secret) != lp.SECRET_LEN:
            raise ValueError("secret must be 32 bytes")
        self.central = central
        self.lock_id = lock_id
        self.kind = kind
        self.addr_type = addr_type
        self.addr = bytes(addr)
        self.secret = bytes(secret)
        self.connect_timeout_ms = connect_timeout_ms
        self.deadline_ms = deadline_ms
        self.result_timeout_ms = result_timeout_ms
        self.settle_ms = settle_ms
        self.on_report = None
        self.report_counter = -1  # the latest report number taken in; -1 before the first read
        self.busy = False  # an exchange owns the connection's notifications
        self._conn = None
        self._handles = None  # (control value, event value, event CCCD), kept across links
        self._last_used = time.ticks_ms()
        self._moved_at = None  # when a moving command was last written

    @property
    def connected(self):
        return self._conn is not None and self._conn.connected

    def settling(self):
        """True shortly after a moving command, while the lock may still report the old state."""
        return self._settle_left() > 0

    def _settle_left(self):
        if self._moved_at is None:
            return 0
        left = self.settle_ms - time.ticks_diff(time.ticks_ms(), self._moved_at)
        if left <= 0 or left > self.settle_ms:
            self._moved_at = None  # settled; forgotten before the tick counter can wrap
            return 0
        return left

    async def operate(self, action, tag, on_written):
        """Run one command; see the module docstring. Returns an outcome dict."""
        try:
            code = lp.action_code(action)
        except lp.ProtocolError:
            return _outcome(oc.FAILED, oc.UNSUPPORTED_ACTION)
        if len(tag) != lp.TAG_LEN:
            return _outcome(oc.FAILED, oc.BAD_REQUEST)
        if action == "status":
            # Right after a move the lock may still answer the old state: ask once it settled.
            await self._settle()
        deadline = time.ticks_add(time.ticks_ms(), self.deadline_ms)
        self.busy = True
        try:
            nonce, reason = await self._prepare(deadline)
            if nonce is None:
                return _outcome(oc.TIMED_OUT, reason)
            pdu = lp.encode_command(self.secret, self.addr, nonce, code, tag)
            on_written()
            if action != "status":
                self._moved_at = time.ticks_ms()
            # From here on: never resend, whatever happens.
            try:
                await self._conn.write(self._handles[0], pdu, _GATT_TIMEOUT_MS)
                result = await self._result(self.result_timeout_ms)
            except ble_central.Disconnected:
                return await self._incomplete(tag, deadline, oc.LINK_LOST)
            except _LINK_ERRORS:
                return await self._incomplete(tag, deadline, oc.NO_RESULT)
            return self._judge(nonce, tag, result)
        except BaseException:
            await self.close()
            raise
        finally:
            self._done()

    async def refresh(self, read_status):
        """Read the reports kept since the last one taken in, and with ``read_status`` the state.

        Returns ``{"state", "battery"}`` (both None without ``read_status``), or None when the
        lock could not be reached or did not answer authentically.
        """
        deadline = time.ticks_add(time.ticks_ms(), self.connect_timeout_ms + 2 * _GATT_TIMEOUT_MS)
        self.busy = True
        try:
            nonce, _ = await self._prepare(deadline)
            if nonce is None:
                return None
            gap = await self._read_reports(nonce, deadline)
            if not (read_status or gap):
                return {"state": None, "battery": None}
            judged = await self._status(nonce, _POLL_TAG, deadline)
            if judged is None:
                return None
            return {"state": judged["state"], "battery": judged["battery"]}
        except _LINK_ERRORS:
            await self.close()
            return None
        except BaseException:
            await self.close()
            raise
        finally:
            self._done()

    async def exchange(self, encode):
        """Write ``encode(nonce)`` on a fresh nonce and return (nonce, decoded RESULT).

        For the rare PDUs that are not a COMMAND (locks.pairing). Returns (None, reason) when no
        nonce was had before the deadline; a link error after the write is raised. Never resent.
        """
        deadline = time.ticks_add(time.ticks_ms(), self.deadline_ms)
        self.busy = True
        try:
            nonce, reason = await self._prepare(deadline)
            if nonce is None:
                return None, reason
            await self._conn.write(self._handles[0], encode(nonce), self._gatt_ms(deadline))
            return nonce, await self._result(self.result_timeout_ms)
        finally:
            self._done()

    def service(self, idle_ms):
        """Pass on reports that arrived while idle; drop the link after ``idle_ms`` unused."""
        conn = self._conn
        if self.busy or conn is None:
            return
        if self._handles is not None:
            pdu = conn.take_notification(self._handles[1])
            while pdu is not None:
                self._unsolicited(pdu)
                pdu = conn.take_notification(self._handles[1])
        if not conn.connected:
            self._conn = None
        elif time.ticks_diff(time.ticks_ms(), self._last_used) >= idle_ms:
            self._conn = None
            conn.disconnect_nowait()

    async def close(self):
        """Drop the link now."""
        conn = self._conn
        self._conn = None
        if conn is not None and conn.connected:
            await conn.disconnect()

    async def _settle(self):
        left = self._settle_left()
        if left > 0:
            await asyncio.sleep_ms(left)

    def _done(self):
        self.busy = False
        self._last_used = time.ticks_ms()

    # --- before the write: retries allowed ----------------------------------------------------

    async def _prepare(self, deadline):
        """Connect and fetch a nonce, retrying until the deadline; return (nonce, reason)."""
        reason = oc.UNREACHABLE
        while True:
            left = _left(deadline)
            if left <= 0:
                return None, reason
            try:
                await self._link(deadline)
                reason = oc.NO_CHALLENGE
                return await self._challenge(deadline), None
            except ble_central.Unreachable:
                pass
            except _LINK_ERRORS:
                reason = oc.LINK_FAILED if reason == oc.UNREACHABLE else reason
                self._handles = None  # rediscover: the table may be what went wrong
            await self.close()
            await asyncio.sleep_ms(max(0, min(_RETRY_PAUSE_MS, _left(deadline))))

    async def _link(self, deadline):
        if self.connected:
            return
        self._conn = await self.central.connect(
            self.addr_type, self.addr, max(1, min(self.connect_timeout_ms, _left(deadline)))
        )
        conn = self._conn
        mtu = await conn.exchange_mtu(self._gatt_ms(deadline))
        if mtu - 3 < lp.COMMAND_LEN:
            raise ble_central.BLEError("ATT MTU %d too small for a COMMAND" % mtu)
        if self._handles is None:
            self._handles = await self._discover(conn, deadline)
        await conn.subscribe(self._handles[2], self._gatt_ms(deadline))

    def _gatt_ms(self, deadline):
        return max(1, min(_GATT_TIMEOUT_MS, _left(deadline)))

    async def _next(self, deadline):
        """The next notification before ``deadline``; a lock that floods us cannot stretch it."""
        left = _left(deadline)
        if left <= 0:
            raise ble_central.BLETimeout("no answer in time")
        return await self._conn.notified(left, self._handles[1])

    async def _discover(self, conn, deadline):
        services = await conn.services(_SERVICE, self._gatt_ms(deadline))
        if not services:
            raise lp.ProtocolError("lock has no reference-protocol service")
        start, end, _ = services[0]
        chars = await conn.characteristics(start, end, None, self._gatt_ms(deadline))
        control = event = None
        event_end = end
        for def_handle, value_handle, properties, uuid in chars:
            if uuid == _CONTROL and properties & _FLAG_WRITE:
                control = value_handle
            elif uuid == _EVENT and properties & _FLAG_NOTIFY:
                event = value_handle
        if control is None or event is None:
            raise lp.ProtocolError("lock lacks the control or event characteristic")
        for def_handle, _, _, _ in chars:
            if event < def_handle <= event_end:
                event_end = def_handle - 1
        for handle, uuid in await conn.descriptors(event + 1, event_end, self._gatt_ms(deadline)):
            if uuid == ble_central.CCCD_UUID:
                return control, event, handle
        raise lp.ProtocolError("event characteristic has no CCCD")

    async def _challenge(self, deadline):
        conn = self._conn
        # Reports queued while idle go out first; anything else queued is stale.
        pdu = conn.take_notification()
        while pdu is not None:
            self._unsolicited(pdu)
            pdu = conn.take_notification()
        await conn.write(self._handles[0], lp.encode_challenge_request(), self._gatt_ms(deadline))
        # A lock that does not answer in a GATT timeout gets a fresh link, within the deadline.
        until = time.ticks_add(time.ticks_ms(), self._gatt_ms(deadline))
        while True:
            pdu = await self._next(until)
            if pdu and pdu[0] == lp.OP_CHALLENGE:
                return lp.decode_challenge(pdu)
            self._unsolicited(pdu)

    async def _read_reports(self, nonce, deadline):
        """Take in the lock's kept reports; return True if some were lost (backlog overrun)."""
        before = self.report_counter
        after = before if before >= 0 else lp.COUNTER_NONE
        await self._conn.write(self._handles[0], lp.encode_read_reports(after),
                               self._gatt_ms(deadline))
        until = time.ticks_add(time.ticks_ms(), self._gatt_ms(deadline))
        first = None
        while True:
            pdu = await self._next(until)
            if pdu and pdu[0] == lp.OP_REPORTS_END:
                counter, mac = lp.decode_reports_end(pdu)
                if not lp.verify_reports_end(self.secret, self.addr, nonce, counter, mac):
                    raise lp.ProtocolError("REPORTS_END does not verify")
                # Fresh and authentic, so it is the baseline even if the lock's count went back.
                self.report_counter = counter
                return before >= 0 and counter > before and first != before + 1
            taken = self._unsolicited(pdu)
            if first is None and taken is not None:
                first = taken

    # --- after the write ----------------------------------------------------------------------

    async def _result(self, timeout_ms):
        """Wait for the RESULT; malformed notifications are ignored, reports dispatched."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            pdu = await self._next(deadline)
            if pdu and pdu[0] == lp.OP_RESULT:
                try:
                    return lp.decode_result(pdu)
                except lp.ProtocolError:
                    continue
            self._unsolicited(pdu)

    def _judge(self, nonce, tag, result):
        status, state, battery, mac = result
        if not lp.verify_result(self.secret, self.addr, nonce, tag, status, state, battery, mac):
            # A lock that rejected our MAC holds a different secret, so its answer cannot verify
            # either; reporting that refusal is safe because it can never claim success.
            if status == lp.STATUS_AUTH_FAILED:
                return _outcome(oc.FAILED, oc.AUTH_FAILED)
            return _outcome(oc.FAILED, oc.BAD_LOCK_MAC)
        state_name = lp.state_name(state)
        if status == lp.STATUS_OK:
            return _outcome(oc.SUCCEEDED, None, state_name, battery)
        return _outcome(oc.FAILED, lp.status_name(status), state_name, battery)

    async def _status(self, nonce, tag, deadline):
        """A ``status`` COMMAND on ``nonce``; the judged outcome if it succeeded, else None."""
        pdu = lp.encode_command(self.secret, self.addr, nonce, lp.action_code("status"), tag)
        await self._conn.write(self._handles[0], pdu, self._gatt_ms(deadline))
        judged = self._judge(nonce, tag, await self._result(self._gatt_ms(deadline)))
        return judged if judged["outcome"] == oc.SUCCEEDED else None

    async def _incomplete(self, tag, deadline, reason):
        """The RESULT is lost: read the state back with a fresh challenge, never the command."""
        await self.close()
        await self._settle()
        budget = max(_left(deadline), self.connect_timeout_ms + _READBACK_EXTRA_MS)
        readback = time.ticks_add(time.ticks_ms(), budget)
        nonce, _ = await self._prepare(readback)
        if nonce is not None:
            try:
                judged = await self._status(nonce, tag, readback)
            except _LINK_ERRORS:
                judged = None
            if judged is not None:
                return _outcome(oc.INCOMPLETE, reason, judged["state"], judged["battery"])
        return _outcome(oc.INCOMPLETE, reason)

    # --- reports ------------------------------------------------------------------------------

    def _unsolicited(self, pdu):
        """Pass on an authentic, new STATUS or EVENT; return its number, or None if dropped."""
        if not pdu or pdu[0] not in (lp.OP_STATUS, lp.OP_EVENT):
            return None
        try:
            if pdu[0] == lp.OP_STATUS:
                counter, state, battery, source, mac = lp.decode_status(pdu)
                event = None
                ok = lp.verify_status(self.secret, self.addr, counter, state, battery, source, mac)
            else:
                counter, event, source, state, battery, mac = lp.decode_event(pdu)
                ok = lp.verify_event(self.secret, self.addr, counter, event, source, state,
                                     battery, mac)
        except lp.ProtocolError:
            return None
        if not ok or counter <= self.report_counter:
            return None  # forged, replayed or reordered
        self.report_counter = counter
        src = kinds.source(self.kind, lp.source_name(source))
        name = None if event is None else lp.event_name(event)
        if src is None or (name is not None and not kinds.has_event(self.kind, name)):
            return counter  # authentic but impossible for this kind: taken in, not passed on
        if self.on_report is not None:
            self.on_report(self.lock_id, "state" if name is None else "event", name,
                           lp.state_name(state), battery, src)
        return counter

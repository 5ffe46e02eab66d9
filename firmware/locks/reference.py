"""Driver for locks speaking the reference lock protocol (docs/lock-protocol.md, wire/lockproto.py).

One ``operate`` call is one command, at most once: connecting and fetching a challenge may be
retried until the deadline, but once ``on_written`` has been called the COMMAND is never sent
again. If its RESULT does not arrive, the outcome is ``incomplete`` and the lock's state is read
back with a fresh challenge and a ``status`` COMMAND.
"""

import asyncio
import time

import bluetooth

import ble_central
from wire import lockproto as lp

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

_LINK_ERRORS = (ble_central.BLEError, lp.ProtocolError)


def _outcome(outcome, reason=None, state="unknown", battery=None):
    return {"outcome": outcome, "reason": reason, "state": state, "battery": battery}


def _left(deadline):
    return time.ticks_diff(deadline, time.ticks_ms())


class ReferenceLock:
    """One reference-protocol lock, reached through a ``ble_central.Central``.

    ``on_event``: optional ``on_event(lock_id, state, battery, source)``, called for each
    authenticated unsolicited STATUS (e.g. a manual turn) that arrives while connected.
    """

    def __init__(self, central, lock_id, addr_type, addr, secret, connect_timeout_ms=3000,
                 deadline_ms=10000, result_timeout_ms=8000):
        if len(addr) != lp.ADDR_LEN:
            raise ValueError("addr must be 6 bytes")
        if len(secret) != lp.SECRET_LEN:
            raise ValueError("secret must be 32 bytes")
        self.central = central
        self.lock_id = lock_id
        self.addr_type = addr_type
        self.addr = bytes(addr)
        self.secret = bytes(secret)
        self.connect_timeout_ms = connect_timeout_ms
        self.deadline_ms = deadline_ms
        self.result_timeout_ms = result_timeout_ms
        self.on_event = None
        self._conn = None
        self._handles = None  # (control value, event value, event CCCD), kept across links
        self._status_counter = -1

    async def operate(self, action, tag, on_written):
        """Run one command; see the module docstring. Returns an outcome dict."""
        try:
            code = lp.action_code(action)
        except lp.ProtocolError:
            return _outcome("failed", "unsupported_action")
        if len(tag) != lp.TAG_LEN:
            return _outcome("failed", "bad_request")
        deadline = time.ticks_add(time.ticks_ms(), self.deadline_ms)
        try:
            nonce, reason = await self._prepare(deadline)
            if nonce is None:
                return _outcome("timed_out", reason)
            pdu = lp.encode_command(self.secret, self.addr, nonce, code, tag)
            on_written()
            # From here on: never resend, whatever happens.
            try:
                await self._conn.write(self._handles[0], pdu, _GATT_TIMEOUT_MS)
                result = await self._result(self.result_timeout_ms)
            except ble_central.Disconnected:
                return await self._incomplete(tag, deadline, "link_lost")
            except _LINK_ERRORS:
                return await self._incomplete(tag, deadline, "no_result")
            return self._judge(nonce, tag, result)
        finally:
            await self._close()

    # --- before the write: retries allowed ----------------------------------------------------

    async def _prepare(self, deadline):
        """Connect and fetch a nonce, retrying until the deadline; return (nonce, reason)."""
        reason = "unreachable"
        while True:
            left = _left(deadline)
            if left <= 0:
                return None, reason
            try:
                await self._link(deadline)
                reason = "no_challenge"
                return await self._challenge(deadline), None
            except ble_central.Unreachable:
                pass
            except _LINK_ERRORS:
                reason = "link_failed" if reason == "unreachable" else reason
                self._handles = None  # rediscover: the table may be what went wrong
            await self._close()
            await asyncio.sleep_ms(max(0, min(_RETRY_PAUSE_MS, _left(deadline))))

    async def _link(self, deadline):
        if self._conn is not None and self._conn.connected:
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
        conn.discard_notifications()
        await conn.write(self._handles[0], lp.encode_challenge_request(), self._gatt_ms(deadline))
        while True:
            pdu = await conn.notified(self._gatt_ms(deadline), self._handles[1])
            if pdu and pdu[0] == lp.OP_CHALLENGE:
                return lp.decode_challenge(pdu)
            self._unsolicited(pdu)

    # --- after the write ----------------------------------------------------------------------

    async def _result(self, timeout_ms):
        """Wait for the RESULT; malformed notifications are ignored, STATUS ones dispatched."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            pdu = await self._conn.notified(max(1, _left(deadline)), self._handles[1])
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
                return _outcome("failed", "auth_failed")
            return _outcome("failed", "bad_lock_mac")
        state_name = lp.state_name(state)
        if status == lp.STATUS_OK:
            return _outcome("succeeded", None, state_name, battery)
        return _outcome("failed", lp.status_name(status), state_name, battery)

    async def _incomplete(self, tag, deadline, reason):
        """The RESULT is lost: read the state back with a fresh challenge, never the command."""
        await self._close()
        budget = max(_left(deadline), self.connect_timeout_ms + _READBACK_EXTRA_MS)
        readback = time.ticks_add(time.ticks_ms(), budget)
        nonce, _ = await self._prepare(readback)
        if nonce is not None:
            pdu = lp.encode_command(self.secret, self.addr, nonce, lp.action_code("status"), tag)
            try:
                await self._conn.write(self._handles[0], pdu, self._gatt_ms(readback))
                result = await self._result(self._gatt_ms(readback))
            except _LINK_ERRORS:
                result = None
            if result is not None:
                judged = self._judge(nonce, tag, result)
                if judged["outcome"] == "succeeded":
                    return _outcome("incomplete", reason, judged["state"], judged["battery"])
        return _outcome("incomplete", reason)

    # --- shared -------------------------------------------------------------------------------

    def _unsolicited(self, pdu):
        """Handle a notification that is not the one awaited: dispatch authentic STATUS."""
        if not pdu or pdu[0] != lp.OP_STATUS:
            return
        try:
            counter, state, battery, source, mac = lp.decode_status(pdu)
        except lp.ProtocolError:
            return
        if not lp.verify_status(self.secret, self.addr, counter, state, battery, source, mac):
            return
        if counter <= self._status_counter:
            return  # replayed or reordered
        self._status_counter = counter
        if self.on_event is not None:
            self.on_event(self.lock_id, lp.state_name(state), battery, lp.source_name(source))

    async def _close(self):
        conn = self._conn
        self._conn = None
        if conn is not None and conn.connected:
            await conn.disconnect()

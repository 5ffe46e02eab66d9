"""BLE central on MicroPython's low-level `bluetooth` module, with awaitable operations.

The Bluetooth proxy's radio (ble_proxy.py): it scans (every advert goes to ``on_advert``),
connects, and runs GATT procedures for hubd. One IRQ handler copies every memoryview it keeps
(``bytes()``/``bluetooth.UUID()``) before it returns and routes the event to the connection it
belongs to. Notifications are queued per connection at IRQ level and never dropped (aioble keeps
only the latest one per characteristic).

Every operation takes a timeout in milliseconds. A GATT procedure that times out leaves the ATT
bearer in an unknown state, so the link is dropped. A peripheral that disconnects mid-operation
fails the waiting operation with a ``BLEError`` whose ``why`` is DISCONNECTED.

Pairing (``Connection.pair``): ``gap_pair`` encrypts the link with the peer's stored keys, or
pairs and bonds ("Just Works": the bridge has no display or keyboard); the stack asks for and
hands over those keys with _IRQ_GET_SECRET/_IRQ_SET_SECRET, which go to ``Central.secrets``
(ble_bonds.Bonds, set by the Bluetooth proxy; without it nothing is stored).

BLE stacks die silently (field notes: nuki_hub#28, #126). ``stuck()`` tells a watchdog when this
one looks dead: it owes an event (a call was made, and a scan, connect or GATT procedure always
ends in one) and has raised none for a long time, or its calls keep failing; ``restart()``
deactivates and reactivates it, failing every link and waiting operation.

    central = Central()
    conn = await central.connect(0, addr, timeout_ms=3000)
    await conn.exchange_mtu()
    ...
    await conn.disconnect()
"""

import asyncio
import time

import bluetooth
from micropython import const

import timed

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_IRQ_PERIPHERAL_CONNECT = const(7)
_IRQ_PERIPHERAL_DISCONNECT = const(8)
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_GATTC_INDICATE = const(19)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IO_NO_INPUT_OUTPUT = const(3)

# Connection.security's bits (wire.messages.BLE_SEC_*).
SEC_ENCRYPTED = const(1)
SEC_AUTHENTICATED = const(2)
SEC_BONDED = const(4)

_NO_CONN = const(0xFFFF)
_CONNECT_MARGIN_MS = const(500)
_DEFAULT_TIMEOUT_MS = const(2000)
_ENOTCONN = const(107)
_MAX_CALL_ERRORS = const(5)  # failed stack calls in a row before the stack counts as stuck
_TICK_MS = const(50)  # the GATT procedures' clock: a timeout ends at most this much late


# Why a BLE operation failed (BLEError's ``why``), in the words the Bluetooth proxy answers hubd
# with (wire.messages.BLE_STATUSES; tests/firmware/mp_test_ble_central.py holds them to it).
TIMEOUT = "timeout"  # it did not complete in time
DISCONNECTED = "disconnected"  # the link went down before or during it
UNREACHABLE = "unreachable"  # a connection attempt found no such peripheral in time
GATT_ERROR = "gatt_error"  # the peer answered a GATT procedure with an error (``status``)
ERROR = "error"  # the stack refused it


class BLEError(Exception):
    """A BLE operation failed: ``why`` says how (above), ``status`` is a GATT_ERROR's ATT status.
    One class for every cause, not a subclass each: a class costs about 260 bytes of heap on
    64-bit (130 on 32-bit)."""

    def __init__(self, why, message, status=None):
        # super(): MicroPython's exception classes have no __init__ to call by name.
        super().__init__(message)
        self.why = why
        self.status = status


def _start(what, start, *args):
    """Make a stack call that starts a procedure, ``start(*args)``; a refusal raises BLEError,
    DISCONNECTED when the link is gone, else ERROR."""
    try:
        start(*args)
    except OSError as e:
        if e.args and e.args[0] == _ENOTCONN:
            raise BLEError(DISCONNECTED, "%s: not connected" % what)
        raise BLEError(ERROR, "%s: %r" % (what, e))


class Connection:
    """A link to one peripheral. Its GATT operations run one at a time: the caller's to keep
    (the proxy runs a connection's requests in order, one after the other); one started while
    another waits is refused (BLEError, ERROR), as no lock is held for it (an asyncio.Lock
    costs 128 bytes of heap per connection on 64-bit)."""

    def __init__(self, central, conn_handle, addr_type, addr):
        # Few attributes: an instance's dict grows in steps (on 64-bit 12 of them fit in 224
        # bytes, 13 to 17 take 320), and every proxy connection has one. Its notifications, its
        # loss and the end of a read, write or discovery (its event or its deadline) set the
        # central's ``notified`` too: the proxy's one task that waits for them all.
        self._central = central
        self.conn_handle = conn_handle
        self.addr_type = addr_type
        self.addr = addr
        self.connected = True
        self.security = 0  # SEC_* bits, from the last _IRQ_ENCRYPTION_UPDATE
        # Set by its procedures' events, its loss and the clock while a coroutine of this class
        # waits on it (_run, disconnect), which makes it and drops it after: None meanwhile (a
        # ThreadSafeFlag each connection kept cost 96 B of heap on 64-bit, 48 on 32-bit).
        self.flag = None
        self._notes = []
        # The event that ends the procedure running (0: none runs), plus 256 times the value
        # handle it reads or writes: one attribute where two would grow the dict a step.
        self._expect = 0
        self._results = None
        self._status = None
        self._deadline = None  # ticks_ms when the procedure waiting gives up (the central's clock)

    # --- IRQ side (called by Central._irq with the raw event tuple) ---------------------------

    def _on_disconnect(self):
        self.connected = False
        if self.flag is not None:
            self.flag.set()
        self._central.notified.set()

    def _on_gatt(self, event, data):
        if event == _IRQ_GATTC_NOTIFY or event == _IRQ_GATTC_INDICATE:
            self._notes.append((data[1], bytes(data[2])))
            self._central.notified.set()
            return
        expect = self._expect & 0xFF
        if event == _IRQ_MTU_EXCHANGED or event == _IRQ_ENCRYPTION_UPDATE:
            if event == _IRQ_MTU_EXCHANGED:
                if expect == event:
                    self._results.append(data[1])
            else:  # (conn, encrypted, authenticated, bonded, key_size): also a failed attempt
                self.security = (SEC_ENCRYPTED if data[1] else 0) \
                    | (SEC_AUTHENTICATED if data[2] else 0) | (SEC_BONDED if data[3] else 0)
            if expect == event:
                self._status = 0
                if self.flag is not None:
                    self.flag.set()
            return
        handle = self._expect >> 8
        # A discovery's or a read's results come as the event before its done event.
        if event + 1 == expect and expect in (10, 12, 14, 16):
            if event == _IRQ_GATTC_SERVICE_RESULT:
                self._results.append((data[1], data[2], bluetooth.UUID(data[3])))
            elif event == _IRQ_GATTC_CHARACTERISTIC_RESULT:
                self._results.append((data[1], data[2], data[3], bluetooth.UUID(data[4])))
            elif event == _IRQ_GATTC_DESCRIPTOR_RESULT:
                self._results.append((data[1], bluetooth.UUID(data[2])))
            elif data[1] == handle:
                self._results.append(bytes(data[2]))
        elif event == expect:
            # Read/write done carry the value handle (0 on btstack); discovery done does not.
            if len(data) == 3 and data[1] not in (0, handle):
                return
            self._status = data[-1]
            if self.flag is not None:
                self.flag.set()
            self._central.notified.set()

    # --- operations ---------------------------------------------------------------------------

    def _begin(self, what, a, b, c):
        # The stack call that starts ``what`` (the names the procedures below pass) with its
        # arguments after the connection: chosen here, not a closure each procedure makes, which
        # its wait held (~190 B of heap on 64-bit for a write).
        ble = self._central._ble
        conn = self.conn_handle
        if what == "write":
            ble.gattc_write(conn, a, b, c)
        elif what == "read":
            ble.gattc_read(conn, a)
        elif what == "MTU exchange":
            ble.gattc_exchange_mtu(conn)
        elif what == "pairing":
            ble.gap_pair(conn)
        elif what == "service discovery":
            ble.gattc_discover_services(conn, a)
        elif what == "characteristic discovery":
            ble.gattc_discover_characteristics(conn, a, b, c)
        else:  # descriptor discovery
            ble.gattc_discover_descriptors(conn, a, b)

    def start(self, what, done, timeout_ms, handle=0, a=None, b=None, c=None):
        # Starts a procedure (``what``: _begin's names; done: the event that ends it, 0 for one
        # that raises none, a write without response, complete once the stack took it); the
        # caller waits on the central's ``notified`` (or _run on ``flag``) while ``waiting()``, then
        # calls ``end(what)``, which it must (or ``free()``): the proxy does, from its one
        # forwarding task (a frame of this class under every request waiting cost ~270 B of
        # heap on 64-bit, a task of the proxy's each ~360 B); _run for the rest. The central's
        # one clock sets both at the deadline.
        if self._expect:
            raise BLEError(ERROR, "%s: another procedure is running on this link" % what)
        if not self.connected:
            raise BLEError(DISCONNECTED, "%s: not connected" % what)
        if done == 0:
            _start(what, self._begin, what, a, b, c)
            return
        self._expect = done | handle << 8
        # A write's or a pairing's event carries no result: no list (64 B of heap on 64-bit
        # while each proxy connection's write waits for its acknowledgement).
        self._results = None if done == _IRQ_GATTC_WRITE_DONE or done == _IRQ_ENCRYPTION_UPDATE \
            else []
        self._status = None
        try:
            _start(what, self._begin, what, a, b, c)
        except BaseException:
            self.free()
            raise
        self._central._called()
        self._deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        self._central._clock()

    def start_read(self, value_handle, timeout_ms):
        """``read`` for a caller that waits itself (``start``)."""
        self.start("read", _IRQ_GATTC_READ_DONE, timeout_ms, value_handle, value_handle)

    def start_write(self, value_handle, data, timeout_ms, response=True):
        """``write`` for a caller that waits itself (``start``)."""
        self.start("write", _IRQ_GATTC_WRITE_DONE if response else 0, timeout_ms, value_handle,
                   value_handle, data, 1 if response else 0)

    def waiting(self):
        """Whether the procedure started is still owed its event, within its time."""
        return self._deadline is not None and self._status is None and self.connected \
            and time.ticks_diff(self._deadline, time.ticks_ms()) > 0

    def end(self, what):
        """The result of the procedure started, once ``waiting()`` is False (a read's bytes,
        the MTU, a discovery's list; None for a write or a pairing), or BLEError: TIMEOUT
        (the link is dropped), DISCONNECTED, GATT_ERROR. The link is free for the next one."""
        if not self._expect:
            return None
        try:
            status = self._status
            if status is None:
                if self.connected:
                    self._timed_out(what)
                raise BLEError(DISCONNECTED, "%s: link lost" % what)
            if status != 0:
                raise BLEError(GATT_ERROR, "%s failed with ATT status 0x%02x" % (what, status),
                               status)
            done = self._expect & 0xFF
            if done == _IRQ_GATTC_READ_DONE:
                return self._results[0] if self._results else b""
            if done == _IRQ_MTU_EXCHANGED:
                return self._results[0]  # the MTU, appended with the status
            return self._results
        finally:
            self.free()

    def free(self):
        """Forget the procedure started (its caller gave up on it): the link takes another."""
        self._expect = 0
        self._results = None
        self._deadline = None

    async def _run(self, what, done, timeout_ms, handle=0, a=None, b=None, c=None):
        # Start, wait on the flag alone, end: the procedures below hand back this coroutine
        # (no frame of their own); no timer task, no frame of timed.wait's, no closures.
        # The flag made first: a MemoryError making it must not leave a procedure started
        # that nobody waits for (the link would refuse every later one). It is the link's only
        # once start took the procedure (a refused one leaves the waiting one's flag alone).
        flag = asyncio.ThreadSafeFlag()
        self.start(what, done, timeout_ms, handle, a, b, c)
        self.flag = flag
        try:
            while self.waiting():
                await flag.wait()
        except BaseException:  # cancelled: nobody waits for it any more
            self.free()
            raise
        finally:
            self.flag = None
        return self.end(what)

    def _timed_out(self, what):
        self.disconnect_nowait()
        raise BLEError(TIMEOUT, "%s timed out" % what)

    def exchange_mtu(self, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Negotiate the ATT MTU (preferred value set by ``Central``); awaited, the result."""
        return self._run("MTU exchange", _IRQ_MTU_EXCHANGED, timeout_ms)

    async def pair(self, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Encrypt the link (see the module docstring) unless it is; return ``security``, whose
        SEC_ENCRYPTED bit is clear when the peer refused (no pairing mode, or it lost the bond:
        the link stays up, unencrypted)."""
        if not self.security & SEC_ENCRYPTED:
            await self._run("pairing", _IRQ_ENCRYPTION_UPDATE, timeout_ms)
        return self.security

    def services(self, uuid=None, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Awaited: primary services as a list of (start_handle, end_handle, UUID)."""
        return self._run("service discovery", _IRQ_GATTC_SERVICE_DONE, timeout_ms, 0, uuid)

    def characteristics(self, start, end, uuid=None, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Awaited: characteristics in [start, end] as a list of (def_handle, value_handle,
        properties, UUID)."""
        return self._run("characteristic discovery", _IRQ_GATTC_CHARACTERISTIC_DONE, timeout_ms,
                         0, start, end, uuid)

    def descriptors(self, start, end, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Awaited: descriptors in [start, end] as a list of (handle, UUID)."""
        return self._run("descriptor discovery", _IRQ_GATTC_DESCRIPTOR_DONE, timeout_ms, 0,
                         start, end)

    def read(self, value_handle, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Read a characteristic or descriptor value (awaited: the bytes)."""
        return self._run("read", _IRQ_GATTC_READ_DONE, timeout_ms, value_handle, value_handle)

    def write(self, value_handle, data, timeout_ms=_DEFAULT_TIMEOUT_MS, response=True):
        """Write with response (mode 1): awaited, returns once the peer acknowledged it. Without
        ``response`` (mode 0, a write command) the stack raises no event: it returns once the
        stack took the data, in order behind the procedures before it."""
        return self._run("write", _IRQ_GATTC_WRITE_DONE if response else 0, timeout_ms,
                         value_handle, value_handle, data, 1 if response else 0)

    def note(self):
        """The oldest queued notification or indication as (value handle, bytes), or None when
        none is queued; raises BLEError (DISCONNECTED) once the link is gone and every one was taken.
        Between calls, wait on the central's ``notified`` (a ThreadSafeFlag the IRQ sets for
        every connection's notifications and disconnects): the proxy's one forwarding task does,
        with no timer (``asyncio.wait_for_ms`` held two tasks and their frames) and no coroutine
        of this class in between, each a frame of heap per connection."""
        if self._notes:
            return self._notes.pop(0)
        if not self.connected:
            raise BLEError(DISCONNECTED, "link lost while waiting for a notification")
        return None

    def disconnect_nowait(self):
        """Ask the stack to drop the link; the disconnect event follows later."""
        if self.connected:
            try:
                if not self._central._ble.gap_disconnect(self.conn_handle):
                    self._central._forget(self)
                else:
                    self._central._called()
            except OSError:
                self._central._forget(self)

    async def disconnect(self, timeout_ms=_DEFAULT_TIMEOUT_MS):
        """Drop the link and wait for the stack to confirm it (or give up after the timeout)."""
        self.disconnect_nowait()
        if not self.connected:
            return
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        self.flag = flag = asyncio.ThreadSafeFlag()
        try:
            # Waits inline here and below, no helper: a helper's frame, the condition and the
            # timeout handed to it as closures cost their heap while the wait lasted.
            while self.connected:
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0 or not await timed.wait(flag, left):
                    break
        finally:
            self.flag = None


class Central:
    """The bridge's BLE central: scans and connects; one GAP procedure at a time."""

    def __init__(self, ble=None, mtu=185):
        self._ble = ble or bluetooth.BLE()
        self._mtu = mtu
        self._start()
        self.restarts = 0
        self.last_restart = None  # why the last restart happened
        self._owed_since = None  # ticks_ms of the oldest call not followed by any event yet
        self._call_errors = 0  # stack calls that failed in a row
        self._conns = {}
        # Set at IRQ level for every connection's notification, loss and procedure's end: the
        # proxy's one forwarding task waits on it (Connection.note, Connection.waiting).
        self.notified = asyncio.ThreadSafeFlag()
        self._gap = asyncio.Lock()
        self._gap_flag = asyncio.ThreadSafeFlag()
        self._pending = None  # address bytes while gap_connect is outstanding
        self._connected = None  # Connection, or False when the attempt failed
        self._scan_done = True
        self._connects_waiting = 0  # while above 0, a scan ends early
        self._ticking = False  # the GATT procedures' clock runs
        # Hears every advert and scan response of every scan, at IRQ level: on_advert(addr_type,
        # addr as bytes, adv_type, rssi, adv as a memoryview valid only during the call). The
        # Bluetooth proxy's (ble_proxy.py).
        self.on_advert = None
        # Answers the stack's _IRQ_GET_SECRET (get(sec_type, index, key)) and _IRQ_SET_SECRET
        # (set(sec_type, key, value) -> bool) at IRQ level: ble_bonds.Bonds, or None.
        self.secrets = None

    def _start(self):
        self._ble.active(True)
        try:  # bond; LE Secure Connections when the peer has them; no MITM: no display or keys
            self._ble.config(mtu=self._mtu, bond=True, le_secure=True, mitm=False,
                             io=_IO_NO_INPUT_OUTPUT)
        except (ValueError, OSError):  # a build without pairing: gap_pair fails, nothing else
            self._ble.config(mtu=self._mtu)
        self._ble.irq(self._irq)

    def _forget(self, conn):
        self._conns.pop(conn.conn_handle, None)
        conn._on_disconnect()

    def _called(self, call=None, *args):
        # A call the stack must answer with an event: a stack that says nothing for long is dead.
        if call is not None:
            try:
                call(*args)
            except OSError:
                self._call_errors += 1
                raise
            self._call_errors = 0
        if self._owed_since is None:
            self._owed_since = time.ticks_ms()

    def _clock(self):
        # A procedure waits (Connection._run): the clock runs until none does.
        if not self._ticking:
            self._ticking = True
            asyncio.create_task(self._tick())

    async def _tick(self):
        # Every _TICK_MS, sets the flag of each connection whose procedure is past its deadline
        # (it then raises TIMEOUT), and ``notified``; ends when no procedure waits. One task for
        # every waiting procedure: a timer task each cost ~190 B of heap on 64-bit.
        try:
            waiting = True
            while waiting:
                await asyncio.sleep_ms(_TICK_MS)
                now = time.ticks_ms()
                waiting = False
                for conn in self._conns.values():
                    deadline = conn._deadline
                    if deadline is not None:
                        waiting = True
                        if time.ticks_diff(deadline, now) <= 0:
                            if conn.flag is not None:
                                conn.flag.set()
                            self.notified.set()
        finally:
            self._ticking = False

    def connected(self):
        """How many links are up."""
        return len(self._conns)

    def stuck(self, silent_ms):
        """Why the stack looks dead, or None: "silent" when it owes an event and has raised none
        for ``silent_ms``, "refusing" when its calls keep failing."""
        since = self._owed_since
        if since is not None and time.ticks_diff(time.ticks_ms(), since) > silent_ms:
            return "silent"
        if self._call_errors >= _MAX_CALL_ERRORS:
            return "refusing"
        return None

    def restart(self, why):
        """Restart the stack (deactivate, activate, MTU and IRQ handler again): every link and
        every waiting operation fails as if the peer had gone; counted in ``restarts``."""
        self.restarts += 1
        self.last_restart = why
        self._owed_since = None
        self._call_errors = 0
        try:
            self._ble.active(False)
        except OSError:
            pass  # down is down
        for conn in list(self._conns.values()):
            self._forget(conn)
        if self._pending is not None:
            self._pending = None
            self._connected = False
        self._scan_done = True
        self._gap_flag.set()
        self._start()

    def _irq(self, event, data):
        self._owed_since = None
        if event == _IRQ_GET_SECRET or event == _IRQ_SET_SECRET:
            secrets = self.secrets
            if event == _IRQ_GET_SECRET:
                return None if secrets is None else secrets.get(data[0], data[1], data[2])
            return secrets is not None and secrets.set(data[0], data[1], data[2])
        if event == _IRQ_SCAN_RESULT:
            if self.on_advert is not None:
                self.on_advert(data[0], bytes(data[1]), data[2], data[3], data[4])
        elif event == _IRQ_SCAN_DONE:
            self._scan_done = True
            self._gap_flag.set()
        elif event == _IRQ_PERIPHERAL_CONNECT:
            conn_handle, addr_type, addr = data
            addr = bytes(addr)
            if self._pending is not None and addr == self._pending:
                conn = Connection(self, conn_handle, addr_type, addr)
                self._conns[conn_handle] = conn
                self._connected = conn
                self._pending = None
                self._gap_flag.set()
            else:
                # A connection nobody waits for any more (attempt gave up): do not keep it.
                self._ble.gap_disconnect(conn_handle)
        elif event == _IRQ_PERIPHERAL_DISCONNECT:
            conn_handle = data[0]
            if conn_handle == _NO_CONN:
                if self._pending is not None:
                    self._pending = None
                    self._connected = False
                    self._gap_flag.set()
            else:
                conn = self._conns.pop(conn_handle, None)
                if conn is not None:
                    conn._on_disconnect()
        else:
            conn = self._conns.get(data[0])
            if conn is not None:
                conn._on_gatt(event, data)

    async def scan(self, duration_ms, active=True):
        """Scan for ``duration_ms``; every advert and scan response goes to ``on_advert``.
        Ends early when a connect is waiting (``connect``)."""
        async with self._gap:
            self._scan_done = False
            try:
                self._called(self._ble.gap_scan, duration_ms, 30000, 30000, active)
                deadline = time.ticks_add(time.ticks_ms(), duration_ms + _CONNECT_MARGIN_MS)
                while not self._scan_done and self._connects_waiting == 0:
                    left = time.ticks_diff(deadline, time.ticks_ms())
                    if left <= 0 or not await timed.wait(self._gap_flag, left):
                        break
            finally:
                if not self._scan_done:
                    # Stop it and wait for its done event, so that event cannot end the next scan.
                    self._ble.gap_scan(None)
                    deadline = time.ticks_add(time.ticks_ms(), _CONNECT_MARGIN_MS)
                    while not self._scan_done:
                        left = time.ticks_diff(deadline, time.ticks_ms())
                        if left <= 0 or not await timed.wait(self._gap_flag, left):
                            break

    async def connect(self, addr_type, addr, timeout_ms=3000):
        """Connect to a peripheral; raise BLEError (UNREACHABLE) if it is not found within the
        timeout.

        A scan in progress ends early: a connection hubd waits for matters more than a look
        around.
        """
        addr = bytes(addr)
        self._connects_waiting += 1
        self._gap_flag.set()
        try:
            # One coroutine, its wait inline: a second frame and the wait's closures cost about
            # 400 B of heap on 64-bit while a connection was being made.
            async with self._gap:
                self._connected = None
                try:
                    self._called(self._ble.gap_connect, addr_type, addr, timeout_ms)
                except OSError as e:
                    raise BLEError(ERROR, "connect: %r" % e)
                self._pending = addr
                deadline = time.ticks_add(time.ticks_ms(), timeout_ms + _CONNECT_MARGIN_MS)
                try:
                    while self._connected is None:
                        left = time.ticks_diff(deadline, time.ticks_ms())
                        if left <= 0 or not await timed.wait(self._gap_flag, left):
                            break
                finally:
                    if self._connected is None:
                        # Timed out or cancelled: stop the stack's attempt; a late connect event
                        # finds no pending address and is disconnected by the IRQ handler.
                        self._pending = None
                        self._ble.gap_connect(None)
                if not self._connected:
                    raise BLEError(UNREACHABLE, "no connection to %s within %d ms"
                                   % (addr_text(addr), timeout_ms))
                return self._connected
        finally:
            self._connects_waiting -= 1


def addr_text(addr):
    """6 bytes -> 'C0:FF:EE:00:00:01', as link messages carry addresses."""
    return ":".join("%02X" % b for b in addr)


def parse_addr(text):
    """'C0:FF:EE:00:00:01' (either case) -> 6 bytes, or None."""
    if len(text) != 17:
        return None
    for i in range(2, 17, 3):
        if text[i] != ":":
            return None
    try:
        return bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return None

"""A lock that speaks the reference lock protocol (docs/lock-protocol.md, wire/lockproto.py),
driven from hubd on bleak: through the bridge's Bluetooth proxy (hubd.ble) or, given another
bleak backend, the hub's own adapter.

One :meth:`ReferenceLock.operate` is one command, at most once (docs/architecture.md, "Trust
and safety"): connecting and fetching a challenge may be retried until the deadline; just before
the COMMAND is written ``on_written`` is called (hubd's journal records it), and from then on the
COMMAND is never sent again. A RESULT that does not come is ``incomplete``, with the state read
back (a fresh challenge and a ``status`` COMMAND, never the original one) once the lock settled.
The rule is written once, in :meth:`ReferenceLock.operate`.

Between operations :meth:`ReferenceLock.read` reads what the lock kept while nobody was
connected (READ_REPORTS after the last report taken in) and, for a poll, its state and battery
with a ``status`` COMMAND on a tag of zeros: it moves nothing and is no command of hubd's
journal, as the firmware's polls (hubd.locks.upkeep decides when). The report number taken in
is kept across connections and, through ``on_counter`` (hubd.store.pairings), across restarts:
after one hubd asks for the reports the lock made meanwhile. Only the first read of a new
pairing asks for none and takes the lock's authentic latest number as its baseline.

As the firmware's driver did (firmware/locks/reference.py with firmware/policy.py), the
connection outlives an operation by ``idle_s``, so a follow-up skips connecting, discovery and
subscription; then it is dropped, because a battery lock pays for every second of it.

Each result says how long the driver took (``ble_ms``) and, of that, how long it waited for the
answers to its BLE requests (``ble_requests_ms``, ``ble_requests``: connect with discovery,
subscribe, writes; through the proxy, round trips over the serial link to the bridge): hubd's
"command timing" and benchmarks/roundtrip.py split the driver's time with them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDeviceNotFoundError, BleakError

from hubd.access.transport import OpResult
from hubd.ble import ProxyUnavailable, ProxyUnreachable, WriteUnknown, errors
from hubd.ble.radio import Radio
from hubd.locks.kept import Kept
from wire import lockproto as lp
from wire import outcomes as oc

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Timings:
    """The driver's times in seconds; the defaults are the firmware driver's
    (docs/lock-protocol.md, "Timing")."""

    connect_s: float = 3.0  # one connection attempt
    gatt_s: float = 2.0  # one GATT procedure, and the wait for a CHALLENGE
    deadline_s: float = 10.0  # connect and challenge, retried, before the COMMAND write
    result_s: float = 8.0  # the RESULT after the write: a motor takes seconds
    settle_s: float = 6.0  # a status read right after a move may show the old state
    readback_extra_s: float = 3.0  # the read-back gets at least connect_s + this
    idle_s: float = 3.0  # an unused connection is kept this long
    retry_pause_s: float = 0.2


@dataclass(frozen=True)
class Refreshed:
    """What :meth:`ReferenceLock.read` learned: the state and battery when it read them (else
    None), and how many new reports it took in."""

    state: str | None
    battery: int | None
    reports: int


# A status read moves nothing and answers no command: its tag identifies nothing.
_POLL_TAG = bytes(lp.TAG_LEN)


class _Lost(Exception):
    """The connection went down while the driver waited for the lock."""


class _Link:
    """One connection: the client, the control point and the lock's PDUs as they arrive."""

    def __init__(self, client: BleakClient, control: BleakGATTCharacteristic) -> None:
        self.client = client
        self.control = control
        self.pdus: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the connection is gone

    @property
    def up(self) -> bool:
        return self.client.is_connected

    async def next_pdu(self, timeout: float) -> bytes:
        """The next notification within ``timeout``; TimeoutError, or _Lost with the link."""
        async with asyncio.timeout(max(0.0, timeout)):
            pdu = await self.pdus.get()
        if pdu is None:
            raise _Lost
        return pdu


class ReferenceLock(Kept):
    """One reference-protocol lock at ``address`` (``addr_type`` 0 public, 1 random) whose pairing
    secret is ``secret``.

    ``radio``: how hubd reaches Bluetooth (hubd.ble.radio: the bridge's proxy or the hub's own
    adapter; default: the installed proxy); ``on_report(what, name, state, battery, source)``: for
    each authentic report (STATUS, EVENT) the lock makes on its own while connected (``what``
    "state" or "event", ``source`` the protocol's source name).

    Not safe for two operations at once: its caller serialises them (hubd.locks.transport).
    """

    #: A visit's held connection (hubd.locks.visit) is kept alive by a read under the lock's own
    #: idle drop (READ_REPORTS after a challenge), moving nothing.
    keeps_alive = True

    def __init__(self, address: str, secret: bytes, *, addr_type: int = 0,
                 radio: Radio | None = None,
                 timings: Timings = Timings(),
                 on_report: Callable[[str, str | None, str, int, str], None] | None = None,
                 report_counter: int = -1,
                 on_counter: Callable[[int], None] | None = None) -> None:
        if len(secret) != lp.SECRET_LEN:
            raise ValueError(f"the secret must be {lp.SECRET_LEN} bytes")
        super().__init__(radio)
        self.address = address.upper()
        self._addr = bytes.fromhex(self.address.replace(":", ""))
        if len(self._addr) != lp.ADDR_LEN:
            raise ValueError(f"address {address!r} is not six bytes")
        self.addr_type = addr_type
        self._secret = bytes(secret)
        self.timings = timings
        self.on_report = on_report
        # The latest report number taken in; -1 before the first read (hubd keeps it across
        # restarts: hubd.store.pairings). It goes to ``on_counter`` at each read's REPORTS_END
        # (``_marked``: the last it was told), not at every report: one write per read, none on
        # a command's path; a restart before it passes those reports on again, never loses them.
        self.report_counter = report_counter
        self.on_counter = on_counter
        self._marked = report_counter
        self._link: _Link | None = None
        # The operation under way: its BLE requests' waits (seconds) and their number.
        self._requests_s = 0.0
        self._requests = 0

    @property
    def read_s(self) -> float:
        """How long a background read may take: a connection and two GATT waits."""
        return self.timings.connect_s + 2 * self.timings.gatt_s

    def reading_of(self, percent: int | None) -> int | None:
        """The lock reports percent itself (battery model ``reference``)."""
        return percent

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.up

    async def operate(self, action: str, command_id: str, on_written: Callable[[], None],
                      timeout: float) -> OpResult:
        """Run ``action`` ("status", "unlock", "lock", "unlatch") for ``command_id``; see the
        module docstring. Every ending is a result, never an exception (but cancellation)."""
        try:
            code = lp.action_code(action)
        except lp.ProtocolError:
            return OpResult(oc.FAILED, oc.UNSUPPORTED_ACTION, None, None)
        tag = lp.command_tag(command_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        written = False
        self._requests_s, self._requests = 0.0, 0
        self._keep()
        try:
            if action == "status":
                await self._settled()  # right after a move the lock may answer the old state
            deadline = loop.time() + min(self.timings.deadline_s, timeout)
            link, nonce, reason = await self._prepare(deadline)
            if link is None or nonce is None:
                # Nothing was written: nothing moved.
                return self._result(started, oc.unwritten(reason), reason)
            pdu = lp.encode_command(self._secret, self._addr, nonce, code, tag)
            written = True
            on_written()
            if action != "status":
                self._moved_at = loop.time()
            # From here on: never sent again, whatever happens.
            try:
                await self._asked(link.client.write_gatt_char(link.control, pdu, response=True))
                result = await self._wait_result(link, self.timings.result_s)
                if action != "status":
                    self._moved_at = loop.time()  # the RESULT comes when the move ended
            except (WriteUnknown, _Lost, errors.ProxyDisconnected, ProxyUnavailable) as exc:
                lost = not isinstance(exc, WriteUnknown) or exc.status in _LINK_GONE
                return await self._incomplete(started, tag, deadline,
                                              oc.LINK_LOST if lost else oc.NO_RESULT)
            except (BleakError, TimeoutError):
                return await self._incomplete(started, tag, deadline, oc.NO_RESULT)
            return self._judged(started, nonce, tag, result)
        except asyncio.CancelledError:
            self._drop()
            raise
        except Exception:
            # A bug here, or in a library under it: the at-most-once rule still holds.
            log.exception("reference lock %s: the driver failed", self.address)
            self._drop()
            outcome, state = oc.unfinished(written)
            return self._result(started, outcome, oc.DRIVER_ERROR, state)
        finally:
            self._release()

    async def exchange(self, build: Callable[[bytes], bytes], timeout: float
                       ) -> tuple[bytes, tuple[int, int, int, bytes]] | str:
        """One request that is not a COMMAND (PAIR, UNPAIR: hubd.locks.pairing): connect, fetch a
        challenge, write ``build(nonce)`` once and wait for the lock's RESULT, all within
        ``timeout``. Returns (nonce, (status, state, battery, mac)) for the caller to judge, or
        why not: a reason of wire.outcomes (``unreachable``, ``link_failed``, ``no_challenge``,
        ``bridge_unavailable``, ``bridge_busy``: nothing was written; ``no_result``,
        ``link_lost``: the write may have reached the lock). Never sent twice."""
        loop = asyncio.get_running_loop()
        self._requests_s, self._requests = 0.0, 0
        self._keep()
        try:
            deadline = loop.time() + timeout
            link, nonce, reason = await self._prepare(deadline)
            if link is None or nonce is None:
                return reason
            try:
                await self._asked(link.client.write_gatt_char(link.control, build(nonce),
                                                              response=True))
                return nonce, await self._wait_result(link, max(0.0, deadline - loop.time()))
            except (WriteUnknown, _Lost, errors.ProxyDisconnected, ProxyUnavailable) as exc:
                self._drop()
                lost = not isinstance(exc, WriteUnknown) or exc.status in _LINK_GONE
                return oc.LINK_LOST if lost else oc.NO_RESULT
            except (BleakError, TimeoutError):
                self._drop()
                return oc.NO_RESULT
        except asyncio.CancelledError:
            self._drop()
            raise
        finally:
            self._release()

    async def read(self, read_status: bool, timeout: float, *,
                   connections: int | None = None) -> Refreshed | str:
        """Take in the reports the lock kept since the last one taken in (each authentic new one
        goes to ``on_report`` as a live one does) and, with ``read_status`` or when some were
        lost from the lock's backlog, read its state and battery, all within ``timeout``.

        Returns what was learned, or why not: a reason of wire.outcomes (``unreachable``,
        ``link_failed``, ``no_challenge``, ``bridge_unavailable``, ``bridge_busy``: no challenge
        came; ``link_failed`` after it; ``bad_lock_mac``: the REPORTS_END did not verify;
        ``driver_error``: a bug). Never writes anything that can move a motor. A connection made
        for it is dropped at once, and returns only once it is gone (background reads hold one
        proxy slot at a time across the hub, and a battery lock pays for every second); one an
        operation left open is kept ``idle_s``. A visit's hold reads so, making at most
        ``connections`` new connections (``link_failed`` when it needs another)."""
        got = await self._read_between(
            lambda: self._refresh(read_status, timeout, connections))
        return oc.DRIVER_ERROR if got is None else got

    async def _refresh(self, read_status: bool, timeout: float,
                       connections: int | None = None) -> Refreshed | str:
        loop = asyncio.get_running_loop()
        self._requests_s, self._requests = 0.0, 0
        deadline = loop.time() + timeout
        link, nonce, reason = await self._prepare(deadline, connections)
        if link is None or nonce is None:
            return reason
        try:
            # A hard end: a peer that keeps notifying (forged reports, each dropped) must not
            # hold the lock's turn past the read's time.
            async with asyncio.timeout_at(deadline):
                taken, lost = await self._read_reports(link, nonce, deadline)
                if not (read_status or lost):
                    return Refreshed(None, None, taken)
                # READ_REPORTS did not spend the nonce: the status read uses it.
                pdu = lp.encode_command(self._secret, self._addr, nonce,
                                        lp.action_code("status"), _POLL_TAG)
                await self._asked(link.client.write_gatt_char(link.control, pdu, response=True))
                result = await self._wait_result(link, max(0.0, deadline - loop.time()))
        except (BleakError, TimeoutError, _Lost, lp.ProtocolError) as exc:
            log.info("reference lock %s: reading it failed: %s", self.address,
                     exc or type(exc).__name__)
            self._drop()
            return oc.BAD_LOCK_MAC if isinstance(exc, lp.ProtocolError) else oc.LINK_FAILED
        status, state, battery, mac = result
        if status != lp.STATUS_OK or not lp.verify_result(
                self._secret, self._addr, nonce, _POLL_TAG, status, state, battery, mac):
            return Refreshed(None, None, taken)  # heard (REPORTS_END verified), state unread
        return Refreshed(lp.state_name(state), battery, taken)

    # -- the connection (hubd.locks.kept) -----------------------------------------------------

    def _held(self) -> bool:
        return self._link is not None

    def _forget(self) -> Coroutine[Any, Any, None] | None:
        link, self._link = self._link, None
        if link is None:
            return None
        link.pdus.put_nowait(None)
        return _disconnect(link.client)

    async def _connect(self, deadline: float) -> _Link:
        loop = asyncio.get_running_loop()
        radio = self.radio
        link: _Link | None = None

        def gone(_: BleakClient) -> None:
            if link is not None:
                link.pdus.put_nowait(None)

        client = BleakClient(self.address, gone, [lp.SERVICE_UUID],
                             timeout=max(0.001, min(self.timings.connect_s, deadline - loop.time())),
                             backend=radio.client_backend,
                             **radio.client_kwargs(self.addr_type, self.timings.gatt_s))
        await self._asked(client.connect())
        try:
            service = client.services.get_service(lp.SERVICE_UUID)
            control = service.get_characteristic(lp.CONTROL_UUID) if service else None
            event = service.get_characteristic(lp.EVENT_UUID) if service else None
            if control is None or event is None or "notify" not in event.properties:
                raise lp.ProtocolError("the lock lacks the reference protocol's service")
            if client.mtu_size - 3 < lp.COMMAND_LEN:
                raise lp.ProtocolError(f"ATT MTU {client.mtu_size} too small for a COMMAND")
            link = _Link(client, control)
            made = link
            await self._asked(client.start_notify(event,
                                                  lambda _, data: self._notified(made, bytes(data))))
        except BaseException:
            await _disconnect(client)
            raise
        return link

    async def _prepare(self, deadline: float, connections: int | None = None
                       ) -> tuple[_Link | None, bytes | None, str]:
        """Connect (or reuse the connection) and fetch a nonce, retried until ``deadline``:
        (link, nonce, "") or (None, None, why not). ``connections``: how many new connections
        it may make at most (None: as many as the deadline allows); one more needed is
        ``link_failed`` (a visit's hold counts the connections it makes)."""
        loop = asyncio.get_running_loop()
        reason = oc.UNREACHABLE
        made = 0
        while loop.time() < deadline:
            connecting = False
            try:
                if self._link is None or not self._link.up:
                    self._drop()
                    if connections is not None and made >= connections:
                        return None, None, oc.LINK_FAILED
                    connecting = True
                    self._link = await self._connect(deadline)
                    made += 1
                    connecting = False
                link = self._link
                reason = oc.NO_CHALLENGE
                return link, await self._challenge(link, deadline), ""
            except ProxyUnavailable:
                # The link to the bridge is down: nothing can be sent; it may come back.
                self._drop()
                reason = oc.BRIDGE_UNAVAILABLE
                if not await self.radio.wait_up(max(0.0, deadline - loop.time())):
                    break
                continue
            except (ProxyUnreachable, BleakDeviceNotFoundError):  # the proxy's word; the adapter's
                reason = oc.UNREACHABLE
            except TimeoutError as exc:
                # The hub's own adapter found no connection in time: the lock is out of reach.
                # Through the proxy the bridge says that itself (above); a ProxyTimeout is the
                # bridge or a GATT procedure not answering.
                log.info("reference lock %s: %s", self.address, exc or type(exc).__name__)
                if connecting and not isinstance(exc, errors.ProxyTimeout):
                    reason = oc.UNREACHABLE
                elif reason != oc.NO_CHALLENGE:
                    reason = oc.LINK_FAILED
            except errors.ProxyBusy:
                reason = oc.BRIDGE_BUSY
            except (BleakError, lp.ProtocolError, _Lost) as exc:
                log.info("reference lock %s: %s", self.address, exc or type(exc).__name__)
                if reason != oc.NO_CHALLENGE:  # connected or not, the link is what failed
                    reason = oc.LINK_FAILED
            self._drop()
            await asyncio.sleep(max(0.0, min(self.timings.retry_pause_s, deadline - loop.time())))
        return None, None, reason

    def _notified(self, link: _Link, pdu: bytes) -> None:
        """A notification: on the connection kept idle between operations a report is passed
        on at once (as the firmware's ``service`` did); else the operation under way takes it."""
        if self._between and link is self._link:
            self._unsolicited(pdu)
        else:
            link.pdus.put_nowait(pdu)

    async def _asked(self, request: Awaitable[T]) -> T:
        """Await one BLE request of the operation, its wait counted in the result."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            return await request
        finally:
            self._requests_s += loop.time() - asked
            self._requests += 1

    async def _challenge(self, link: _Link, deadline: float) -> bytes:
        # Reports that came while idle are passed on; anything else queued is stale.
        while not link.pdus.empty():
            pdu = link.pdus.get_nowait()
            if pdu is None:
                raise _Lost
            self._unsolicited(pdu)
        await self._asked(link.client.write_gatt_char(link.control, lp.encode_challenge_request(),
                                                      response=True))
        loop = asyncio.get_running_loop()
        until = loop.time() + min(self.timings.gatt_s, deadline - loop.time())
        while True:
            pdu = await link.next_pdu(until - loop.time())
            if pdu[:1] == bytes((lp.OP_CHALLENGE,)):
                return lp.decode_challenge(pdu)
            self._unsolicited(pdu)

    async def _settled(self) -> None:
        if self._moved_at is None:
            return
        left = self._moved_at + self.timings.settle_s - asyncio.get_running_loop().time()
        if left > 0:
            await asyncio.sleep(left)

    async def _read_reports(self, link: _Link, nonce: bytes, deadline: float) -> tuple[int, bool]:
        """READ_REPORTS after the last number taken in (none before the first: the lock's
        authentic REPORTS_END gives the baseline). Returns how many new reports were taken in,
        and whether some were lost from the backlog (the first one is not the one after the last
        taken in): then the state must be read."""
        before = self.report_counter
        after = before if before >= 0 else lp.COUNTER_NONE
        await self._asked(link.client.write_gatt_char(link.control, lp.encode_read_reports(after),
                                                      response=True))
        loop = asyncio.get_running_loop()
        first: int | None = None
        taken = 0
        while True:
            # Each kept report in its own notification: the wait is per notification.
            pdu = await link.next_pdu(min(self.timings.gatt_s, deadline - loop.time()))
            if pdu[:1] == bytes((lp.OP_REPORTS_END,)):
                counter, mac = lp.decode_reports_end(pdu)
                if not lp.verify_reports_end(self._secret, self._addr, nonce, counter, mac):
                    raise lp.ProtocolError("REPORTS_END does not verify")
                # Fresh and authentic: the baseline, even if the lock's count went back.
                self.report_counter = counter
                self._mark()
                return taken, before >= 0 and counter > before and first != before + 1
            number = self._unsolicited(pdu)
            if number is not None:
                taken += 1
                if first is None:
                    first = number

    # -- after the write ----------------------------------------------------------------------

    async def _wait_result(self, link: _Link, timeout: float) -> tuple[int, int, int, bytes]:
        """The RESULT; malformed notifications are ignored, reports passed on."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while True:
            pdu = await link.next_pdu(until - loop.time())
            if pdu[:1] == bytes((lp.OP_RESULT,)):
                try:
                    return lp.decode_result(pdu)
                except lp.ProtocolError:
                    continue
            self._unsolicited(pdu)

    def _judged(self, started: float, nonce: bytes, tag: bytes,
                result: tuple[int, int, int, bytes]) -> OpResult:
        status, state, battery, mac = result
        if not lp.verify_result(self._secret, self._addr, nonce, tag, status, state, battery, mac):
            # A lock that refused our MAC holds another secret, so its answer cannot verify
            # either; that refusal can never be mistaken for success, so it is reported.
            reason = oc.AUTH_FAILED if status == lp.STATUS_AUTH_FAILED else oc.BAD_LOCK_MAC
            return self._result(started, oc.FAILED, reason)
        name = lp.state_name(state)
        if status == lp.STATUS_OK:
            return self._result(started, oc.SUCCEEDED, None, name, battery)
        return self._result(started, oc.FAILED, lp.status_name(status), name, battery)

    async def _incomplete(self, started: float, tag: bytes, deadline: float, reason: str) -> OpResult:
        """The RESULT is lost: read the state back once the lock settled, with a fresh challenge
        and a ``status`` COMMAND on the same tag; never the command itself."""
        self._drop()
        await self._settled()
        loop = asyncio.get_running_loop()
        budget = max(deadline - loop.time(), self.timings.connect_s + self.timings.readback_extra_s)
        link, nonce, _ = await self._prepare(loop.time() + budget)
        if link is not None and nonce is not None:
            pdu = lp.encode_command(self._secret, self._addr, nonce, lp.action_code("status"), tag)
            try:
                await self._asked(link.client.write_gatt_char(link.control, pdu, response=True))
                read = self._judged(started, nonce, tag,
                                    await self._wait_result(link, self.timings.gatt_s))
            except (BleakError, TimeoutError, _Lost):
                self._drop()
            else:
                if read.outcome == oc.SUCCEEDED:
                    return self._result(started, oc.INCOMPLETE, reason, read.state, read.battery)
        return self._result(started, oc.INCOMPLETE, reason, "unknown")

    def _result(self, started: float, outcome: str, reason: str | None, state: str | None = None,
                battery: int | None = None) -> OpResult:
        ms = (asyncio.get_running_loop().time() - started) * 1000
        return OpResult(outcome, reason, state, battery, ble_ms=round(ms, 3),
                        ble_requests_ms=round(self._requests_s * 1000, 3),
                        ble_requests=self._requests)

    # -- reports ------------------------------------------------------------------------------

    def _unsolicited(self, pdu: bytes) -> int | None:
        """Pass on an authentic, new STATUS or EVENT and return its number; drop anything else
        (None)."""
        try:
            if pdu[:1] == bytes((lp.OP_STATUS,)):
                counter, state, battery, source, mac = lp.decode_status(pdu)
                event = None
                ok = lp.verify_status(self._secret, self._addr, counter, state, battery, source, mac)
            elif pdu[:1] == bytes((lp.OP_EVENT,)):
                counter, event, source, state, battery, mac = lp.decode_event(pdu)
                ok = lp.verify_event(self._secret, self._addr, counter, event, source, state,
                                     battery, mac)
            else:
                return None
        except lp.ProtocolError:
            return None
        if not ok or counter <= self.report_counter:
            return None  # forged, replayed or reordered
        if self.on_report is not None:
            try:
                self.on_report("state" if event is None else "event",
                               None if event is None else lp.event_name(event),
                               lp.state_name(state), battery, lp.source_name(source))
            except Exception:  # the listener's bug must not end the driver's read
                log.exception("reference lock %s: a report's listener raised", self.address)
        self.report_counter = counter
        return counter

    def _mark(self) -> None:
        """Tell ``on_counter`` the latest report number taken in, if it changed since it was
        last told (its reports went to ``on_report`` before)."""
        if self.report_counter == self._marked or self.on_counter is None:
            return
        self._marked = self.report_counter
        try:
            self.on_counter(self.report_counter)
        except Exception:  # as a report's listener
            log.exception("reference lock %s: the report number's listener raised", self.address)


# A write whose answer did not come because the connection or the link went down.
_LINK_GONE = ("disconnected", errors.LINK_LOST)


async def _disconnect(client: BleakClient) -> None:
    try:
        await client.disconnect()
    except (BleakError, TimeoutError) as exc:
        log.info("disconnect from %s: %s", client.address, exc)

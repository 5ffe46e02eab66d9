"""A dormakaba dKey (docs/dkey.md), driven from hubd through the unmodified py-dormakaba-dkey on
hubd's radio: the bridge's Bluetooth proxy, or the hub's own adapter (hubd.ble.vendor puts the
library's own BleakClient there). :class:`DkeyLock` has the shape of
hubd.locks.reference.ReferenceLock, so hubd.locks.transport and hubd.locks.upkeep drive either.

One :meth:`DkeyLock.operate` is one command, at most once (docs/architecture.md, "Trust and
safety"):

- **Before the command**: connect, bond (re-encrypt), authenticate with the key holder's
  association data and enable the lock's notifications: the library's ``update()``, retried
  until the deadline. Nothing is written that can move the bolt, so nothing is guarded. Nothing
  written: ``failed`` or ``timed_out``, with ``unreachable`` (no connection), ``link_failed``
  (connected, the handshake did not finish), ``bridge_unavailable`` (the link to the bridge is
  down), ``auth_failed`` (the lock forgot this hub, NOT_ASSOCIATED; or it ended the link twice
  at the answer to its challenge, as it does to a stale or forged secret).
- **The command**: the library's ``unlock()`` or ``lock()`` under a hubd.ble.vendor.OneCommand:
  ``on_written`` is called just before its write, and the library can neither reconnect nor
  write again within the call. The call returns before the bolt moves (``unlock()`` after the
  lock's UNLOCK_RSP, ``lock()`` once written); the outcome is the lock's unlock-status
  notification reaching the target within ``result_s`` of the write: ``succeeded``, with the
  state and battery. Already at the target (the lock neither moves nor notifies): ``succeeded``
  once the call returned. A lock that refuses (UNLOCK_RSP's or CHANGE_MODE's acknowledgement
  carries an error, which the library does not check: read here with its public
  ``receive_notifications``): ``failed`` (``busy`` while its motor runs, ``unsupported``), as it
  did not move. A "stuck" STATUS_REPORT (the motor stalled; the library only acknowledges it,
  read here with ``receive_once``): ``failed``, ``jammed``, state ``jammed``.
- **Unknown fate**: a call that raised once its write was attempted (the link lost:
  ``Disconnected``, vendor.SecondAttempt, a write error; or the call's time up), or a target not
  reached within ``result_s`` with the link up (the lock may still be moving, or stalled in a way
  it did not report), is ``incomplete`` (``link_lost`` or ``no_result``): the link is dropped and
  the state is read back on a fresh session once the lock settled (``settle_s`` after the
  write), never the command again; ``unknown`` if that read fails too.

``status`` reads the state and battery as the session's notifications say them. A dKey has no
command that releases the latch on its own: ``unlatch`` is ``unsupported_action``.

**Manual turns**: a dKey tells its state only to a key holder connected with notifications on.
The connection outlives an operation by ``idle_s`` (a visit's next command skips the handshake,
and a turn by hand meanwhile is heard; the lock itself drops a silent link at 30 s): a change of
the unlock status notified while no command waits for it goes to ``on_report`` as a state with
source ``manual`` (``handle`` when the notification says the door handle did it). A turn while
nobody is connected is seen at the next poll only (:meth:`DkeyLock.read`; hubd.locks.upkeep).
A dKey keeps no reports for later: ``report_counter`` stays 0 and its advert carries none.

**A visit's hold** (hubd.locks.visit: a ``prepare``, or a route's next door) reads the lock
(:meth:`DkeyLock.read`): connect, bond, authenticate, notifications on, moving nothing; the
session is then kept for the visit's command without keep-alives (the library's ``update()``
sends nothing on a session up): ``held_s`` after its last traffic (the handshake, a command's
write), under the lock's own 30 s drop, and never longer once let go (``idle_s`` from then, at
most that bound), so that no command is begun on a session the lock is about to end.

**Battery**: the lock reports raw units (docs/dkey.md); results and reports carry the percent of
hubd.devices.battery's ``dkey`` model, and :attr:`DkeyLock.battery_raw` the reading behind it
(the device registry converts it itself).

**The library's traps** (docs/dkey.md, "The library's seams"), and what is done about them:

- It has no timeouts: every call is bounded by ``asyncio.timeout``. It turns a cancellation into
  ``DkeyError``: the timeout's ``expired()`` tells hubd's own timeout, and a cancellation from
  outside (hubd stops, the command path's own timeout) is raised again as CancelledError.
- Its state outlives a connection in ways that can mislead (the merged ``state``, and after a
  disconnect that failed, a session it believes authenticated): a connection is one library
  object, and a dropped connection drops the object with it; the next session starts fresh.
- It logs the association secret and its session keys at DEBUG: its logger is held at INFO.
- Whether the link is up it keeps to itself; a ``receive_once`` of the lock's DISCONNECT_REQ,
  which the library cancels when its link goes, tells it.
- It never disconnects a client whose ``pair()`` failed (a lost bond): every client it makes is
  noted (hubd.ble.vendor.Clients) and closed with the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak_retry_connector import BleakNotFoundError, BleakOutOfConnectionSlotsError
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey import commands as cmds
from py_dormakaba_dkey.commands import DoorHandleState, Notifications, UnlockStatus
from py_dormakaba_dkey.errors import (
    CommandFailed,
    Disconnected,
    DkeyError,
    InvalidActivationCode,
    InvalidCommand,
    NotAssociated,
    NotAuthenticated,
    NotConnected,
    Timeout,
    UnsupportedProtocolVersion,
    WrongActivationCode,
)
from py_dormakaba_dkey.models import AssociationData, ErrorCode

from hubd.access.transport import OpResult
from hubd.ble import errors, vendor
from hubd.ble.radio import Radio
from hubd.ble.vendor import SecondAttempt
from hubd.devices.battery import to_percent
from hubd.locks.kept import Kept
from hubd.locks.reference import Refreshed
from wire import lockkinds
from wire import outcomes as oc

log = logging.getLogger(__name__)

# The library logs the association secret, the ECDH keys and every frame in the clear at DEBUG:
# never in hubd's log, whatever level the daemon runs at.
logging.getLogger("py_dormakaba_dkey").setLevel(logging.INFO)

#: A dKey's association data: the key holder id, then the association secret.
KEY_HOLDER_LEN = 4
SECRET_LEN = 32
#: The battery model of hubd.devices.battery whose raw units the lock reports.
BATTERY_MODEL = "dkey"

#: The errors a call of the library ends in, besides cancellation: its own, bleak's (and
#: hubd.ble's, which are bleak's), a connection that did not come, hubd's refusal of a second
#: attempt, and what bleak-retry-connector counts as a broken D-Bus socket.
_CALL_ERRORS = (DkeyError, BleakError, TimeoutError, SecondAttempt, EOFError, BrokenPipeError)


@dataclass(frozen=True)
class DkeyTimings:
    """The dKey driver's times in seconds. A dKey's handshake takes about a dozen round trips
    (identification both ways, the challenge, the accepted check, the lock's type and name, the
    notifications mask), each through the proxy a round trip over the serial link too."""

    deadline_s: float = 15.0  # connect, bond, authenticate, notifications on: retried, first
    gatt_s: float = 3.0  # one GATT request
    command_s: float = 6.0  # the library's unlock() or lock() call: the write, UNLOCK_RSP
    result_s: float = 12.0  # from the write to the unlock status at the target (a motor's time)
    settle_s: float = 6.0  # a read right after a command may show the state from before it
    readback_s: float = 4.0  # an unknown fate's read-back: what is left, at least this
    idle_s: float = 20.0  # an unused connection is kept this long (the lock drops it at 30 s)
    # A visit's hold keeps a session this long after its last traffic: under the lock's own
    # drop at 30 s, by enough that a command begun at its end is written and answered before it.
    held_s: float = 25.0
    retry_pause_s: float = 0.5
    close_s: float = 5.0  # a disconnect


def state_name(status: UnlockStatus | None) -> str:
    """The library's unlock status as hubd's lock state (wire.lockkinds.STATES). A dKey with a
    security (double) lock reports SECURITY_LOCKED when it is engaged: locked; the statuses the
    library names UNLOCKED_... are unlocked."""
    if status in (UnlockStatus.LOCKED, UnlockStatus.SECURITY_LOCKED):
        return "locked"
    if status in (UnlockStatus.UNLOCKED, UnlockStatus.UNLOCKED_SECURITY_LOCKED,
                  UnlockStatus.UNLOCKED_FORCED_UNLOCK):
        return "unlocked"
    return "unknown"


def battery_percent(raw: int | None) -> int | None:
    """The lock's raw battery reading as a percent (hubd.devices.battery, model ``dkey``)."""
    if raw is None:
        return None
    try:
        return to_percent(BATTERY_MODEL, raw)
    except ValueError:  # not a reading the battery can show
        return None


#: An error code of the lock's acknowledgement (the library's CommandFailed) as a reason.
_REFUSALS = {
    ErrorCode.NOT_AUTHENTICATED: oc.AUTH_FAILED,
    ErrorCode.AUTHENTICATION_FAILED: oc.AUTH_FAILED,
    ErrorCode.WRONG_PIN: oc.AUTH_FAILED,
    ErrorCode.NO_AVAILABLE_KEYS: oc.NOT_PAIRING,  # no room for another key holder
    ErrorCode.MAX_ADMINS: oc.NOT_PAIRING,
    ErrorCode.MAX_PENDING_KEYS: oc.NOT_PAIRING,
    ErrorCode.MAX_KEY_FOBS_PENDING: oc.NOT_PAIRING,
    ErrorCode.WRONG_STATE: oc.BUSY,  # the motor runs
    ErrorCode.UNKNOWN_CMD: oc.UNSUPPORTED,
    ErrorCode.PARAM_NOT_SUPPORTED: oc.UNSUPPORTED,
}

# A write whose answer did not come because the connection or the link went down.
_LINK_GONE = ("disconnected", errors.LINK_LOST)
# Logged when an authenticated connection ends (the lock's DISCONNECT_REQ, the link lost, or
# hubd letting go): after it, the next command authenticates anew.
SESSION_ENDED = "dKey %s: its authenticated connection ended"


def reason_of(exc: BaseException) -> str:
    """What a py-dormakaba-dkey call that raised ``exc`` ended as, in wire.outcomes' reasons.

    The library wraps what it meets (bleak-retry-connector raises ``BleakNotFoundError`` *from*
    the radio's ``ProxyUnreachable``), so the chain of causes is read, the most telling error
    first: ``unreachable`` (not found, not connectable), ``bridge_unavailable`` and
    ``bridge_busy`` (the bridge's link is down, or it has no connection slot), ``auth_failed``
    (the lock forgot the key holder, or a wrong activation code), ``bad_request`` (an activation
    code that is no code, refused before any radio traffic), ``not_pairing`` (the lock has no
    room for another key holder), ``busy`` (its motor runs), ``unsupported`` (a protocol version
    or request it does not know), ``link_lost`` (the link went down under a call: the library's
    ``Disconnected``, ``NotConnected``, its idle ``Timeout``, or a second attempt hubd refused,
    hubd.ble.vendor.SecondAttempt), ``link_failed`` (any other bleak error: a failed pairing, a
    GATT error). A bare ``DkeyError`` is how the library ends a call that was cancelled: with an
    ``asyncio.timeout`` around it, the caller's timeout, ``no_result`` here; the caller tells a
    timeout from a cancellation with the timeout's ``expired()``. Anything else is a bug:
    ``driver_error``.

    Whether the lock may have taken a command is not this function's business: the caller knows
    whether it wrote one (hubd.ble.vendor.OneCommand).
    """
    for link in _causes(exc):
        reason = _telling(link)
        if reason is not None:
            return reason
    if isinstance(exc, DkeyError):
        return oc.NO_RESULT
    if isinstance(exc, errors.ProxyTimeout):  # the bridge, or a GATT request, did not answer
        return oc.LINK_FAILED
    if isinstance(exc, TimeoutError):  # a connection that did not come (the hub's adapter)
        return oc.UNREACHABLE
    if isinstance(exc, BleakError):
        return oc.LINK_FAILED
    return oc.DRIVER_ERROR


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain and len(chain) < 8:
        chain.append(link)
        # As Python shows a traceback: the explicit cause, else the implicit context unless
        # ``raise ... from None`` suppressed it.
        link = link.__cause__ if link.__cause__ is not None else (
            None if link.__suppress_context__ else link.__context__)
    return chain


def _telling(exc: BaseException) -> str | None:
    """The reason an error names by itself, or None for a generic one."""
    if isinstance(exc, SecondAttempt):
        return oc.LINK_LOST
    if isinstance(exc, errors.ProxyUnavailable):
        return oc.BRIDGE_UNAVAILABLE
    if isinstance(exc, (errors.ProxyBusy, BleakOutOfConnectionSlotsError)):
        return oc.BRIDGE_BUSY
    if isinstance(exc, (errors.ProxyUnreachable, BleakDeviceNotFoundError, BleakNotFoundError)):
        return oc.UNREACHABLE
    if isinstance(exc, (NotAssociated, WrongActivationCode, NotAuthenticated)):
        return oc.AUTH_FAILED
    if isinstance(exc, InvalidActivationCode):
        return oc.BAD_REQUEST
    if isinstance(exc, UnsupportedProtocolVersion):
        return oc.UNSUPPORTED
    if isinstance(exc, CommandFailed):
        return _REFUSALS.get(exc.error, oc.BAD_REQUEST)
    if isinstance(exc, errors.WriteUnknown):
        return oc.LINK_LOST if exc.status in _LINK_GONE else oc.NO_RESULT
    if isinstance(exc, (Timeout, Disconnected, NotConnected, InvalidCommand,
                        errors.ProxyDisconnected)):
        return oc.LINK_LOST
    return None


async def close_session(dkey: DKEYLock, clients: vendor.Clients, timeout: float) -> None:
    """Close the library's connection, and every client it made (``clients``) and left
    connected: it never disconnects a client whose ``pair()`` failed, which would hold the lock's
    one connection (and a proxy slot) until the lock drops the link. Each within ``timeout`` s;
    never raises but for the caller's cancellation (the driver's sessions, and pairing's)."""
    async def closed(what: str, disconnect: Callable[[], Awaitable[Any]]) -> None:
        try:
            async with asyncio.timeout(timeout):
                await disconnect()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.info("dKey %s: %s: cancelled inside the library", dkey.address, what)
        except Exception as exc:  # its link may be gone already; the lock drops a left link at 30 s
            log.info("dKey %s: %s: %s", dkey.address, what, exc or type(exc).__name__)

    await closed("disconnect", dkey.disconnect)
    for client in clients.made:
        if client.is_connected:
            log.info("dKey %s: dropping a connection the library left", dkey.address)
            await closed("dropping a connection", client.disconnect)


def _cancelling() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


class _Session:
    """One connection to the lock: its library object, what the handshake got to, and the
    link's liveness (see the module docstring)."""

    def __init__(self, dkey: DKEYLock) -> None:
        self.dkey = dkey
        self.identified = False  # the lock answered its identification: connected and encrypted
        self.challenged = False  # it sent its challenge: it knows the key holder id
        self.accepted = False  # it accepted the answer: the secret is right
        self.state: str | None = None  # the unlock status as last heard in this session
        self.alive: asyncio.Future[Any] | None = None  # cancelled by the library when the link goes
        self.unregister: Callable[[], None] | None = None
        self.clients = vendor.Clients()  # what the library's clients for it did

    @property
    def up(self) -> bool:
        return self.alive is not None and not self.alive.done()

    @property
    def ended(self) -> bool:
        """It was ready once, and its link has gone since."""
        return self.alive is not None and self.alive.done()

    def watch(self) -> None:
        """Register for what the handshake tells, before each one (the library clears these
        when it resets its link): how far a failed one got names its failure."""
        dkey = self.dkey
        dkey.receive_notifications(cmds.GetIdentificationRsp, lambda _: self._mark("identified"))
        dkey.receive_notifications(cmds.AuthChallengeCmd, lambda _: self._mark("challenged"))
        dkey.receive_notifications(cmds.AuthChallengeAcceptedCmd,
                                   lambda _: self._mark("accepted"))

    def ready(self) -> None:
        """The library's update() returned: authenticated, notifications on, the state told."""
        if not self.up:
            # A DISCONNECT_REQ (the lock ends an idle link) resolves it; the library's reset of
            # a link that went down cancels it.
            self.alive = self.dkey.receive_once(cmds.DisconnectReqCmd)
            address = self.dkey.address
            self.alive.add_done_callback(lambda _: log.info(SESSION_ENDED, address))
        self.state = state_name(self.dkey.state.unlock_status)

    def _mark(self, step: str) -> None:
        setattr(self, step, True)


class DkeyLock(Kept):
    """One dormakaba dKey at ``address`` (``addr_type`` 0 public, 1 random) whose association
    data is ``association`` (the key holder id, 4 bytes, then the association secret, 32 bytes:
    hubd.locks.transport.PairedLock.secret of a dKey).

    ``radio``: how hubd reaches Bluetooth (default: the installed proxy); ``on_report(what,
    name, state, battery, source)``: each change of the lock's state it notified while no
    command of hubd's waited for it (``what`` "state", ``name`` None, ``battery`` percent or
    None, ``source`` ``manual`` or ``handle``).

    Not safe for two operations at once: its caller serialises them (hubd.locks.transport).
    """

    report_counter = 0  # a dKey keeps no reports: hubd.locks.upkeep never reads any
    #: A visit may hold a dKey's connection (hubd.locks.visit): a read connects and
    #: authenticates, moving nothing, and the session is kept for the visit's command; but no
    #: read keeps it alive: the library's only call that moves nothing, ``update()``,
    #: sends the lock nothing on a session already authenticated (it only restarts the
    #: library's own disconnect timer); its other calls move the bolt or change its mode. A held
    #: session lasts what the lock allows a silent link: it is let go ``held_s`` after its last
    #: traffic, before the lock's own drop at 30 s (a command's write must never cross it).
    keeps_alive = False

    def __init__(self, address: str, association: bytes, *, addr_type: int = 0,
                 radio: Radio | None = None, timings: DkeyTimings = DkeyTimings(),
                 on_report: Callable[[str, str | None, str, int | None, str], None] | None = None
                 ) -> None:
        if len(association) != KEY_HOLDER_LEN + SECRET_LEN:
            raise ValueError(f"a dKey's association data is {KEY_HOLDER_LEN + SECRET_LEN} bytes")
        super().__init__(radio)
        self.address = address.upper()
        if len(bytes.fromhex(self.address.replace(":", ""))) != 6:
            raise ValueError(f"address {address!r} is not six bytes")
        self.addr_type = addr_type
        self._association = AssociationData(bytes(association[:KEY_HOLDER_LEN]),
                                            bytes(association[KEY_HOLDER_LEN:]))
        self.timings = timings
        self.on_report = on_report
        self._session: _Session | None = None
        # The command under way: the state it waits for, and the future its arrival resolves.
        self._waiting: tuple[str, asyncio.Future[str]] | None = None
        self._guard: vendor.OneCommand | None = None
        self._cancelling = 0  # the task's cancellation count when the operation or read began
        self._end = 0.0  # loop time by which the operation under way should have its result
        self.battery_raw: int | None = None  # the raw reading behind the last percent given
        # Loop time of the session's last traffic as the lock counts it (its idle drop comes 30 s
        # after): a handshake's end, a command's end. update() on a session up sends nothing.
        self._traffic_at = 0.0
        vendor.install()

    @property
    def read_s(self) -> float:
        """How long a background read may take: a whole handshake."""
        return self.timings.deadline_s

    def reading_of(self, percent: int | None) -> int | None:
        """The raw reading behind the last percent given (battery model ``dkey``)."""
        return None if percent is None else self.battery_raw

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.up

    async def operate(self, action: str, command_id: str, on_written: Callable[[], None],
                      timeout: float) -> OpResult:
        """Run ``action`` ("status", "unlock", "lock") for ``command_id``; see the module
        docstring. Every ending is a result, never an exception (but cancellation)."""
        if action not in lockkinds.PROTOCOL_ACTIONS[lockkinds.DKEY]:
            return OpResult(oc.FAILED, oc.UNSUPPORTED_ACTION, None, None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._guard = None
        self._cancelling = _cancelling()
        self._end = started + timeout
        self._keep()
        try:
            if action == "status":
                await self._settled()  # right after a command the lock may tell the old state
            deadline = loop.time() + min(self.timings.deadline_s, timeout)
            session, reason = await self._prepare(deadline)
            if session is None:
                # Nothing was written: nothing moved.
                return self._result(started, oc.unwritten(reason), reason)
            if action == "status":
                return self._told(started, oc.SUCCEEDED, None, session)
            return await self._command(started, session, action, on_written)
        except asyncio.CancelledError:
            self._waiting = None
            self._drop()
            raise
        except Exception:
            # A bug here, or in the library under it: the at-most-once rule still holds.
            log.exception("dKey %s: the driver failed", self.address)
            self._waiting = None
            self._drop()
            outcome, state = oc.unfinished(self._guard is not None and self._guard.written)
            return self._result(started, outcome, oc.DRIVER_ERROR, state)
        finally:
            self._guard = None
            self._release()

    async def read(self, read_status: bool, timeout: float, *,
                   connections: int | None = None) -> Refreshed | str:
        """Read the lock's state and battery (a poll: hubd.locks.upkeep; a visit's hold)
        within ``timeout``, or why not (a reason of wire.outcomes: ``unreachable``,
        ``link_failed``, ``auth_failed``, ``bridge_unavailable``, ...; ``driver_error``: a bug).
        A dKey keeps no reports, so there are none to take in (``reports`` 0) and
        ``read_status`` changes nothing. Never writes anything that can move the bolt. A
        connection made for it is dropped at once, and it returns only once it is gone; one an
        operation left open is kept ``idle_s``. At most ``connections`` new connections
        (``link_failed`` when it needs another). A visit's hold reads so: the read connects and
        authenticates (the expensive part of a command), and while the visit holds, the session
        is kept ``held_s`` after its traffic (:meth:`hold`). On a session up it sends the lock
        nothing, so it keeps nothing alive."""
        async def read() -> Refreshed | str:
            self._cancelling = _cancelling()
            deadline = asyncio.get_running_loop().time() + timeout
            session, why = await self._prepare(deadline, connections)
            if session is None:
                return why
            state, battery = self._reading(session)
            return Refreshed(state, battery, 0)

        got = await self._read_between(read)
        return oc.DRIVER_ERROR if got is None else got

    def hold(self, on: bool, *, in_use: bool = False) -> None:
        """hubd.locks.kept.Kept.hold, bounded by what the lock allows: while a visit holds, the
        session is dropped ``held_s`` after its last traffic (nothing the hold may send would
        keep it); let go, ``idle_s`` from now, never past that bound either."""
        super().hold(on, in_use=in_use)
        if on and not in_use:
            self._release()

    def _drop_at(self) -> float | None:
        """hubd.locks.kept.Kept._drop_at, never later than ``held_s`` after the session's last
        traffic, also while a visit holds it: a command is never begun on a session the lock is
        about to end (its write could cross the lock's DISCONNECT_REQ: an unknown fate)."""
        bound = self._traffic_at + self.timings.held_s
        idle = super()._drop_at()
        return bound if idle is None else min(idle, bound)

    # -- the connection (hubd.locks.kept) -----------------------------------------------------

    def _held(self) -> bool:
        return self._session is not None

    def _forget(self) -> Coroutine[Any, Any, None] | None:
        """Forget the connection with its library object."""
        session, self._session = self._session, None
        if session is None:
            return None
        if session.unregister is not None:
            session.unregister()
        return self._disconnect(session)

    async def _disconnect(self, session: _Session) -> None:
        await close_session(session.dkey, session.clients, self.timings.close_s)

    def _new_session(self) -> _Session:
        dkey = DKEYLock(self.radio.ble_device(self.address))
        dkey.set_association_data(self._association)
        session = _Session(dkey)
        session.unregister = dkey.register_callback(
            lambda told: self._notified(session, told))
        return session

    async def _prepare(self, deadline: float, connections: int | None = None
                       ) -> tuple[_Session | None, str]:
        """The session, authenticated with notifications on (the one kept, or a new one),
        retried until ``deadline``: (session, "") or (None, why not). ``connections``: how many
        new connections it may make (None: no bound but the time); one more needed is the last
        try's reason, ``link_failed`` if it made none (a visit's hold counts its connections)."""
        loop = asyncio.get_running_loop()
        reason = oc.UNREACHABLE
        refused = 0
        made = 0
        while loop.time() < deadline:
            if not self.radio.is_up:
                # The link to the bridge (or the adapter) is down: nothing can be sent, and the
                # library would only retry into it. It may come back.
                reason = oc.BRIDGE_UNAVAILABLE
                if not await self.radio.wait_up(max(0.0, deadline - loop.time())):
                    break
                continue
            if self._session is not None and self._session.ended:
                # The lock ended the link (its idle DISCONNECT_REQ) or it was lost: the library's
                # object believes itself authenticated until its own disconnect task has run, and
                # would write on a new link with the ended session's keys. A new object.
                self._drop()
            if self._session is None:
                # The lock takes one connection: the last one must be gone first.
                await self._closed(max(0.0, deadline - loop.time()))
                self._session = self._new_session()
            session = self._session
            fresh = not session.up
            if fresh:
                if connections is not None and made >= connections:
                    return None, reason if made else oc.LINK_FAILED
                made += 1
                # A new link: what the lock tells in its handshake is a reading, not a change.
                session.state = None
            session.watch()
            expired = False
            try:
                with vendor.on_radio(self.radio, addr_type=self.addr_type,
                                     gatt_timeout=self.timings.gatt_s, clients=session.clients):
                    try:
                        async with asyncio.timeout_at(deadline) as bound:
                            await session.dkey.update()
                    finally:
                        expired = bound.expired()
                self._check_cancelled()
                session.ready()
                if fresh:  # the handshake's frames: the lock's idle counts from them
                    self._traffic_at = loop.time()
                self._battery(session.dkey.state.battery)
                return session, ""
            except NotAssociated:
                # The lock answered, and does not know this key holder: no retry will change it.
                log.warning("dKey %s: the lock does not know this hub's key holder (forgotten, "
                            "or reset): pair it again", self.address)
                self._drop()
                return None, oc.AUTH_FAILED
            except UnsupportedProtocolVersion as exc:
                log.warning("dKey %s: the library does not speak the lock's protocol version %s",
                            self.address, exc)
                self._drop()
                return None, oc.UNSUPPORTED
            except _CALL_ERRORS as exc:
                self._check_cancelled()
                reason = self._reason_before(session, exc, expired)
                log.info("dKey %s: %s (%s)", self.address, reason, exc or type(exc).__name__)
                self._drop()
                if reason == oc.AUTH_FAILED:
                    refused += 1
                    if refused >= 2:  # the lock ends the link at our answer, again
                        log.warning("dKey %s: the lock refused this hub's answer to its "
                                    "challenge twice: its secret is not this hub's", self.address)
                        return None, oc.AUTH_FAILED
                    reason = oc.LINK_FAILED  # once may be the radio
                elif reason == oc.BRIDGE_UNAVAILABLE:
                    if not await self.radio.wait_up(max(0.0, deadline - loop.time())):
                        break
                    continue
            await asyncio.sleep(max(0.0, min(self.timings.retry_pause_s, deadline - loop.time())))
        return None, reason

    @staticmethod
    def _reason_before(session: _Session, exc: BaseException, expired: bool) -> str:
        """Why a handshake failed, as the reference lock's driver names it before its COMMAND."""
        if session.challenged and not session.accepted and not expired and \
                isinstance(exc, (Disconnected, NotConnected)):
            return oc.AUTH_FAILED  # the lock ended the link at the answer to its challenge
        reason = reason_of(exc) if not expired else oc.NO_RESULT
        if reason in (oc.LINK_LOST, oc.NO_RESULT, oc.DRIVER_ERROR, oc.BUSY, oc.BAD_REQUEST,
                      oc.NOT_PAIRING):
            # No answer in time, or the link went: was there a connection at all? (One whose
            # bonding failed is still up: the library leaves it so.)
            connected = session.identified or any(c.is_connected for c in session.clients.made)
            return oc.LINK_FAILED if connected or not expired else oc.UNREACHABLE
        return reason

    def _check_cancelled(self) -> None:
        """The library turns a cancellation into DkeyError (or a normal return): a cancellation
        from outside (hubd stops, the command path's own timeout) is raised again. The task's
        cancellation count tells it: ``asyncio.timeout`` takes back its own."""
        if _cancelling() > self._cancelling:
            raise asyncio.CancelledError

    async def _settled(self) -> None:
        left = self.settling_s
        if left > 0:
            await asyncio.sleep(left)

    # -- the command --------------------------------------------------------------------------

    async def _command(self, started: float, session: _Session, action: str,
                       on_written: Callable[[], None]) -> OpResult:
        loop = asyncio.get_running_loop()
        dkey = session.dkey
        target = "unlocked" if action == "unlock" else "locked"
        arrived: asyncio.Future[str] = loop.create_future()
        refused: asyncio.Future[ErrorCode] = loop.create_future()

        def answered(code: ErrorCode) -> None:
            if code != ErrorCode.SUCCESS and not refused.done():
                refused.set_result(code)

        # What the library reads and does not check: UNLOCK_RSP's error, CHANGE_MODE's ACK.
        if action == "unlock":
            dkey.receive_notifications(cmds.UnlockRsp, lambda rsp: answered(rsp.error_code))
        else:
            dkey.receive_notifications(cmds.AckRsp, lambda ack: answered(ack.error_code)
                                       if ack.ack_cmd_id == cmds.ChangeModeCmd.cmd_id else None)
        report = dkey.receive_once(cmds.StatusReportCmd)
        if session.state == target:
            # Already there: the lock neither moves nor notifies; the command still goes, and
            # the lock's own answer (a refusal) still counts.
            arrived.set_result(target)
        self._waiting = (target, arrived)
        guard = self._guard = vendor.OneCommand(on_written)
        # The write's time: the lock's idle counts from its arrival, a little later.
        self._moved_at = self._traffic_at = loop.time()
        expired = False
        try:
            with vendor.on_radio(self.radio, addr_type=self.addr_type,
                                 gatt_timeout=self.timings.gatt_s, guard=guard,
                                 clients=session.clients):
                try:
                    async with asyncio.timeout(self.timings.command_s) as bound:
                        await (dkey.unlock() if action == "unlock" else dkey.lock())
                finally:
                    expired = bound.expired()
            self._check_cancelled()
        except _CALL_ERRORS as exc:
            self._check_cancelled()
            self._waiting = None
            if not guard.written:  # the library raised before anything was written
                self._moved_at = None
                reason = self._reason_before(session, exc, expired)
                self._drop()
                return self._result(started, oc.unwritten(reason), reason)
            lost = not expired and reason_of(exc) == oc.LINK_LOST
            log.info("dKey %s: %s after its write: %s", self.address, action,
                     exc or type(exc).__name__)
            return await self._incomplete(started, oc.LINK_LOST if lost else oc.NO_RESULT)
        try:
            return await self._outcome(started, session, target, arrived, refused, report)
        finally:
            self._waiting = None

    async def _outcome(self, started: float, session: _Session, target: str,
                       arrived: asyncio.Future[str], refused: asyncio.Future[ErrorCode],
                       report: asyncio.Future[Any]) -> OpResult:
        """After the library's call returned: wait for the state to reach ``target`` within
        ``result_s`` of the write, or the lock's word that it will not."""
        loop = asyncio.get_running_loop()
        assert self._moved_at is not None
        until = min(self._moved_at + self.timings.result_s, self._end)
        while True:
            if refused.done():
                self._moved_at = None  # it did not move
                reason = _REFUSALS.get(refused.result(), oc.BAD_REQUEST)
                log.warning("dKey %s: the lock refused: %s", self.address, refused.result().name)
                return self._told(started, oc.FAILED, reason, session)
            if arrived.done():
                self._moved_at = None  # there, and said so: settled
                return self._told(started, oc.SUCCEEDED, None, session)
            if report.done():
                if report.cancelled():
                    log.info("dKey %s: the link went before the state reached %s",
                             self.address, target)
                    return await self._incomplete(started, oc.LINK_LOST)
                kind = report.result().status_report_type
                if kind in (cmds.StatusReportType.STUCK, cmds.StatusReportType.STUCK_V2):
                    log.warning("dKey %s: the motor stalled (STATUS_REPORT %s)", self.address,
                                kind.name)
                    self._moved_at = None
                    _, battery = self._reading(session)
                    return self._result(started, oc.FAILED, oc.JAMMED, "jammed", battery)
                report = session.dkey.receive_once(cmds.StatusReportCmd)
            if not session.up:
                return await self._incomplete(started, oc.LINK_LOST)
            left = until - loop.time()
            if left <= 0:
                log.warning("dKey %s: the state did not reach %s in time (%.1f s after the "
                            "write)", self.address, target, loop.time() - self._moved_at)
                return await self._incomplete(started, oc.NO_RESULT)
            waits = {arrived, refused, report}
            if session.alive is not None:
                waits.add(session.alive)
            await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)

    async def _incomplete(self, started: float, reason: str) -> OpResult:
        """The command's fate is unknown: read the state back on a fresh session once the lock
        settled; never the command itself."""
        self._waiting = None
        self._drop()
        await self._settled()
        loop = asyncio.get_running_loop()
        budget = max(self._end - loop.time(), self.timings.readback_s)
        session, _ = await self._prepare(loop.time() + budget)
        self._moved_at = None
        if session is None:
            return self._result(started, oc.INCOMPLETE, reason, "unknown")
        return self._told(started, oc.INCOMPLETE, reason, session)

    # -- what the lock tells ------------------------------------------------------------------

    def _reading(self, session: _Session) -> tuple[str, int | None]:
        told = session.dkey.state
        return state_name(told.unlock_status), self._battery(told.battery)

    def _battery(self, raw: int | None) -> int | None:
        percent = battery_percent(raw)
        if percent is not None:
            self.battery_raw = raw
        return percent

    def _told(self, started: float, outcome: str, reason: str | None,
              session: _Session) -> OpResult:
        state, battery = self._reading(session)
        return self._result(started, outcome, reason, state, battery)

    def _result(self, started: float, outcome: str, reason: str | None, state: str | None = None,
                battery: int | None = None) -> OpResult:
        ms = (asyncio.get_running_loop().time() - started) * 1000
        return OpResult(outcome, reason, state, battery, ble_ms=round(ms, 3))

    def _notified(self, session: _Session, told: Notifications) -> None:
        """A notification the library took in (``told`` holds what it changed): the state a
        command waits for, else a change of state the lock made on its own."""
        if session is not self._session or told.unlock_status is None:
            return
        state = state_name(told.unlock_status)
        before, session.state = session.state, state
        waiting = self._waiting
        if waiting is not None:
            target, arrived = waiting
            if state == target and not arrived.done():
                arrived.set_result(state)
            return  # while a command waits, its result says where the bolt went
        if before is None or state == before:
            return
        source = lockkinds.SOURCE_HANDLE if told.door_handle_state == \
            DoorHandleState.HANDLE_UP_DOWN else lockkinds.SOURCE_MANUAL
        log.info("dKey %s: %s by hand (%s)", self.address, state, source)
        if self.on_report is not None:
            try:
                self.on_report("state", None, state, self._battery(session.dkey.state.battery),
                               source)
            except Exception:  # the listener's bug must not end the library's notification
                log.exception("dKey %s: a report's listener raised", self.address)

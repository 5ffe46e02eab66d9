"""A hub's own Bluetooth adapter on the simulated air: a CPython asyncio central on the radio's
socket (simulator/radio.py), speaking airwire (simulator/shims/airwire.py) as the MicroPython
`bluetooth` shim does for the bridge.

    central = AirCentral(socket_path)
    await central.start()
    stop = central.on_advert(heard)           # heard(ScanResult)
    scan = central.start_scan(active=True)    # scans are shared, as BlueZ shares discovery
    conn = await central.connect(address, addr_type, timeout_s=5)
    services = await conn.discover()
    await conn.write(handle, b"...", response=True)
    await conn.disconnect()

The radio plays the controller; this plays what sits on it in a hub's host stack (BlueZ's
kernel and daemon): one connect at a time (the radio, like a controller, has one pending
connection), the ATT MTU exchanged at once, one GATT procedure at a time per connection (ATT
has one request outstanding per bearer), each within ``gatt_timeout_s``; pairing through the
radio's LE security (airwire PAIR: re-encryption with the bond this adapter keeps, else "Just
Works" pairing that bonds). Never kinder than hardware: the radio's rules (range, supervision
timeouts, idle drops, a wedged stack, a peer that is not pairable or lost its bond) apply,
because they live in the radio; a procedure that times out drops the connection, because the
ATT bearer's state is unknown after it (Core spec, ATT "transaction timeout"), as the bridge
does.

Whatever the radio sends is input: a frame that breaks airwire ends this central's session
(the stream cannot be trusted after it: like a controller reset, every connection is lost and
:meth:`AirCentral.start` opens a new one), an event of the wrong shape or for nobody is dropped
and counted in :attr:`AirCentral.dropped`; none ends a task or reaches a caller as anything but
a :class:`CentralError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.shims import airwire

log = logging.getLogger(__name__)

# MicroPython's IRQ numbers: the radio's events (simulator/radio.py).
SCAN_RESULT = 5
SCAN_DONE = 6
CONNECTED = 7
DISCONNECTED = 8
SERVICE_RESULT = 9
SERVICE_DONE = 10
CHARACTERISTIC_RESULT = 11
CHARACTERISTIC_DONE = 12
DESCRIPTOR_RESULT = 13
DESCRIPTOR_DONE = 14
READ_RESULT = 15
READ_DONE = 16
WRITE_DONE = 17
NOTIFY = 18
MTU_EXCHANGED = 21
ENCRYPTION_UPDATE = 28
SET_SECRET = 30

#: Each event's arguments (simulator/radio.py): anything else is dropped.
_B = bytes
SHAPES: dict[int, tuple[type, ...]] = {
    SCAN_RESULT: (int, _B, int, int, _B),  # addr_type, addr, adv_type, rssi, data
    SCAN_DONE: (),
    CONNECTED: (int, int, _B),  # conn, addr_type, addr
    DISCONNECTED: (int, int, _B),
    SERVICE_RESULT: (int, int, int, _B),  # conn, start, end, uuid
    SERVICE_DONE: (int, int),  # conn, status
    CHARACTERISTIC_RESULT: (int, int, int, int, _B),  # conn, def, value handle, props, uuid
    CHARACTERISTIC_DONE: (int, int),
    DESCRIPTOR_RESULT: (int, int, _B),  # conn, handle, uuid
    DESCRIPTOR_DONE: (int, int),
    READ_RESULT: (int, int, _B),  # conn, handle, data
    READ_DONE: (int, int, int),  # conn, handle, status
    WRITE_DONE: (int, int, int),
    NOTIFY: (int, int, _B),
    MTU_EXCHANGED: (int, int),  # conn, mtu
    ENCRYPTION_UPDATE: (int, int, int, int, int),  # conn, encrypted, authenticated, bonded, size
    SET_SECRET: (int, _B, _B),  # sec_type, the peer's ble_addr_t, the stored secret
}
_CONN_EVENTS = {SERVICE_RESULT, SERVICE_DONE, CHARACTERISTIC_RESULT, CHARACTERISTIC_DONE,
                DESCRIPTOR_RESULT, DESCRIPTOR_DONE, READ_RESULT, READ_DONE, WRITE_DONE,
                MTU_EXCHANGED, ENCRYPTION_UPDATE}

NO_CONN = 0xFFFF  # a connect that failed or was cancelled
SCAN_RSP = 0x04  # the advert type of a scan response
ADV_NONCONN_IND = 0x03
DEFAULT_MTU = 23
#: The ATT MTU this central offers (BlueZ's default).
PREFERRED_MTU = 517
#: One GATT procedure's time unless the caller says (the ATT transaction timeout is 30 s; a hub
#: that waits that long for a lock helps nobody).
GATT_TIMEOUT_S = 10.0
#: The wait for a disconnect's confirmation; after it the connection counts as gone anyway.
DISCONNECT_TIMEOUT_S = 2.0
#: After a connect's own time, the wait for the radio's word before it is cancelled.
CONNECT_MARGIN_S = 1.0
#: Pairing (SMP's own transaction timeout is 30 s).
PAIR_TIMEOUT_S = 30.0
#: NimBLE's store types in SET_SECRET: our keys and the peer's; PAIR hands over the peer's.
SEC_OUR = 1
SEC_PEER = 2
#: Address types remembered from adverts (as BlueZ keeps device objects): bounded, radio input.
_KNOWN_MAX = 256
#: Bonds kept (as BlueZ keeps them in its storage), and the largest secret taken.
_BONDS_MAX = 32
#: Results one procedure gathers at most (a database has far fewer; a flood is dropped).
_RESULTS_MAX = 512
_SECRET_MAX = 128
_ADDR_LEN = 6
_UUID_LENS = (2, 4, 16)


class CentralError(Exception):
    """How an operation of the central ended, if not as asked."""


class RadioDown(CentralError):
    """The simulated radio is not there (its socket), or this central lost it."""


class ConnectFailed(CentralError, TimeoutError):
    """No connection within the connect's time (the peer is out of range, not advertising, not
    connectable, or nobody has that address)."""


class Disconnected(CentralError):
    """The connection went down before or during the procedure: ``reason`` says who ended it
    (``peer``: the peer or the radio, ``timeout``, ``local``, ``radio_lost``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProcedureTimeout(CentralError, TimeoutError):
    """A GATT procedure got no answer in time; the connection was dropped."""


class PairingFailed(CentralError):
    """The link could not be encrypted: the peer refused to pair, or lost the bond it had."""


class AttError(CentralError):
    """The peer answered with an ATT error (``code``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ScanResult:
    """One advert or scan response as heard."""

    address: bytes
    addr_type: int
    adv_type: int
    rssi: int
    data: bytes

    @property
    def connectable(self) -> bool:
        return self.adv_type != ADV_NONCONN_IND


@dataclass(frozen=True)
class GattService:
    start: int
    end: int
    uuid: bytes  # over-the-air (little-endian) bytes


@dataclass(frozen=True)
class GattCharacteristic:
    def_handle: int
    value_handle: int
    properties: int
    uuid: bytes
    service: GattService


@dataclass(frozen=True)
class GattDescriptor:
    handle: int
    uuid: bytes
    characteristic: GattCharacteristic


@dataclass
class Database:
    """A peer's GATT database as discovered."""

    services: list[GattService] = field(default_factory=list)
    characteristics: list[GattCharacteristic] = field(default_factory=list)
    descriptors: list[GattDescriptor] = field(default_factory=list)


class _Procedure:
    """One GATT procedure under way: the events it gathers until the one that ends it."""

    def __init__(self, name: str, results: int | None, done: int) -> None:
        self.name = name
        self.results = results
        self.done = done
        self.gathered: list[list] = []
        self.future: asyncio.Future[list] = asyncio.get_running_loop().create_future()


class AirConnection:
    """One connection to a peripheral; made by :meth:`AirCentral.connect`.

    ``on_notify(handle, data)`` hears notifications; ``on_lost(reason)`` hears the connection
    end without being asked (the peer, the radio, a timed-out procedure, the radio lost)."""

    def __init__(self, central: AirCentral, handle: int, address: bytes, addr_type: int,
                 gatt_timeout_s: float) -> None:
        self.central = central
        self.handle = handle
        self.address = address
        self.addr_type = addr_type
        self.gatt_timeout_s = gatt_timeout_s
        self.mtu = DEFAULT_MTU
        self.connected = True
        self.encrypted = False
        self.lost_reason: str | None = None
        self._pairing: asyncio.Future[tuple[int, int, int, int]] | None = None
        self.on_notify: Callable[[int, bytes], None] | None = None
        self.on_lost: Callable[[str], None] | None = None
        self._turn = asyncio.Lock()
        self._procedure: _Procedure | None = None

    # -- GATT ---------------------------------------------------------------------------------

    async def exchange_mtu(self, preferred: int = PREFERRED_MTU) -> int:
        _, done = await self._run(_Procedure("MTU exchange", None, MTU_EXCHANGED),
                                  airwire.EXCHANGE_MTU, (self.handle, preferred))
        mtu = done[1]
        if not DEFAULT_MTU <= mtu <= preferred:
            self._drop("peer")  # a peer that breaks ATT: nothing after it can be trusted
            raise Disconnected(f"MTU {mtu} out of range: dropped", "peer")
        self.mtu = mtu
        return mtu

    async def discover(self) -> Database:
        """Every primary service, its characteristics and their descriptors."""
        db = Database()
        found, _ = await self._run(_Procedure("service discovery", SERVICE_RESULT, SERVICE_DONE),
                                   airwire.DISCOVER_SERVICES, (self.handle, None))
        for args in found:
            _, start, end, uuid = args
            if 0 < start <= end <= 0xFFFF and len(uuid) in _UUID_LENS:
                db.services.append(GattService(start, end, uuid))
            else:
                self.central.dropped["bad_service"] += 1
        for service in db.services:
            chars: list[GattCharacteristic] = []
            found, _ = await self._run(
                _Procedure("characteristic discovery", CHARACTERISTIC_RESULT, CHARACTERISTIC_DONE),
                airwire.DISCOVER_CHARACTERISTICS, (self.handle, service.start, service.end, None))
            for args in found:
                _, def_handle, value_handle, props, uuid = args
                if (service.start < def_handle < value_handle <= service.end
                        and 0 <= props <= 0xFF and len(uuid) in _UUID_LENS):
                    chars.append(GattCharacteristic(def_handle, value_handle, props, uuid, service))
                else:
                    self.central.dropped["bad_characteristic"] += 1
            chars.sort(key=lambda c: c.value_handle)
            for i, char in enumerate(chars):
                end = chars[i + 1].def_handle - 1 if i + 1 < len(chars) else service.end
                if end <= char.value_handle:
                    continue
                found, _ = await self._run(
                    _Procedure("descriptor discovery", DESCRIPTOR_RESULT, DESCRIPTOR_DONE),
                    airwire.DISCOVER_DESCRIPTORS, (self.handle, char.value_handle + 1, end))
                for args in found:
                    _, handle, uuid = args
                    if char.value_handle < handle <= end and len(uuid) in _UUID_LENS:
                        db.descriptors.append(GattDescriptor(handle, uuid, char))
                    else:
                        self.central.dropped["bad_descriptor"] += 1
            db.characteristics.extend(chars)
        return db

    async def read(self, handle: int) -> bytes:
        found, done = await self._run(_Procedure("read", READ_RESULT, READ_DONE), airwire.READ,
                                      (self.handle, handle))
        status = done[2]
        if status:
            raise AttError(f"read of handle {handle}: ATT error 0x{status:02x}", status)
        return b"".join(bytes(args[2]) for args in found if args[1] == handle)

    async def write(self, handle: int, data: bytes, response: bool) -> None:
        """One ATT write; with ``response`` it ends when the peer acknowledged it, without it
        once the radio took it (a peer that refuses a write command cannot say so)."""
        if not response:
            async with self._turn:  # in order behind the procedures before it
                self._check()
                self.central._send(airwire.WRITE, (self.handle, handle, 0, bytes(data)))
            return
        _, done = await self._run(_Procedure("write", None, WRITE_DONE), airwire.WRITE,
                                  (self.handle, handle, 1, bytes(data)))
        status = done[2]
        if status:
            raise AttError(f"write of handle {handle}: ATT error 0x{status:02x}", status)

    @property
    def peer(self) -> bytes:
        """The peer as NimBLE's ble_addr_t (its type, then its address least significant byte
        first): how the radio keys secrets."""
        return bytes((self.addr_type,)) + self.address[::-1]

    async def pair(self, bond: bool = True) -> bool:
        """Encrypt the link: with the bond this adapter keeps for the peer, else by pairing
        ("Just Works"), bonding if ``bond``. True if it is bonded now; PairingFailed if the
        link could not be encrypted (it stays up, unencrypted)."""
        self._check()
        if self._pairing is not None:
            raise CentralError("a pairing is under way on this connection")
        stored = self.central.bonds.get(self.peer)
        self._pairing = asyncio.get_running_loop().create_future()
        try:
            self.central._send(airwire.PAIR, (self.handle, stored, 1 if bond else 0))
            try:
                async with asyncio.timeout(PAIR_TIMEOUT_S):
                    encrypted, _, bonded, _ = await self._pairing
            except TimeoutError:
                raise PairingFailed(f"pairing: no answer in {PAIR_TIMEOUT_S:g} s") from None
        finally:
            self._pairing = None
        if not encrypted:
            raise PairingFailed("the peer lost the bond (re-encryption refused)" if stored
                                else "the peer refused to pair")
        return bool(bonded)

    async def disconnect(self) -> None:
        """Ask the radio to drop the connection and wait for its word (at most
        DISCONNECT_TIMEOUT_S); no ``on_lost`` for a disconnect asked for."""
        if not self.connected:
            return
        self.on_lost = None
        gone = asyncio.get_running_loop().create_future()
        self.central._disconnecting[self.handle] = gone
        try:
            self.central._send(airwire.DISCONNECT, (self.handle,))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await gone
        except RadioDown:
            pass
        finally:
            self.central._disconnecting.pop(self.handle, None)
            self._lose("local")

    # -- the procedure engine -----------------------------------------------------------------

    def _check(self) -> None:
        if not self.connected:
            raise Disconnected(f"not connected ({self.lost_reason})", self.lost_reason or "local")

    async def _run(self, procedure: _Procedure, kind: int, args: tuple
                   ) -> tuple[list[list], list]:
        """Send one request and gather its results: (the results, the event that ended it)."""
        async with self._turn:
            self._check()
            self._procedure = procedure
            try:
                self.central._send(kind, args)
                async with asyncio.timeout(self.gatt_timeout_s):
                    gathered = await procedure.future
                return gathered[:-1], gathered[-1]
            except TimeoutError:
                if procedure.future.done() and not procedure.future.cancelled():
                    # The answer (or the connection's loss) came as the time ran out.
                    gathered = procedure.future.result()
                    return gathered[:-1], gathered[-1]
                self._procedure = None
                self._drop("timeout")
                raise ProcedureTimeout(f"{procedure.name}: no answer in {self.gatt_timeout_s:g} s;"
                                       " the connection is dropped") from None
            finally:
                self._procedure = None

    def _event(self, event: int, args: list) -> None:
        if event == ENCRYPTION_UPDATE:
            self.encrypted = bool(args[1])
            if self._pairing is not None and not self._pairing.done():
                self._pairing.set_result((args[1], args[2], args[3], args[4]))
            return
        procedure = self._procedure
        if event == MTU_EXCHANGED and (procedure is None or procedure.done != MTU_EXCHANGED):
            # The peer may start an exchange itself: the radio tells the central the result.
            if DEFAULT_MTU <= args[1] <= PREFERRED_MTU:
                self.mtu = args[1]
            else:
                self.central.dropped["bad_mtu"] += 1
            return
        if procedure is None or procedure.future.done() or event not in (procedure.results,
                                                                         procedure.done):
            self.central.dropped["event_for_no_procedure"] += 1
            return
        if event != procedure.done and len(procedure.gathered) >= _RESULTS_MAX:
            self.central.dropped["too_many_results"] += 1  # a flood: memory stays bounded
            return
        procedure.gathered.append(args)
        if event == procedure.done:
            procedure.future.set_result(procedure.gathered)

    def _drop(self, reason: str) -> None:
        """Drop the connection from this side, without waiting (the radio's word for it is
        expected, not counted as unexpected)."""
        if not self.connected:
            return
        self.central._dropped_here[self.handle] = None
        while len(self.central._dropped_here) > _KNOWN_MAX:
            del self.central._dropped_here[next(iter(self.central._dropped_here))]
        with contextlib.suppress(RadioDown):
            self.central._send(airwire.DISCONNECT, (self.handle,))
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        """The connection is gone: every procedure on it ends, and ``on_lost`` hears it unless
        it was asked for."""
        if not self.connected:
            return
        self.connected = False
        self.lost_reason = reason
        self.central._conns.pop(self.handle, None)
        procedure = self._procedure
        if procedure is not None and not procedure.future.done():
            procedure.future.set_exception(
                Disconnected(f"{procedure.name}: the connection went down ({reason})", reason))
        if self._pairing is not None and not self._pairing.done():
            self._pairing.set_exception(
                Disconnected(f"pairing: the connection went down ({reason})", reason))
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None and reason != "local":
            _call(on_lost, reason)


class AirCentral:
    """One central (a hub's adapter) on the simulated radio at ``socket_path``."""

    def __init__(self, socket_path: str, address: bytes = bytes.fromhex("02005E0000A0"),
                 gatt_timeout_s: float = GATT_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.address = address
        self.gatt_timeout_s = gatt_timeout_s
        self.dropped: Counter[str] = Counter()
        self.addr_types: dict[bytes, int] = {}  # from adverts heard, newest last
        # The peer's secret per peer (ble_addr_t), from the pairings this adapter made: kept
        # across sessions, as BlueZ keeps bonds in its storage.
        self.bonds: dict[bytes, bytes] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._conns: dict[int, AirConnection] = {}
        self._disconnecting: dict[int, asyncio.Future[None]] = {}
        self._dropped_here: dict[int, None] = {}  # timed out: the radio's word may follow
        self._connect_turn = asyncio.Lock()
        self._connecting: tuple[bytes, int, asyncio.Future[int]] | None = None
        self._advert_callbacks: dict[object, Callable[[ScanResult], None]] = {}
        self._scans: dict[object, bool] = {}  # token -> active
        self._scanning: bool | None = None  # what the radio was asked: None off, else active
        self._starting = asyncio.Lock()

    @property
    def is_up(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        """Open a session on the radio (again, after it was lost: a new session, as a reset
        controller is); RadioDown if the radio's socket is not there."""
        async with self._starting:
            if self.is_up:
                return
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                raise RadioDown(f"no simulated radio at {self.socket_path}: "
                                f"{os.strerror(exc.errno) if exc.errno else exc}") from None
            self._writer = writer
            self._scanning = None
            self._send(airwire.HELLO, (self.address,))
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read(reader, writer), name="air-central")
            self._rescan()

    async def close(self) -> None:
        """End the session: every connection is gone (no ``on_lost``: asked for)."""
        for conn in list(self._conns.values()):
            conn.on_lost = None
        self._down("local")
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
            self._reader_task = None

    async def restart(self) -> None:
        """Reset the adapter: the session ends (connections lost) and a new one starts."""
        self._down("radio_lost")
        await self.start()

    # -- scanning -----------------------------------------------------------------------------

    def on_advert(self, callback: Callable[[ScanResult], None]) -> Callable[[], None]:
        """Hear every advert and scan response while any scan runs; returns the way to stop."""
        token = object()
        self._advert_callbacks[token] = callback
        return lambda: self._advert_callbacks.pop(token, None)  # type: ignore[func-returns-value]

    def start_scan(self, active: bool) -> Callable[[], None]:
        """Scan until the returned function is called. Scans are shared: the radio scans
        actively while any of them wants it."""
        token = object()
        self._scans[token] = active
        self._rescan()

        def stop() -> None:
            if self._scans.pop(token, None) is not None:
                self._rescan()

        return stop

    def _rescan(self) -> None:
        wanted = any(self._scans.values()) if self._scans else None
        if wanted == self._scanning or not self.is_up:
            return
        self._scanning = wanted
        with contextlib.suppress(RadioDown):
            # A new SCAN replaces the one running; 0 ms: until told to stop.
            self._send(airwire.SCAN, (None, 0) if wanted is None else (0, 1 if wanted else 0))

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self, address: bytes, addr_type: int, timeout_s: float,
                      gatt_timeout_s: float | None = None) -> AirConnection:
        """Connect (one connect at a time: the radio has one pending), then exchange the MTU.
        ConnectFailed if no connection came within ``timeout_s``."""
        if len(address) != _ADDR_LEN:
            raise ValueError("a BLE address has 6 bytes")
        async with self._connect_turn:
            if not self.is_up:
                raise RadioDown("the simulated radio is not there")
            loop = asyncio.get_running_loop()
            made: asyncio.Future[int] = loop.create_future()
            self._connecting = (bytes(address), addr_type, made)
            ms = max(1, int(timeout_s * 1000))
            try:
                self._send(airwire.CONNECT, (addr_type, bytes(address), ms))
                async with asyncio.timeout(timeout_s + CONNECT_MARGIN_S):
                    handle = await made
            except BaseException as exc:
                if not made.done():
                    # Given up (the radio said nothing: a wedged stack; or the caller's time
                    # ran out): cancel, as a host does; a connection that comes anyway is
                    # dropped (_connected).
                    with contextlib.suppress(RadioDown):
                        self._send(airwire.CONNECT_CANCEL, ())
                if isinstance(exc, TimeoutError) and not isinstance(exc, CentralError):
                    raise ConnectFailed(f"connect to {_text(address)}: no answer from the radio"
                                        f" in {timeout_s + CONNECT_MARGIN_S:g} s") from None
                raise
            finally:
                self._connecting = None
        conn = AirConnection(self, handle, bytes(address), addr_type,
                             gatt_timeout_s if gatt_timeout_s is not None else self.gatt_timeout_s)
        self._conns[handle] = conn
        try:
            await conn.exchange_mtu()
        except BaseException:
            await conn.disconnect()
            raise
        return conn

    # -- the session --------------------------------------------------------------------------

    def _send(self, kind: int, args: tuple) -> None:
        if not self.is_up:
            raise RadioDown("the simulated radio is not there")
        assert self._writer is not None
        self._writer.write(airwire.encode(kind, args))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(2)
                body = await reader.readexactly(airwire.body_length(header))
                event, args = airwire.decode(body)
                self._dispatch(event, args)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("the simulated radio closed the session")
        except airwire.WireError as exc:
            # The stream cannot be followed after a broken frame: the session ends.
            self.dropped["bad_frame"] += 1
            log.warning("simulated radio sent a broken frame (%s): session ended", exc)
        except Exception:  # a bug here must not leave a central that seems up
            log.exception("air central: event handling failed; session ended")
            self.dropped["handler_error"] += 1
        if self._writer is writer:
            self._down("radio_lost")

    def _down(self, reason: str) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self._scanning = None
        if self._connecting is not None and not self._connecting[2].done():
            self._connecting[2].set_exception(RadioDown("the simulated radio went away"))
        for conn in list(self._conns.values()):
            conn._lose(reason)
        for gone in self._disconnecting.values():
            if not gone.done():
                gone.set_result(None)

    def _dispatch(self, event: int, args: list) -> None:
        shape = SHAPES.get(event)
        if shape is None or len(args) != len(shape) or not all(
                isinstance(a, t) for a, t in zip(args, shape, strict=True)):
            self.dropped["bad_event"] += 1
            return
        if event == SCAN_RESULT:
            self._heard(*args)
        elif event == CONNECTED:
            self._connected(*args)
        elif event == DISCONNECTED:
            self._disconnected(*args)
        elif event == NOTIFY:
            conn = self._conns.get(args[0])
            if conn is None:
                self.dropped["notify_for_no_conn"] += 1
            elif conn.on_notify is None:
                self.dropped["notify_not_heard"] += 1
            else:
                _call(conn.on_notify, args[1], bytes(args[2]))
        elif event == SET_SECRET:
            self._secret(*args)
        elif event in _CONN_EVENTS:
            conn = self._conns.get(args[0])
            if conn is None:
                self.dropped["event_for_no_conn"] += 1
            else:
                conn._event(event, args)
        # SCAN_DONE: scans here last until stopped; the radio confirms a replaced one.

    def _heard(self, addr_type: int, addr: bytes, adv_type: int, rssi: int, data: bytes) -> None:
        if len(addr) != _ADDR_LEN or addr_type not in (0, 1) or not -127 <= rssi <= 20 \
                or not 0 <= adv_type <= 0x04 or len(data) > 31:
            self.dropped["bad_advert"] += 1
            return
        if adv_type != SCAN_RSP:
            self.addr_types.pop(addr, None)
            self.addr_types[addr] = addr_type
            if len(self.addr_types) > _KNOWN_MAX:
                del self.addr_types[next(iter(self.addr_types))]
        result = ScanResult(addr, addr_type, adv_type, rssi, data)
        for callback in list(self._advert_callbacks.values()):
            _call(callback, result)

    def forget_bond(self, peer: bytes) -> None:
        """Forget the bond with ``peer`` (its ble_addr_t), as BlueZ's RemoveDevice does."""
        self.bonds.pop(peer, None)

    def _secret(self, sec_type: int, peer: bytes, value: bytes) -> None:
        # Keys are taken only for a peer being paired on one of this session's connections.
        if not any(c.peer == peer and c._pairing is not None for c in self._conns.values()) \
                or sec_type not in (SEC_OUR, SEC_PEER) or not 0 < len(value) <= _SECRET_MAX:
            self.dropped["secret_unasked"] += 1
            return
        if sec_type == SEC_PEER:
            self.bonds.pop(peer, None)
            self.bonds[peer] = value
            while len(self.bonds) > _BONDS_MAX:
                del self.bonds[next(iter(self.bonds))]

    def _connected(self, handle: int, addr_type: int, addr: bytes) -> None:
        pending = self._connecting
        if pending is None or pending[2].done() or (addr, addr_type) != pending[:2] \
                or handle in self._conns or not 0 <= handle < NO_CONN:
            # Nobody asked for it (a connect given up on came through late, or a lying radio):
            # not kept, so the peer is not held.
            self.dropped["unexpected_connection"] += 1
            with contextlib.suppress(RadioDown):
                self._send(airwire.DISCONNECT, (handle,))
            return
        pending[2].set_result(handle)

    def _disconnected(self, handle: int, addr_type: int, addr: bytes) -> None:
        if handle == NO_CONN:
            pending = self._connecting
            if pending is not None and not pending[2].done():
                pending[2].set_exception(ConnectFailed(
                    f"connect to {_text(pending[0])}: no connection (out of range, not "
                    "advertising or not connectable)"))
            return
        gone = self._disconnecting.get(handle)
        if gone is not None and not gone.done():
            gone.set_result(None)
        conn = self._conns.get(handle)
        if conn is None:
            # The word for one dropped here already (a timed-out procedure) is expected.
            if gone is None and self._dropped_here.pop(handle, None) is None:
                self.dropped["disconnect_for_no_conn"] += 1
            return
        conn._lose("local" if gone is not None else "peer")


def _text(address: bytes) -> str:
    return ":".join(f"{b:02X}" for b in address)


def _call(callback: Callable[..., object], *args: object) -> None:
    # A listener is the caller's code (a library's callback): its bug must not end the session.
    try:
        callback(*args)
    except Exception:
        log.exception("a listener of the air central raised")

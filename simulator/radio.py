"""The simulated air: hosts BLE peripherals and serves centrals over a unix socket.

Each client of the socket is one central: the `bluetooth` shim in a MicroPython process (or a test)
speaking ``simulator.shims.airwire``. The radio plays the central's BLE controller and host stack:
it scans, connects, runs GATT procedures against the peripherals' attribute tables, delivers
notifications to subscribed centrals, and drops links when a peripheral leaves range (after a
supervision timeout), disconnects itself, or idles out.

    radio = Radio(socket_path)
    await radio.start()
    radio.add(peripheral)
    ...
    radio.wedge()       # every central's BLE stack hangs: calls go nowhere, no event comes
    await radio.stop()

A wedged stack stays wedged until its central restarts it (the shim's ``active(False)`` then
``active(True)``: a new session), as a hung NimBLE host does.

LE security, as a NimBLE central meets it: a characteristic may need an encrypted link
(``Characteristic(..., encrypted=True)``): reading it, writing it or its CCCD on a link that is
not encrypted is refused with ATT 0x05 (insufficient authentication) when the peripheral holds
no bond with that central, 0x0F (insufficient encryption) when it does (as NimBLE's ATT server
decides). The central's ``gap_pair`` (airwire PAIR) with a stored secret re-encrypts the link
after ``encrypt_delay_s`` if the peripheral still holds that key, and fails if it lost it (the
link stays up, unencrypted); without one it pairs ("Just Works": no MITM) after
``pair_delay_s`` if the peripheral is ``pairable`` and fails if not. A new pairing hands the
central its keys in _IRQ_SET_SECRET events (our and the peer's, keyed by the peer's address as
NimBLE's ble_addr_t: type, then the address least significant byte first) before the
_IRQ_ENCRYPTION_UPDATE that ends every attempt. Pairing never completes at once: several SMP
round trips over connection events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable

from simulator.shims import airwire
from wire.lockproto import uuid128_le

# Characteristic properties (same bits as MicroPython's FLAG_* and the ATT spec).
FLAG_READ = 0x02
FLAG_WRITE_NO_RESPONSE = 0x04
FLAG_WRITE = 0x08
FLAG_NOTIFY = 0x10
FLAG_INDICATE = 0x20

CCCD_UUID16 = 0x2902

# MicroPython IRQ numbers.
_IRQ_SCAN_RESULT = 5
_IRQ_SCAN_DONE = 6
_IRQ_PERIPHERAL_CONNECT = 7
_IRQ_PERIPHERAL_DISCONNECT = 8
_IRQ_GATTC_SERVICE_RESULT = 9
_IRQ_GATTC_SERVICE_DONE = 10
_IRQ_GATTC_CHARACTERISTIC_RESULT = 11
_IRQ_GATTC_CHARACTERISTIC_DONE = 12
_IRQ_GATTC_DESCRIPTOR_RESULT = 13
_IRQ_GATTC_DESCRIPTOR_DONE = 14
_IRQ_GATTC_READ_RESULT = 15
_IRQ_GATTC_READ_DONE = 16
_IRQ_GATTC_WRITE_DONE = 17
_IRQ_GATTC_NOTIFY = 18
_IRQ_MTU_EXCHANGED = 21
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_SET_SECRET = 30

# NimBLE's store object types (MicroPython passes them as sec_type).
SEC_OUR = 1
SEC_PEER = 2

# ATT error codes used as event status.
ATT_INVALID_HANDLE = 0x01
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_INVALID_VALUE_LENGTH = 0x0D
ATT_INSUFFICIENT_ENCRYPTION = 0x0F

_NO_CONN = 0xFFFF
ADV_IND = 0x00
ADV_NONCONN_IND = 0x03
SCAN_RSP = 0x04
DEFAULT_ATT_MTU = 23


def _uuid_bytes(uuid: str | int) -> bytes:
    if isinstance(uuid, int):
        return uuid.to_bytes(2, "little")
    return uuid128_le(uuid)


def parse_address(addr: bytes | str) -> bytes:
    """6 address bytes from bytes or an "AA:BB:CC:DD:EE:FF" string (most significant first)."""
    if isinstance(addr, str):
        addr = bytes.fromhex(addr.replace(":", ""))
    if len(addr) != 6:
        raise ValueError("a BLE address has 6 bytes")
    return bytes(addr)


class Characteristic:
    """One characteristic; the radio assigns ``value_handle`` (and ``cccd_handle`` if it notifies).
    ``encrypted``: its value and its CCCD need an encrypted link."""

    def __init__(self, uuid: str | int, properties: int, value: bytes = b"",
                 encrypted: bool = False) -> None:
        self.uuid = uuid
        self.properties = properties
        self.value = value
        self.encrypted = encrypted
        self.def_handle = 0
        self.value_handle = 0
        self.cccd_handle = 0


class Service:
    """A primary service: a UUID and its characteristics."""

    def __init__(self, uuid: str | int, characteristics: Iterable[Characteristic]) -> None:
        self.uuid = uuid
        self.characteristics = list(characteristics)
        self.start_handle = 0
        self.end_handle = 0


class Link:
    """One connection between a central and a peripheral, as the peripheral sees it."""

    def __init__(self, session: _CentralSession, conn_handle: int, peripheral: Peripheral) -> None:
        self.session = session
        self.conn_handle = conn_handle
        self.peripheral = peripheral
        self.mtu = DEFAULT_ATT_MTU
        self.subscribed: set[int] = set()
        self.connected = True
        self.encrypted = False
        self.last_activity = asyncio.get_running_loop().time()

    def notify(self, characteristic: Characteristic, data: bytes) -> bool:
        """Send a notification if the central subscribed; False if it was not sent."""
        if not self.connected or characteristic.value_handle not in self.subscribed:
            return False
        self.session.send(
            _IRQ_GATTC_NOTIFY, self.conn_handle, characteristic.value_handle, data[: self.mtu - 3]
        )
        return True

    def disconnect(self) -> None:
        """Drop the link from the peripheral's side."""
        self.session.drop(self)


class Peripheral:
    """Base class of a simulated BLE peripheral; subclasses supply GATT behaviour and adverts."""

    addr_type = 0  # public
    att_mtu = 247

    def __init__(
        self,
        address: bytes | str,
        name: str,
        services: Iterable[Service] = (),
        rssi: int = -60,
        connectable: bool = True,
        idle_timeout_s: float | None = None,
    ) -> None:
        self.address = parse_address(address)
        self.name = name
        self.services = list(services)
        self.rssi = rssi
        self.connectable = connectable
        self.idle_timeout_s = idle_timeout_s
        self._in_range = True
        self.advertising = True  # False: silent on the air, so nobody can find or connect to it
        # A slow peer: every GATT procedure (discovery, read, write) is answered this late.
        self.response_delay_s = 0.0
        self.radio: Radio | None = None
        self.links: list[Link] = []
        # LE security (module docstring): whether it accepts a new pairing now (a lock: in
        # pairing mode), the long-term key of each central it bonded with (by that central's
        # ble_addr_t), and how long a pairing and a re-encryption take.
        self.pairable = True
        self.bonds: dict[bytes, bytes] = {}
        self.pair_delay_s = 0.3
        self.encrypt_delay_s = 0.05

    @property
    def in_range(self) -> bool:
        return self._in_range

    @in_range.setter
    def in_range(self, value: bool) -> None:
        self._in_range = value
        if self.radio is not None and not value:
            self.radio.call(self.radio.out_of_range, self)

    def forget_bonds(self) -> None:
        """Lose every bond (a reset lock): a central's stored keys no longer encrypt a link."""
        self.bonds.clear()

    def advertising_data(self) -> bytes:
        return b""

    def scan_response(self) -> bytes:
        return b""

    def on_connect(self, link: Link) -> None:
        """A central connected."""

    def on_disconnect(self, link: Link) -> None:
        """The link is gone (either side, or out of range)."""

    def on_write(self, link: Link, characteristic: Characteristic, data: bytes) -> int:
        """A central wrote a value; return an ATT status (0 accepts)."""
        characteristic.value = data
        return 0

    def on_read(self, link: Link, characteristic: Characteristic) -> bytes:
        return characteristic.value


class _CentralSession:
    """One connected central (a shim); speaks airwire and owns that central's links."""

    def __init__(self, radio: Radio, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.radio = radio
        self.reader = reader
        self.writer = writer
        self.links: dict[int, Link] = {}
        self.next_handle = 1
        self.scan_task: asyncio.Task | None = None
        self.connect_task: asyncio.Task | None = None
        self.preferred_mtu = DEFAULT_ATT_MTU
        self.wedged = False  # the stack hangs: nothing in, nothing out
        self.mac = bytes(6)  # the central's public address (its HELLO)

    def send(self, kind: int, *args) -> None:
        if not self.wedged and not self.writer.is_closing():
            self.writer.write(airwire.encode(kind, args))

    async def run(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(2)
                body = await self.reader.readexactly(airwire.body_length(header))
                kind, args = airwire.decode(body)
                self.handle(kind, args)
        except (asyncio.IncompleteReadError, ConnectionError, airwire.WireError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        for task in (self.scan_task, self.connect_task):
            if task:
                task.cancel()
        for link in list(self.links.values()):
            self.drop(link, notify_central=False)
        self.writer.close()

    def drop(self, link: Link, notify_central: bool = True) -> None:
        if not link.connected:
            return
        link.connected = False
        self.links.pop(link.conn_handle, None)
        p = link.peripheral
        if link in p.links:
            p.links.remove(link)
        if notify_central:
            self.send(_IRQ_PERIPHERAL_DISCONNECT, link.conn_handle, p.addr_type, p.address)
        p.on_disconnect(link)

    def handle(self, kind: int, args: list) -> None:
        if kind == airwire.HELLO and args and isinstance(args[0], bytes) and len(args[0]) == 6:
            self.mac = args[0]
        if kind == airwire.HELLO or self.wedged:
            return
        if kind == airwire.SCAN:
            self.scan(*args)
        elif kind == airwire.CONNECT:
            self.connect_task = self.radio.spawn(self.connect(*args))
        elif kind == airwire.CONNECT_CANCEL:
            if self.connect_task and not self.connect_task.done():
                self.connect_task.cancel()
                self.send(_IRQ_PERIPHERAL_DISCONNECT, _NO_CONN, 0xFF, bytes(6))
        elif kind == airwire.EXCHANGE_MTU:
            self.preferred_mtu = args[1]
            link = self.link(args[0])
            if link:
                link.mtu = max(DEFAULT_ATT_MTU, min(args[1], link.peripheral.att_mtu))
                self.send(_IRQ_MTU_EXCHANGED, link.conn_handle, link.mtu)
        else:
            conn = args[0]
            link = self.link(conn)
            if link is None:
                return  # the disconnect event is already on its way to the central
            if kind == airwire.DISCONNECT:
                self.drop(link)
            elif kind == airwire.PAIR:
                self.radio.spawn(self.secure(link, args[1] if len(args) > 1 else None,
                                             bool(args[2]) if len(args) > 2 else True))
            elif link.peripheral.response_delay_s:
                self.radio.spawn(self._answer_late(link, kind, args))
            else:
                self.gatt(link, kind, args)

    async def _answer_late(self, link: Link, kind: int, args: list) -> None:
        await asyncio.sleep(link.peripheral.response_delay_s)
        if link.connected:
            self.gatt(link, kind, args)

    def gatt(self, link: Link, kind: int, args: list) -> None:
        """Run one GATT procedure against the peripheral's attribute table."""
        if kind == airwire.DISCOVER_SERVICES:
            self.discover_services(link, args[1])
        elif kind == airwire.DISCOVER_CHARACTERISTICS:
            self.discover_characteristics(link, *args[1:])
        elif kind == airwire.DISCOVER_DESCRIPTORS:
            self.discover_descriptors(link, *args[1:])
        elif kind == airwire.READ:
            self.read(link, args[1])
        elif kind == airwire.WRITE:
            self.write(link, *args[1:])

    def identity(self) -> bytes:
        """This central's address as NimBLE's ble_addr_t (public type, LSB first)."""
        return bytes((0,)) + self.mac[::-1]

    async def secure(self, link: Link, secret: bytes | None, bond: bool) -> None:
        """gap_pair: re-encrypt with the stored secret, or pair (module docstring)."""
        p = link.peripheral
        me = self.identity()
        ltk = key_of(secret)
        if ltk is not None:
            await asyncio.sleep(p.encrypt_delay_s)
            if not link.connected:
                return
            if p.bonds.get(me) == ltk:
                link.encrypted = True
                self.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 1, 0, 1, 16)
            else:  # the peer lost that key: "PIN or key missing", the link stays unencrypted
                self.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 0, 0, 0, 0)
            return
        await asyncio.sleep(p.pair_delay_s)
        if not link.connected:
            return
        if not p.pairable:  # SMP Pairing Failed: pairing not supported now
            self.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 0, 0, 0, 0)
            return
        ltk = os.urandom(16)
        if bond:
            p.bonds[me] = ltk
            peer = bytes((p.addr_type,)) + p.address[::-1]
            for sec_type in (SEC_OUR, SEC_PEER):
                self.send(_IRQ_SET_SECRET, sec_type, peer, secret_value(peer, ltk))
        link.encrypted = True
        self.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 1, 0, 1 if bond else 0, 16)

    def link(self, conn: int) -> Link | None:
        link = self.links.get(conn)
        if link is not None:
            link.last_activity = asyncio.get_running_loop().time()
        return link

    def scan(self, duration_ms: int | None, active: int) -> None:
        if self.scan_task and not self.scan_task.done():
            self.scan_task.cancel()
            self.scan_task = None
            self.send(_IRQ_SCAN_DONE)
        if duration_ms is not None:
            self.scan_task = self.radio.spawn(self.scanning(duration_ms, bool(active)))

    async def scanning(self, duration_ms: int, active: bool) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_ms / 1000 if duration_ms else None
        while end is None or loop.time() < end:
            for p in self.radio.peripherals:
                if not (p.in_range and p.advertising):
                    continue
                adv_type = ADV_IND if p.connectable else ADV_NONCONN_IND
                self.send(_IRQ_SCAN_RESULT, p.addr_type, p.address, adv_type, p.rssi,
                          p.advertising_data())
                if active and p.scan_response():
                    self.send(_IRQ_SCAN_RESULT, p.addr_type, p.address, SCAN_RSP, p.rssi,
                              p.scan_response())
            await asyncio.sleep(self.radio.adv_interval_s)
        self.scan_task = None
        self.send(_IRQ_SCAN_DONE)

    async def connect(self, addr_type: int, addr: bytes, scan_duration_ms: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + scan_duration_ms / 1000
        while True:
            p = self.radio.find(addr_type, addr)
            if p is not None and p.in_range and p.advertising and p.connectable:
                break
            if loop.time() >= end:
                self.send(_IRQ_PERIPHERAL_DISCONNECT, _NO_CONN, 0xFF, bytes(6))
                return
            await asyncio.sleep(self.radio.adv_interval_s)
        handle = self.next_handle
        self.next_handle += 1
        link = Link(self, handle, p)
        self.links[handle] = link
        p.links.append(link)
        self.send(_IRQ_PERIPHERAL_CONNECT, handle, p.addr_type, p.address)
        p.on_connect(link)
        if p.idle_timeout_s:
            self.radio.spawn(self.idle_watch(link))

    async def idle_watch(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        timeout = link.peripheral.idle_timeout_s
        while link.connected:
            left = link.last_activity + timeout - loop.time()
            if left <= 0:
                self.drop(link)
                return
            await asyncio.sleep(left)

    def discover_services(self, link: Link, uuid: bytes | None) -> None:
        for s in link.peripheral.services:
            if uuid is None or _uuid_bytes(s.uuid) == uuid:
                self.send(_IRQ_GATTC_SERVICE_RESULT, link.conn_handle, s.start_handle,
                          s.end_handle, _uuid_bytes(s.uuid))
        self.send(_IRQ_GATTC_SERVICE_DONE, link.conn_handle, 0)

    def discover_characteristics(self, link: Link, start: int, end: int, uuid: bytes | None):
        for s in link.peripheral.services:
            for c in s.characteristics:
                if start <= c.def_handle <= end and (uuid is None or _uuid_bytes(c.uuid) == uuid):
                    self.send(_IRQ_GATTC_CHARACTERISTIC_RESULT, link.conn_handle, c.def_handle,
                              c.value_handle, c.properties, _uuid_bytes(c.uuid))
        self.send(_IRQ_GATTC_CHARACTERISTIC_DONE, link.conn_handle, 0)

    def discover_descriptors(self, link: Link, start: int, end: int) -> None:
        for c in self.radio.characteristics(link.peripheral):
            if c.cccd_handle and start <= c.cccd_handle <= end:
                self.send(_IRQ_GATTC_DESCRIPTOR_RESULT, link.conn_handle, c.cccd_handle,
                          _uuid_bytes(CCCD_UUID16))
        self.send(_IRQ_GATTC_DESCRIPTOR_DONE, link.conn_handle, 0)

    def _refused(self, link: Link, c: Characteristic) -> int:
        # An encrypted attribute on a link that is not: which error says NimBLE's ATT server.
        if not c.encrypted or link.encrypted:
            return 0
        if self.identity() in link.peripheral.bonds:
            return ATT_INSUFFICIENT_ENCRYPTION
        return ATT_INSUFFICIENT_AUTHENTICATION

    def read(self, link: Link, handle: int) -> None:
        status = ATT_INVALID_HANDLE
        for c in self.radio.characteristics(link.peripheral):
            if (handle == c.cccd_handle or handle == c.value_handle) and self._refused(link, c):
                status = self._refused(link, c)
            elif handle == c.cccd_handle:
                value = b"\x01\x00" if c.value_handle in link.subscribed else b"\x00\x00"
                status = 0
            elif handle == c.value_handle:
                if c.properties & FLAG_READ:
                    value = link.peripheral.on_read(link, c)
                    status = 0
                else:
                    status = ATT_READ_NOT_PERMITTED
            else:
                continue
            if status == 0:
                self.send(_IRQ_GATTC_READ_RESULT, link.conn_handle, handle, value[: link.mtu - 1])
            break
        self.send(_IRQ_GATTC_READ_DONE, link.conn_handle, handle, status)

    def write(self, link: Link, handle: int, mode: int, data: bytes) -> None:
        if len(data) > link.mtu - 3:
            # An ATT write request cannot carry more than MTU - 3 bytes.
            status = ATT_INVALID_VALUE_LENGTH
        else:
            status = ATT_INVALID_HANDLE
            for c in self.radio.characteristics(link.peripheral):
                if (handle == c.cccd_handle or handle == c.value_handle) \
                        and self._refused(link, c):
                    status = self._refused(link, c)
                elif handle == c.cccd_handle:
                    if len(data) != 2:
                        status = ATT_INVALID_VALUE_LENGTH
                    else:
                        status = 0
                        if data[0] & 0x01:
                            link.subscribed.add(c.value_handle)
                        else:
                            link.subscribed.discard(c.value_handle)
                elif handle == c.value_handle:
                    wanted = FLAG_WRITE if mode == 1 else FLAG_WRITE_NO_RESPONSE
                    if c.properties & wanted:
                        status = link.peripheral.on_write(link, c, data)
                    else:
                        status = ATT_WRITE_NOT_PERMITTED
                else:
                    continue
                break
        if mode == 1 and link.connected:
            self.send(_IRQ_GATTC_WRITE_DONE, link.conn_handle, handle, status)


def secret_value(peer: bytes, ltk: bytes) -> bytes:
    """A stored secret as the central's stack hands it over: opaque to the firmware, the size
    of NimBLE's ble_store_value_sec (the peer's ble_addr_t, key size, EDIV, Rand, LTK, IRK,
    CSRK and flags: 70 bytes here)."""
    return peer + bytes((16,)) + bytes(10) + ltk + bytes(32) + b"\x01\x00\x00\x00"


def key_of(secret: bytes | None) -> bytes | None:
    """The LTK in a stored secret, or None: none given, or not one the stack wrote (NimBLE
    ignores a secret of the wrong size, and then pairs afresh)."""
    if secret is None or len(secret) != 70:
        return None
    return bytes(secret[18:34])


class Radio:
    """The simulated air around one or more centrals; see the module docstring."""

    def __init__(
        self,
        socket_path: str,
        adv_interval_s: float = 0.05,
        supervision_timeout_s: float = 0.5,
    ) -> None:
        self.socket_path = socket_path
        self.adv_interval_s = adv_interval_s
        self.supervision_timeout_s = supervision_timeout_s
        self.peripherals: list[Peripheral] = []
        self._sessions: set[_CentralSession] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def add(self, peripheral: Peripheral) -> None:
        """Put a peripheral on the air and assign its GATT handles."""
        handle = 1
        for s in peripheral.services:
            s.start_handle = handle
            for c in s.characteristics:
                c.def_handle = handle + 1
                c.value_handle = handle + 2
                handle += 2
                if c.properties & (FLAG_NOTIFY | FLAG_INDICATE):
                    handle += 1
                    c.cccd_handle = handle
            s.end_handle = handle
            handle += 1
        peripheral.radio = self
        self.peripherals.append(peripheral)

    def find(self, addr_type: int, addr: bytes) -> Peripheral | None:
        for p in self.peripherals:
            if p.address == bytes(addr) and p.addr_type == addr_type:
                return p
        return None

    @staticmethod
    def characteristics(peripheral: Peripheral) -> list[Characteristic]:
        return [c for s in peripheral.services for c in s.characteristics]

    def call(self, fn: Callable, *args) -> None:
        """Run ``fn`` on the radio's loop, now if already there, else thread-safely soon."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def wedge(self) -> None:
        """Hang the BLE stack of every central now on the air (see the module docstring)."""
        for session in self._sessions:
            session.wedged = True

    @property
    def centrals(self) -> int:
        """How many centrals (stack sessions) are on the air; a restarted stack is a new one."""
        return len(self._sessions)

    def out_of_range(self, peripheral: Peripheral) -> None:
        """The peripheral left range: its links die after the supervision timeout."""
        for link in list(peripheral.links):
            self.spawn(self._supervision_timeout(link))

    async def _supervision_timeout(self, link: Link) -> None:
        await asyncio.sleep(self.supervision_timeout_s)
        if not link.peripheral.in_range:
            link.session.drop(link)

    def spawn(self, coro) -> asyncio.Task:
        """Start a task the radio cancels on stop()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _CentralSession(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

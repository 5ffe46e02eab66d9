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

Time on the air is ``Radio(timing=...)`` (simulator/ble_timing.py; the suite picks it with the
``SIM_BLE_TIMING`` environment variable). The fast air answers at once. The realistic air keeps
each peripheral's advertising events (``Peripheral.adv_interval_s``, a lock kind's) on one
schedule every scanner and initiator hears, puts every link on its connection events from the
advert that carried the connect request on, answers each ATT request one event after it
arrived (discovery in as many rounds as the ATT MTU needs), delivers notifications and a
peripheral's disconnect in order at the next event, costs a re-encryption and a pairing their
events, and retransmits lost packets (an interval each; silence for the supervision timeout
drops the link). docs/ble-timing.md gives the figures and their sources.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import os
import random
import threading
from collections.abc import Callable, Iterable

from simulator import ble_timing
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
        # The realistic air (module docstring): the first connection event, when the link's
        # next request may go (ATT: one outstanding), when an answer being made is due, and
        # what waits for its event, in order (an event and its args; None: the link ends).
        self.anchor = self.last_activity
        self.usable_at = self.last_activity
        self.busy_until = 0.0
        self.att_turn = asyncio.Lock()
        self.reply_at: float | None = None
        self._outbox: collections.deque[tuple[float, int | None, tuple]] = collections.deque()
        self._last_out = 0.0
        self._pump: asyncio.Task | None = None

    @property
    def timing(self) -> ble_timing.Timing:
        return self.session.radio.timing

    def send(self, kind: int, *args) -> None:
        """An event for the central about this link: at once on the fast air; at the
        connection event its packets reach the central on the realistic one (``reply_at``
        when an ATT answer is being made, else the next event), after those before it."""
        if self.timing.instant:
            self.session.send(kind, *args)
            return
        if self.reply_at is not None:
            at = self.reply_at
        else:
            size = len(args[-1]) + ble_timing.ATT_HEADER if kind == _IRQ_GATTC_NOTIFY else 0
            at = self.cross(self.next_event(self.session.radio.now()),
                            self.timing.events_for(size))
            if at is None:
                return
        self._enqueue(at, kind, args)

    def _enqueue(self, at: float, kind: int | None, args: tuple) -> None:
        at = max(at, self._last_out)
        self._last_out = at
        self._outbox.append((at, kind, args))
        if self._pump is None or self._pump.done():
            self._pump = self.session.radio.spawn(self._deliver())

    async def _deliver(self) -> None:
        radio = self.session.radio
        while self._outbox and self.connected:
            at, kind, args = self._outbox[0]
            left = at - radio.now()
            if left > 0:
                await asyncio.sleep(left)
                continue
            self._outbox.popleft()
            if kind is None:
                self.session.drop(self)
            else:
                self.session.send(kind, *args)
        self._outbox.clear()

    def next_event(self, t: float) -> float:
        """The first connection event at or after ``t`` (and after the link's set-up) at
        which the peripheral listens (it sleeps through ``peripheral_latency`` idle ones)."""
        interval = self.timing.conn_interval_s
        t = max(t, self.usable_at)
        k = math.ceil((t - self.anchor) / interval - 1e-9)
        step = self.timing.peripheral_latency + 1
        if step > 1 and t - self.busy_until > interval:
            k = math.ceil(k / step) * step
        return self.anchor + k * interval

    def cross(self, t: float, events: int) -> float | None:
        """When a PDU that takes ``events`` connection events, starting at the event ``t``,
        has crossed: each event lost (either direction's packet: it goes again at the next)
        costs an interval. None: the link heard nothing for the supervision timeout (it is
        dropped then)."""
        timing = self.timing
        radio = self.session.radio
        silent = 0.0
        done = 0
        while True:
            lost = timing.lost(self.peripheral.rssi, radio.rng) or \
                timing.lost(self.peripheral.rssi, radio.rng)
            if lost:
                radio.retransmissions += 1
                silent += timing.conn_interval_s
                if silent >= timing.supervision_timeout_s:
                    radio.spawn(radio.drop_at(self, t))
                    return None
            else:
                silent = 0.0
                done += 1
                if done >= events:
                    return t
            t += timing.conn_interval_s

    def notify(self, characteristic: Characteristic, data: bytes) -> bool:
        """Send a notification if the central subscribed; False if it was not sent."""
        if not self.connected or characteristic.value_handle not in self.subscribed:
            return False
        self.send(_IRQ_GATTC_NOTIFY, self.conn_handle, characteristic.value_handle,
                  data[: self.mtu - 3])
        return True

    def disconnect(self) -> None:
        """Drop the link from the peripheral's side (on the realistic air at the next
        connection event, after what it sent before)."""
        if self.timing.instant:
            self.session.drop(self)
        elif self.connected:
            self._enqueue(self.next_event(self.session.radio.now()), None, ())


class Peripheral:
    """Base class of a simulated BLE peripheral; subclasses supply GATT behaviour and adverts."""

    addr_type = 0  # public
    att_mtu = 247
    # Between its advertising events on the realistic air (a lock kind sets its own;
    # docs/ble-timing.md): a battery peripheral's ~1 s, an assumption.
    adv_interval_s = 1.0

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

    def change_database(self, services: Iterable[Service]) -> None:
        """Its GATT database becomes ``services``, handles assigned anew (a firmware update);
        as the update's reboot, every link drops first. On the radio's loop."""
        for link in list(self.links):
            link.disconnect()
        self.services = list(services)
        Radio.assign_handles(self)

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
            if link and self.radio.timing.instant:
                self.exchange_mtu(link, args[1])
            elif link:
                self.radio.spawn(self._over_air(link, kind, args))
        else:
            conn = args[0]
            link = self.link(conn)
            if link is None:
                return  # the disconnect event is already on its way to the central
            if kind == airwire.DISCONNECT:
                if self.radio.timing.instant:
                    self.drop(link)
                else:  # LL_TERMINATE_IND at the next event
                    link._enqueue(link.next_event(self.radio.now()), None, ())
            elif kind == airwire.PAIR:
                self.radio.spawn(self.secure(link, args[1] if len(args) > 1 else None,
                                             bool(args[2]) if len(args) > 2 else True))
            elif not self.radio.timing.instant:
                self.radio.spawn(self._over_air(link, kind, args))
            elif link.peripheral.response_delay_s:
                self.radio.spawn(self._answer_late(link, kind, args))
            else:
                self.gatt(link, kind, args)

    async def _answer_late(self, link: Link, kind: int, args: list) -> None:
        await asyncio.sleep(link.peripheral.response_delay_s)
        if link.connected:
            self.gatt(link, kind, args)

    def exchange_mtu(self, link: Link, mtu: int) -> None:
        link.mtu = max(DEFAULT_ATT_MTU, min(mtu, link.peripheral.att_mtu))
        link.send(_IRQ_MTU_EXCHANGED, link.conn_handle, link.mtu)

    def _att_shape(self, link: Link, kind: int, args: list) -> tuple[int, int, int]:
        """An ATT procedure's rounds (request and answer), and the request's and the
        answer's bytes, as the link's MTU makes them (discovery: as many rounds as the entries
        need at MTU - 2 bytes an answer, and one more that finds none)."""
        mtu = link.mtu
        p = link.peripheral
        if kind == airwire.DISCOVER_SERVICES:
            entries = [s for s in p.services if args[1] is None or _uuid_bytes(s.uuid) == args[1]]
            size = 4 + (len(args[1]) if args[1] is not None else 16)
            return self._rounds(len(entries), size, mtu), 7 + (len(args[1] or b"")), mtu
        if kind == airwire.DISCOVER_CHARACTERISTICS:
            start, end = args[1], args[2]
            entries = [c for s in p.services for c in s.characteristics
                       if start <= c.def_handle <= end]
            return self._rounds(len(entries), 5 + 16, mtu), 7, mtu
        if kind == airwire.DISCOVER_DESCRIPTORS:
            entries = [c for c in self.radio.characteristics(p) if c.cccd_handle]
            return self._rounds(len(entries), 4, mtu), 5, mtu
        if kind == airwire.READ:
            return 1, 3, mtu
        if kind == airwire.WRITE:
            return 1, 3 + len(args[3]), 1 if args[2] == 1 else 0
        if kind == airwire.EXCHANGE_MTU:
            return 1, 3, 3
        return 1, 3, 3

    @staticmethod
    def _rounds(entries: int, entry_size: int, mtu: int) -> int:
        return math.ceil(entries / max(1, (mtu - 2) // entry_size)) + 1

    async def _over_air(self, link: Link, kind: int, args: list) -> None:
        """One ATT procedure on the realistic air (module docstring): its request(s) at the
        link's next events, the peripheral's work when the last one arrived (and after its
        ``response_delay_s``), its answer at the event after."""
        async with link.att_turn:  # in the order the central sent them (ATT: one at a time)
            await self._procedure_on_air(link, kind, args)

    async def _procedure_on_air(self, link: Link, kind: int, args: list) -> None:
        timing = self.radio.timing
        rounds, request, answer = self._att_shape(link, kind, args)
        t = max(self.radio.now(), link.busy_until)
        arrived = None
        for i in range(rounds):
            arrived = link.cross(link.next_event(t), timing.events_for(request))
            if arrived is None:
                return
            if i < rounds - 1:
                t = link.cross(arrived + timing.conn_interval_s, timing.events_for(answer))
                if t is None:
                    return
                t += timing.conn_interval_s  # the client's next request, after the answer
        at = arrived + link.peripheral.response_delay_s
        await asyncio.sleep(max(0.0, at - self.radio.now()))
        if not link.connected:
            return
        if answer:
            reply = link.cross(link.next_event(at + timing.conn_interval_s * 0.5),
                               timing.events_for(answer))
            if reply is None:
                return
        else:
            reply = at
        link.busy_until = reply
        link.reply_at = reply
        try:
            if kind == airwire.EXCHANGE_MTU:
                self.exchange_mtu(link, args[1])
            else:
                self.gatt(link, kind, args)
        finally:
            link.reply_at = None

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
            await asyncio.sleep(self._security_delay(link, p.encrypt_delay_s,
                                                     self.radio.timing.encrypt_events))
            if not link.connected:
                return
            if p.bonds.get(me) == ltk:
                link.encrypted = True
                link.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 1, 0, 1, 16)
            else:  # the peer lost that key: "PIN or key missing", the link stays unencrypted
                link.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 0, 0, 0, 0)
            return
        timing = self.radio.timing
        await asyncio.sleep(self._security_delay(
            link, p.pair_delay_s, timing.pair_events + timing.encrypt_events,
            timing.pair_compute_s))
        if not link.connected:
            return
        if not p.pairable:  # SMP Pairing Failed: pairing not supported now
            link.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 0, 0, 0, 0)
            return
        ltk = os.urandom(16)
        if bond:
            p.bonds[me] = ltk
            peer = bytes((p.addr_type,)) + p.address[::-1]
            for sec_type in (SEC_OUR, SEC_PEER):
                link.send(_IRQ_SET_SECRET, sec_type, peer, secret_value(peer, ltk))
        link.encrypted = True
        link.send(_IRQ_ENCRYPTION_UPDATE, link.conn_handle, 1, 0, 1 if bond else 0, 16)

    def _security_delay(self, link: Link, fast_s: float, events: int,
                        compute_s: float = 0.0) -> float:
        """How long a re-encryption or a pairing takes from now: the peripheral's own figure
        on the fast air; on the realistic one its events from the next (each loss one more)
        and the peripheral's key computation, never less than the peripheral's figure."""
        timing = self.radio.timing
        if timing.instant:
            return fast_s
        now = self.radio.now()
        t = link.next_event(max(now, link.busy_until))
        done = link.cross(t, max(1, events))
        if done is None:
            # the link drops by its supervision timeout (Link.cross): nothing comes of it
            return timing.supervision_timeout_s + 1.0
        return max(fast_s, done + compute_s - now)

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
            scanning = self.scanning if self.radio.timing.instant else self.scanning_on_air
            self.scan_task = self.radio.spawn(scanning(duration_ms, bool(active)))

    def _report(self, p: Peripheral, active: bool) -> None:
        adv_type = ADV_IND if p.connectable else ADV_NONCONN_IND
        self.send(_IRQ_SCAN_RESULT, p.addr_type, p.address, adv_type, p.rssi,
                  p.advertising_data())
        if active and p.scan_response() and \
                not self.radio.timing.lost(p.rssi, self.radio.rng):  # SCAN_REQ, SCAN_RSP
            self.send(_IRQ_SCAN_RESULT, p.addr_type, p.address, SCAN_RSP, p.rssi,
                      p.scan_response())

    async def scanning_on_air(self, duration_ms: int, active: bool) -> None:
        """A scan on the realistic air: each peripheral's advertising events as they come
        (Radio.advert_after), each heard if inside the scan window and not lost."""
        radio = self.radio
        start = radio.now()
        end = start + duration_ms / 1000 if duration_ms else None
        after: dict[Peripheral, float] = {}
        while True:
            now = radio.now()
            due = [(radio.advert_after(p, after.get(p, start)), i, p)
                   for i, p in enumerate(radio.peripherals) if p.in_range and p.advertising]
            at, _, p = min(due, default=(now + 0.05, 0, None))
            if end is not None and at >= end:
                await asyncio.sleep(max(0.0, end - now))
                break
            await asyncio.sleep(max(0.0, at - now))
            if p is None:
                continue
            after[p] = at
            if p.in_range and p.advertising and radio.timing.heard(p.rssi, radio.rng):
                self._report(p, active)
        self.scan_task = None
        self.send(_IRQ_SCAN_DONE)

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
        radio = self.radio
        after = loop.time()
        while True:
            p = radio.find(addr_type, addr)
            ready = p is not None and p.in_range and p.advertising and p.connectable
            if ready and radio.timing.instant:
                break
            if ready:  # the realistic air: CONNECT_IND answers its next advert heard
                at = radio.advert_after(p, after)
                if at < end:
                    await asyncio.sleep(max(0.0, at - loop.time()))
                    after = at
                    if p.in_range and p.advertising and p.connectable and \
                            not radio.timing.lost(p.rssi, radio.rng):
                        break
                    continue
            if loop.time() >= end:
                self.send(_IRQ_PERIPHERAL_DISCONNECT, _NO_CONN, 0xFF, bytes(6))
                return
            await asyncio.sleep(min(radio.adv_interval_s, max(0.0, end - loop.time())))
            after = loop.time()
        handle = self.next_handle
        self.next_handle += 1
        link = Link(self, handle, p)
        if not radio.timing.instant:
            # The first connection event: 1.25 ms and the transmit window's offset after
            # CONNECT_IND; the link layer's own procedures take the next few.
            interval = radio.timing.conn_interval_s
            link.anchor = after + ble_timing.TRANSMIT_WINDOW_DELAY_S + \
                radio.rng.uniform(0.0, interval)
            link.usable_at = link.anchor + radio.timing.setup_events * interval
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
                link.disconnect()
                return
            await asyncio.sleep(left)

    def discover_services(self, link: Link, uuid: bytes | None) -> None:
        for s in link.peripheral.services:
            if uuid is None or _uuid_bytes(s.uuid) == uuid:
                link.send(_IRQ_GATTC_SERVICE_RESULT, link.conn_handle, s.start_handle,
                          s.end_handle, _uuid_bytes(s.uuid))
        link.send(_IRQ_GATTC_SERVICE_DONE, link.conn_handle, 0)

    def discover_characteristics(self, link: Link, start: int, end: int, uuid: bytes | None):
        for s in link.peripheral.services:
            for c in s.characteristics:
                if start <= c.def_handle <= end and (uuid is None or _uuid_bytes(c.uuid) == uuid):
                    link.send(_IRQ_GATTC_CHARACTERISTIC_RESULT, link.conn_handle, c.def_handle,
                              c.value_handle, c.properties, _uuid_bytes(c.uuid))
        link.send(_IRQ_GATTC_CHARACTERISTIC_DONE, link.conn_handle, 0)

    def discover_descriptors(self, link: Link, start: int, end: int) -> None:
        for c in self.radio.characteristics(link.peripheral):
            if c.cccd_handle and start <= c.cccd_handle <= end:
                link.send(_IRQ_GATTC_DESCRIPTOR_RESULT, link.conn_handle, c.cccd_handle,
                          _uuid_bytes(CCCD_UUID16))
        link.send(_IRQ_GATTC_DESCRIPTOR_DONE, link.conn_handle, 0)

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
                link.send(_IRQ_GATTC_READ_RESULT, link.conn_handle, handle, value[: link.mtu - 1])
            break
        link.send(_IRQ_GATTC_READ_DONE, link.conn_handle, handle, status)

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
            link.send(_IRQ_GATTC_WRITE_DONE, link.conn_handle, handle, status)


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
        adv_interval_s: float | None = None,
        supervision_timeout_s: float | None = None,
        timing: ble_timing.Timing | None = None,
        seed: int | None = None,
    ) -> None:
        """``timing``: the air's figures (simulator/ble_timing.py; None: as SIM_BLE_TIMING
        says); ``adv_interval_s`` and ``supervision_timeout_s`` override its own;
        ``seed``: the air's randomness (adverts' phases, advDelay, losses) repeatable."""
        self.socket_path = socket_path
        self.timing = timing if timing is not None else ble_timing.from_env()
        if adv_interval_s is not None:
            self.timing = dataclasses.replace(self.timing, adv_interval_s=adv_interval_s)
        if supervision_timeout_s is not None:
            self.timing = dataclasses.replace(self.timing,
                                              supervision_timeout_s=supervision_timeout_s)
        self.rng = random.Random(seed)
        self.retransmissions = 0  # connection events lost and sent again (realistic air)
        self._adv_phase: dict[Peripheral, tuple[float, int]] = {}
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
        self.assign_handles(peripheral)
        peripheral.radio = self
        self.peripherals.append(peripheral)

    @staticmethod
    def assign_handles(peripheral: Peripheral) -> None:
        """Number the peripheral's attributes from 1, in order (a GATT server's usual way)."""
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

    def find(self, addr_type: int, addr: bytes) -> Peripheral | None:
        for p in self.peripherals:
            if p.address == bytes(addr) and p.addr_type == addr_type:
                return p
        return None

    @property
    def adv_interval_s(self) -> float:
        """How often the fast air's scans report and its connects look (every peripheral's
        interval there); on the realistic air, how often an initiator looks for a peripheral
        that is not advertising."""
        return self.timing.adv_interval_s or 0.05

    @property
    def supervision_timeout_s(self) -> float:
        return self.timing.supervision_timeout_s

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def advert_after(self, p: Peripheral, t: float) -> float:
        """The time of the peripheral's first advertising event after ``t``: every scanner
        and initiator hears the same events. Event k is at the peripheral's phase plus k
        intervals plus that event's advDelay (0-10 ms, drawn from the event's number)."""
        interval = self.timing.adv_interval_of(p.adv_interval_s)
        if p not in self._adv_phase:
            self._adv_phase[p] = (t + self.rng.uniform(0.0, interval),
                                  self.rng.getrandbits(32))
        phase, salt = self._adv_phase[p]
        k = max(0, math.floor((t - phase) / interval) - 1)
        while True:
            at = phase + k * interval + self._adv_delay(salt, k)
            if at > t:
                return at
            k += 1

    def _adv_delay(self, salt: int, k: int) -> float:
        mixed = ((salt ^ (k * 0x9E3779B1)) * 0x85EBCA6B) & 0xFFFFFFFF
        return self.timing.adv_delay_max_s * (mixed / 2**32)

    async def drop_at(self, link: Link, t: float) -> None:
        """Drop a link whose every packet was lost, its supervision timeout after ``t``."""
        await asyncio.sleep(max(0.0, t + self.timing.supervision_timeout_s - self.now()))
        if link.connected:
            link.session.drop(link)

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

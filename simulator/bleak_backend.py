"""bleak's backends on the simulated radio: unmodified bleak code reaches the simulated locks
as a hub with its own adapter reaches real ones (direct mode, docs/direct-mode.md).

    async with BleakScanner(on_found, backend=SimScanner, radio_socket=path) as scanner: ...
    async with BleakClient(address, backend=SimClient, radio_socket=path) as client: ...

    install(path)   # the radio of backends made without radio_socket= (BleakClient(address,
                    # backend=SimClient) as a driver that passes no kwargs makes it)

Each process has one adapter per radio (a shared :class:`simulator.air_central.AirCentral`, per
event loop), as a hub's BlueZ shares one adapter among all its clients and scanners. The
backends behave as bleak's BlueZ backend does where a caller can tell: a client given an address
string finds the device by scanning first (``BleakDeviceNotFoundError`` if it is not heard
within the timeout) unless the adapter heard it already; ``connect`` raises ``TimeoutError``
when no connection came in time, ``BleakGATTProtocolError`` carries a peer's ATT error, the
disconnected callback runs for unsolicited disconnects only, and an adapter that is not there
is ``BleakBluetoothNotAvailableError`` (reason NO_BLUETOOTH). Never kinder than hardware: the
radio's range, supervision timeouts, idle drops and wedges apply to it.

Pairing as BlueZ does it: ``pair()`` (or ``BleakClient(..., pair=True)``) encrypts the link,
pairing "Just Works" and bonding if the adapter holds no bond with the peer; the bond is kept
by the adapter (per radio, for the process), so a later connection is encrypted with it at once
(before discovery, as BlueZ raises a paired device's security when it connects; a peer that
lost the bond then refuses what needs encryption, ATT 0x05). ``unpair()`` forgets the bond and
disconnects. A failed pairing is a BleakError.

Limits (the radio's): no long (prepared) writes, so a write longer than MTU - 3 is an ATT error
(with response) or refused here (without); the radio delivers notifications only, so a
characteristic that can only indicate is subscribed but never heard; pairing is "Just Works"
only (no passkey, no MITM protection).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from bleak.uuids import normalize_uuid_16

# The one reading of advertising data and of UUIDs' over-the-air bytes (what BlueZ does for a
# hub's bleak): hubd's, so both ways into bleak read an advert alike.
from hubd.ble import uuids
from hubd.ble.advert import parse
from hubd.ble.gatt import properties
from simulator import air_central as air

log = logging.getLogger(__name__)

#: Each read or write's time unless ``gatt_timeout=`` says.
GATT_TIMEOUT_S = air.GATT_TIMEOUT_S
CCCD_UUID = normalize_uuid_16(0x2902)
_CCCD_NOTIFY = b"\x01\x00"
_CCCD_INDICATE = b"\x02\x00"
_CCCD_OFF = b"\x00\x00"

_default_socket: str | None = None
_centrals: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, air.AirCentral]] = \
    weakref.WeakKeyDictionary()


def install(socket_path: str) -> None:
    """The radio of SimClient and SimScanner made without ``radio_socket=``."""
    global _default_socket
    _default_socket = socket_path


def uninstall() -> None:
    global _default_socket
    _default_socket = None


def _socket(given: str | None) -> str:
    path = given if given is not None else _default_socket
    if path is None:
        raise BleakError("no simulated radio: pass radio_socket= or call "
                         "simulator.bleak_backend.install(path) first")
    return path


async def adapter(socket_path: str) -> air.AirCentral:
    """This loop's adapter on the radio at ``socket_path``, its session opened (again, if it
    was lost); BleakBluetoothNotAvailableError if the radio is not there."""
    per_loop = _centrals.setdefault(asyncio.get_running_loop(), {})
    central = per_loop.get(socket_path)
    if central is None:
        central = per_loop[socket_path] = air.AirCentral(socket_path)
    try:
        await central.start()
    except air.RadioDown as exc:
        raise BleakBluetoothNotAvailableError(
            str(exc), BleakBluetoothNotAvailableReason.NO_BLUETOOTH) from None
    return central


async def close_adapters() -> None:
    """End this loop's adapter sessions (a test's teardown)."""
    for central in _centrals.pop(asyncio.get_running_loop(), {}).values():
        await central.close()


@dataclass(frozen=True)
class SimDevice:
    """A BLEDevice's ``details`` from SimScanner: the radio it was heard on and its address
    type, as a BlueZ device carries its D-Bus path and AddressType."""

    radio_socket: str
    addr_type: int


def _bleak_error(exc: air.CentralError, what: str) -> NoReturn:
    """Raise what bleak's BlueZ backend raises for the same ending."""
    if isinstance(exc, air.RadioDown):
        raise BleakBluetoothNotAvailableError(
            f"{what}: {exc}", BleakBluetoothNotAvailableReason.NO_BLUETOOTH) from None
    if isinstance(exc, air.AttError):
        raise BleakGATTProtocolError(exc.code) from None
    if isinstance(exc, TimeoutError):  # ConnectFailed, ProcedureTimeout
        raise TimeoutError(f"{what}: {exc}") from None
    raise BleakError(f"{what}: {exc}") from None


class SimClient(BaseBleakClient):
    """``BaseBleakClient`` on the simulated radio. Keyword arguments beyond bleak's:
    ``radio_socket`` (default: :func:`install`'s), ``addr_type`` (0 public, 1 random; default:
    what the adapter heard, else found by a scan), ``gatt_timeout`` (seconds per GATT
    procedure)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = 10.0,
                 services: set[str] | None = None, radio_socket: str | None = None,
                 addr_type: int | None = None, gatt_timeout: float = GATT_TIMEOUT_S,
                 **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout)
        details = getattr(address_or_ble_device, "details", None)
        self._name: str | None = getattr(address_or_ble_device, "name", None)
        if isinstance(details, SimDevice):
            self._socket = radio_socket if radio_socket is not None else details.radio_socket
            addr_type = details.addr_type if addr_type is None else addr_type
        else:
            self._socket = _socket(radio_socket)
        self.address = self.address.upper()
        try:
            self._addr = bytes.fromhex(self.address.replace(":", ""))
        except ValueError:
            self._addr = b""
        if len(self._addr) != 6:
            raise BleakError(f"{self.address!r} is not a Bluetooth address")
        self._addr_type = addr_type
        self._wanted = services
        self._gatt_timeout = gatt_timeout
        self._conn: air.AirConnection | None = None
        self._callbacks: dict[int, NotifyCallback] = {}

    @property
    def name(self) -> str:
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._conn.mtu if self._conn is not None else air.DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self.is_connected:
            raise BleakError("Client is already connected")
        timeout = kwargs.get("timeout", self._timeout)
        central = await adapter(self._socket)
        addr_type = self._addr_type
        if addr_type is None:
            addr_type = central.addr_types.get(self._addr)
        if addr_type is None:
            addr_type = await self._find(central, timeout)
        try:
            async with asyncio.timeout(timeout):
                conn = await central.connect(self._addr, addr_type, timeout, self._gatt_timeout)
                try:
                    if conn.peer in central.bonds:
                        await self._encrypt(conn)
                    db = await conn.discover()
                except BaseException:
                    await conn.disconnect()
                    raise
        except air.CentralError as exc:
            _bleak_error(exc, f"connect to {self.address}")
        except TimeoutError:
            raise TimeoutError(f"connect to {self.address}: not connected within {timeout:g} s") \
                from None
        self._conn = conn
        self.services = self._collection(db)
        conn.on_notify = self._on_notify
        conn.on_lost = self._on_lost
        if not conn.connected:  # lost between discovery and now
            self._forget()
            raise BleakError(f"connect to {self.address}: the connection went down")
        if pair:
            await self.pair()

    async def _find(self, central: air.AirCentral, timeout: float) -> int:
        """The address type, from a scan (as bleak's BlueZ client finds a device it was given
        as an address string)."""
        heard: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_advert(result: air.ScanResult) -> None:
            if result.address == self._addr and not heard.done():
                heard.set_result(result.addr_type)

        stop_listening = central.on_advert(on_advert)
        stop_scan = central.start_scan(active=True)
        try:
            async with asyncio.timeout(timeout):
                return await heard
        except TimeoutError:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found.") from None
        finally:
            stop_scan()
            stop_listening()

    def _collection(self, db: air.Database) -> BleakGATTServiceCollection:
        col = BleakGATTServiceCollection()
        chars: dict[int, BleakGATTCharacteristic] = {}
        for s in db.services:
            uuid = uuids.from_air(s.uuid)
            if uuid is None or (self._wanted is not None and uuid not in self._wanted):
                continue
            col.add_service(BleakGATTService(s, s.start, uuid))
        for c in db.characteristics:
            service = col.services.get(c.service.start)
            uuid = uuids.from_air(c.uuid)
            if service is None or uuid is None:
                continue
            char = BleakGATTCharacteristic(c, c.value_handle, uuid, properties(c.properties),
                                           lambda: self.mtu_size - 3, service)
            col.add_characteristic(char)
            chars[c.value_handle] = char
        for d in db.descriptors:
            char = chars.get(d.characteristic.value_handle)
            uuid = uuids.from_air(d.uuid)
            if char is not None and uuid is not None:
                col.add_descriptor(BleakGATTDescriptor(d, d.handle, uuid, char))
        return col

    async def disconnect(self) -> None:
        conn = self._conn
        self._forget()
        if conn is not None:
            await conn.disconnect()

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.on_notify = None
            self._conn.on_lost = None
        self._conn = None
        self._callbacks.clear()
        self.services = None

    def _on_lost(self, reason: str) -> None:
        log.info("connection to %s lost: %s", self.address, reason)
        self._forget()
        if self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    def _on_notify(self, handle: int, data: bytes) -> None:
        callback = self._callbacks.get(handle)
        if callback is not None:
            callback(bytearray(data))

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        conn = self._connected()
        try:
            await conn.pair(bond=True)
        except air.CentralError as exc:
            _bleak_error(exc, f"pair with {self.address}")

    async def unpair(self) -> None:
        central = await adapter(self._socket)
        addr_type = self._addr_type
        if self._conn is not None:
            addr_type = self._conn.addr_type
        for kind in (0, 1) if addr_type is None else (addr_type,):
            central.forget_bond(bytes((kind,)) + self._addr[::-1])
        await self.disconnect()

    # -- GATT ---------------------------------------------------------------------------------

    def _connected(self) -> air.AirConnection:
        if self._conn is None or not self._conn.connected:
            raise BleakError(f"not connected to {self.address}")
        return self._conn

    async def _encrypt(self, conn: air.AirConnection) -> None:
        """A bonded peer's link encrypted at once, as BlueZ raises a paired device's security
        when it connects; if the peer lost the bond the link stays up, unencrypted, and what
        needs encryption is refused (ATT 0x05), as the radio decides."""
        try:
            await conn.pair(bond=True)
        except air.PairingFailed as exc:
            log.info("connect to %s: not encrypted: %s", self.address, exc)

    async def _read(self, handle: int, what: str) -> bytearray:
        conn = self._connected()
        try:
            return bytearray(await conn.read(handle))
        except air.CentralError as exc:
            _bleak_error(exc, f"read {what} of {self.address}")

    async def _write(self, handle: int, data: SizedBuffer, response: bool, what: str) -> None:
        conn = self._connected()
        payload = bytes(data)
        if not response and len(payload) > conn.mtu - 3:
            raise BleakError(f"write {what} of {self.address}: {len(payload)} bytes, a write "
                             f"without response carries at most {conn.mtu - 3}")
        try:
            await conn.write(handle, payload, response)
        except air.CentralError as exc:
            _bleak_error(exc, f"write {what} of {self.address}")

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *,
                             use_cached: bool = False, **kwargs: Any) -> bytearray:
        return await self._read(characteristic.handle, f"characteristic {characteristic.uuid}")

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *,
                                   use_cached: bool = False, **kwargs: Any) -> bytearray:
        return await self._read(descriptor.handle, f"descriptor {descriptor.uuid}")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer,
                              response: bool) -> None:
        await self._write(characteristic.handle, data, response,
                          f"characteristic {characteristic.uuid}")

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor,
                                    data: SizedBuffer) -> None:
        await self._write(descriptor.handle, data, True, f"descriptor {descriptor.uuid}")

    async def start_notify(self, characteristic: BleakGATTCharacteristic,
                           callback: NotifyCallback, **kwargs: Any) -> None:
        self._connected()
        cccd = characteristic.get_descriptor(CCCD_UUID)
        if cccd is None:
            raise BleakError(f"characteristic {characteristic.uuid} of {self.address} has no "
                             "CCCD: it cannot notify")
        # Notifications over indications, as bleak's backends prefer them.
        value = _CCCD_NOTIFY if "notify" in characteristic.properties else _CCCD_INDICATE
        self._callbacks[characteristic.handle] = callback  # the first may come before the answer
        try:
            await self._write(cccd.handle, value, True, f"CCCD of {characteristic.uuid}")
        except BaseException:
            self._callbacks.pop(characteristic.handle, None)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._connected()
        self._callbacks.pop(characteristic.handle, None)
        cccd = characteristic.get_descriptor(CCCD_UUID)
        if cccd is not None:
            await self._write(cccd.handle, _CCCD_OFF, True, f"CCCD of {characteristic.uuid}")


class SimScanner(BaseBleakScanner):
    """``BaseBleakScanner`` on the simulated radio. Keyword arguments beyond bleak's:
    ``radio_socket`` (default: :func:`install`'s).

    Each advert's ``platform_data`` is one dict as the bridge's `ble_adv` has it (``addr``,
    ``addr_type``, ``rssi``, ``data`` and ``resp`` in hex): the raw bytes BlueZ would not give."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None,
                 service_uuids: list[str] | None,
                 scanning_mode: Literal["active", "passive"] = "active", *,
                 radio_socket: str | None = None, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._socket = _socket(radio_socket)
        self._active = scanning_mode == "active"
        self._responses: dict[bytes, bytes] = {}  # the last scan response of each address
        self._stop: list[Callable[[], None]] = []

    async def start(self) -> None:
        if self._stop:
            return
        central = await adapter(self._socket)
        self.seen_devices = {}
        self._responses = {}
        self._stop = [central.on_advert(self._heard), central.start_scan(self._active)]

    async def stop(self) -> None:
        for stop in self._stop:
            stop()
        self._stop = []

    def _heard(self, result: air.ScanResult) -> None:
        if result.adv_type == air.SCAN_RSP:
            if not self._active:
                return  # another scanner's active scan: a passive one hears no responses
            self._responses.pop(result.address, None)
            self._responses[result.address] = result.data
            if len(self._responses) > 256:  # radio input must not grow memory
                del self._responses[next(iter(self._responses))]
            return
        resp = self._responses.get(result.address)
        data = parse(result.data, resp).to_bleak(result.rssi, ({
            "addr": _text(result.address), "addr_type": result.addr_type, "rssi": result.rssi,
            "data": result.data.hex(), "resp": resp.hex() if resp is not None else None},))
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = _text(result.address)
        device = self.create_or_update_device(address, address, data.local_name,
                                              SimDevice(self._socket, result.addr_type), data)
        self.call_detection_callbacks(device, data)


def _text(address: bytes) -> str:
    return ":".join(f"{b:02X}" for b in address)

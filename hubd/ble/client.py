"""bleak's client backend over the bridge's Bluetooth proxy.

    device = ...  # a BLEDevice from BleakScanner(backend=ProxyScanner)
    async with BleakClient(device, backend=ProxyClient) as client:
        await client.start_notify(EVENT_UUID, on_event)
        await client.write_gatt_char(CONTROL_UUID, pdu, response=True)

A BLEDevice that the proxy scanner made carries its proxy and address type in ``details``
(:class:`ProxyDevice`); an address given as a string uses ``proxy=`` or the installed proxy
(``BleProxy.install``) and the address type its last advert had (``addr_type=`` overrides,
default public). Every operation is one request (hubd.ble.proxy); how it ends is sorted into
bleak's exceptions in one place (hubd.ble.errors.raise_for). A write is never repeated: one
whose answer did not come raises ``WriteUnknown``.

Bonding is the bridge's: ``pair()`` (and ``connect(pair=True)``) asks it to encrypt the
connection with the bond it stored for this peer, or to pair and store one ("Just Works", no
MITM protection: the bridge has no display or keyboard); a peer that refuses raises
``ProxyAuthFailed``. ``unpair()`` disconnects and makes the bridge forget the bond, as bleak's
BlueZ backend removes the device. A library that calls ``pair()`` after every connect (as
py-dormakaba-dkey does) gets a re-encrypted link each time.

A peer's GATT database is discovered at its first connection and kept by the proxy
(hubd.ble.gatt_cache, where the Core spec's rules for when it may be kept are written): a
reconnect uses it without a ``ble_discover`` (checked first by reading the peer's Database Hash
if it has Service Changed). An ATT error on a request that says its handle is stale
(``gatt_cache.STALE_ATT``) discards the kept database; a read or a subscription is then asked
once more after a fresh discovery on the same connection (both are safe to repeat), a write is
not: it raises, and its caller decides. A characteristic of a collection discovered anew on the
connection is found again by its service's and its own UUID, so a caller holding the old one
reaches the attribute it meant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_16

from hubd.ble import errors
from hubd.ble.gatt_cache import SERVICE_CHANGED_UUID, STALE_ATT, Entry, entry_of, hash_to_read
from hubd.ble.proxy import STEP_MS, BleProxy, Connection, Done, clamp_ms
from wire import messages

log = logging.getLogger(__name__)

#: The ATT MTU before (or without) an exchange.
DEFAULT_MTU = 23
#: The Client Characteristic Configuration descriptor.
CCCD_UUID = normalize_uuid_16(0x2902)
#: ble_subscribe's modes.
SUBSCRIBE_OFF = 0
SUBSCRIBE_NOTIFY = 1
SUBSCRIBE_INDICATE = 2
#: How long one GATT read or write may take on the bridge unless ``gatt_timeout=`` says.
GATT_TIMEOUT_S = 5.0
#: How long a pairing (or a re-encryption) may take on the bridge unless ``pair_timeout=`` says:
#: a few SMP round trips; the SMP's own limit is 30 s.
PAIR_TIMEOUT_S = 10.0
#: WinRT's pair(protection_level=): 3 is encryption with authentication (MITM protection).
_ENCRYPTION_AND_AUTHENTICATION = 3

_NO_MITM = ("the bridge pairs \"Just Works\" only (no display, no keyboard): it cannot make "
            "an authenticated (MITM-protected) bond (docs/ble-proxy.md, \"Bonding\")")


@dataclass(frozen=True)
class ProxyDevice:
    """A BLEDevice's ``details`` for the proxy: how to reach it and its address type."""

    proxy: BleProxy
    addr_type: int


class ProxyClient(BaseBleakClient):
    """``BaseBleakClient`` whose GAP and GATT procedures the bridge performs.

    Keyword arguments beyond bleak's: ``proxy`` (BleProxy), ``addr_type`` (0 public, 1 random),
    ``gatt_timeout`` (seconds per read, write or subscription on the bridge), ``pair_timeout``
    (seconds for a pairing or re-encryption on the bridge)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = 30.0,
                 services: set[str] | None = None, proxy: BleProxy | None = None,
                 addr_type: int | None = None, gatt_timeout: float = GATT_TIMEOUT_S,
                 pair_timeout: float = PAIR_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout)
        details = getattr(address_or_ble_device, "details", None)
        self._name: str | None = getattr(address_or_ble_device, "name", None)
        if isinstance(details, ProxyDevice):
            self._proxy = proxy if proxy is not None else details.proxy
            found_type: int | None = details.addr_type
        else:
            self._proxy = BleProxy.current(proxy)
            found_type = self._proxy.addr_types.get(self.address.upper())
        self.address = self.address.upper()
        self._addr_type = addr_type if addr_type is not None else (found_type or 0)
        self._wanted = services
        self._gatt_ms = clamp_ms(gatt_timeout)
        self._pair_ms = clamp_ms(pair_timeout)
        self._conn: int | None = None
        self._mtu = DEFAULT_MTU
        self._callbacks: dict[int, NotifyCallback] = {}
        self.dropped_notifications = 0  # for a handle nobody subscribed to
        # This connection's database: the kept one it uses (until the peer is heard on it),
        # and Service Changed's value handle in it.
        self._kept: Entry | None = None
        self._heard = False
        self._changed_handle: int | None = None

    # -- connection ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        """The exchanged MTU, bounded by what one proxy message carries (MAX_DATA + 3)."""
        return min(self._mtu, messages.MAX_DATA + 3)

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._conn is not None:
            if pair:
                await self.pair()
            return
        ms = clamp_ms(kwargs.get("timeout", self._timeout))
        # The bridge exchanges the MTU after connecting: up to one more step.
        done = await self._proxy.request(messages.BLE_CONNECT, self.address, self._addr_type, ms,
                                         wait_ms=ms + STEP_MS)
        errors.raise_for(done.status, done.att, f"connect to {self.address}")
        assert done.conn is not None and done.mtu is not None  # checked by the proxy
        conn = done.conn
        self._conn, self._mtu = conn, done.mtu
        self._proxy.attach(conn, Connection(self._on_notify, self._on_lost), done.mtu)
        try:
            if pair:  # before the services, as bleak's BlueZ backend pairs
                await self.pair()
            entry = self._proxy.gatt_cache.get(self.address)
            if entry is not None and await self._still_valid(conn, entry):
                self._kept, self._changed_handle = entry, entry.changed_handle
                self.services = entry.services(
                    self._wanted, lambda: self._proxy.write_without_response_size(conn))
            else:
                await self._discover(conn)
        except BaseException:
            await self._drop(conn)
            raise

    async def _discover(self, conn: int) -> None:
        """Discover the peer's database on ``conn`` (its services become this client's) and
        give the proxy's cache what it may keep of it."""
        # The bridge discovers one connection at a time: this one may wait behind the others'
        # (up to MAX_SLOTS - 1 of them) before its first message; then STEP_MS per step.
        found = await self._proxy.request(messages.BLE_DISCOVER, conn,
                                          wait_ms=STEP_MS * messages.MAX_SLOTS)
        errors.raise_for(found.status, found.att, f"discover {self.address}'s services")
        discovery = found.discovery
        assert discovery is not None
        self._kept, self._heard = None, False
        self._changed_handle = discovery.value_handle(SERVICE_CHANGED_UUID)
        read_hash = None
        hash_handle = hash_to_read(discovery) if self._proxy.gatt_cache.enabled else None
        if hash_handle is not None:
            done = await self._request_read(conn, hash_handle)
            read_hash = done.data if done.ok else None
        self._proxy.gatt_cache.keep(self.address, entry_of(discovery, read_hash))
        self.services = discovery.services(self._wanted)

    async def _still_valid(self, conn: int, entry: Entry) -> bool:
        """Whether ``entry`` is the peer's database now: without Service Changed always; with it,
        if the Database Hash at its kept handle reads as kept (else it is discarded)."""
        if entry.hash_handle is None:
            return True
        done = await self._request_read(conn, entry.hash_handle)
        if done.ok and done.data == entry.hash:
            return True
        if done.ok or done.status == "gatt_error":
            self._proxy.gatt_cache.forget(self.address, "hash_changed")
            return False
        errors.raise_for(done.status, done.att, f"read {self.address}'s Database Hash")
        return False  # not reached: raise_for raises for anything but ok

    async def _request_read(self, conn: int, handle: int) -> Done:
        return await self._proxy.request(messages.BLE_READ, conn, handle, self._gatt_ms,
                                         wait_ms=self._gatt_ms)

    def _stale(self, done: Done) -> bool:
        """Whether ``done`` says a handle is not what this connection's database holds: then the
        kept database is discarded (hubd.ble.gatt_cache)."""
        if done.status != "gatt_error" or done.att not in STALE_ATT:
            return False
        self._proxy.gatt_cache.forget(self.address, f"att_error_0x{done.att:02x}")
        self._kept = None
        return True

    def _current(self, characteristic: BleakGATTCharacteristic) -> BleakGATTCharacteristic:
        """``characteristic`` as this connection's collection has it: a caller may hold one of a
        collection discovered before on this connection (found again by its UUIDs)."""
        services = self.services
        if services is None or services.characteristics.get(characteristic.handle) is characteristic:
            return characteristic
        for char in services.characteristics.values():
            if char.uuid == characteristic.uuid and char.service_uuid == characteristic.service_uuid:
                return char
        return characteristic

    async def disconnect(self) -> None:
        conn = self._conn
        if conn is None:
            return
        await self._drop(conn)

    async def _drop(self, conn: int) -> None:
        # Asked for, so no disconnected callback (bleak calls it for unsolicited ones only).
        self._forget()
        done = await self._proxy.request(messages.BLE_DISCONNECT, conn, wait_ms=STEP_MS)
        if done.status not in ("ok", "no_conn", "disconnected", errors.LINK_DOWN, errors.LINK_LOST):
            # Gone from hubd's side in any case; a stuck one ends with the link or its peer.
            log.warning("disconnect from %s: %s", self.address, done.status)

    def _forget(self) -> None:
        if self._conn is not None:
            self._proxy.detach(self._conn)
            if self._kept is not None and not self._heard:
                # The peer never answered on the kept handles: they may be another attribute's.
                self._proxy.gatt_cache.forget(self.address, "unconfirmed")
        self._conn = None
        self._kept, self._heard, self._changed_handle = None, False, None
        self._callbacks.clear()
        self.services = None

    def _on_lost(self, reason: str) -> None:
        log.info("connection to %s lost: %s", self.address, reason)
        self._forget()
        if self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    def _on_notify(self, handle: int, data: bytes) -> str | None:
        if handle == self._changed_handle and handle not in self._callbacks:
            # Service Changed: the database is not what this connection holds any more.
            self._proxy.gatt_cache.forget(self.address, "service_changed")
            self._kept = None
            return None
        callback = self._callbacks.get(handle)
        if callback is None:
            self.dropped_notifications += 1
            return f"notify_not_subscribed: handle {handle}"
        self._heard = True
        try:
            callback(bytearray(data))
        except Exception:
            log.exception("notification callback for %s handle %d raised", self.address, handle)
        return None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Encrypt the connection with the bridge's bond for this peer, or pair and bond (the
        module docstring); returns once the link is encrypted. ``ProxyAuthFailed``: the peer
        refused (not in pairing mode, or it lost the bond the bridge holds: ``unpair()`` and
        pair again with the peer in pairing mode)."""
        if kwargs.get("protection_level", 0) >= _ENCRYPTION_AND_AUTHENTICATION:
            raise errors.PairingUnsupported(_NO_MITM)
        conn = self._connected()
        done = await self._proxy.request(messages.BLE_PAIR, conn, self._pair_ms,
                                         wait_ms=self._pair_ms)
        errors.raise_for(done.status, done.att, f"pair with {self.address}")
        if done.count is None or not done.count & messages.BLE_SEC_BONDED:
            log.warning("%s: the link is encrypted but the bridge stored no bond (full, or its "
                        "flash failed): the next connection must pair again", self.address)

    async def unpair(self) -> None:
        """Disconnect (as bleak's BlueZ backend does) and make the bridge forget its bond for
        this peer; nothing to forget is no error."""
        if self._conn is not None:
            await self._drop(self._conn)
        self._proxy.gatt_cache.forget(self.address, "unpaired")
        done = await self._proxy.request(messages.BLE_UNPAIR, self.address, self._addr_type,
                                         wait_ms=STEP_MS)
        errors.raise_for(done.status, done.att, f"unpair {self.address}")

    # -- GATT ---------------------------------------------------------------------------------

    def _connected(self) -> int:
        if self._conn is None:
            raise errors.ProxyDisconnected(f"not connected to {self.address}", "no_conn")
        return self._conn

    async def _write(self, handle: int, data: SizedBuffer, response: bool, what: str) -> None:
        conn = self._connected()
        payload = bytes(data)
        # One ATT write, with or without response, carries MTU - 3 bytes; the bridge makes no
        # long (prepared) writes, and its MTU is at most what one message carries.
        limit = self.mtu_size - 3
        if len(payload) > limit:  # refused here: a bridge's refusal would cost a round trip
            raise errors.ProxyError(f"write {what} of {self.address}: {len(payload)} bytes, the "
                                    f"proxy carries at most {limit} in one write", "refused")
        done = await self._proxy.request(messages.BLE_WRITE, conn, handle, payload.hex(), response,
                                         self._gatt_ms, wait_ms=self._gatt_ms)
        self._stale(done)  # never written again here (module docstring)
        errors.raise_for(done.status, done.att, f"write {what} of {self.address}", write=True)

    async def _rediscovered(self, done: Done) -> bool:
        """After a request that ended ``done``: True if it said a handle is stale and the
        database was discovered again on this connection (the request may be asked once more)."""
        if not self._stale(done):
            return False
        await self._discover(self._connected())
        return True

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *,
                             use_cached: bool = False, **kwargs: Any) -> bytearray:
        char = self._current(characteristic)
        done = await self._request_read(self._connected(), char.handle)
        if await self._rediscovered(done):  # a read is safe to repeat
            char = self._current(characteristic)
            done = await self._request_read(self._connected(), char.handle)
        errors.raise_for(done.status, done.att, f"read characteristic {char.uuid} of {self.address}")
        return bytearray(done.data or b"")

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *,
                                   use_cached: bool = False, **kwargs: Any) -> bytearray:
        done = await self._request_read(self._connected(), descriptor.handle)
        self._stale(done)
        errors.raise_for(done.status, done.att,
                         f"read descriptor {descriptor.uuid} of {self.address}")
        return bytearray(done.data or b"")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer,
                              response: bool) -> None:
        char = self._current(characteristic)
        await self._write(char.handle, data, response, f"characteristic {char.uuid}")

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        await self._write(descriptor.handle, data, True, f"descriptor {descriptor.uuid}")

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        char = self._current(characteristic)
        done = await self._subscribe(char, callback)
        if await self._rediscovered(done):  # writing a CCCD again is safe: it is a setting
            char = self._current(characteristic)
            done = await self._subscribe(char, callback)
        errors.raise_for(done.status, done.att, f"subscribe to {char.uuid} of {self.address}")

    async def _subscribe(self, characteristic: BleakGATTCharacteristic,
                         callback: NotifyCallback) -> Done:
        conn = self._connected()
        cccd = characteristic.get_descriptor(CCCD_UUID)
        if cccd is None:
            raise BleakError(f"characteristic {characteristic.uuid} of {self.address} has no "
                             "CCCD: it cannot notify")
        # Notifications are preferred over indications, as bleak's own backends do.
        mode = SUBSCRIBE_NOTIFY if "notify" in characteristic.properties else SUBSCRIBE_INDICATE
        # Listening before asking: the first notification may come before the answer.
        self._callbacks[characteristic.handle] = callback
        done = await self._proxy.request(messages.BLE_SUBSCRIBE, conn, cccd.handle, mode,
                                         wait_ms=STEP_MS)
        if not done.ok:
            self._callbacks.pop(characteristic.handle, None)
        return done

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        conn = self._connected()
        characteristic = self._current(characteristic)
        cccd = characteristic.get_descriptor(CCCD_UUID)
        self._callbacks.pop(characteristic.handle, None)
        if cccd is None:
            return
        done = await self._proxy.request(messages.BLE_SUBSCRIBE, conn, cccd.handle, SUBSCRIBE_OFF,
                                         wait_ms=STEP_MS)
        self._stale(done)
        errors.raise_for(done.status, done.att,
                         f"unsubscribe from {characteristic.uuid} of {self.address}")

"""Direct mode: hubd reaches the locks through the hub's own Bluetooth adapter, no bridge
(docs/direct-mode.md). A :class:`hubd.ble.radio.Radio`, as the bridge's proxy is one.

    radio = DirectRadio(adapter="hci0")      # bleak's platform backend: BlueZ on the hub
    radio = DirectRadio(backends=(SimClient, SimScanner), options={"radio_socket": path})
    await radio.start()                      # the adapter judged, the background scan running
    await radio.watch("C0:FF:EE:00:00:01")   # that lock's adverts reach on_advert's callbacks
    await radio.close()

On the platform backend ``BleakClient(address)`` and ``BleakScanner()`` take no ``backend=``;
the adapter is bleak's ``bluez={"adapter": "hci0"}`` (bleak 3 deprecates its ``adapter=``
keyword for it). Any other bleak backend pair (client class, scanner class) works the same way:
that is how tests reach the simulated radio (simulator/bleak_backend.py), and nothing here knows
which it is.

The adapter is judged honestly: it is up while a scan on it starts. A background scan runs in
windows of ``window_s`` (a new scan each window: a scan that fails to start means the adapter
is down, with a one-line reason in :attr:`DirectRadio.down_reason`, and it is tried again every
``retry_s``); so an adapter that goes away is seen within a window. The same scan serves the
watches: a watched address's advert reaches the ``on_advert`` callbacks when first heard, when
what it says changes, and at least once a minute while heard, at most once a second per address
(the bridge's rule for watches, docs/ble-proxy.md): a lock advertising ten times a second does
not make ten sightings a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bleak import BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakError

from hubd.ble.advert import Advert
from hubd.ble.radio import AdvertCallback
from wire import messages

log = logging.getLogger(__name__)

#: One background scan; the adapter is judged again at the start of each.
WINDOW_S = 10.0
#: After a scan that failed to start, the wait before trying again.
RETRY_S = 5.0
#: A scan that has not started by then is a failed start (a stuck bus or daemon).
START_TIMEOUT_S = 10.0
#: A watched address's adverts: at most one per this many seconds, and one at least this often
#: while it is heard (the bridge's rule, docs/ble-proxy.md).
MIN_GAP_S = 1.0
REFRESH_S = 60.0
#: Watched addresses at most (a hub's locks; the bridge allows 8).
MAX_WATCH = 64

_ADDR = re.compile(messages.ADDR_PATTERN)


@dataclass(frozen=True)
class Watched:
    """How a watch or a scan ended: ``ok``, ``refused`` (a bad address, too many watches),
    ``link_down`` (a scan while the adapter is down) or ``error`` (a scan that did not start)."""

    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Heard:
    at: float
    said: tuple[Any, ...]


class DirectRadio:
    """The hub's own adapter (``adapter``, e.g. "hci0"; None: BlueZ's default) on bleak's
    platform backend, or on ``backends`` (client class, scanner class) given ``options`` as
    keyword arguments. ``scanning_mode``: the background scan's (default active on the platform
    backend, whose passive scanning BlueZ only offers with advertisement monitor patterns;
    passive on any other)."""

    def __init__(self, *, adapter: str | None = None,
                 backends: tuple[type[BaseBleakClient], type[BaseBleakScanner]] | None = None,
                 options: Mapping[str, Any] | None = None,
                 scanning_mode: Literal["active", "passive"] | None = None,
                 window_s: float = WINDOW_S, retry_s: float = RETRY_S,
                 presence_s: float = REFRESH_S) -> None:
        self.adapter = adapter
        self._backends = backends
        self._options = dict(options or {})
        self._mode: Literal["active", "passive"] = scanning_mode or (
            "active" if backends is None else "passive")
        self.window_s = window_s
        self.retry_s = retry_s
        self.presence_s = presence_s  # a watched address heard unchanged is passed on this often
        self.down_reason: str | None = "not started"
        self._up = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._advert_callbacks: dict[object, AdvertCallback] = {}
        self._watches: set[str] = set()
        self._heard_last: dict[str, _Heard] = {}
        self._devices: dict[str, BLEDevice] = {}  # watched addresses: the device heard last
        self._heard_count = 0  # adverts the background scan heard (a debug log's figure)

    @property
    def name(self) -> str:
        """The adapter, as said in logs."""
        if self._backends is not None:
            return f"{self._backends[0].__name__} adapter"
        return f"Bluetooth adapter {self.adapter or '(BlueZ default)'}"

    # -- hubd.ble.radio.Radio -----------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    async def wait_up(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._up.wait()
        return self.is_up

    @property
    def client_backend(self) -> type[BaseBleakClient] | None:
        return None if self._backends is None else self._backends[0]

    def client_kwargs(self, addr_type: int, gatt_timeout: float) -> dict[str, Any]:
        """On BlueZ only the adapter: BlueZ learns an address's type from its own scan, and
        times GATT procedures itself. On a given backend its options, the address type and
        the GATT timeout."""
        if self._backends is None:
            return self._bluez()
        return {**self._options, "addr_type": addr_type, "gatt_timeout": gatt_timeout}

    @property
    def scanner_backend(self) -> type[BaseBleakScanner] | None:
        return None if self._backends is None else self._backends[1]

    def scanner_kwargs(self) -> dict[str, Any]:
        return self._bluez() if self._backends is None else dict(self._options)

    def ble_device(self, address: str) -> BLEDevice:
        """The device the scan heard last at ``address`` (BlueZ's client finds it by its D-Bus
        path), else one made of the address."""
        address = address.upper()
        return self._devices.get(address) or BLEDevice(address, None, None)

    def forget(self, address: str, why: str) -> None:
        """Nothing: BlueZ keeps its own GATT cache (a bond removed clears it)."""

    def on_advert(self, callback: AdvertCallback) -> Callable[[], None]:
        """Hear the watched addresses' adverts (module docstring); returns the way to stop."""
        token = object()
        self._advert_callbacks[token] = callback
        return lambda: self._advert_callbacks.pop(token, None)  # type: ignore[func-returns-value]

    async def watch(self, address: str, on: bool = True) -> Watched:
        address = address.upper()
        if not _ADDR.fullmatch(address):
            return Watched("refused")
        if not on:
            self._watches.discard(address)
            self._heard_last.pop(address, None)
            self._devices.pop(address, None)
            return Watched("ok")
        if address not in self._watches and len(self._watches) >= MAX_WATCH:
            return Watched("refused")
        self._watches.add(address)
        return Watched("ok")

    async def scan(self, seconds: float) -> Watched:
        """An active scan of its own for ``seconds`` (names come in scan responses), beside the
        background one: every advert it hears is passed on, each address's each different
        content once."""
        if not self.is_up:
            return Watched("link_down")
        passed: set[tuple[str, tuple[Any, ...]]] = set()

        def heard(device: BLEDevice, adv: AdvertisementData) -> None:
            address = device.address.upper()
            said = _said(adv)
            if (address, said) not in passed:
                passed.add((address, said))
                self._pass_on(address, device, adv)

        scanner = BleakScanner(heard, scanning_mode="active", backend=self.scanner_backend,
                               **self.scanner_kwargs())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await scanner.start()
        except Exception as exc:  # the platform's reason, in one line
            log.warning("%s: a scan did not start: %s", self.name, why_down(exc))
            return Watched("error")
        try:
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(Exception):
                await scanner.stop()
        return Watched("ok")

    @property
    def watches(self) -> frozenset[str]:
        return frozenset(self._watches)

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Start the background scan; True if the adapter is up now. A down adapter is logged
        in one line (its reason, no traceback) and tried again every ``retry_s``."""
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run(),
                                                                    name="direct-radio")
        await self._first.wait()
        return self.is_up

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None
        self._up.clear()
        self.down_reason = "closed"

    async def _run(self) -> None:
        while True:
            scanner: BleakScanner | None = None
            try:
                scanner = BleakScanner(self._heard, scanning_mode=self._mode,
                                       backend=self.scanner_backend, **self.scanner_kwargs())
                async with asyncio.timeout(START_TIMEOUT_S):
                    await scanner.start()
            except Exception as exc:  # whatever the platform raises: the adapter is not usable
                self._down(f"a scan did not start within {START_TIMEOUT_S:g} s"
                           if isinstance(exc, TimeoutError) else why_down(exc))
                if scanner is not None:  # half started, perhaps: not left running
                    with contextlib.suppress(Exception):
                        await scanner.stop()
                self._first.set()
                await asyncio.sleep(self.retry_s)
                continue
            self._set_up()
            self._first.set()
            heard = self._heard_count
            try:
                await asyncio.sleep(self.window_s)
                log.debug("%s: %d advert(s) heard in a %g s scan window", self.name,
                          self._heard_count - heard, self.window_s)
            finally:
                try:
                    await scanner.stop()
                except Exception as exc:
                    self._down(why_down(exc))

    def _set_up(self) -> None:
        if not self._up.is_set():
            log.info("%s is up", self.name)
        self.down_reason = None
        self._up.set()

    def _down(self, reason: str) -> None:
        if self._up.is_set() or self.down_reason != reason:
            log.error("%s is not usable: %s (tried again every %g s)", self.name, reason,
                      self.retry_s)
        self.down_reason = reason
        self._up.clear()

    def _bluez(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self.adapter}} if self.adapter else {}

    # -- adverts ------------------------------------------------------------------------------

    def _heard(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._heard_count += 1
        address = device.address.upper()
        if address not in self._watches:
            return
        self._devices[address] = device
        loop_time = asyncio.get_running_loop().time()
        said = _said(adv)
        last = self._heard_last.get(address)
        if last is not None and (loop_time - last.at < MIN_GAP_S
                                 or (said == last.said and loop_time - last.at < self.presence_s)):
            return
        self._heard_last[address] = _Heard(loop_time, said)
        self._pass_on(address, device, adv)

    def _pass_on(self, address: str, device: BLEDevice, adv: AdvertisementData) -> None:
        addr_type = address_type(device.details)
        raw = next((p for p in adv.platform_data if isinstance(p, dict) and "data" in p), {})
        msg = {"m": messages.BLE_ADV, "addr": address, "addr_type": addr_type, "rssi": adv.rssi,
               "data": raw.get("data"), "resp": raw.get("resp")}
        advert = Advert(local_name=adv.local_name, manufacturer_data=dict(adv.manufacturer_data),
                        service_data=dict(adv.service_data),
                        service_uuids=list(adv.service_uuids), tx_power=adv.tx_power)
        for callback in list(self._advert_callbacks.values()):
            try:
                callback(address, addr_type, adv.rssi, advert, msg)
            except Exception:  # a listener's bug must not keep the advert from the others
                log.exception("a direct-mode advert listener raised")


def _said(adv: AdvertisementData) -> tuple[Any, ...]:
    """What an advert says, comparable: a change is news."""
    return (adv.local_name, tuple(sorted(adv.manufacturer_data.items())),
            tuple(sorted(adv.service_data.items())), tuple(adv.service_uuids), adv.tx_power)


def address_type(details: Any) -> int:
    """0 public, 1 random, from a BLEDevice's ``details``: BlueZ's device properties
    (``AddressType``), or a backend's ``addr_type``; public if neither says."""
    if isinstance(details, dict):
        props = details.get("props")
        if isinstance(props, dict):
            return 1 if props.get("AddressType") == "random" else 0
    return 1 if getattr(details, "addr_type", 0) == 1 else 0


def why_down(exc: BaseException) -> str:
    """One line saying why the adapter cannot be used, from what bleak or the platform raised."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError) and not isinstance(
            exc, BleakError):
        # dbus_fast found no system bus socket: no D-Bus, so no BlueZ, on this machine.
        return "no D-Bus system bus (is this a machine with BlueZ and a running bluetoothd?)"
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return f"{_one_line(exc.args[0])} ({exc.reason.name.lower()})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
    text = _one_line(" ".join(str(a) for a in exc.args)) if exc.args else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


async def check(adapter: str | None = None) -> str | None:
    """Whether the hub's adapter can scan now: None if it can, else why not (one line)."""
    radio = DirectRadio(adapter=adapter, retry_s=3600)
    try:
        up = await radio.start()
        return None if up else radio.down_reason
    finally:
        await radio.close()

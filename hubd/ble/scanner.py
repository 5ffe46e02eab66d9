"""bleak's scanner backend over the bridge's Bluetooth proxy, fed by `ble_adv`.

    async with BleakScanner(on_advert, backend=ProxyScanner) as scanner: ...
    device = await BleakScanner.find_device_by_address("C0:FF:EE:00:00:01", backend=ProxyScanner)

While started it keeps a `ble_scan` running on the bridge (each at most ``scan_ms``; a new one
when the last ends). The proxy has no request to end a scan early, so after ``stop`` the
bridge's scan runs out its time; the scanner just stops listening. Adverts of watched addresses
(BleProxy.watch) arrive at every started scanner too. Each BLEDevice it makes carries the proxy
and the address type in ``details`` (hubd.ble.client.ProxyDevice), so ``BleakClient(device,
backend=ProxyClient)`` reaches the same bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner

from hubd.ble.advert import Advert
from hubd.ble.client import ProxyDevice
from hubd.ble.proxy import MAX_SCAN_MS, BleProxy, clamp_ms
from wire import messages

log = logging.getLogger(__name__)

#: How long one ble_scan lasts unless ``scan_ms=`` says; a scanner started longer asks again.
SCAN_MS = 10000
#: After a failed ble_scan (link down, bridge busy), the wait before asking again.
RETRY_S = 1.0


class ProxyScanner(BaseBleakScanner):
    """``BaseBleakScanner`` over the bridge. Keyword arguments beyond bleak's: ``proxy``
    (BleProxy; default the installed one), ``scan_ms`` (one ble_scan's length)."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None,
                 service_uuids: list[str] | None,
                 scanning_mode: Literal["active", "passive"] = "active", *,
                 proxy: BleProxy | None = None, scan_ms: int = SCAN_MS, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self._proxy = BleProxy.current(proxy)
        self._active = scanning_mode == "active"
        self._scan_ms = clamp_ms(scan_ms / 1000, MAX_SCAN_MS)
        self._stop_listening: Callable[[], None] | None = None
        self._scanning: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._scanning is not None:
            return
        self.seen_devices = {}
        self._stop_listening = self._proxy.on_advert(self._on_advert)
        self._scanning = asyncio.create_task(self._scan(), name="ble-proxy-scan")

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._scanning is not None:
            self._scanning.cancel()
            await asyncio.wait([self._scanning])
            self._scanning = None

    async def _scan(self) -> None:
        while True:
            done = await self._proxy.request(messages.BLE_SCAN, self._scan_ms, self._active,
                                             wait_ms=self._scan_ms)
            if done.status == "refused":
                # A scan is running on the bridge already (another scanner's, or one that was
                # stopped): its adverts reach this scanner too; ask again when it may be over.
                await asyncio.sleep(RETRY_S)
            elif not done.ok:
                log.info("proxy scan ended %s; asking again in %.0f s", done.status, RETRY_S)
                await asyncio.sleep(RETRY_S)

    def _on_advert(self, addr: str, addr_type: int, rssi: int, advert: Advert,
                   msg: dict[str, Any]) -> None:
        data = advert.to_bleak(rssi, (msg,))
        if not self.is_allowed_uuid(data.service_uuids):
            return
        device = self.create_or_update_device(addr, addr, data.local_name,
                                              ProxyDevice(self._proxy, addr_type), data)
        self.call_detection_callbacks(device, data)

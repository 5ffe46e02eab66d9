"""bleak's backends over the bridge's Bluetooth proxy (docs/ble-proxy.md, "hubd's side").

    proxy = BleProxy(bridge).install()
    device = await BleakScanner.find_device_by_address(addr, backend=ProxyScanner)
    async with BleakClient(device, backend=ProxyClient) as client: ...

- proxy: the `ble_*` requests and answers over the serial link
- client, scanner: bleak's BaseBleakClient and BaseBleakScanner on it
- advert, gatt, uuids: what arrives from the radio, read into bleak's types
- errors: how a request ends, as bleak's exceptions
"""

from hubd.ble.client import ProxyClient, ProxyDevice
from hubd.ble.errors import (
    PairingUnsupported,
    ProxyBusy,
    ProxyDisconnected,
    ProxyError,
    ProxyTimeout,
    ProxyUnavailable,
    ProxyUnreachable,
    WriteUnknown,
)
from hubd.ble.proxy import BleProxy
from hubd.ble.scanner import ProxyScanner

__all__ = [
    "BleProxy",
    "PairingUnsupported",
    "ProxyBusy",
    "ProxyClient",
    "ProxyDevice",
    "ProxyDisconnected",
    "ProxyError",
    "ProxyScanner",
    "ProxyTimeout",
    "ProxyUnavailable",
    "ProxyUnreachable",
    "WriteUnknown",
]

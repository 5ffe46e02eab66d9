"""hubd's Bluetooth: bleak's backends over the bridge's Bluetooth proxy (docs/ble-proxy.md,
"hubd's side"), or the hub's own adapter (direct mode, docs/direct-mode.md), behind one seam.

    proxy = BleProxy(bridge).install()
    device = await BleakScanner.find_device_by_address(addr, backend=ProxyScanner)
    async with BleakClient(device, backend=ProxyClient) as client: ...

    radio: Radio = proxy  # or DirectRadio(adapter="hci0")
    BleakClient(addr, backend=radio.client_backend, **radio.client_kwargs(addr_type, 5.0))

- radio: Radio, what a lock driver uses of either
- proxy: the `ble_*` requests and answers over the serial link
- direct: DirectRadio, the hub's own adapter on bleak's platform backend (or any given one)
- client, scanner: bleak's BaseBleakClient and BaseBleakScanner on it
- advert, gatt, uuids: what arrives from the radio, read into bleak's types
- errors: how a request ends, as bleak's exceptions
"""

from hubd.ble.client import ProxyClient, ProxyDevice
from hubd.ble.direct import DirectRadio
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
from hubd.ble.radio import Radio
from hubd.ble.scanner import ProxyScanner

__all__ = [
    "BleProxy",
    "DirectRadio",
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
    "Radio",
    "WriteUnknown",
]

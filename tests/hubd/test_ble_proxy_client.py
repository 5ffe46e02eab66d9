"""bleak, unmodified, drives the simulated home's lock through hubd's proxy backend and the REAL
bridge firmware (firmware/ble_proxy.py in MicroPython, on the simulated radio and serial line):
no part of the bridge is faked here.

- BleakScanner(backend=ProxyScanner) finds the reference lock by its service UUID, with the
  name and manufacturer data of its own advert;
- BleakClient(device, backend=ProxyClient) connects, discovers the reference protocol's
  characteristics, subscribes, and runs a `status` operation of the reference lock protocol
  (wire/lockproto.py) from CPython: the lock's challenge, a MACed command, the lock's MACed
  result, verified with the lock's secret; then disconnects;
- the serial link cut while a write is out: the write is unknown (never repeated), the client
  hears the disconnect;
- the CCCD read back as start_notify and stop_notify set it, ATT errors from the lock as bleak's BleakGATTProtocolError;
- the lock leaving range is a disconnect the client hears;
- a connect to an address nobody has fails with a clear error;
- a watch brings the lock's adverts without a scan, and hubd sends it again by itself after the
  link was cut (the bridge forgets watches with the link).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from hubd.ble import (
    BleProxy,
    ProxyClient,
    ProxyScanner,
    ProxyUnavailable,
    ProxyUnreachable,
    WriteUnknown,
)
from hubd.ble import errors
from hubd.link.bridge import Bridge
from simulator.home import SimulatedHome
from tests.waiting import until
from wire import lockproto, messages

LOCK = "front-door"
ADDR = "C0:FF:EE:00:00:01"
TIMEOUT = 60.0  # a hang guard for what the simulated home does on its own time


@pytest.fixture
def bridge_log() -> list[str]:
    """What the simulated bridge's firmware logged."""
    return []


@pytest.fixture
async def home(tmp_path: Path, bridge_log: list[str]) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", on_bridge_log=bridge_log.append)
    await home.start()
    yield home
    await home.stop()


@pytest.fixture
async def proxy(home: SimulatedHome) -> AsyncIterator[BleProxy]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge).install()
    yield proxy
    proxy.close()
    await bridge.close()


async def _find_lock() -> tuple[BLEDevice, AdvertisementData]:
    found: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = asyncio.get_running_loop().create_future()

    def heard(device: BLEDevice, data: AdvertisementData) -> None:
        if not found.done():
            found.set_result((device, data))

    async with BleakScanner(heard, [lockproto.SERVICE_UUID], backend=ProxyScanner):
        async with asyncio.timeout(TIMEOUT):
            return await found


async def test_a_proxy_scan_finds_the_lock_by_its_service_uuid(home: SimulatedHome, proxy: BleProxy) -> None:
    device, data = await _find_lock()
    lock = home.locks[LOCK]
    assert device.address == ADDR
    assert lockproto.SERVICE_UUID in data.service_uuids
    assert data.manufacturer_data[lockproto.COMPANY_ID] == lock.advertising_data()[-5:]
    assert data.local_name == lock.scan_response()[2:].decode()
    assert device.name == data.local_name and -127 <= data.rssi <= 20


async def test_bleak_runs_a_status_operation_of_the_reference_protocol_through_the_proxy(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = home.locks[LOCK]
    device = await BleakScanner.find_device_by_address(ADDR, timeout=TIMEOUT, backend=ProxyScanner)
    assert device is not None
    pdus: asyncio.Queue[bytes] = asyncio.Queue()
    client = BleakClient(device, backend=ProxyClient)
    async with asyncio.timeout(TIMEOUT):
        await client.connect()
        assert client.is_connected
        service = client.services.get_service(lockproto.SERVICE_UUID)
        assert service is not None
        control = service.get_characteristic(lockproto.CONTROL_UUID)
        event = service.get_characteristic(lockproto.EVENT_UUID)
        assert control is not None and "write" in control.properties
        assert event is not None and "notify" in event.properties
        assert [d.uuid for d in event.descriptors] == ["00002902-0000-1000-8000-00805f9b34fb"]
        assert lockproto.COMMAND_LEN + 3 <= client.mtu_size <= messages.MAX_DATA + 3

        await client.start_notify(event, lambda _, data: pdus.put_nowait(bytes(data)))
        await client.write_gatt_char(control, lockproto.encode_challenge_request(), response=True)
        nonce = lockproto.decode_challenge(await pdus.get())
        tag = lockproto.command_tag("e2e-status-1")
        addr = bytes.fromhex(ADDR.replace(":", ""))
        status = lockproto.action_code("status")
        await client.write_gatt_char(
            control, lockproto.encode_command(lock.secret, addr, nonce, status, tag), response=True)
        result = await pdus.get()
        await client.disconnect()
    code, state, battery, mac = lockproto.decode_result(result)
    assert lockproto.verify_result(lock.secret, addr, nonce, tag, code, state, battery, mac), \
        "the lock's RESULT must verify with its secret"
    assert lockproto.status_name(code) == "ok"
    assert lockproto.state_name(state) == lock.state
    assert battery == lock.battery
    assert not client.is_connected
    assert proxy.dropped == {}


async def test_the_link_cut_mid_connection_leaves_a_pending_write_unknown_and_the_client_disconnected(
        home: SimulatedHome, proxy: BleProxy, bridge_log: list[str]) -> None:
    device, _ = await _find_lock()
    gone: asyncio.Event = asyncio.Event()
    client = BleakClient(device, lambda _: gone.set(), backend=ProxyClient, gatt_timeout=60)
    home.locks[LOCK].idle_timeout_s = None  # only the cut ends this connection, however slow the run
    sent: list[dict[str, object]] = []
    send = proxy.bridge.send_lock_message

    def spy(payload: bytes) -> bool:
        sent.append(messages.decode(payload))
        return send(payload)

    proxy.bridge.send_lock_message = spy  # type: ignore[method-assign]
    async with asyncio.timeout(TIMEOUT):
        await client.connect()
        # A slow lock: the write stays out on the bridge until the cable is pulled (the
        # bridge's own 60 s would end it otherwise).
        home.locks[LOCK].response_delay_s = TIMEOUT
        writing = asyncio.create_task(client.write_gatt_char(
            lockproto.CONTROL_UUID, lockproto.encode_challenge_request(), response=True))
        engine = proxy.bridge.link.engine
        await until(lambda: any(m["m"] == messages.BLE_WRITE for m in sent)
                    and engine.pending() == 0 and not writing.done(),
                    "the bridge to acknowledge the write request", TIMEOUT)
        home.line.cut = True
        with pytest.raises(WriteUnknown) as unknown:
            await writing
        await gone.wait()
    assert unknown.value.status == errors.LINK_LOST
    assert not client.is_connected
    await until(lambda: not proxy.is_up, "hubd to see the link down", TIMEOUT)
    with pytest.raises(ProxyUnavailable, match="link to the bridge is down"):
        await BleakClient(device, backend=ProxyClient).connect()
    # Each end judges the link by its own silence: the cable stays out until the bridge has
    # dropped its proxy connection too (the other case: tests/hubd/test_ble_proxy_edges.py).
    await until(lambda: any("dropped 1 proxy connection" in line for line in bridge_log),
                "the bridge to drop its proxy connection with the link", TIMEOUT)
    home.line.cut = False
    await until(lambda: proxy.is_up, "the link up again", TIMEOUT)
    # hubd took a new link session when the link went silent (docs/serial-link.md), so nothing
    # the bridge said for the old one arrives: no late answer to the write, no late ble_lost.
    # A whole round trip on the (ordered) link after it proves nothing old is still coming.
    home.locks[LOCK].response_delay_s = 0.0
    again = BleakClient(device, backend=ProxyClient, gatt_timeout=60)
    async with asyncio.timeout(TIMEOUT):
        await again.connect()
        await again.disconnect()
    assert proxy.late_answers[messages.BLE_WRITE] == 0 and proxy.late_losses == 0
    assert not proxy.dropped
    assert [m["m"] for m in sent].count(messages.BLE_WRITE) == 1, "the write is never sent again"


async def test_a_connect_to_an_absent_address_fails_clearly(proxy: BleProxy) -> None:
    client = BleakClient("C0:FF:EE:00:00:99", backend=ProxyClient, timeout=2.0)
    with pytest.raises(ProxyUnreachable, match="C0:FF:EE:00:00:99.*no connection"):
        await client.connect()
    assert not client.is_connected


async def test_the_lock_leaving_range_is_a_disconnect_the_client_hears(
        home: SimulatedHome, proxy: BleProxy) -> None:
    device, _ = await _find_lock()
    gone: asyncio.Event = asyncio.Event()
    client = BleakClient(device, lambda _: gone.set(), backend=ProxyClient)
    async with asyncio.timeout(TIMEOUT):
        await client.connect()
        home.locks[LOCK].in_range = False  # its link dies after the supervision timeout
        await gone.wait()
    assert not client.is_connected
    with pytest.raises(BleakError, match="Service Discovery has not been performed"):
        await client.read_gatt_char(lockproto.CONTROL_UUID)


async def test_a_watch_brings_the_locks_adverts_and_is_sent_again_after_the_link_was_cut(
        tmp_path: Path) -> None:
    home = SimulatedHome(tmp_path / "home", policy={"scan_every_ms": 1000, "scan_ms": 500})
    await home.start()
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge)
    heard: list[str] = []
    proxy.on_advert(lambda addr, *_: heard.append(addr))
    try:
        assert await bridge.wait_up(TIMEOUT)
        assert (await proxy.watch(ADDR)).ok
        await until(lambda: ADDR in heard, "the watched lock's advert", TIMEOUT)
        home.line.cut = True
        await until(lambda: not proxy.is_up, "hubd to see the link down", TIMEOUT)
        home.line.cut = False
        await until(lambda: proxy.is_up, "the link up again", TIMEOUT)
        heard.clear()  # the bridge forgot the watch with the link; hubd asks again by itself
        await until(lambda: ADDR in heard, "the lock's advert after the link came back", TIMEOUT)
    finally:
        proxy.close()
        await bridge.close()
        await home.stop()


async def test_descriptors_and_att_errors_reach_bleak_as_bleaks_own(home: SimulatedHome, proxy: BleProxy) -> None:
    device, _ = await _find_lock()
    async with asyncio.timeout(TIMEOUT), BleakClient(device, backend=ProxyClient) as client:
        event = client.services.get_characteristic(lockproto.EVENT_UUID)
        assert event is not None
        cccd = event.descriptors[0]
        assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"
        await client.start_notify(event, lambda *_: None)
        assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"
        await client.stop_notify(event)  # bleak writes a CCCD only this way
        assert await client.read_gatt_descriptor(cccd) == b"\x00\x00"
        with pytest.raises(BleakGATTProtocolError) as read:
            await client.read_gatt_char(lockproto.CONTROL_UUID)  # write only
        assert read.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as write:
            await client.write_gatt_char(event, b"\x01", response=True)  # notify only
        assert write.value.code == BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED
        assert client.is_connected
    assert not client.is_connected

"""Direct mode (hubd/ble/direct.py): hubd reaches the locks through the hub's own adapter, with no
bridge at all. Here the adapter is the simulated radio's (simulator/bleak_backend.py, a CPython
central on simulator/radio.py): no firmware, no serial line; the simulated lock is the evidence.

- hubd's reference driver (unmodified, given the backend) unlocks and locks a simulated lock:
  one motor move each, one central on the air (hubd's);
- unmodified bleak reaches the lock through the Radio seam's kwargs alone, and the lock's
  GATT database, MTU and ATT errors reach it as bleak's own;
- a scanner through the seam sees the lock's adverts with its RSSI, manufacturer data and name;
- a watch brings a lock's adverts to on_advert at most once a second, again when it changes,
  and no unwatched lock's;
- a lock leaving range mid-operation is a disconnect: the write fails, the client hears it,
  and the driver's operation ends incomplete with the COMMAND written once;
- the adapter judged honestly: the radio gone is down with its reason, back is up again;
- the BlueZ path on this machine (no Bluetooth adapter, no D-Bus): constructs, and says why it
  cannot run in one line, no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from hubd.ble import DirectRadio, Radio
from hubd.ble.advert import Advert
from hubd.ble.direct import MIN_GAP_S, check
from hubd.locks import ReferenceLock, Timings
from simulator.locks import InsideTurnerLock, KeyBoxLock
from simulator.radio import Radio as Air
from simulator.home import address
from tests.fixtures import sim_adapter
from tests.waiting import until
from wire import lockproto
from wire import outcomes as oc

TIMEOUT = 30.0  # a hang guard
FAST = Timings(deadline_s=20.0, result_s=20.0, settle_s=0.5, idle_s=1.0)


@pytest.fixture
def lock(air: Air) -> InsideTurnerLock:
    lock = InsideTurnerLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32), rssi=-67)
    air.add(lock)
    return lock


@pytest.fixture
async def radio(air: Air) -> AsyncIterator[DirectRadio]:
    async with sim_adapter(air, window_s=1.0, retry_s=0.2) as radio:
        assert isinstance(radio, Radio)
        yield radio


def _driver(lock: InsideTurnerLock, radio: DirectRadio, timings: Timings = FAST) -> ReferenceLock:
    assert lock.secret is not None
    return ReferenceLock(address(lock), lock.secret, addr_type=lock.addr_type, radio=radio,
                         timings=timings)


async def test_hubds_reference_driver_unlocks_and_locks_a_lock_with_no_bridge(
        air: Air, lock: InsideTurnerLock, radio: DirectRadio) -> None:
    driver = _driver(lock, radio)
    written: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        unlocked = await driver.operate("unlock", "direct-unlock-1", lambda: written.append("u"), 20)
        locked = await driver.operate("lock", "direct-lock-1", lambda: written.append("l"), 20)
        await driver.close()
    assert (unlocked.outcome, unlocked.state, unlocked.battery) == (oc.SUCCEEDED, "unlocked",
                                                                    unlocked.battery)
    assert (locked.outcome, locked.state) == (oc.SUCCEEDED, "locked")
    assert lock.moves == ["unlock", "lock"] and lock.state == "locked" and written == ["u", "l"]
    assert lock.connections == 1, "the follow-up used the connection kept from the first"
    assert air.centrals == 1, "hubd's adapter is the only central on the air: no bridge"


async def test_a_lock_the_adapter_cannot_find_is_unreachable_and_nothing_is_written(
        air: Air, radio: DirectRadio) -> None:
    absent = InsideTurnerLock("back-door", "C0:FF:EE:00:00:09", os.urandom(32))  # never on the air
    written: list[str] = []
    driver = _driver(absent, radio, Timings(deadline_s=3.0, connect_s=1.0, settle_s=0.5))
    async with asyncio.timeout(TIMEOUT):
        result = await driver.operate("unlock", "direct-absent-1", lambda: written.append("u"), 5)
        await driver.close()
    # As the proxy says it (docs/ble-proxy.md): no connection, so the command was never written.
    assert (result.outcome, result.reason) == (oc.TIMED_OUT, oc.UNREACHABLE)
    assert written == [] and absent.moves == []


async def test_bleak_reaches_the_lock_through_the_seams_kwargs_alone(
        lock: InsideTurnerLock, radio: DirectRadio) -> None:
    kwargs = radio.client_kwargs(lock.addr_type, 5.0)
    client = BleakClient(address(lock), backend=radio.client_backend, **kwargs)
    async with asyncio.timeout(TIMEOUT), client:
        assert client.mtu_size == lock.att_mtu
        event = client.services.get_characteristic(lockproto.EVENT_UUID)
        assert event is not None and "notify" in event.properties
        assert event.max_write_without_response_size == lock.att_mtu - 3
        cccd = event.descriptors[0]
        pdus: asyncio.Queue[bytes] = asyncio.Queue()
        await client.start_notify(event, lambda _, data: pdus.put_nowait(bytes(data)))
        assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"
        await client.write_gatt_char(lockproto.CONTROL_UUID, lockproto.encode_challenge_request(),
                                     response=True)
        assert len(lockproto.decode_challenge(await pdus.get())) == lockproto.NONCE_LEN
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.read_gatt_char(lockproto.CONTROL_UUID)  # write only
        assert refused.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
    assert not client.is_connected
    with pytest.raises(BleakError, match="Service Discovery has not been performed"):
        await client.read_gatt_char(lockproto.CONTROL_UUID)


async def test_a_scanner_through_the_seam_sees_the_locks_adverts_with_rssi_and_manufacturer_data(
        lock: InsideTurnerLock, radio: DirectRadio) -> None:
    lock.set_battery(42)
    named: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = \
        asyncio.get_running_loop().create_future()

    def heard(device: BLEDevice, data: AdvertisementData) -> None:
        if data.local_name and not named.done():  # the scan response has come too
            named.set_result((device, data))

    async with asyncio.timeout(TIMEOUT), BleakScanner(
            heard, [lockproto.SERVICE_UUID], backend=radio.scanner_backend,
            **radio.scanner_kwargs()):
        device, data = await named
    assert device.address == address(lock) and device.name == lock.name
    assert data.rssi == -67
    assert lockproto.SERVICE_UUID in data.service_uuids
    kind, battery, _, pairing = lockproto.decode_advert(lock.advertising_data())
    assert data.manufacturer_data[lockproto.COMPANY_ID] == lock.advertising_data()[-5:]
    assert (kind, battery, pairing) == ("inside_turner", 42, False)


async def test_a_watch_brings_a_locks_adverts_rate_limited_and_no_unwatched_locks(
        air: Air, lock: InsideTurnerLock, radio: DirectRadio) -> None:
    other = KeyBoxLock("key-box", "C0:FF:EE:00:00:03", os.urandom(32))
    air.add(other)
    heard: list[tuple[float, str, int, int, Advert, dict[str, Any]]] = []
    loop = asyncio.get_running_loop()
    radio.on_advert(lambda *args: heard.append((loop.time(), *args)))
    assert (await radio.watch(address(lock).lower())).ok
    assert not (await radio.watch("not an address")).ok
    async with asyncio.timeout(TIMEOUT):
        await until(lambda: heard, "the watched lock's advert", TIMEOUT)
        lock.set_battery(55)
        await until(lambda: any(h[4].manufacturer_data[lockproto.COMPANY_ID][2] == 55
                                for h in heard), "the advert with the new battery", TIMEOUT)
    _, addr, addr_type, rssi, advert, msg = heard[0]
    assert (addr, addr_type, rssi) == (address(lock), lock.addr_type, -67)
    assert lockproto.SERVICE_UUID in advert.service_uuids
    assert lockproto.decode_advert(bytes.fromhex(msg["data"]))[0] == "inside_turner"
    assert {h[1] for h in heard} == {address(lock)}, "an unwatched lock never reaches on_advert"
    # The radio repeats the advert every 50 ms; a second at least between two passed on (the
    # times are taken in the callback, a moment after the radio's own: 50 ms of slack).
    times = [h[0] for h in heard]
    assert len(times) >= 2 and all(b - a >= MIN_GAP_S - 0.05
                                   for a, b in zip(times, times[1:], strict=False))
    assert (await radio.watch(address(lock), on=False)).ok and radio.watches == frozenset()


async def test_a_lock_leaving_range_mid_write_is_a_disconnect_the_client_hears(
        lock: InsideTurnerLock, radio: DirectRadio) -> None:
    gone = asyncio.Event()
    client = BleakClient(address(lock), lambda _: gone.set(), backend=radio.client_backend,
                         **radio.client_kwargs(lock.addr_type, TIMEOUT))
    async with asyncio.timeout(TIMEOUT):
        await client.connect()
        lock.idle_timeout_s = None
        lock.response_delay_s = TIMEOUT  # the write stays out until the link dies
        writing = asyncio.create_task(client.write_gatt_char(
            lockproto.CONTROL_UUID, lockproto.encode_challenge_request(), response=True))
        await asyncio.sleep(0)
        lock.in_range = False  # its link dies after the radio's supervision timeout
        with pytest.raises(BleakError, match="went down"):
            await writing
        await gone.wait()
    assert not client.is_connected


async def test_the_driver_ends_incomplete_when_the_lock_leaves_range_after_the_command(
        lock: InsideTurnerLock, radio: DirectRadio) -> None:
    # A short deadline: the read-back tries to reach a lock that stays out of range.
    driver = _driver(lock, radio, Timings(deadline_s=4.0, result_s=20.0, settle_s=0.5, idle_s=1.0))
    lock.idle_timeout_s = None

    def on_written() -> None:
        lock.response_delay_s = TIMEOUT  # the COMMAND's write stays out on the air
        lock.in_range = False

    async with asyncio.timeout(3 * TIMEOUT):
        result = await driver.operate("unlock", "direct-range-1", on_written, 20)
        await driver.close()
    assert result.outcome == oc.INCOMPLETE and result.state == "unknown"
    assert lock.motor_moves == 0 and lock.commands == [], "the COMMAND never reached the lock"


async def test_the_adapter_is_judged_down_when_the_radio_goes_and_up_when_it_is_back(
        air: Air, lock: InsideTurnerLock, radio: DirectRadio) -> None:
    async with asyncio.timeout(TIMEOUT):
        await air.stop()
        await until(lambda: not radio.is_up, "the adapter judged down", TIMEOUT)
        assert radio.down_reason is not None and "no simulated radio" in radio.down_reason
        assert not await radio.wait_up(0.1)
        await air.start()
        assert await radio.wait_up(TIMEOUT)
    assert radio.down_reason is None


async def test_the_bluez_path_without_an_adapter_says_why_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    if Path("/sys/class/bluetooth/hci0").exists():
        pytest.skip("LOUD: this machine has a Bluetooth adapter hci0: this test is for one "
                    "without (run it where there is none)")
    radio = DirectRadio(adapter="hci0", retry_s=3600)
    # The platform backend: no backend= argument, the adapter as bleak's bluez= option.
    assert radio.client_backend is None and radio.scanner_backend is None
    assert radio.client_kwargs(1, 5.0) == {"bluez": {"adapter": "hci0"}}
    assert radio.scanner_kwargs() == {"bluez": {"adapter": "hci0"}}
    client = BleakClient("C0:FF:EE:00:00:01", backend=radio.client_backend,
                         **radio.client_kwargs(1, 5.0))
    assert client.backend_id == "bluez_dbus"
    with caplog.at_level(logging.INFO, logger="hubd.ble.direct"):
        async with asyncio.timeout(TIMEOUT):
            assert not await radio.start()
            await radio.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "said once, not at every retry"
    line = errors[0].getMessage()
    assert errors[0].exc_info is None and "\n" not in line and "Traceback" not in line
    assert line.startswith("Bluetooth adapter hci0 is not usable: ")
    if not Path("/run/dbus/system_bus_socket").exists():
        assert "no D-Bus system bus" in line, line
    assert await check("hci0") == line.split("is not usable: ", 1)[1].split(" (tried again")[0]

"""The simulated dKey (simulator/dkey.py) driven by the unmodified py-dormakaba-dkey, in direct
mode: the library's own ``establish_connection(BleakClientWithServiceCache, ...)`` reaches the
simulated radio through bleak's backend selection (docs/dkey.md, "The library's seams"), bleak
and the library untouched, the BLEDevice found by a SimScanner scan with the library's own
``device_filter``.

- the library's filter picks the dKey out of its adverts (service UUID, name);
- it associates with the right activation code (the same association data on both ends, the
  BLE bond made in the activation window, the window closed after);
- a wrong activation code is WrongActivationCode, a malformed one InvalidActivationCode with
  no radio traffic; neither leaves an association;
- unlock and lock move the motor once each; state and battery reach the library's state, a
  manual turn and a battery change reach its callback;
- a lock that forgot the association: NotAssociated; a forged secret: the lock ends the link;
  a reset lock (bond lost): the library's connection fails, nothing moves;
- a new central outside the activation window cannot bond, so cannot associate;
- the lock ends a silent session (DisconnectReq TIMEOUT) and the library reconnects on the next
  command;
- a mode it does not support is refused, a jammed motor leaves the bolt where it was;
- a link lost after the lock took an UNLOCK: the library raises Disconnected, the bolt moved
  once, and the next session reads it; a link lost before even the write's ATT answer: the
  library reconnects and sends the UNLOCK again (the lock takes it twice, moves once).
"""

from __future__ import annotations

import asyncio
import os

import bleak
import bleak_retry_connector
import py_dormakaba_dkey.dkey
import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from py_dormakaba_dkey import DKEYLock, device_filter
from py_dormakaba_dkey.commands import LockMode, Notifications, UnlockStatus
from py_dormakaba_dkey.errors import (
    Disconnected,
    InvalidActivationCode,
    NotAssociated,
    WrongActivationCode,
)
from py_dormakaba_dkey.models import AssociationData

from simulator.bleak_backend import SimClient, SimScanner
from simulator.dkey import DKeyLock
from simulator.radio import Radio
from tests.waiting import until

TIMEOUT = 20.0  # a hang guard
CODE = "BCDF2345"


@pytest.fixture
def sim_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """bleak's backend selection answers the simulated adapter's client: what the platform's
    would be (BlueZ here) for a client made without ``backend=``, as the library makes its
    own. Only bleak's module-level lookup is replaced, for this test; not the library."""
    monkeypatch.setattr(bleak, "get_platform_client_backend_type",
                        lambda: (SimClient, SimClient.__name__))


@pytest.fixture
def dkey(air: Radio) -> DKeyLock:
    lock = DKeyLock("F0:94:0A:00:00:01", name="Front door", activation_code=CODE,
                    travel_time_s=0.2)
    air.add(lock)
    return lock


async def found(air: Radio, lock: DKeyLock) -> tuple[BLEDevice, AdvertisementData]:
    """The lock as a scan finds it, through the library's own filter."""
    heard: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = \
        asyncio.get_running_loop().create_future()

    def on_advert(device: BLEDevice, data: AdvertisementData) -> None:
        if device_filter(data) and data.local_name and not heard.done():
            heard.set_result((device, data))

    async with BleakScanner(on_advert, backend=SimScanner, radio_socket=air.socket_path):
        device, data = await heard
    assert device.address == ":".join(f"{b:02X}" for b in lock.address)
    return device, data


async def associated(air: Radio, lock: DKeyLock) -> tuple[DKEYLock, AssociationData]:
    device, data = await found(air, lock)
    client = DKEYLock(device, data)
    return client, await client.associate(CODE)


async def test_the_librarys_filter_finds_the_dkey_by_its_service_uuid(
        air: Radio, dkey: DKeyLock) -> None:
    other = DKeyLock("F0:94:0A:00:00:02", name="Back door")
    other.advertising_data = lambda: bytes((2, 0x01, 0x06))  # type: ignore[method-assign]
    air.add(other)
    async with asyncio.timeout(TIMEOUT):
        device, data = await found(air, dkey)
    assert data.local_name == "Front door" and data.rssi == dkey.rssi
    assert "e7a60000-6639-429f-94fd-86de8ea26897" in data.service_uuids
    assert not device_filter(AdvertisementData(None, {}, {}, [], None, -60, ()))


async def test_associates_with_the_right_activation_code(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    assert dkey.pairable, "a new lock is in its activation window"
    async with asyncio.timeout(TIMEOUT):
        client, data = await associated(air, dkey)
        await client.disconnect()
    assert len(data.key_holder_id) == 4 and len(data.secret) == 32
    assert dkey.associations == {data.key_holder_id: data.secret}
    assert client.device_info.device_name == "Front door"
    assert client.device_info.device_id == dkey.device_id.hex()
    assert len(dkey.bonds) == 1, "the central bonded in the activation window"
    assert not dkey.pairable, "an association closes the window"
    assert dkey.motor_moves == 0 and dkey.faults == []


async def test_a_wrong_activation_code_is_refused_as_the_real_lock_refuses_it(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    async with asyncio.timeout(TIMEOUT):
        device, data = await found(air, dkey)
        client = DKEYLock(device, data)
        with pytest.raises(WrongActivationCode):
            await client.associate("BCDF2346")
        connections = dkey.connections
        with pytest.raises(InvalidActivationCode):
            await client.associate("ABCD-EFGH")  # vowels are not in the alphabet
        await client.disconnect()
    assert dkey.connections == connections, "a malformed code never reaches the radio"
    assert dkey.wrong_codes == 1 and dkey.associations == {}
    assert dkey.faults == []


async def test_unlocks_and_locks_with_state_and_battery(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    dkey.set_battery(19)
    heard: list[Notifications] = []
    async with asyncio.timeout(TIMEOUT):
        client, _ = await associated(air, dkey)
        client.register_callback(heard.append)
        assert await client.unlock()
        await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
        assert dkey.motor_moves == 1 and not dkey.locked
        assert client.state.battery == 19
        assert client.battery_warning and not client.battery_criticl
        assert await client.lock()
        await until(lambda: client.state.unlock_status == UnlockStatus.LOCKED, "locked")
        assert dkey.motor_moves == 2 and dkey.locked
        assert await client.lock(), "locking a locked lock succeeds without a move"
        await client.update()
        dkey.set_battery(17)
        await until(lambda: client.state.battery == 17, "the battery notification")
        assert client.battery_criticl
        await client.disconnect()
    assert dkey.motor_moves == 2
    assert [n.unlock_status for n in heard if n.unlock_status is not None][-2:] == \
        [UnlockStatus.UNLOCKED, UnlockStatus.LOCKED]
    assert dkey.faults == []


async def test_a_manual_turn_reaches_the_library(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    heard: list[Notifications] = []
    async with asyncio.timeout(TIMEOUT):
        client, _ = await associated(air, dkey)
        await client.update()  # authenticated, notifications on
        assert client.state.unlock_status == UnlockStatus.LOCKED
        client.register_callback(heard.append)
        dkey.turn_by_hand(locked=False)
        await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "the turn")
        await client.disconnect()
    assert dkey.manual_turns == 1 and dkey.motor_moves == 0
    assert heard and heard[-1].unlock_status == UnlockStatus.UNLOCKED


async def test_an_association_the_lock_forgot_fails_cleanly(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    async with asyncio.timeout(TIMEOUT):
        client, data = await associated(air, dkey)
        await client.disconnect()
        dkey.forget_associations()
        device, adv = await found(air, dkey)
        later = DKEYLock(device, adv)
        later.set_association_data(data)
        with pytest.raises(NotAssociated):
            await later.unlock()
        await later.disconnect()
    assert dkey.motor_moves == 0 and dkey.locked and dkey.faults == []


async def test_a_forged_secret_ends_the_link_and_moves_nothing(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    async with asyncio.timeout(TIMEOUT):
        client, data = await associated(air, dkey)
        await client.disconnect()
        device, adv = await found(air, dkey)
        forger = DKEYLock(device, adv)
        forger.set_association_data(AssociationData(data.key_holder_id, os.urandom(32)))
        with pytest.raises(Disconnected):
            await forger.unlock()
        await until(lambda: not dkey.links, "the lock to end the link")
    assert dkey.failed_challenges == 1 and dkey.motor_moves == 0 and dkey.locked
    assert dkey.faults == []


async def test_a_reset_lock_lost_the_bond_so_the_library_cannot_connect(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    encrypt_within_s = 0.5  # after the reset: the links the library leaves open go sooner
    # The library keeps trying: its own attempts of bleak-retry-connector's connects, each
    # waiting for the lock's next advert and ended by the lock encrypt_within_s later (on the
    # realistic air over 20 s in all): the hang guard is TIMEOUT beyond that.
    attempts = py_dormakaba_dkey.dkey.DEFAULT_ATTEMPTS * bleak_retry_connector.MAX_CONNECT_ATTEMPTS
    advert_s = air.timing.adv_interval_of(dkey.adv_interval_s) + air.timing.adv_delay_max_s
    async with asyncio.timeout(TIMEOUT + attempts * (advert_s + encrypt_within_s)):
        client, data = await associated(air, dkey)
        await client.disconnect()
        dkey.factory_reset()
        dkey.encrypt_within_s = encrypt_within_s
        device, adv = await found(air, dkey)
        later = DKEYLock(device, adv)
        later.set_association_data(data)
        with pytest.raises(BleakError):
            await later.unlock()
        await later.disconnect()
    assert dkey.bonds == {} and dkey.associations == {}
    assert dkey.unencrypted_drops >= 1, "the link the library left open was the lock's to end"
    assert dkey.motor_moves == 0 and dkey.faults == []


async def test_a_new_central_cannot_bond_outside_the_activation_window(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    dkey.close_activation_window()
    dkey.encrypt_within_s = 0.5  # the links the library leaves open go sooner
    async with asyncio.timeout(TIMEOUT):
        device, adv = await found(air, dkey)
        client = DKEYLock(device, adv)
        with pytest.raises(BleakError):
            await client.associate(CODE)
        await client.disconnect()
    assert dkey.bonds == {} and dkey.associations == {} and dkey.wrong_codes == 0
    assert dkey.unencrypted_drops >= 1


async def test_the_lock_ends_a_silent_session_and_the_library_comes_back(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(3 * TIMEOUT):  # three sessions, each a hang guard's worth
        started = loop.time()
        client, _ = await associated(air, dkey)  # on the lock's own 30 s idle drop
        setup_s = loop.time() - started
        await client.disconnect()
        await until(lambda: not dkey.links, "the association's link gone")
        # The lock's idle drop shortened for the test, yet longer than the silence a session's
        # set-up leaves before its first frame (the silence counts from the connection): on the
        # realistic air discovery and the bond's encryption alone take a second or more, which
        # a fixed 2 s did not always cover. An association (the advert, the connection, a new
        # pairing, the handshake) took setup_s on this air: more than any reconnection's set-up.
        dkey.session_idle_s = 2.0 + setup_s
        await client.update()  # a new session, on the shortened idle drop
        connections = dkey.connections
        await until(lambda: dkey.idle_disconnects == 1 and not dkey.links, "the idle drop")
        assert await client.unlock()
        await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
        await client.disconnect()
    assert dkey.connections == connections + 1, "one new connection for the unlock"
    assert dkey.motor_moves == 1 and dkey.faults == []


async def test_a_jammed_motor_and_an_unsupported_mode_leave_the_bolt(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    async with asyncio.timeout(TIMEOUT):
        client, _ = await associated(air, dkey)
        await client.update()
        assert await client.set_mode(LockMode.IN_MODE)  # the library does not wait for the ACK
        await until(lambda: dkey.refusals["PARAM_NOT_SUPPORTED"] == 1, "the mode refused")
        dkey.jammed = True
        assert await client.unlock()  # UNLOCK_RSP comes before the motor runs
        await until(lambda: not dkey.moving and dkey.refusals["PARAM_NOT_SUPPORTED"] == 1,
                    "the motor to stall")
        await client.update()
        await client.disconnect()
    assert dkey.locked and dkey.motor_moves == 0
    assert client.state.unlock_status == UnlockStatus.LOCKED
    assert dkey.faults == []


async def test_a_link_lost_after_the_command_still_moves_the_bolt_once(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    async with asyncio.timeout(TIMEOUT):
        client, _ = await associated(air, dkey)
        await client.update()
        dkey.drop_link_after_command = True
        with pytest.raises(Disconnected):
            await client.unlock()  # the library never hears UNLOCK_RSP
        await until(lambda: not dkey.locked and not dkey.moving, "the motor to finish")
        await until(lambda: not dkey.links, "the link to be gone")
        await client.update()  # a new session reads the state the bolt is in
        assert client.state.unlock_status == UnlockStatus.UNLOCKED
        await client.disconnect()
    assert dkey.motor_moves == 1 and dkey.faults == []


async def test_a_write_whose_answer_is_lost_is_sent_again_by_the_library(
        air: Radio, dkey: DKeyLock, sim_backend: None) -> None:
    """What hubd's driver must know for "at most once": the library retries a procedure whose
    write failed with a Bleak error, even when the lock took the command before the link went."""
    async with asyncio.timeout(TIMEOUT):
        client, _ = await associated(air, dkey)
        await client.update()
        dkey.drop_link_before_write_answer = True
        assert await client.unlock()  # the library reconnected and sent UNLOCK again
        await until(lambda: not dkey.locked and not dkey.moving, "the motor to finish")
        await client.disconnect()
    assert dkey.move_commands == 2, "the lock took the UNLOCK twice"
    assert dkey.motor_moves == 1, "one move: the second found the bolt moving or unlocked"
    assert dkey.faults == []

"""hubd.ble.vendor: the unmodified py-dormakaba-dkey's own BleakClient put on hubd's radio (here
the hub's own adapter on the simulated radio: DirectRadio with the simulator's bleak backends),
and the at-most-once guard under it.

- outside ``on_radio`` bleak's lookup answers the platform's backend as before; inside, the
  radio's, bound to its keyword arguments (the library passes none);
- a guarded command whose write loses the link before its ATT answer is sent ONCE: the
  library's retry is refused (SecondAttempt), the lock took one UNLOCK (without the guard it
  takes two: tests/simulator/test_dkey.py), ``on_written`` was called once, before the write;
- a guarded command that goes through calls ``on_written`` once, and the ACKs the library sends
  from its own tasks afterwards are not refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import bleak
import pytest
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey.commands import UnlockStatus

from hubd.ble import vendor
from hubd.ble.direct import DirectRadio
from simulator.bleak_backend import SimClient
from simulator.dkey import DKeyLock
from simulator.radio import Radio
from tests.fixtures import sim_adapter
from tests.waiting import until

TIMEOUT = 30.0  # a hang guard
CODE = "BCDF2345"
ADDR = "F0:94:0A:00:00:01"


@pytest.fixture
async def radio(air: Radio) -> AsyncIterator[DirectRadio]:
    async with sim_adapter(air, ADDR) as radio:
        yield radio


@pytest.fixture
def dkey(air: Radio) -> DKeyLock:
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.2)
    air.add(lock)
    return lock


async def associated(radio: DirectRadio) -> DKEYLock:
    client = DKEYLock(radio.ble_device(ADDR))
    with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0):
        await client.associate(CODE)
        await client.update()
    return client


def test_the_lookup_is_the_platforms_outside_a_radio_context() -> None:
    vendor.install()
    backend, name = bleak.get_platform_client_backend_type()
    assert backend is not SimClient and "Guarded" not in name
    assert vendor._platform_lookup is not None
    assert (backend, name) == vendor._platform_lookup()


async def test_the_librarys_client_is_on_the_radio(radio: DirectRadio, dkey: DKeyLock) -> None:
    async with asyncio.timeout(TIMEOUT):
        client = await associated(radio)
        assert dkey.associations, "the library associated through the radio's backend"
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0):
            backend, _ = bleak.get_platform_client_backend_type()
        assert issubclass(backend, SimClient)
        await client.disconnect()


async def test_a_guarded_command_is_sent_once_when_its_write_loses_the_link(
        radio: DirectRadio, dkey: DKeyLock) -> None:
    written: list[float] = []
    async with asyncio.timeout(TIMEOUT):
        client = await associated(radio)
        dkey.drop_link_before_write_answer = True
        guard = vendor.OneCommand(lambda: written.append(dkey.move_commands))
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0, guard=guard):
            with pytest.raises(vendor.SecondAttempt):
                await client.unlock()
        await until(lambda: not dkey.moving, "the motor to finish")
        await client.disconnect()
    assert written == [0], "on_written once, before the lock took anything"
    assert guard.written and guard.failed and guard.refused == 1
    assert dkey.move_commands == 1, "the library's retry never reached the lock"
    assert dkey.motor_moves == 1 and not dkey.locked
    assert dkey.faults == []


async def test_a_guarded_command_that_goes_through(radio: DirectRadio, dkey: DKeyLock) -> None:
    written: list[int] = []
    async with asyncio.timeout(TIMEOUT):
        client = await associated(radio)
        guard = vendor.OneCommand(lambda: written.append(1))
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0, guard=guard):
            assert await client.unlock()
        await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0,
                             guard=vendor.OneCommand(lambda: written.append(2))):
            assert await client.lock()
        await until(lambda: client.state.unlock_status == UnlockStatus.LOCKED, "locked again")
        await client.disconnect()
    assert written == [1, 2] and guard.refused == 0 and not guard.failed
    assert dkey.move_commands == 2 and dkey.motor_moves == 2
    assert dkey.faults == []

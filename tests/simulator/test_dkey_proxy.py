"""The simulated dKey through the bridge's Bluetooth proxy: the unmodified py-dormakaba-dkey on
bleak (its backend ProxyClient, picked by bleak's backend selection as in test_dkey.py), the REAL
bridge firmware in MicroPython as the proxy, the simulated dKey on the simulated radio. This is
the path hil uses.

- it associates with the right activation code (bonding through the bridge in the activation
  window), unlocks and locks with the state reaching the library, a wrong code is
  WrongActivationCode;
- a later connection re-encrypts with the bond the bridge keeps (the window is closed by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import bleak
import pytest
from bleak.backends.device import BLEDevice
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey.commands import UnlockStatus
from py_dormakaba_dkey.errors import WrongActivationCode

from hubd.ble import BleProxy, ProxyClient
from hubd.link.bridge import Bridge
from simulator.dkey import DKeyLock
from simulator.home import SimulatedHome
from tests.waiting import until

ADDR = "F0:94:0A:00:0D:01"
CODE = "BCDF2345"
TIMEOUT = 90.0  # a hang guard for what the simulated home does on its own time


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", locks=[])
    await home.start()
    yield home
    await home.stop()


@pytest.fixture
def dkey(home: SimulatedHome) -> DKeyLock:
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.2)
    home.radio.call(home.radio.add, lock)
    return lock


@pytest.fixture
async def proxy(home: SimulatedHome, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BleProxy]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge).install()
    # bleak's backend selection (docs/dkey.md, "The library's seams"): the proxy's client.
    monkeypatch.setattr(bleak, "get_platform_client_backend_type",
                        lambda: (ProxyClient, ProxyClient.__name__))
    yield proxy
    proxy.close()
    await bridge.close()


async def test_associates_unlocks_and_locks_through_the_bridge(
        home: SimulatedHome, dkey: DKeyLock, proxy: BleProxy) -> None:
    device = BLEDevice(ADDR, "Front door", None)
    async with asyncio.timeout(TIMEOUT):
        client = DKEYLock(device)
        with pytest.raises(WrongActivationCode):
            await client.associate("BCDF2346")
        await client.disconnect()
        await until(lambda: not dkey.links, "the lock to be free")
        data = await client.associate(CODE)
        assert dkey.associations == {data.key_holder_id: data.secret}
        assert await client.unlock()
        await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
        await client.disconnect()
        await until(lambda: not dkey.links, "the lock to be free")
        assert not dkey.pairable, "a later connection needs the bond the bridge keeps"
        later = DKEYLock(device)
        later.set_association_data(data)
        assert await later.lock()
        await until(lambda: dkey.locked and later.state.unlock_status == UnlockStatus.LOCKED,
                    "locked")
        await later.disconnect()
    assert dkey.motor_moves == 2 and dkey.wrong_codes == 1 and len(dkey.bonds) == 1
    assert home.radio.centrals == 1, "the bridge is the only central on the air"
    assert dkey.faults == []

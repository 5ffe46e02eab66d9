"""A simulated home with a dKey (simulator.home: paired_dkey, new_dkey, dkey_paired, the home's
``dkeys``): the dKey is on the home's radio beside the reference locks, under its lock id; a
paired one is associated on the lock and in hubd's state, and gets its bond from the first
central that connects (its activation window open until then, closed after: a second central
cannot bond); the unmodified py-dormakaba-dkey drives it through the REAL bridge firmware's
proxy with nothing but the association data hubd keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import bleak
import pytest
from bleak import BleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey.commands import UnlockStatus
from py_dormakaba_dkey.models import AssociationData

from hubd.ble import BleProxy, ProxyClient
from hubd.link.bridge import Bridge
from hubd.store.database import Store
from hubd.store.pairings import Pairings
from simulator import bleak_backend
from simulator.bleak_backend import SimClient
from simulator.home import (DKEY_ADDRESS, SimulatedHome, default_locks, dkey_paired, new_dkey,
                            paired_dkey, record_pairings)
from tests.waiting import until
from wire import lockkinds

TIMEOUT = 90.0  # a hang guard for what the simulated home does on its own time


def test_a_paired_dkey_is_in_hubds_state_with_its_association_a_new_one_is_not(
        tmp_path: Path) -> None:
    old, new = paired_dkey(travel_time_s=0.2), new_dkey("F0:94:0A:00:00:02")
    home = SimulatedHome(tmp_path / "home", locks=[],
                         dkeys={"front-door": old, "back-door": new})
    assert home.kinds == {"front-door": lockkinds.IN_CYLINDER, "back-door": lockkinds.IN_CYLINDER}
    assert len(old.associations) == 1 and old.pairable, "associated, its window open to bond"
    assert new.associations == {} and new.pairable
    record_pairings(tmp_path / "state", home.locks.values(), home.dkeys)
    store = Store.open(tmp_path / "state")
    try:
        pairings = Pairings(store).all()
    finally:
        store.close()
    assert set(pairings) == {"front-door"}, "a new dKey is paired through hubd, not beforehand"
    ((key_holder, secret),) = old.associations.items()
    recorded = pairings["front-door"]
    assert recorded.secret == key_holder + secret and recorded.address == DKEY_ADDRESS
    assert recorded == dkey_paired(old)


def test_a_lock_id_is_a_reference_locks_or_a_dkeys_not_both(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="front-door"):
        SimulatedHome(tmp_path / "home", dkeys={"front-door": paired_dkey()})


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", locks=default_locks(),
                         dkeys={"back-door": paired_dkey(travel_time_s=0.2)})
    await home.start()
    yield home
    await bleak_backend.close_adapters()
    await home.stop()


async def test_a_paired_dkey_bonds_with_the_first_central_only_and_the_library_drives_it(
        home: SimulatedHome, monkeypatch: pytest.MonkeyPatch) -> None:
    dkey = home.dkeys["back-door"]
    assert dkey.radio is home.radio and dkey.advertising, "on the home's radio"
    paired = dkey_paired(dkey)
    data = AssociationData(paired.secret[:4], paired.secret[4:])
    bridge = await Bridge.open(home.port, home.link_key)
    proxy = BleProxy(bridge).install()
    try:
        assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
        monkeypatch.setattr(bleak, "get_platform_client_backend_type",
                            lambda: (ProxyClient, ProxyClient.__name__))
        async with asyncio.timeout(TIMEOUT):
            client = DKEYLock(BLEDevice(DKEY_ADDRESS, "Front door", None))
            client.set_association_data(data)
            assert await client.unlock()
            await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
            await client.disconnect()
            await until(lambda: not dkey.links, "the lock to be free")
    finally:
        proxy.close()
        await bridge.close()
    assert len(dkey.bonds) == 1 and not dkey.pairable, "bonded with the bridge, window closed"
    assert dkey.motor_moves == 1 and dkey.state == "unlocked"

    # Another central (the hub's own adapter here) has no bond and cannot make one now.
    other = BleakClient(DKEY_ADDRESS, backend=SimClient, radio_socket=home.radio.socket_path)
    async with asyncio.timeout(TIMEOUT):
        await other.connect()
        try:
            with pytest.raises(BleakError):
                await other.pair()
        finally:
            await other.disconnect()
    assert len(dkey.bonds) == 1 and dkey.faults == []

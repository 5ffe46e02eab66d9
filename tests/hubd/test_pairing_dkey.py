"""A dKey's association from hubd (hubd.locks.pairing.associate): the unmodified
py-dormakaba-dkey on hubd's radio, against the simulated dKey (simulator/dkey.py), two ways: the
hub's own adapter on the simulated radio (DirectRadio with the simulator's bleak backends) and
the REAL bridge firmware's Bluetooth proxy in a SimulatedHome. The lock's associations, bonds,
links and counters are the evidence.

- the right activation code (as printed, with its dash): ``ok`` with the association data the
  lock keeps (key holder id then secret, 36 bytes), the lock's state and battery, the window
  closed, the link closed; the data opens the lock afterwards;
- a wrong code: ``auth_failed``, no association left on the lock;
- the activation window closed: the lock refuses to bond. Through the proxy that is
  ``not_pairing`` (the bridge's status says the peer refused); on the hub's own adapter
  ``not_bonded`` (bleak's backend raises the same BleakError for a refusal and a lost radio);
  either way nothing is associated and the connections the library leaves open are closed;
- a lock out of reach: ``unreachable`` within the bound given; an association the lock does not
  then accept: ``failed`` (not proven), no data; a cancelled one is cancelled;
- after ``unbond`` (decommissioning's part in the radio) the association data reaches nothing:
  the radio has no bond and the lock bonds with no one new;
- the association data and the activation code are in no log line (captured at DEBUG for every
  logger: the library logs both at DEBUG unless hubd quiets it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak.exc import BleakError
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey.commands import UnlockStatus
from py_dormakaba_dkey.models import AssociationData

from hubd.ble import BleProxy, vendor
from hubd.ble.radio import Radio
from hubd.link.bridge import Bridge
from hubd.locks import pairing
from simulator.dkey import DKeyLock
from simulator.home import SimulatedHome
from simulator.radio import Radio as Air
from tests.fixtures import sim_adapter
from tests.waiting import until

ADDR = "F0:94:0A:00:0D:01"
CODE = "BCDF2345"
PRINTED = "BCDF-2345"  # as the card shows it; the library takes out the dash
TIMEOUT = 60.0  # the bound given to associate (a hang guard for the simulated home's own time)
HANG = 120.0


@pytest.fixture
async def direct(air: Air) -> AsyncIterator[tuple[Radio, DKeyLock]]:
    """The hub's own adapter on the simulated air, a new dKey in reach."""
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.2)
    air.add(lock)
    async with sim_adapter(air, ADDR) as radio:
        yield radio, lock


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Radio, DKeyLock]]:
    """The bridge's Bluetooth proxy (the real firmware), a new dKey in reach of the bridge."""
    home = SimulatedHome(tmp_path / "home", locks=[])
    await home.start()
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.2)
    home.radio.call(home.radio.add, lock)
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(HANG), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge)
    try:
        yield proxy, lock
    finally:
        proxy.close()
        await bridge.close()
        await home.stop()


@pytest.fixture(params=["direct", "proxy"])
def path(request: pytest.FixtureRequest) -> tuple[Radio, DKeyLock]:
    return request.getfixturevalue("direct" if request.param == "direct" else "proxied")


async def _associate(radio: Radio, code: str = PRINTED, timeout: float = TIMEOUT) -> pairing.Outcome:
    async with asyncio.timeout(HANG):
        return await pairing.associate(ADDR, 0, code, radio=radio, timeout=timeout)


async def test_the_right_code_associates_proven_with_state_and_battery_and_the_data_opens_the_lock(
        path: tuple[Radio, DKeyLock], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    radio, lock = path
    assert lock.pairable, "a new lock is in its activation window"
    outcome = await _associate(radio)
    assert (outcome.result, outcome.state, outcome.battery) == ("ok", "locked", 100), outcome
    assert outcome.association is not None and len(outcome.association) == 36
    key_holder, secret = outcome.association[:4], outcome.association[4:]
    assert lock.associations == {key_holder: secret}
    assert not lock.pairable, "an association closes the window"
    assert len(lock.bonds) == 1
    assert "association" not in repr(outcome) and secret.hex() not in repr(outcome)
    await until(lambda: not lock.links, "the link closed")

    # The data hubd got is what opens the lock (the driver's part, done here by the library).
    client = DKEYLock(radio.ble_device(ADDR))
    client.set_association_data(AssociationData(key_holder, secret))
    async with asyncio.timeout(HANG):
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=5.0):
            assert await client.unlock()
            await until(lambda: client.state.unlock_status == UnlockStatus.UNLOCKED, "unlocked")
            await client.disconnect()
    assert lock.motor_moves == 1 and not lock.locked and lock.faults == []

    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for value in (secret.hex(), key_holder.hex() + secret.hex(), CODE, PRINTED):
        assert value.lower() not in logged.lower(), f"{value} was logged"
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "captured at DEBUG"


async def test_a_wrong_code_is_auth_failed_and_leaves_no_association(
        path: tuple[Radio, DKeyLock], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    radio, lock = path
    outcome = await _associate(radio, "BCDF-2346")
    assert outcome.result == "auth_failed" and outcome.association is None, outcome
    assert lock.associations == {} and lock.wrong_codes == 1 and lock.motor_moves == 0
    await until(lambda: not lock.links, "the link closed")
    assert "BCDF2346" not in caplog.text and "BCDF-2346" not in caplog.text
    # The technician types it again, right: the lock is still in its window.
    assert (await _associate(radio)).result == "ok"
    assert len(lock.associations) == 1 and lock.faults == []


async def test_a_closed_activation_window_is_a_refused_bond_and_nothing_is_left_open(
        path: tuple[Radio, DKeyLock]) -> None:
    radio, lock = path
    via_proxy = isinstance(radio, BleProxy)
    lock.close_activation_window()
    # The library never disconnects a client whose pair() failed; this lock keeps such a link
    # minutes, so only hubd closing it frees the lock in time (and its retries find it taken).
    lock.encrypt_within_s = lock.session_idle_s = 300.0
    outcome = await _associate(radio, timeout=5.0)
    # Through the proxy the bridge says the peer refused to pair; on the hub's own adapter
    # bleak's backend raises a BleakError that a radio failure while bonding raises too.
    assert outcome.result == ("not_pairing" if via_proxy else "not_bonded"), outcome
    assert outcome.association is None
    assert lock.associations == {} and lock.bonds == {} and lock.wrong_codes == 0
    await until(lambda: not lock.links, "hubd to close the link the library left open")
    assert lock.unencrypted_drops == lock.idle_disconnects == 0, "hubd closed it, not the lock"
    assert lock.faults == []

    lock.open_activation_window()  # the owner's button
    assert (await _associate(radio)).result == "ok"


async def test_a_lock_out_of_reach_is_unreachable_within_the_bound(
        path: tuple[Radio, DKeyLock]) -> None:
    radio, lock = path
    lock.in_range = False
    outcome = await _associate(radio, timeout=3.0)
    assert (outcome.result, outcome.why) == ("unreachable", "timeout"), outcome
    assert lock.connections == 0 and lock.associations == {}


async def test_a_malformed_code_is_refused_before_any_radio_traffic(
        direct: tuple[Radio, DKeyLock]) -> None:
    radio, lock = direct
    outcome = await _associate(radio, "BCDF-234A")  # a vowel: not in the alphabet
    assert (outcome.result, outcome.why) == ("failed", "bad_request")
    assert lock.connections == 0


def test_the_library_is_held_at_info() -> None:
    assert logging.getLogger("py_dormakaba_dkey").getEffectiveLevel() >= logging.INFO


async def test_after_unbond_even_the_association_data_opens_nothing(
        path: tuple[Radio, DKeyLock]) -> None:
    """Decommissioning's part in the radio: it forgets the bond. The lock (its window closed
    since the association) bonds with no one new, so the data hubd forgot anyway would not
    even reach it."""
    radio, lock = path
    outcome = await _associate(radio)
    assert outcome.result == "ok" and outcome.association is not None
    await until(lambda: not lock.links, "the link closed")
    async with asyncio.timeout(HANG):
        assert await pairing.unbond(ADDR, 0, radio=radio, timeout=15.0)
    lock.encrypt_within_s = 0.5  # the links the library leaves open go sooner
    client = DKEYLock(radio.ble_device(ADDR))
    client.set_association_data(AssociationData(outcome.association[:4], outcome.association[4:]))
    async with asyncio.timeout(HANG):
        with vendor.on_radio(radio, addr_type=0, gatt_timeout=5.0):
            with pytest.raises(BleakError):
                await client.unlock()
            await client.disconnect()
    assert lock.motor_moves == 0 and lock.locked and lock.faults == []


async def test_a_cancelled_association_is_cancelled_not_a_failure(
        direct: tuple[Radio, DKeyLock]) -> None:
    """The library turns a cancellation into DkeyError; hubd stopping must still stop it (the
    caller's cancellation passed on), and the link is closed."""
    radio, lock = direct
    lock.close_activation_window()  # the library retries its bonding: slow enough to cancel in
    lock.encrypt_within_s = lock.session_idle_s = 300.0
    task = asyncio.create_task(pairing.associate(ADDR, 0, CODE, radio=radio, timeout=TIMEOUT))
    await until(lambda: lock.connections > 0, "the library to connect")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    await until(lambda: not lock.links, "the link closed")
    assert lock.associations == {}


async def test_an_association_the_lock_does_not_then_accept_is_not_proven_and_not_ok(
        direct: tuple[Radio, DKeyLock]) -> None:
    """A lock that completes the association but does not keep it (a failed flash write, say:
    harsher than the simulated lock is by itself): the authentication with the new data that
    follows is refused, so hubd gets ``failed`` (not_proven) and no association data to record."""
    radio, lock = direct
    keep = lock.associate

    def keeps_nothing(key_holder: bytes, secret: bytes) -> None:
        keep(key_holder, secret)
        lock.forget_associations()

    lock.associate = keeps_nothing  # type: ignore[method-assign]
    outcome = await _associate(radio)
    assert outcome.result == "failed" and outcome.why == "not_proven: auth_failed", outcome
    assert outcome.association is None and outcome.state is None
    await until(lambda: not lock.links, "the link closed")

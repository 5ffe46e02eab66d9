"""PAIR and UNPAIR from hubd (hubd/locks/pairing.py) through its own reference driver and the
REAL bridge firmware as Bluetooth proxy, against a simulated lock started unpaired; the lock's
secret, its refusals and its motor are the evidence.

- a lock in pairing mode takes hubd's new secret (``ok`` with its state and battery) and obeys a
  command MACed with it at once;
- a wrong setup key is ``auth_failed`` (not ``failed``: issue 18) and the lock stays unpaired;
- a lock not in pairing mode is ``not_pairing`` and keeps its old secret;
- UNPAIR makes the lock forget its secret: ``ok``, and a command with the old secret is refused
  ``auth_failed`` afterwards, nothing moves; a second UNPAIR with it is ``auth_failed``;
- a lock out of range is ``unreachable``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubd.ble import BleProxy
from hubd.link.bridge import Bridge
from hubd.locks import ReferenceLock, Timings
from hubd.locks import pairing
from simulator.locks import InCylinderLock, ReferenceProtocolLock
from simulator.home import SimulatedHome, address, unpaired_lock
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard for the simulated home's own time
FAST = Timings(deadline_s=30.0, result_s=30.0, settle_s=0.5, idle_s=1.0)


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[SimulatedHome]:
    home = SimulatedHome(tmp_path / "home", locks=[unpaired_lock("front-door", InCylinderLock,
                                                                 "C0:FF:EE:00:00:07")])
    await home.start()
    yield home
    await home.stop()


@pytest.fixture
async def proxy(home: SimulatedHome) -> AsyncIterator[BleProxy]:
    bridge = await Bridge.open(home.port, home.link_key)
    assert await bridge.wait_up(TIMEOUT), "the link to the simulated bridge did not come up"
    proxy = BleProxy(bridge)
    yield proxy
    proxy.close()
    await bridge.close()


def _lock(home: SimulatedHome) -> ReferenceProtocolLock:
    return home.locks["front-door"]


async def _pair(lock: ReferenceProtocolLock, proxy: BleProxy, secret: bytes,
                setup_key: bytes | None = None) -> pairing.Outcome:
    return await pairing.pair(address(lock), lock.addr_type, secret,
                              lock.setup_key if setup_key is None else setup_key,
                              timeout=TIMEOUT, radio=proxy, timings=FAST)


async def _unlock(lock: ReferenceProtocolLock, proxy: BleProxy, secret: bytes) -> tuple[str, str | None]:
    driver = ReferenceLock(address(lock), secret, addr_type=lock.addr_type, radio=proxy, timings=FAST)
    try:
        result = await driver.operate("unlock", "cmd-" + os.urandom(4).hex(), lambda: None, TIMEOUT)
    finally:
        await driver.close()
    return result.outcome, result.reason


async def test_a_lock_in_pairing_mode_takes_hubds_new_secret_and_obeys_it_at_once(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = _lock(home)
    assert not lock.paired and lock.pairing, "the home must start the lock unpaired, in pairing mode"
    secret = pairing.new_secret()
    outcome = await _pair(lock, proxy, secret)
    assert (outcome.result, outcome.state, outcome.battery) == ("ok", "locked", 100)
    assert lock.secret == secret and not lock.pairing  # a PAIR ends pairing mode
    assert await _unlock(lock, proxy, secret) == (oc.SUCCEEDED, None)
    assert lock.motor_moves == 1 and lock.state == "unlocked"


async def test_a_wrong_setup_key_is_auth_failed_and_the_lock_stays_unpaired(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = _lock(home)
    outcome = await _pair(lock, proxy, pairing.new_secret(), setup_key=os.urandom(32))
    assert (outcome.result, outcome.state, outcome.battery) == ("auth_failed", None, None)
    assert not lock.paired and ("pair", "auth_failed") in lock.commands


async def test_a_lock_not_in_pairing_mode_is_not_pairing_and_keeps_its_secret(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = _lock(home)
    first = pairing.new_secret()
    assert (await _pair(lock, proxy, first)).result == "ok"  # that ended pairing mode
    outcome = await _pair(lock, proxy, pairing.new_secret())
    assert outcome.result == "not_pairing"
    assert lock.secret == first


async def test_unpair_makes_the_lock_forget_and_refuse_the_old_secret(
        home: SimulatedHome, proxy: BleProxy) -> None:
    lock = _lock(home)
    secret = pairing.new_secret()
    assert (await _pair(lock, proxy, secret)).result == "ok"
    gone = await pairing.unpair(address(lock), lock.addr_type, secret, timeout=TIMEOUT, radio=proxy,
                                timings=FAST)
    assert gone.result == "ok" and not lock.paired
    # The database the pairing's connection kept was discarded before the UNPAIR's: a reset
    # lock may run other firmware (hubd.ble.gatt_cache, Radio.forget).
    assert proxy.gatt_cache.counts["unpaired"] == 1
    assert await _unlock(lock, proxy, secret) == (oc.FAILED, oc.AUTH_FAILED)
    assert lock.motor_moves == 0 and lock.state == "locked"
    again = await pairing.unpair(address(lock), lock.addr_type, secret, timeout=TIMEOUT, radio=proxy,
                                 timings=FAST)
    assert again.result == "auth_failed"


async def test_a_lock_out_of_range_is_unreachable(home: SimulatedHome, proxy: BleProxy) -> None:
    lock = _lock(home)
    lock.in_range = False
    outcome = await pairing.pair(address(lock), lock.addr_type, pairing.new_secret(), lock.setup_key,
                                 timeout=3.0, radio=proxy,
                                 timings=Timings(connect_s=1.0, deadline_s=3.0, idle_s=0.5))
    assert outcome.result == "unreachable" and not lock.paired

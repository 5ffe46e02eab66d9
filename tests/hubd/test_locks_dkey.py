"""hubd's dKey driver (hubd/locks/dkey.py) through hubd's lock transport (hubd/locks/transport.py),
in direct mode: the unmodified py-dormakaba-dkey on hubd's radio (hubd.ble.vendor; DirectRadio
with the simulator's bleak backends), against the simulated dKey (simulator/dkey.py).

- unlock and lock succeed with the state and the battery percent, ``on_written`` once each, the
  motor once each; ``status`` reads state and battery and writes no command; ``unlatch`` is
  refused before anything moves; a lock already at the target succeeds without moving;
- a link lost before the write's answer or after the lock took the command: ``incomplete``
  (``link_lost``), the state read back, the lock took the command ONCE, the motor moved once,
  ``on_written`` once;
- a lock out of reach: ``timed_out``/``unreachable``, nothing written; a lock that forgot the
  association, or one that ends the link at the answer to its challenge: ``auth_failed``; one
  that lost the bond: ``link_failed``, and no connection the library left holds it;
- a jammed motor: ``failed``/``jammed``; a motor slower than ``result_s``: ``incomplete``
  (``no_result``), read back; the next command while it runs: ``failed``/``busy``;
- a turn by hand while the connection is kept is reported ``manual`` (``handle`` when the
  notification's handle bit says so); a poll (the upkeep) reads
  the state with source ``poll`` and leaves no connection behind;
- a cancelled command is cancelled (CancelledError), sent once, and the driver works after it;
- a hostile dKey (garbage notifications, well sealed or not) ends no driver: every operation
  has a result, and the next one on a sane lock succeeds.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from py_dormakaba_dkey import DKEYLock

from hubd.access.transport import OpResult
from hubd.ble import vendor
from hubd.ble.direct import DirectRadio
from hubd.locks import BleLocks, PairedLock
from hubd.locks.dkey import DkeyLock, DkeyTimings
from hubd.locks.upkeep import UpkeepTimings
from simulator.dkey import Cmd, DKeyLock
from simulator.radio import Characteristic, Link, Radio
from tests.fixtures import sim_adapter
from tests.waiting import until
from wire import lockkinds
from wire import outcomes as oc

TIMEOUT = 60.0  # a hang guard
CODE = "BCDF2345"
ADDR = "F0:94:0A:00:00:01"
LOCK = "front-door"
TIMINGS = DkeyTimings(deadline_s=10.0, gatt_s=2.0, command_s=5.0, result_s=5.0, settle_s=0.3,
                      readback_s=10.0, idle_s=0.5, retry_pause_s=0.1)
QUIET = 3600.0  # a poll that never comes due within a test


@pytest.fixture
async def radio(air: Radio) -> AsyncIterator[DirectRadio]:
    # A watched lock heard unchanged is passed on every second (a sighting test waits for one).
    async with sim_adapter(air, ADDR, presence_s=1.0) as radio:
        yield radio


@pytest.fixture
def dkey(air: Radio) -> DKeyLock:
    lock = DKeyLock(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.1)
    air.add(lock)
    return lock


async def associate(radio: DirectRadio, lock: DKeyLock) -> bytes:
    """The association data hubd keeps for ``lock`` (key holder id, then secret), made by the
    library with the activation code; the library's link is gone when it returns."""
    client = DKEYLock(radio.ble_device(ADDR))
    with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0):
        data = await client.associate(CODE)
        await client.disconnect()
    await until(lambda: not lock.links, "the lock to be free")
    return data.key_holder_id + data.secret


@dataclass
class Rig:
    lock: DKeyLock
    locks: BleLocks
    reports: list[tuple[str, str, str | None, str, int | None, str]] = field(default_factory=list)
    heard: list[tuple[str, int | None]] = field(default_factory=list)

    @property
    def driver(self) -> DkeyLock:
        driver = self.locks.driver(LOCK)
        assert isinstance(driver, DkeyLock)
        return driver

    async def operate(self, action: str, written: list[str] | None = None,
                      command_id: str = "cmd") -> OpResult:
        into = written if written is not None else []
        async with asyncio.timeout(TIMEOUT):
            return await self.locks.operate(LOCK, action, command_id,
                                            lambda: into.append(action), TIMEOUT)


def rig_of(radio: DirectRadio, lock: DKeyLock, association: bytes,
           timings: DkeyTimings = TIMINGS, upkeep: UpkeepTimings | None = None) -> Rig:
    reports: list[tuple[str, str, str | None, str, int | None, str]] = []
    heard: list[tuple[str, int | None]] = []
    locks = BleLocks(radio, {LOCK: PairedLock(lockkinds.IN_CYLINDER, ADDR, association,
                                              protocol=lockkinds.DKEY)},
                     on_report=lambda *r: reports.append(r), upkeep=upkeep,
                     on_heard=lambda *h: heard.append(h), dkey_timings=timings)
    return Rig(lock, locks, reports, heard)


@pytest.fixture
async def rig(radio: DirectRadio, dkey: DKeyLock) -> AsyncIterator[Rig]:
    rig = rig_of(radio, dkey, await associate(radio, dkey))
    yield rig
    await rig.locks.close()
    assert dkey.faults == []


async def test_unlock_and_lock_succeed_with_state_and_battery(rig: Rig) -> None:
    written: list[str] = []
    unlocked = await rig.operate("unlock", written)
    assert (unlocked.outcome, unlocked.reason, unlocked.state, unlocked.battery) == \
        (oc.SUCCEEDED, None, "unlocked", 100)
    assert not rig.lock.locked and rig.lock.motor_moves == 1
    locked = await rig.operate("lock", written)
    assert (locked.outcome, locked.state, locked.battery) == (oc.SUCCEEDED, "locked", 100)
    assert written == ["unlock", "lock"], "on_written once per command"
    assert rig.lock.locked and rig.lock.motor_moves == 2 and rig.lock.move_commands == 2
    assert rig.heard and rig.heard[-1] == (LOCK, 30), "the registry gets the raw reading"
    assert rig.reports == [], "hubd's own commands are no manual turns"


async def test_the_connection_is_kept_for_a_follow_up_then_dropped(rig: Rig) -> None:
    await rig.operate("unlock")
    assert rig.driver.connected and rig.lock.links
    await rig.operate("lock")
    assert rig.lock.connections == 2, "the follow-up used the kept connection"
    await until(lambda: not rig.lock.links and not rig.driver.connected,
                "the idle connection to be dropped")


async def test_status_reads_state_and_battery_and_writes_no_command(rig: Rig) -> None:
    rig.lock.set_battery(25)
    written: list[str] = []
    result = await rig.operate("status", written)
    assert (result.outcome, result.state, result.battery) == (oc.SUCCEEDED, "locked", 75)
    assert written == [] and rig.lock.move_commands == 0


async def test_unlatch_is_refused_before_anything_moves(rig: Rig) -> None:
    written: list[str] = []
    before = rig.lock.connections  # the association's
    result = await rig.operate("unlatch", written)
    assert (result.outcome, result.reason) == (oc.FAILED, oc.UNSUPPORTED_ACTION)
    assert written == [] and rig.lock.connections == before


async def test_a_lock_already_there_succeeds_without_moving(rig: Rig) -> None:
    written: list[str] = []
    result = await rig.operate("lock", written)
    assert (result.outcome, result.state) == (oc.SUCCEEDED, "locked")
    assert written == ["lock"] and rig.lock.move_commands == 1 and rig.lock.motor_moves == 0


@pytest.mark.parametrize("knob", ["drop_link_before_write_answer", "drop_link_after_command"])
async def test_a_link_lost_around_the_command_is_incomplete_read_back_and_sent_once(
        rig: Rig, knob: str) -> None:
    written: list[str] = []
    setattr(rig.lock, knob, True)
    result = await rig.operate("unlock", written)
    assert (result.outcome, result.reason) == (oc.INCOMPLETE, oc.LINK_LOST)
    assert result.state == "unlocked", "read back on a fresh session once the lock settled"
    assert result.battery == 100
    assert written == ["unlock"], "on_written once"
    assert rig.lock.move_commands == 1, "the lock took the command once"
    assert rig.lock.motor_moves == 1 and not rig.lock.locked


async def test_a_lock_out_of_reach_times_out_and_nothing_is_written(
        radio: DirectRadio, air: Radio) -> None:
    rig = rig_of(radio, DKeyLock("F0:94:0A:00:00:09"), os.urandom(36),
                 DkeyTimings(deadline_s=2.0, gatt_s=1.0, retry_pause_s=0.1))
    written: list[str] = []
    try:
        result = await rig.operate("unlock", written)
    finally:
        await rig.locks.close()
    assert (result.outcome, result.reason) == (oc.TIMED_OUT, oc.UNREACHABLE)
    assert written == [] and result.state is None


async def test_a_lock_that_forgot_the_hub_is_auth_failed(rig: Rig) -> None:
    rig.lock.forget_associations()
    written: list[str] = []
    result = await rig.operate("unlock", written)
    assert (result.outcome, result.reason) == (oc.FAILED, oc.AUTH_FAILED)
    assert written == [] and rig.lock.move_commands == 0 and rig.lock.locked


async def test_a_lock_that_ends_the_link_at_the_challenge_answer_is_auth_failed(
        radio: DirectRadio, dkey: DKeyLock) -> None:
    association = await associate(radio, dkey)
    forged = association[:4] + os.urandom(32)  # the right key holder, a wrong secret
    rig = rig_of(radio, dkey, forged)
    written: list[str] = []
    try:
        result = await rig.operate("unlock", written)
    finally:
        await rig.locks.close()
    assert (result.outcome, result.reason) == (oc.FAILED, oc.AUTH_FAILED)
    assert written == [] and dkey.failed_challenges == 2 and dkey.move_commands == 0
    assert dkey.faults == []


async def test_a_lock_that_lost_the_bond_is_not_held_by_the_connections_the_library_left(
        radio: DirectRadio, dkey: DKeyLock) -> None:
    rig = rig_of(radio, dkey, await associate(radio, dkey),
                 DkeyTimings(deadline_s=3.0, gatt_s=1.0, retry_pause_s=0.1))
    dkey.forget_bonds()  # the lock lost its bond with the hub; its window is closed
    dkey.encrypt_within_s = 600.0  # it would not drop an unencrypted link for a long time
    written: list[str] = []
    try:
        result = await rig.operate("unlock", written)
        # The library leaves each client whose pair() failed connected; the driver closes them.
        await until(lambda: not dkey.links, "the lock to be free again", 10.0)
    finally:
        await rig.locks.close()
    assert (result.outcome, result.reason) == (oc.TIMED_OUT, oc.LINK_FAILED)
    assert written == [] and dkey.move_commands == 0 and dkey.unencrypted_drops == 0
    assert dkey.faults == []


async def test_a_jammed_motor_fails_jammed(rig: Rig) -> None:
    rig.lock.jammed = True
    result = await rig.operate("unlock")
    assert (result.outcome, result.reason, result.state) == (oc.FAILED, oc.JAMMED, "jammed")
    assert rig.lock.motor_moves == 0 and rig.lock.locked


class GatedDKey(DKeyLock):
    """A dKey whose motor, once started, runs until the test opens ``gate``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()

    async def _travel(self, locked: bool) -> None:
        await self.gate.wait()
        await super()._travel(locked)


async def test_a_slow_motor_is_incomplete_read_back_and_the_next_command_refused_busy(
        radio: DirectRadio, air: Radio) -> None:
    lock = GatedDKey(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.0)
    air.add(lock)
    rig = rig_of(radio, lock, await associate(radio, lock),
                 DkeyTimings(deadline_s=10.0, result_s=0.5, settle_s=0.1, idle_s=0.5))
    written: list[str] = []
    try:
        slow = await rig.operate("unlock", written)
        # The target not reached in time with the link up: its fate is unknown, the state read
        # back on a fresh session (the bolt has not moved yet).
        assert (slow.outcome, slow.reason, slow.state) == (oc.INCOMPLETE, oc.NO_RESULT, "locked")
        assert lock.moving
        refused = await rig.operate("unlock", written)
        assert (refused.outcome, refused.reason, refused.state) == (oc.FAILED, oc.BUSY, "locked")
        lock.gate.set()
        await until(lambda: not lock.moving, "the motor to stop")
        after = await rig.operate("status")
    finally:
        await rig.locks.close()
    assert written == ["unlock", "unlock"] and lock.move_commands == 2
    assert lock.motor_moves == 1 and (after.outcome, after.state) == (oc.SUCCEEDED, "unlocked")
    assert lock.faults == []


async def test_a_turn_by_hand_while_connected_is_reported_manual(
        radio: DirectRadio, dkey: DKeyLock) -> None:
    rig = rig_of(radio, dkey, await associate(radio, dkey),
                 DkeyTimings(deadline_s=10.0, result_s=5.0, settle_s=0.3, idle_s=30.0))
    try:
        assert (await rig.operate("unlock")).outcome == oc.SUCCEEDED
        assert rig.driver.connected
        dkey.turn_by_hand(locked=True)
        await until(lambda: rig.reports, "the manual turn's report")
        assert rig.reports == [(LOCK, "state", None, "locked", 100, lockkinds.SOURCE_MANUAL)]
        dkey.set_battery(30)  # a battery notification alone is no state change
        dkey.turn_by_hand(locked=True)  # nor is the same state again
        assert (await rig.operate("status")).state == "locked"
        assert len(rig.reports) == 1
    finally:
        await rig.locks.close()
    assert dkey.faults == []


class HandleDKey(DKeyLock):
    """A dKey whose unlock-status notifications carry the door handle's bit (bit 7) while
    ``handle``: the handle, not a key, moved the bolt."""

    handle = False

    def notifications(self, mask: int) -> bytes:
        told = bytearray(super().notifications(mask))
        for at in range(0, len(told), 2):
            if told[at] == 2 and self.handle:  # the unlock status
                told[at + 1] |= 0x80
        return bytes(told)


async def test_a_turn_by_the_handle_is_reported_handle(radio: DirectRadio, air: Radio) -> None:
    lock = HandleDKey(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.0)
    air.add(lock)
    rig = rig_of(radio, lock, await associate(radio, lock),
                 DkeyTimings(deadline_s=10.0, result_s=5.0, settle_s=0.3, idle_s=30.0))
    try:
        assert (await rig.operate("status")).state == "locked"
        lock.handle = True
        lock.turn_by_hand(locked=False)
        await until(lambda: rig.reports, "the handle's report")
    finally:
        await rig.locks.close()
    assert rig.reports == [(LOCK, "state", None, "unlocked", 100, lockkinds.SOURCE_HANDLE)]


async def test_the_upkeeps_poll_reads_the_state_and_leaves_no_connection(
        radio: DirectRadio, dkey: DKeyLock) -> None:
    rig = rig_of(radio, dkey, await associate(radio, dkey),
                 upkeep=UpkeepTimings(poll_s=QUIET))
    dkey.turn_by_hand(locked=False)  # while nobody was connected: seen at the poll only
    rig.locks.start()
    try:
        await until(lambda: rig.reports, "the first poll's state")
        assert rig.reports == [(LOCK, "state", None, "unlocked", 100, lockkinds.SOURCE_POLL)]
        assert rig.heard == [(LOCK, 30)]
        await until(lambda: not dkey.links, "the poll's connection to go")
        assert not rig.driver.connected and dkey.move_commands == 0
    finally:
        await rig.locks.close()


async def test_a_cancelled_command_is_cancelled_sent_once_and_the_driver_goes_on(
        radio: DirectRadio, air: Radio) -> None:
    lock = GatedDKey(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.0)
    air.add(lock)
    rig = rig_of(radio, lock, await associate(radio, lock))
    written: list[str] = []
    try:
        task = asyncio.create_task(rig.locks.operate(LOCK, "unlock", "cmd",
                                                     lambda: written.append("w"), TIMEOUT))
        await until(lambda: lock.move_commands == 1, "the lock to take the command")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lock.gate.set()
        await until(lambda: not lock.moving, "the motor to stop")
        after = await rig.operate("status")
    finally:
        await rig.locks.close()
    assert written == ["w"] and lock.move_commands == 1 and lock.motor_moves == 1
    assert (after.outcome, after.state) == (oc.SUCCEEDED, "unlocked")
    assert lock.faults == []


class StalledDKey(DKeyLock):
    """A dKey that takes the central's writes and answers none while ``stalled``: a handshake
    that never ends."""

    stalled = True

    def on_write(self, link: Link, characteristic: Characteristic, data: bytes) -> int:
        if self.stalled:
            return 0
        return super().on_write(link, characteristic, data)


async def test_a_command_cancelled_before_its_write_writes_nothing(
        radio: DirectRadio, air: Radio) -> None:
    lock = StalledDKey(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.0)
    lock.stalled = False
    air.add(lock)
    rig = rig_of(radio, lock, await associate(radio, lock))
    lock.stalled = True
    written: list[str] = []
    try:
        task = asyncio.create_task(rig.locks.operate(LOCK, "unlock", "cmd",
                                                     lambda: written.append("w"), TIMEOUT))
        await until(lambda: lock.links, "the driver to connect")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: not lock.links, "the link to go")
    finally:
        await rig.locks.close()
    assert written == [] and lock.move_commands == 0


class HostileDKey(DKeyLock):
    """A dKey that answers a command with garbage: notifications well sealed in the session
    (so the library decrypts and parses them) of any id and content, then frames that are not
    sealed at all (so the library's check fails). Its motor never runs while ``hostile``."""

    def __init__(self, *args: object, seed: int = 1402, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hostile = True
        self.rng = random.Random(seed)

    def drive(self, locked: bool) -> int:
        if not self.hostile:
            return super().drive(locked)
        rng = self.rng
        for session in list(self.sessions.values()):
            for _ in range(rng.randrange(3, 12)):
                kind = rng.randrange(4)
                if kind == 0:  # notifications of any type and value
                    session.send(Cmd.NOTIFICATIONS_UPDATE, rng.randbytes(2 * rng.randrange(0, 7)))
                elif kind == 1:  # a status report of any type
                    session.send(Cmd.STATUS_REPORT, rng.randbytes(rng.randrange(0, 5)))
                elif kind == 2:  # any message
                    session.send(rng.randrange(256), rng.randbytes(rng.randrange(0, 14)))
                else:  # any id's segment
                    session.send(rng.randrange(0x50), rng.randbytes(rng.randrange(15, 40)))
            if rng.random() < 0.3:  # a frame that is not sealed: the library's check fails
                session.link.notify(self.to_lock, rng.randbytes(20))
        return 0


async def test_a_hostile_dkey_ends_no_driver(radio: DirectRadio, air: Radio) -> None:
    lock = HostileDKey(ADDR, name="Front door", activation_code=CODE, travel_time_s=0.1)
    air.add(lock)
    rig = rig_of(radio, lock, await associate(radio, lock),
                 DkeyTimings(deadline_s=5.0, gatt_s=2.0, command_s=3.0, result_s=3.0,
                             settle_s=0.1, readback_s=5.0, idle_s=0.5, retry_pause_s=0.1))
    results = []
    try:
        for n in range(6):
            results.append(await rig.operate("unlock" if n % 2 else "lock"))
            await until(lambda: not lock.links or rig.driver.connected, "the link to settle")
        lock.hostile = False
        await until(lambda: not lock.links, "the lock to be free")
        sane = await rig.operate("unlock")
    finally:
        await rig.locks.close()
    assert all(r.outcome in oc.OUTCOMES and r.reason != oc.DRIVER_ERROR for r in results), results
    assert lock.motor_moves == 1 and lock.faults == []
    assert (sane.outcome, sane.state) == (oc.SUCCEEDED, "unlocked")


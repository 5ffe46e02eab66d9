"""The bridge's BLE connection policy and its at-most-once journal, through the real firmware.

Short policy settings (tests/firmware/sim_bench.FAST and overrides here) make idle disconnects,
polls and advert checks happen within a second or two; no assertion depends on how fast anything
is, only on what happened.
"""

from __future__ import annotations

import os

import pytest

from simulator.locks import EntranceDoorLock, InCylinderLock, InsideTurnerLock, KeyBoxLock
from tests.firmware.sim_bench import FAST, Bench


def _turner():
    return InsideTurnerLock("turner", "C0:FF:EE:00:02:01", os.urandom(32), travel_time_s=0.1)


def _box():
    return KeyBoxLock("box", "C0:FF:EE:00:02:02", os.urandom(32), travel_time_s=0.1)


@pytest.fixture
async def bench(tmp_path):
    async with Bench.start(tmp_path, [_turner(), _box()]) as b:
        yield b


def _idle(bench: Bench, lock_id: str):
    return lambda: not bench.lock(lock_id).links


async def test_a_follow_up_op_reuses_the_connection_which_is_dropped_once_idle(bench):
    await bench.until(_idle(bench, "turner"))
    before = bench.lock("turner").connections
    assert (await bench.op("turner", "unlock")).outcome == "succeeded"
    assert (await bench.op("turner", "lock")).outcome == "succeeded"
    assert bench.lock("turner").connections == before + 1
    await bench.until(_idle(bench, "turner"))
    assert bench.lock("turner").connections == before + 1


async def test_a_key_turn_while_nobody_is_connected_is_found_through_the_advert(bench):
    await bench.until(_idle(bench, "turner"))
    before = bench.lock("turner").connections
    bench.poke("turner", "turn_manually", "unlocked")
    (report,) = await bench.until(lambda: bench.states("turner", "manual"))
    assert report["state"] == "unlocked"
    assert bench.lock("turner").connections == before + 1  # connected because of the advert
    assert len(bench.states("turner", "poll")) == 1  # only the boot poll: no poll found it


async def test_key_box_happenings_while_disconnected_arrive_in_order(bench):
    assert (await bench.op("box", "unlock")).outcome == "succeeded"
    await bench.until(_idle(bench, "box"))
    for action in ("open_lid", "take_key", "close_lid"):
        bench.poke("box", action)
    events = await bench.until(lambda: len(bench.events("box")) == 3 and bench.events("box"))
    assert [e["event"] for e in events] == ["box_opened", "key_taken", "box_closed"]


async def test_reports_are_not_passed_on_twice(bench):
    bench.poke("turner", "turn_manually", "unlocked")
    await bench.until(lambda: bench.states("turner", "manual"))
    await bench.until(_idle(bench, "turner"))
    # Further adverts carry the same report number: nothing new to read or send.
    connections = bench.lock("turner").connections
    assert (await bench.op("box", "status")).outcome == "succeeded"
    assert len(bench.states("turner", "manual")) == 1
    assert bench.lock("turner").connections == connections


async def test_polls_read_state_and_battery_on_their_schedule(tmp_path):
    async with Bench.start(tmp_path, [_turner()], policy={**FAST, "poll_ms": 500}) as bench:
        polls = await bench.until(lambda: len(bench.states("turner", "poll")) >= 3
                                  and bench.states("turner", "poll"))
        assert {(p["state"], p["battery"]) for p in polls} == {("locked", 100)}
        assert bench.lock("turner").motor_moves == 0


async def test_a_poll_right_after_an_operation_does_not_report_the_stale_state(tmp_path):
    turner = _turner()
    turner.stale_s = 0.8  # status reads answer "locked" for 0.8 s after the unlock
    async with Bench.start(tmp_path, [turner], policy={**FAST, "poll_ms": 200}) as bench:
        assert (await bench.op("turner", "unlock")).state == "unlocked"
        seen = len(bench.states("turner", "poll"))
        polls = await bench.until(lambda: len(bench.states("turner", "poll")) >= seen + 3
                                  and bench.states("turner", "poll")[seen:])
        assert {p["state"] for p in polls} == {"unlocked"}


async def test_a_command_that_reaches_the_bridge_again_after_a_reboot_is_refused(bench):
    res = await bench.op("turner", "unlock", cmd="cmd-before-reboot")
    assert res.outcome == "succeeded"
    await bench.reboot()
    res = await bench.op("turner", "unlock", cmd="cmd-before-reboot")
    assert (res.outcome, res.reason) == ("failed", "duplicate_command")
    assert bench.lock("turner").motor_moves == 1
    assert bench.written == ["cmd-before-reboot"]
    journal = bench.home.home.bridge.workdir / "commands.journal"
    assert len(journal.read_text().split()) == 1


async def test_a_command_refused_before_its_write_may_run_later(bench):
    # Never written to the lock, so not journaled: hubd may still retry it.
    bench.set("turner", in_range=False)
    await bench.until(_idle(bench, "turner"))
    res = await bench.op("turner", "unlock", cmd="cmd-retry")
    assert res.outcome == "timed_out"
    bench.set("turner", in_range=True)
    assert (await bench.op("turner", "unlock", cmd="cmd-retry")).outcome == "succeeded"
    assert bench.lock("turner").motor_moves == 1


async def test_the_same_command_id_twice_in_one_session_moves_once(bench):
    assert (await bench.op("turner", "unlock", cmd="cmd-twice")).outcome == "succeeded"
    res = await bench.op("turner", "unlock", cmd="cmd-twice")
    assert (res.outcome, res.reason) == ("failed", "duplicate_command")
    assert bench.lock("turner").motor_moves == 1


async def test_every_result_says_how_long_the_bridge_spent_on_it(bench):
    await bench.op("turner", "unlock")
    await bench.op("turner", "unlatch")
    await bench.op("nowhere", "unlock")
    results = bench.sent("result")
    assert len(results) == 3
    assert all(isinstance(r["ms"], int) and r["ms"] >= 0 for r in results)


async def test_eight_locks_of_every_kind_fit_on_one_bridge(tmp_path):
    kinds = (InsideTurnerLock, InCylinderLock, KeyBoxLock, EntranceDoorLock)
    locks = [kinds[i % 4](f"lock-{i}", f"C0:FF:EE:00:03:{i:02X}", os.urandom(32),
                          travel_time_s=0.05) for i in range(8)]
    async with Bench.start(tmp_path, locks) as bench:
        for lk in locks:
            action = "unlatch" if lk.kind == "entrance_door" else "unlock"
            assert (await bench.op(lk.lock_id, action)).outcome == "succeeded"
        assert all(lk.motor_moves == 1 for lk in locks)
        assert "MemoryError" not in "\n".join(bench.home.home.bridge.log)

"""Lock failure modes, each answered with the right outcome by the real firmware.

The simulated locks model the failure (simulator/locks.py's knobs); the bridge runs unchanged in
MicroPython; hubd's link client asks and reads the answer.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from simulator.locks import EntranceDoorLock, InCylinderLock, InsideTurnerLock
from simulator.home import SimulatedHome
from tests.firmware.sim_bench import Bench
from tests.waiting import until


def _locks():
    return [
        InsideTurnerLock("turner", "C0:FF:EE:00:01:01", os.urandom(32), travel_time_s=0.1),
        InCylinderLock("cylinder", "C0:FF:EE:00:01:02", os.urandom(32), travel_time_s=0.1,
                       latch_hold_s=1.5, relock_delay_s=0.5),
        EntranceDoorLock("entrance", "C0:FF:EE:00:01:03", os.urandom(32), travel_time_s=0.1,
                         release_s=1.0),
    ]


@pytest.fixture
async def bench(tmp_path):
    async with Bench.start(tmp_path, _locks()) as b:
        yield b


async def test_out_of_range_times_out_unreachable_without_a_write(bench):
    bench.set("turner", in_range=False)
    await bench.until(lambda: not bench.lock("turner").links)  # the supervision timeout
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason) == ("timed_out", "unreachable")
    assert not bench.written
    assert bench.lock("turner").motor_moves == 0


async def test_a_lock_that_stopped_advertising_is_unreachable(bench):
    await bench.until(lambda: not bench.lock("turner").links)  # the boot poll's link is idle
    bench.set("turner", advertising=False)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason) == ("timed_out", "unreachable")
    assert bench.lock("turner").motor_moves == 0


async def test_a_lock_held_by_another_central_answers_busy(bench):
    bench.set("turner", held_by_other=True)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason, res.state) == ("failed", "busy", "locked")
    assert bench.lock("turner").motor_moves == 0
    bench.set("turner", held_by_other=False)
    assert (await bench.op("turner", "unlock")).outcome == "succeeded"


async def test_a_lock_whose_motor_still_holds_the_latch_answers_busy(bench):
    assert (await bench.op("cylinder", "unlatch")).outcome == "succeeded"
    res = await bench.op("cylinder", "lock")  # the latch is held for 1.5 s after the RESULT
    assert (res.outcome, res.reason) == ("failed", "busy")
    assert bench.lock("cylinder").moves == ["unlatch"]


async def test_a_jammed_lock_fails_jammed_and_reports_state_jammed(bench):
    bench.set("turner", jammed=True)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason, res.state) == ("failed", "jammed", "jammed")
    assert bench.lock("turner").motor_moves == 0


async def test_low_battery_refuses_to_move_and_leaves_the_state(bench):
    bench.set("turner", battery_level=3.0)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason, res.state, res.battery) == (
        "failed", "low_battery", "locked", 3)
    assert bench.lock("turner").motor_moves == 0


async def test_a_lock_paired_with_another_secret_refuses_auth_failed(bench):
    bench.set("turner", secret=os.urandom(32))
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason) == ("failed", "auth_failed")
    assert bench.lock("turner").motor_moves == 0


async def test_lost_ack_after_an_unlatch_is_incomplete_and_unlatches_once(bench):
    bench.set("entrance", lose_next_result=True)
    res = await bench.op("entrance", "unlatch")
    assert (res.outcome, res.reason) == ("incomplete", "no_result")
    assert res.state in ("unlatched", "locked")  # read back, whatever the strike does by then
    assert bench.lock("entrance").moves == ["unlatch"]
    assert [c for c in bench.lock("entrance").commands if c[0] == "unlatch"] == [
        ("unlatch", "ok (lost)")]


async def test_link_lost_after_an_unlatch_is_incomplete_and_unlatches_once(bench):
    bench.set("cylinder", drop_link_after_move=True)
    res = await bench.op("cylinder", "unlatch")
    assert (res.outcome, res.reason) == ("incomplete", "link_lost")
    assert res.state in ("unlatched", "unlocked")
    assert bench.lock("cylinder").moves == ["unlatch"]
    assert not [c for c in bench.lock("cylinder").commands if c[0] == "unlatch"]


async def test_read_back_after_a_lost_ack_waits_out_the_stale_state(bench):
    # For 0.8 s after the move the lock answers a status read with the old state ("locked"):
    # a read-back right away would report the door locked while it is open.
    bench.set("turner", lose_next_result=True, stale_s=0.8)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.reason, res.state) == ("incomplete", "no_result", "unlocked")
    assert bench.lock("turner").moves == ["unlock"]


async def test_result_is_trusted_over_a_stale_status_read(bench):
    bench.set("turner", stale_s=0.8)
    res = await bench.op("turner", "unlock")
    assert (res.outcome, res.state) == ("succeeded", "unlocked")
    res = await bench.op("turner", "status")
    assert (res.outcome, res.state) == ("succeeded", "unlocked")


async def test_forged_replayed_and_impossible_reports_are_not_passed_on(bench):
    from wire import lockside

    turner = bench.lock("turner")
    assert (await bench.op("turner", "status")).outcome == "succeeded"  # connected, idle
    bench.poke("turner", "turn_manually", "unlocked")
    (genuine,) = await bench.until(lambda: bench.states("turner", "manual"))
    n = turner.status_counter
    unlocked, manual = lockside.state_code("unlocked"), lockside.source_code("manual")
    assert (await bench.op("turner", "status")).outcome == "succeeded"
    assert turner.links, "the bridge must still be connected to hear what is injected"
    # A report under another secret, the genuine one replayed, and an authentic event that an
    # inside turner cannot have.
    bench.poke("turner", "inject", lockside.encode_status(os.urandom(32), turner.address, n + 5,
                                                    lockside.state_code("jammed"), 13, manual))
    bench.poke("turner", "inject", lockside.encode_status(turner.secret, turner.address, n, unlocked,
                                                    turner.battery, manual))
    bench.poke("turner", "report_event", "key_taken", "manual")
    # A genuine report after them still gets through, and is the only other one.
    bench.poke("turner", "turn_manually", "locked")
    await bench.until(lambda: bench.states("turner", "manual")[-1]["state"] == "locked")
    reports = [(r["state"], r["battery"]) for r in bench.states("turner", "manual")]
    assert reports == [(genuine["state"], 100), ("locked", 100)]
    assert not bench.events("turner")


async def test_a_firmware_that_runs_out_of_memory_resets_the_chip_and_boots_again(tmp_path):
    # A heap too small for the firmware: it stops with a MemoryError, and instead of sitting at
    # the REPL (where it carries no alarm) it calls machine.reset(), which the simulated chip
    # answers by booting main.py again, as an ESP32 does.
    home = SimulatedHome(tmp_path / "home")
    home.bridge._heap = 64 * 1024
    await home.start()
    try:
        await until(lambda: home.bridge.resets >= 2, "two resets", timeout=20)
    finally:
        await home.stop()
    stopped = [line for line in home.bridge.log if "bridge firmware stopped: MemoryError" in line]
    assert stopped and stopped[0].endswith("; resetting")
    assert home.bridge.boots == home.bridge.resets + 1  # each reset booted it again
    assert not home.bridge.running, "power off stops a bridge caught in a reset loop too"


async def test_a_bad_bridge_json_is_one_clear_log_line_and_no_reset_loop(tmp_path):
    # A bridge.json the firmware cannot run with (a UART number out of range here) is fixed by a
    # person, not by resets: the bridge says what is wrong, naming the setting, and waits.
    home = SimulatedHome(tmp_path / "home")
    cfg = home.bridge.config
    flash = home.bridge.workdir
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "bridge.json").write_text(json.dumps({**cfg, "link": {**cfg["link"], "uart": 12}}))
    await home.start()
    try:
        await until(lambda: any("bridge.json: link.uart" in line for line in home.bridge.log),
                    "the configuration error", timeout=20)
        await asyncio.sleep(2)  # a reset loop would have booted it again by now
        assert home.bridge.running and home.bridge.boots == 1 and home.bridge.resets == 0
    finally:
        await home.stop()
    line = next(line for line in home.bridge.log if "bridge.json: link.uart" in line)
    assert "must be a whole number from 0 to 9, not 12" in line and "not starting" in line

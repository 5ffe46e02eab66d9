"""Every lock kind through the real firmware, the real link and the simulated locks.

One home holds one lock of each kind, each with its own pairing secret (simulator.home.every_kind).
hubd's link client drives the bridge; what the lock did is read from its model, what the bridge
told hubd from the serial line.
"""

from __future__ import annotations

import pytest

from simulator.home import every_kind
from tests.firmware.sim_bench import Bench


@pytest.fixture
async def bench(tmp_path):
    async with Bench.start(tmp_path, every_kind(travel_time_s=0.1)) as b:
        yield b


def _secrets(bench: Bench) -> set[bytes]:
    return {bench.lock(k).secret for k in bench.home.home.locks}


async def test_one_hub_holds_every_kind_each_with_its_own_secret(bench):
    kinds = {k: bench.lock(k).kind for k in bench.home.home.locks}
    assert kinds == {"front-door": "in_cylinder", "back-door": "inside_turner",
                     "key-box": "key_box", "entrance": "entrance_door"}
    assert len(_secrets(bench)) == 4
    # The boot poll read each of them with its own secret.
    for lock_id in kinds:
        assert bench.states(lock_id, "poll")[0]["state"] == "locked"


# --- inside turner ------------------------------------------------------------------------------


async def test_inside_turner_unlocks_and_locks(bench):
    res = await bench.op("back-door", "unlock")
    assert (res.outcome, res.state) == ("succeeded", "unlocked")
    res = await bench.op("back-door", "lock")
    assert (res.outcome, res.state) == ("succeeded", "locked")
    assert bench.lock("back-door").moves == ["unlock", "lock"]


async def test_inside_turner_refuses_unlatch_without_asking_the_lock(bench):
    before = list(bench.lock("back-door").commands)
    connections = bench.lock("back-door").connections
    res = await bench.op("back-door", "unlatch")
    assert (res.outcome, res.reason) == ("failed", "unsupported_action")
    assert bench.lock("back-door").commands == before
    assert bench.lock("back-door").connections == connections
    assert not bench.written


async def test_inside_turner_key_turn_is_reported_as_manual(bench):
    bench.poke("back-door", "turn_manually", "unlocked")
    (report,) = await bench.until(lambda: bench.states("back-door", "manual"))
    assert report["state"] == "unlocked"
    assert report["battery"] == 100


# --- in-cylinder ---------------------------------------------------------------------------------


async def test_in_cylinder_unlocks_locks_and_unlatches(bench):
    res = await bench.op("front-door", "unlock")
    assert (res.outcome, res.state) == ("succeeded", "unlocked")
    res = await bench.op("front-door", "lock")
    assert (res.outcome, res.state) == ("succeeded", "locked")
    res = await bench.op("front-door", "unlatch")
    assert (res.outcome, res.state) == ("succeeded", "unlatched")
    # The latch returns by itself; the door is then unlocked.
    (back,) = await bench.until(lambda: bench.states("front-door", "auto"))
    assert back["state"] == "unlocked"
    assert bench.lock("front-door").moves == ["unlock", "lock", "unlatch"]


async def test_in_cylinder_handle_opens_and_the_lock_relocks_after_the_door_closes(bench):
    bench.poke("front-door", "open_with_handle")
    (opened,) = await bench.until(lambda: bench.states("front-door", "handle"))
    assert opened["state"] == "unlocked"
    bench.poke("front-door", "close_door")
    (relocked,) = await bench.until(lambda: bench.states("front-door", "auto"))
    assert relocked["state"] == "locked"
    events = [(e["event"], e["source"]) for e in bench.events("front-door")]
    assert events == [("door_opened", "handle"), ("door_closed", "manual")]
    assert bench.lock("front-door").motor_moves == 0


# --- key box -------------------------------------------------------------------------------------


async def test_key_box_releases_the_lid_and_reports_what_the_visitor_does(bench):
    res = await bench.op("key-box", "unlock")
    assert (res.outcome, res.state) == ("succeeded", "unlocked")
    for action in ("open_lid", "take_key", "return_key", "close_lid"):
        bench.poke("key-box", action)
    events = await bench.until(lambda: len(bench.events("key-box")) == 4
                               and bench.events("key-box"))
    assert [e["event"] for e in events] == ["box_opened", "key_taken", "key_returned",
                                            "box_closed"]
    assert {e["source"] for e in events} == {"manual"}
    assert {e["state"] for e in events} == {"unlocked"}
    res = await bench.op("key-box", "lock")
    assert (res.outcome, res.state) == ("succeeded", "locked")


async def test_a_latched_key_box_does_not_open(bench):
    bench.poke("key-box", "open_lid")
    assert not bench.lock("key-box").lid_open
    res = await bench.op("key-box", "unlatch")
    assert (res.outcome, res.reason) == ("failed", "unsupported_action")


# --- entrance door -------------------------------------------------------------------------------


async def test_entrance_door_unlatches_then_locks_by_itself(bench):
    res = await bench.op("entrance", "unlatch")
    assert (res.outcome, res.state) == ("succeeded", "unlatched")
    (relocked,) = await bench.until(lambda: bench.states("entrance", "auto"))
    assert relocked["state"] == "locked"
    assert bench.lock("entrance").moves == ["unlatch"]


@pytest.mark.parametrize("action", ["unlock", "lock"])
async def test_entrance_door_refuses_anything_but_unlatch(bench, action):
    res = await bench.op("entrance", action)
    assert (res.outcome, res.reason) == ("failed", "unsupported_action")
    assert bench.lock("entrance").motor_moves == 0


async def test_status_reads_each_kind(bench):
    for lock_id in bench.home.home.locks:
        res = await bench.op(lock_id, "status")
        assert (res.outcome, res.state, res.battery) == ("succeeded", "locked", 100)

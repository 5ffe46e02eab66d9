"""The soak (benchmarks/soak.py) in its short form: a four-lock home driven by hubd through the
bridge's Bluetooth proxy, with the alarm unit and LTE, a few hundred operations and alarms, the
serial line cut now and then. What it must keep is asserted, from its own JSON: every command one
final answer, every alarm at the centre and answered, no lock moved twice for one command, the
LTE path and the cuts really exercised, the bridge's heap figures reported. Speed is not."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[dict, str]:
    """One --quick run for the whole session: (its JSON, what it printed).

    A module fixture is per pytest-xdist worker, and the four tests below are spread over the
    workers, so each worker would run a soak of its own (a minute each, side by side on two
    cores). The first worker to need it runs it, under a lock in the session's shared temp
    directory; the others wait for it and read what it left, failure or not. (xdist's
    ``--dist loadgroup`` would keep the tests on one worker, but with pytest 9.2 it silently
    groups nothing: pytest-xdist#1386.)"""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # pytest-N/, above each popen-gwN/
    run = shared / "soak"
    run.mkdir(exist_ok=True)
    with open(run / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (run / "done.json").exists():
            (run / "done.json").write_text(json.dumps(_run_soak(run / "soak.json")))
    done = json.loads((run / "done.json").read_text())
    if done["hung"]:
        pytest.fail(f"the soak hung:\n{done['output']}")
    output = done["output"]
    assert (run / "soak.json").exists(), output
    result = json.loads((run / "soak.json").read_text())
    assert done["returncode"] == (0 if result["ok"] else 1), output
    return result, output


def _run_soak(out: Path) -> dict:
    """Run the soak once, writing its JSON to ``out``: how it ended and what it printed."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--seed", "3", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = proc.communicate(timeout=900)
        hung = False
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the soak still stops hubd, the bridge and its broker
        output, _ = proc.communicate(timeout=60)
        hung = True
    return {"returncode": proc.returncode, "output": output, "hung": hung}


def test_nothing_is_lost(soak: tuple[dict, str]) -> None:
    result, output = soak
    assert result["violations"] == [] and result["ok"], output
    commands = result["commands"]
    assert commands["no_final_answer"] == 0
    assert sum(commands["by_outcome"].values()) == commands["sent"] > 200
    assert result["operations"] == result["args"]["ops"] == 300


def test_each_lock_moved_at_most_once_per_command(soak: tuple[dict, str]) -> None:
    result, _ = soak
    assert set(result["locks"]) == {"back-door", "front-door", "key-box", "entrance"}
    for lock_id, e in result["locks"].items():
        assert e["commands"] > 0, f"{lock_id} was never driven"
        assert e["succeeded_moving"] <= e["motor_moves"] <= e["succeeded_moving"] + e["incomplete_moving"], \
            (lock_id, e)
        assert sum(e["by_outcome"].values()) == e["commands"]


def test_every_alarm_reached_the_centre_and_was_answered_some_over_lte(soak: tuple[dict, str]) -> None:
    result, _ = soak
    alarms = result["alarms"]
    assert alarms["pressed"] == alarms["at_centre"] == alarms["help_on_the_way"] > 0
    assert alarms["over_lte"] > 0 and alarms["copies"]["dc09"] > 0, "the second path was not used"
    assert result["link_cuts"]["count"] > 0


def test_the_bridge_heap_figures_come_from_its_health(soak: tuple[dict, str]) -> None:
    result, output = soak
    heap, bridge = result["heap"], result["bridge"]
    assert heap["reports"] > 0
    # The least largest block is no more than the least free heap (a block is part of it).
    assert 0 < heap["heap_blk_lowest"] <= heap["heap_free_lowest"] <= heap["heap_free_highest"]
    assert 0 < heap["heap_min_lowest"] <= heap["heap_free_lowest"]
    assert bridge["boots"] == len(bridge["causes"]) >= 1 and bridge["causes"][0] == "power_on"
    assert "lowest largest free block" in output

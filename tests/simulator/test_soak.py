"""The soak (benchmarks/soak.py) in its short form: a four-lock home driven by hubd through the
bridge's Bluetooth proxy, with the alarm unit and LTE, a few hundred operations and alarms, the
serial line cut now and then. What it must keep is asserted, from its own JSON: every command one
final answer, every alarm at the centre and answered, no lock moved twice for one command, the
LTE path and the cuts really exercised, the bridge's heap figures reported. Speed is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import HEAP_SHORT, MIN_FREE
from simulator.bridge_device import DEFAULT_HEAP
from tests.benchmark_run import ROOT, run_benchmark

SCRIPT = ROOT / "benchmarks" / "soak.py"


def run_soak(out: Path) -> tuple[dict, str]:
    """One --quick run writing its JSON to ``out``: (that JSON, what it printed); its exit
    status 1 exactly when it found violations."""
    result, output = run_benchmark(SCRIPT, out, "--quick", "--seed", "3", timeout=900,
                                   exit_status=lambda r: 0 if r["ok"] else 1)
    assert result["ok"] == (result["violations"] == [])
    return result, output


@pytest.mark.long(60)
def test_the_quick_soak(tmp_path: Path, subtests: pytest.Subtests) -> None:
    """One soak, five verdicts, each a subtest reported by its name. One test rather than four
    sharing a module fixture: pytest-xdist runs a module fixture once per worker that draws one
    of the module's tests, so four tests made up to three soaks of a minute each (and
    ``--dist loadgroup``, which would keep them together, groups nothing on pytest 9.2:
    pytest-xdist#1386)."""
    result, output = run_soak(tmp_path / "soak.json")
    heap = result["heap"]
    print(f"soak heap: lowest {heap['heap_min_lowest']} B of {heap['firmware_heap']} "
          f"({heap['heap_min_lowest_share']:.1%}), median by connections "
          f"{heap['heap_free_median_by_connections']}")  # shown with -rP: the margin over time

    with subtests.test("nothing is lost"):
        lost = [v for v in result["violations"] if not v.startswith(HEAP_SHORT)]
        assert lost == [], output
        commands = result["commands"]
        assert commands["no_final_answer"] == 0
        assert sum(commands["by_outcome"].values()) == commands["sent"] > 200
        assert result["operations"] == result["args"]["ops"] == 300

    with subtests.test("each lock moved at most once per command"):
        assert set(result["locks"]) == {"back-door", "front-door", "key-box", "entrance"}
        for lock_id, e in result["locks"].items():
            assert e["commands"] > 0, f"{lock_id} was never driven"
            assert e["succeeded_moving"] <= e["motor_moves"] <= e["succeeded_moving"] + e["incomplete_moving"], \
                (lock_id, e)
            assert sum(e["by_outcome"].values()) == e["commands"]

    with subtests.test("every alarm reached the centre and was answered, some over LTE"):
        alarms = result["alarms"]
        assert alarms["pressed"] == alarms["at_centre"] == alarms["help_on_the_way"] > 0
        assert alarms["over_lte"] > 0 and alarms["copies"]["dc09"] > 0, "the second path was not used"
        assert result["link_cuts"]["count"] > 0

    with subtests.test("the bridge's heap figures come from its health"):
        heap, bridge = result["heap"], result["bridge"]
        assert heap["reports"] > 0
        # The least largest block is no more than the least free heap (a block is part of it).
        assert 0 < heap["heap_blk_lowest"] <= heap["heap_free_lowest"] <= heap["heap_free_highest"]
        assert 0 < heap["heap_min_lowest"] <= heap["heap_free_lowest"]
        assert bridge["boots"] == len(bridge["causes"]) >= 1 and bridge["causes"][0] == "power_on"
        assert "lowest largest free block" in output
        assert heap["firmware_heap"] == DEFAULT_HEAP  # the calibrated chip's, not a kinder one

    with subtests.test("the bridge never met a full heap, and kept 40 % of it free"):
        heap, bridge = result["heap"], result["bridge"]
        assert bridge["memory_errors_logged"] == 0 and bridge["heap_drops"] == 0, bridge
        # Issue 15's bar, the soak's own verdict. Inside the suite's load the lowest once fell
        # to 39.5-39.6 % (CI, 2026-12-07), when hubd's four connects after a link cut waited as
        # a task each (8.2 KB) and discoveries piled up in the host link's queue as JSON; since
        # they wait as tuples and the proxy holds its messages while the link is busy. Once more
        # 39.5 % (CI, the same day): the four locks discovered at once after a cut (5.4 KB under
        # the steady four connections, found by sampling the heap every 500 ms under load);
        # since, the bridge discovers one connection at a time.
        assert MIN_FREE == 0.40
        assert heap["heap_min_lowest"] >= MIN_FREE * heap["firmware_heap"], heap

"""The visit benchmark (benchmarks/visit.py) runs end to end on the realistic air with one visit,
no warm-up, the visit's hold on: hubd as its own process, [visit] route in its hubd.toml, the
entrance's unlatch then the apartment door's unlock as a nurse's two signed commands naming one
assignment. The whole wiring is what is checked (hubd.toml -> hubd's command path -> the hold):
the door's command finds the connection the hold made and makes none of its own, one hold, used
by that command. Its JSON has every figure. How long things take is the benchmark's business:
nothing here bounds a time from above. The visit's times are scaled to a tenth (walk 2-6 s, the
lock's idle drop 3 s: still longer than the inside turner's 1.5 s motor, during which the
simulated lock hears nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_run import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "visit.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}


@pytest.mark.long(12)
def test_one_visit_with_the_hold_finds_the_door_connected(tmp_path: Path) -> None:
    result, output = run_benchmark(SCRIPT, tmp_path / "visit.json", "--visits", "1", "--warmup",
                                   "0", "--policy", "on", "--scale", "0.1", timeout=300)
    assert result["timing"]["name"] == "realistic" and not result["timing"]["instant"]
    (run,) = result["runs"]
    assert (run["policy"], run["visits"]) == ("on", 1)
    for name in ("to_motor", "succeeded"):
        assert set(run[name]) == FIGURES and run[name]["n"] == 1, name
    assert run["door_commands_on_a_new_connection"] == 0, "the door's command made a connection"
    assert run["to_link"] is None
    assert (run["holds"], run["holds_used"]) == (1, 1)
    assert run["to_motor"]["max_ms"] < run["succeeded"]["max_ms"]
    assert "visit 1/1" in output and "to_motor" in output

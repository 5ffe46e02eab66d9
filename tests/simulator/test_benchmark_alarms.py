"""The safety-alarm benchmark (benchmarks/alarms.py) runs end to end with a few presses and counts
every alarm. Its figures are not asserted: speed is the benchmark's business, not a test's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.benchmark_run import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "alarms.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}


def _benchmark_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_alarms", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
def test_a_tiny_run_over_both_paths_and_the_outbox_loses_no_alarm_and_writes_its_figures(
        tmp_path: Path) -> None:
    out = tmp_path / "alarms.json"
    result, _ = run_benchmark(SCRIPT, out, "--presses", "3", "--lte-presses", "3", "--outbox", "20",
                              "--handled-deadline-ms", "500", "--hub-down-ms", "300")

    assert result["lost"] == 0 and result["problems"] == []
    assert (result["bridge"]["boots"], result["bridge"]["resets"], result["bridge"]["errors"]) == (1, 0, [])
    assert {"python", "cpu_count", "platform", "micropython", "mosquitto", "sqlite"} <= set(result["machine"])
    assert result["settings"]["presses"] == 3 and result["settings"]["lte_presses"] == 3
    assert result["settings"]["alarm_timings"] == {"handled_deadline_ms": 500, "hub_down_ms": 300}

    primary = result["primary"]
    assert primary["counts"]["sent"] == primary["counts"]["received"] == 3
    assert primary["counts"]["lost"] == 0 and primary["counts"]["resident_told_help"] == 3
    assert set(primary["totals"]) == {"press_to_centre", "press_to_handled", "press_to_help"}
    assert set(primary["hops"]) == {"unit_ack", "to_hubd", "store", "mqtt", "centre", "back"}
    assert all(set(s) == FIGURES for s in [*primary["totals"].values(), *primary["hops"].values()])

    assert set(result["second_path"]) == {"broker-down", "hubd-down"}
    for situation, part in result["second_path"].items():
        counts = part["counts"]
        assert counts["sent"] == counts["received_dc09"] == 3, situation
        assert counts["lost"] == 0 and counts["resident_told_help"] == 3, situation
        assert set(part["totals"]) == {"press_to_receiver", "after_decision", "press_to_help"}
        assert set(part["hops"]) == {"unit_ack", "wait", "lte", "back"}
        assert part["totals"]["after_decision"]["n"] == 3, situation
    broker_down = result["second_path"]["broker-down"]
    # hubd held each alarm while the broker was away and delivered it once it was back.
    assert broker_down["counts"]["mqtt_copies_after_broker_back"] == 3
    assert broker_down["held_by_hubd_never_delivered"] == []

    outbox = result["outbox"]["counts"]
    assert outbox["sent"] == outbox["stored"] == outbox["received"] == outbox["handled"] == 20
    assert outbox["lost"] == 0
    assert set(result["outbox"]["intake"]["receipt_to_alarm_stored"]) == FIGURES
    assert {"alarms_per_s", "seconds"} <= set(result["outbox"]["drain"])


def test_a_lost_alarm_and_a_firmware_reset_are_reported_as_problems() -> None:
    bench = _benchmark_module()
    lost = {"counts": {"sent": 2, "received": 1, "lost": 1}, "lost_ids": ["au5a000001-2"],
            "totals": {}, "hops": {}, "trend": {}}
    problems = bench.report({"primary": lost})
    assert len(problems) == 1 and "au5a000001-2" in problems[0]
    crashed = {"boots": 2, "resets": 1, "error_lines": 1, "errors": ["MemoryError: memory allocation failed"]}
    problems = bench.report({"bridge": crashed})
    assert len(problems) == 1 and "MemoryError" in problems[0]

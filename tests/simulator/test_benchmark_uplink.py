"""The uplink benchmark (benchmarks/uplink.py) runs end to end with a few presses in two of its
phases (the uplink idle, and saturated both ways: the download's and the upload's streams at
once; the one-way phases run the same code with one stream off) and writes its figures. The figures are not
asserted: speed is the benchmark's business, not a test's; that each stream moved bytes and every
alarm arrived is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_run import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "uplink.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}
PRESSES = 1


@pytest.mark.long(20)
def test_a_tiny_run_presses_in_every_phase_loses_no_alarm_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "uplink.json"
    result, _ = run_benchmark(SCRIPT, out, "--presses", str(PRESSES), "--settle-s", "1",
                              "--phases", "idle,both")

    assert result["problems"] == []
    assert (result["bridge"]["boots"], result["bridge"]["resets"], result["bridge"]["errors"]) == (1, 0, [])
    assert result["settings"]["line_baud"] == 115200 and result["settings"]["lte_network"]["latency_s"] > 0
    assert list(result["phases"]) == ["idle", "both"]
    for name, part in result["phases"].items():
        counts = part["counts"]
        assert counts["sent"] == counts["received"] == PRESSES, name
        assert counts["lost"] == 0 and counts["over_lte"] == 0, name
        assert counts["resident_told_help"] == PRESSES, name
        assert set(part["totals"]) == {"press_to_centre", "press_to_handled", "press_to_help"}, name
        assert set(part["hops"]) == {"unit_ack", "to_hubd", "store", "mqtt", "centre", "back"}, name
        assert all(set(s) == FIGURES for s in [*part["totals"].values(), *part["hops"].values()]), name
        assert {"seconds", "down_bytes_s", "up_bytes_s", "modem_holding"} == set(part["uplink"]), name
    streams = {name: part["stream"] for name, part in result["phases"].items()}
    assert streams["idle"] == {"published": 0, "requests": 0, "answers": 0, "answer_bytes": 0}
    assert streams["both"]["published"] > 0 and streams["both"]["answers"] > 0
    # The streams' bytes went through the modem's uplink socket, both ways.
    assert result["phases"]["both"]["uplink"]["down_bytes_s"] > 0
    assert result["phases"]["both"]["uplink"]["up_bytes_s"] > 0

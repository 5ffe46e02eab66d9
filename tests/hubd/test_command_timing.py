"""hubd's "command timing" (hubd/access/timing.py): the figures benchmarks/roundtrip.py and the
demo read, from the marks a command leaves as it passes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from hubd.access.timing import CommandTiming

ROOT = Path(__file__).resolve().parents[2]


def test_a_command_without_a_result_logs_no_timing() -> None:
    t = CommandTiming(mqtt_at=100.0, started=1.0, verified=1.002, recorded=1.005)
    assert t.log_fields() is None
    t.mark_sent()
    assert t.log_fields() is None, "sent, but the lock driver never answered"


def test_each_hop_is_the_time_between_two_marks_and_the_driver_says_its_share() -> None:
    t = CommandTiming(mqtt_at=100.0, started=1.0, verified=1.002, recorded=1.005)
    t.sent = 1.010
    t.mark_result(280.0, ble_requests_ms=250.0, ble_requests=3)
    t.result = 1.350
    f = t.log_fields(now=1.351)
    assert f is not None
    assert (f["verify_ms"], f["record_ms"], f["queue_ms"], f["operate_ms"], f["finish_ms"]) == \
        (2.0, 3.0, 5.0, 340.0, 1.0)
    assert (f["ble_ms"], f["ble_requests_ms"], f["ble_requests"], f["mqtt_at"]) == \
        (280.0, 250.0, 3, 100.0)
    assert "bridge_ms" not in f, "the bridge runs no lock driver: it has no share to report"
    json.dumps(f)  # a log line's fields


def test_the_benchmark_reads_every_hop_from_the_line(tmp_path: Path) -> None:
    # benchmarks/roundtrip.py's hops_of reads the log line hubd writes; a figure it misses is a
    # KeyError there, so the benchmark cannot print a hop hubd stopped reporting.
    t = CommandTiming(mqtt_at=100.0, started=1.0, verified=1.002, recorded=1.005)
    t.mark_sent()
    t.mark_result(5.5, ble_requests_ms=4.25, ble_requests=2)
    f = t.log_fields()
    assert f is not None
    log = tmp_path / "hubd.log"
    log.write_text(json.dumps({"msg": "command timing", "command_id": "c1", **f}) + "\n")
    hops, requests = _benchmark().hops_of({"c1": (99.999, f["answered_at"] + 0.002)}, log)
    assert all(len(values) == 1 for values in hops.values()), hops
    assert requests == {2: 1}
    assert hops["ble_requests"][0] + hops["ble_notify"][0] == pytest.approx(hops["ble"][0])


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_roundtrip", ROOT / "benchmarks" / "roundtrip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

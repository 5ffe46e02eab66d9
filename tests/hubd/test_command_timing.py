"""hubd's "command timing" (hubd/access/timing.py): the figures benchmarks/roundtrip.py and the
demo read, from the marks a command leaves as it passes."""

from __future__ import annotations

import json

from hubd.access.timing import CommandTiming


def test_a_command_without_a_result_logs_no_timing() -> None:
    t = CommandTiming(mqtt_at=100.0, started=1.0, verified=1.002, recorded=1.005)
    assert t.log_fields() is None
    t.mark_sent()
    assert t.log_fields() is None, "sent, but the bridge never answered"


def test_each_hop_is_the_time_between_two_marks_and_the_bridge_says_its_share() -> None:
    t = CommandTiming(mqtt_at=100.0, started=1.0, verified=1.002, recorded=1.005)
    t.sent, t.result = 1.010, 1.350
    t.bridge_ms, t.ble_ms = 300, 280
    f = t.log_fields(now=1.351)
    assert f is not None
    assert (f["verify_ms"], f["record_ms"], f["queue_ms"], f["bridge_rtt_ms"], f["finish_ms"]) == \
        (2.0, 3.0, 5.0, 340.0, 1.0)
    assert (f["bridge_ms"], f["ble_ms"], f["mqtt_at"]) == (300.0, 280.0, 100.0)
    json.dumps(f)  # a log line's fields


def test_the_benchmark_finds_every_figure_it_reads() -> None:
    # benchmarks/roundtrip.py's hops_of reads these keys from the log line.
    t = CommandTiming(mqtt_at=0.0, started=0.0, verified=0.0, recorded=0.0)
    t.mark_sent()
    t.mark_result(10, 5)
    f = t.log_fields()
    assert f is not None
    assert {"verify_ms", "record_ms", "queue_ms", "bridge_rtt_ms", "finish_ms", "bridge_ms",
            "ble_ms", "mqtt_at", "answered_at"} <= set(f)

"""Latency figures the benchmarks print and write: nearest-rank percentiles in milliseconds,
and when and where they were measured."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any


def measured_here() -> dict[str, Any]:
    """When (UTC) and on what machine a benchmark's figures were taken: its JSON's ``when`` and
    ``machine``."""
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "platform": platform.platform()}}


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values_s: list[float]) -> dict[str, float]:
    """n, p50, p90, p99, mean and max of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms), "max_ms": max(ms)}


def row(name: str, s: dict[str, float], width: int = 24) -> str:
    """One line of a printed table of :func:`summary` figures: the name, p50, p90, p99, max."""
    return (f"{name:<{width}}  {s['p50_ms']:8.1f} {s['p90_ms']:8.1f} {s['p99_ms']:8.1f} "
            f"{s['max_ms']:8.1f}  n={s['n']}")

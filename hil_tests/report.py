"""The hil run's ending: a readable summary of every scenario and a JSON report.

A pytest plugin (registered in the root conftest.py). For every scenario under hil_tests/ it
records the outcome (a skip with its reason, a failure with its first line), the time it took and
the target (`sim` or the bench's serial port), the seed of a scenario that drew random faults
(its ``seed`` property, see hil_tests/conftest.py ``fault_rng``), prints a table at the end of the run, and writes
the same as JSON to ``--hil-report`` (default ``build/hil-report.json``) for a bench log or CI.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "build" / "hil-report.json"
_STARTED = pytest.StashKey[float]()
_results: dict[str, dict[str, Any]] = {}  # nodeid -> its entry, in the order scenarios ran


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("hil").addoption(
        "--hil-report", default=str(DEFAULT_REPORT),
        help=f"where the hil scenarios' JSON report goes (default {DEFAULT_REPORT.relative_to(ROOT)})")


def pytest_configure(config: pytest.Config) -> None:
    _results.clear()
    config.stash[_STARTED] = time.time()


def _is_scenario(nodeid: str) -> bool:
    return nodeid.startswith("hil_tests/")


def _title(nodeid: str) -> str:
    """``hil_tests/test_alarms.py::test_a_press_reaches_...[x]`` -> ``alarms: a press reaches ... [x]``."""
    path, _, name = nodeid.partition("::")
    area = Path(path).stem.removeprefix("test_").replace("_", " ")
    base, _, param = name.partition("[")
    text = base.removeprefix("test_").replace("_", " ")
    return f"{area}: {text}" + (f" [{param}" if param else "")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _is_scenario(report.nodeid):
        return
    entry = _results.setdefault(report.nodeid, {"scenario": _title(report.nodeid), "nodeid": report.nodeid,
                                               "outcome": "passed", "duration_s": 0.0, "detail": None})
    entry["duration_s"] = round(entry["duration_s"] + report.duration, 2)
    if report.skipped:
        entry["outcome"] = "skipped"
        longrepr = report.longrepr
        entry["detail"] = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    elif report.failed:
        entry["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
        text = str(report.longrepr)
        line = next((ln.strip() for ln in text.splitlines() if ln.startswith("E ")), text.splitlines()[-1])
        entry["detail"] = line.removeprefix("E").strip()[:300]
    seed = dict(report.user_properties).get("seed")
    if seed is not None:
        entry["seed"] = seed
        if report.failed:
            entry["detail"] = f"{entry['detail']} [seed {seed}: replay with FAULT_SEED={seed}]"



def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _results:
        return
    target = config.getoption("--target", default="sim")
    scenarios = list(_results.values())
    counts: dict[str, int] = {}
    for s in scenarios:
        key = s["outcome"] if s["outcome"] in ("passed", "failed", "skipped") else "error"
        counts[key] = counts.get(key, 0) + 1
    tr = terminalreporter
    tr.section(f"hil scenarios against {target}")
    marks = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}
    for s in scenarios:
        tr.write_line(f"{marks.get(s['outcome'], 'ERR ')} {s['duration_s']:6.1f}s  {s['scenario']}")
        if s["detail"] and s["outcome"] != "passed":
            tr.write_line(f"{'':13}{s['detail']}")
    report = {
        "target": target,
        "bench_locks": config.getoption("--bench-locks", default=None) if target != "sim" else None,
        "started_at": config.stash[_STARTED],
        "finished_at": time.time(),
        "host": platform.node(),
        "counts": counts,
        "scenarios": scenarios,
    }
    path = Path(config.getoption("--hil-report"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        where = f"report: {path}"
    except OSError as exc:
        where = f"report NOT written to {path}: {exc}"
    tr.write_line(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"; {where}")

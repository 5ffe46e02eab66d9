"""hubctl's start: each hubctl is a process, and the suite runs ~140 of them. A command loads
its own modules when it runs; hubctl's command line alone loads none of hubd's models
(pydantic, hubd.config, ~0.4 s of a start on 2 cores), so build, flash and every --help start
without them. The bounds the command line checks before hubd is asked are hubd's
own (hubd.technician.limits, which hubd's request models check again)."""

from __future__ import annotations

import subprocess
import sys

import annotated_types

from hubd.technician import control, limits

# What only a command that asks hubd, or writes hubd's configuration, needs.
HEAVY = ("pydantic", "hubd.config", "hubapi.models", "hubd.technician.control", "mpremote", "serial")


def test_the_command_line_loads_none_of_hubds_models() -> None:
    probe = ("import sys; import hubctl.__main__; "
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    assert loaded == [], f"hubctl's command line imports {loaded} before any command runs"


def _bounds(model: type, field: str) -> tuple[object, object, object]:
    info = model.model_fields[field]  # type: ignore[attr-defined]
    ge = next(m.ge for m in info.metadata if isinstance(m, annotated_types.Ge))
    le = next(m.le for m in info.metadata if isinstance(m, annotated_types.Le))
    return info.default, ge, le


def test_the_command_lines_bounds_are_those_hubd_checks() -> None:
    assert _bounds(control.ScanRequest, "seconds") == (limits.SCAN_S, 1, limits.MAX_SCAN_S)
    assert _bounds(control.TestAlarmRequest, "timeout_s") == (
        limits.TEST_ALARM_WAIT_S, *limits.TEST_ALARM_WAIT_RANGE_S)

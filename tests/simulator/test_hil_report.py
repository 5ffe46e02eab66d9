"""The hil run's summary and JSON report (hil_tests/report.py), on a scenario file of its own run
by a separate pytest process."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_is_summarised_and_reported_with_its_outcome_and_reason(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.mkdir("hil_tests")
    pytester.path.joinpath("hil_tests", "test_door.py").write_text(
        "import pytest\n"
        "def test_the_nurse_gets_in():\n    assert True\n"
        "def test_nobody_else_gets_in():\n    assert 1 + 1 == 3, 'the door opened for a stranger'\n"
        "def test_needs_the_simulator():\n    pytest.skip('SKIPPED ON A REAL BRIDGE: needs the simulator')\n")
    pytester.path.joinpath("test_not_a_scenario.py").write_text("def test_unit():\n    pass\n")
    report = pytester.path / "out" / "hil.json"
    result = pytester.runpytest_subprocess("-p", "hil_tests.report", f"--hil-report={report}")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*hil scenarios against sim*",
        "ok  *door: the nurse gets in",
        "FAIL*door: nobody else gets in",
        "*the door opened for a stranger*",
        "skip*door: needs the simulator",
        "*SKIPPED ON A REAL BRIDGE: needs the simulator*",
        f"1 failed, 1 passed, 1 skipped; report: {report}",
    ])
    data = json.loads(report.read_text())
    assert data["target"] == "sim" and data["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    outcomes = {s["scenario"]: (s["outcome"], s["detail"]) for s in data["scenarios"]}
    assert outcomes["door: the nurse gets in"] == ("passed", None)
    assert outcomes["door: nobody else gets in"][0] == "failed"
    assert "the door opened for a stranger" in outcomes["door: nobody else gets in"][1]
    assert outcomes["door: needs the simulator"] == ("skipped", "Skipped: SKIPPED ON A REAL BRIDGE: needs the simulator")
    assert all(s["nodeid"].startswith("hil_tests/") for s in data["scenarios"]), "only scenarios"

"""The round-trip benchmark (benchmarks/roundtrip.py) runs end to end with a few commands, with
the firmware's lock driver and with hubd's through the Bluetooth proxy, and reports every hop of
each. Its figures are not asserted: speed is the benchmark's business, not a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "roundtrip.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}
COMMANDS = 4
COMMON = {"mqtt_in", "verify", "record", "queue", "ble", "finish", "mqtt_out"}
HOPS = {"bridge": COMMON | {"link", "bridge"},
        "hubd": COMMON | {"transport", "ble_requests", "ble_notify"}}


@pytest.fixture(scope="module", params=["bridge", "hubd"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[str, dict, str]:
    """One tiny run per lock driver: (the driver, its JSON, what it printed)."""
    driver = request.param
    out = tmp_path_factory.mktemp(f"roundtrip-{driver}") / "roundtrip.json"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--commands", str(COMMANDS),
                             "--lock-driver", driver, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark still stops hubd, the bridge and its broker
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark hung:\n{output}")
    assert proc.returncode == 0, output
    return driver, json.loads(out.read_text()), output


def test_a_tiny_run_times_every_command_and_each_hop_of_its_lock_driver(
        run: tuple[str, dict, str]) -> None:
    driver, result, output = run
    assert result["lock_driver"] == driver and result["commands"] == COMMANDS
    assert f"{COMMANDS}/{COMMANDS} commands" in output, "the progress line"
    assert result["accepted"]["n"] == result["succeeded"]["n"] == COMMANDS
    assert set(result["hops"]) == HOPS[driver]
    for hop, figures in result["hops"].items():
        assert set(figures) == FIGURES and figures["n"] == COMMANDS, hop


def test_through_the_proxy_each_command_waits_on_at_least_its_two_writes(
        run: tuple[str, dict, str]) -> None:
    driver, result, _ = run
    if driver != "hubd":
        assert "ble_requests_per_command" not in result, "the firmware's driver reports no requests"
        return
    per_command = {int(n): k for n, k in result["ble_requests_per_command"].items()}
    assert sum(per_command.values()) == COMMANDS
    assert min(per_command) >= 2, "CHALLENGE_REQUEST and COMMAND are two writes through the proxy"
    assert result["parts_of_ble"] == ["ble_requests", "ble_notify"]
    assert result["proxy_write_on_bridge"]["n"] >= 2 * COMMANDS, "every write timed on the line"

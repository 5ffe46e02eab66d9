"""The round-trip benchmark (benchmarks/roundtrip.py) runs end to end with a few commands, hubd's
lock driver through the Bluetooth proxy, and reports every hop; with ``--lock dkey --cold`` it
times the simulated dKey through py-dormakaba-dkey, each command on a new connection, and files
each round trip by the connection set-up it made. Its figures are not asserted: speed is the
benchmark's business, not a test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import ble_timing
from tests.benchmark_run import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "roundtrip.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}
COMMANDS = 4
HOPS = {"mqtt_in", "verify", "record", "queue", "transport", "ble", "ble_requests", "ble_notify",
        "finish", "mqtt_out"}


def tiny_run(tmp_path_factory: pytest.TempPathFactory, *options: str) -> tuple[dict, str]:
    """One tiny run: (its JSON, what it printed)."""
    out = tmp_path_factory.mktemp("roundtrip") / "roundtrip.json"
    return run_benchmark(SCRIPT, out, "--commands", str(COMMANDS), *options)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    return tiny_run(tmp_path_factory)


def test_a_tiny_run_times_every_command_and_each_hop(run: tuple[dict, str]) -> None:
    result, output = run
    assert result["lock_driver"] == "hubd" and result["commands"] == COMMANDS
    assert result["lock"] == "reference" and not result["cold"]
    assert sum(result["connects_per_command"].values()) == COMMANDS
    assert f"{COMMANDS}/{COMMANDS} commands" in output, "the progress line"
    assert result["accepted"]["n"] == result["succeeded"]["n"] == COMMANDS
    assert set(result["hops"]) == HOPS
    for hop, figures in result["hops"].items():
        assert set(figures) == FIGURES and figures["n"] == COMMANDS, hop


def test_through_the_proxy_each_command_waits_on_at_least_its_two_writes(
        run: tuple[dict, str]) -> None:
    result, _ = run
    per_command = {int(n): k for n, k in result["ble_requests_per_command"].items()}
    assert sum(per_command.values()) == COMMANDS
    assert min(per_command) >= 2, "CHALLENGE_REQUEST and COMMAND are two writes through the proxy"
    assert result["parts_of_ble"] == ["ble_requests", "ble_notify"]
    assert result["proxy_write_on_bridge"]["n"] >= 2 * COMMANDS, "every write timed on the line"


def test_a_tiny_dkey_run_on_new_connections_times_each_command_and_its_set_up(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fast air whatever SIM_BLE_TIMING says (the benchmark's home reads it when it is made):
    # --cold has the dKey end a link silent for 0.5 s (roundtrip.COLD_IDLE_S), counted from the
    # connection, and on the realistic air a dKey's first frame through the proxy comes later
    # than that (discovery, the bond's encryption, subscriptions), so every connection would be
    # dropped before its use. The nurse's wait on the realistic air is benchmarks/doorstep.py's.
    monkeypatch.setenv(ble_timing.ENV, "fast")
    result, output = tiny_run(tmp_path_factory, "--lock", "dkey", "--cold")
    assert result["lock"] == "dkey" and result["cold"] and result["commands"] == COMMANDS
    assert "the simulated dKey through py-dormakaba-dkey" in output
    assert f"{COMMANDS}/{COMMANDS} commands" in output
    assert result["accepted"]["n"] == result["succeeded"]["n"] == COMMANDS
    for hop in HOPS - {"ble_requests", "ble_notify"}:  # the driver's own figures, if it has them
        assert set(result["hops"][hop]) == FIGURES and result["hops"][hop]["n"] == COMMANDS, hop
    # Every command waited for hubd to drop the last connection: each made its own.
    per_command = {int(n): k for n, k in result["connects_per_command"].items()}
    assert sum(per_command.values()) == COMMANDS and min(per_command) >= 1, per_command
    assert result["succeeded_with_connection_setup"]["n"] == COMMANDS
    assert result["succeeded_on_held_connection"] is None
    assert "with a connection set-up" in output
    assert result["proxy_write_on_bridge"]["n"] >= 2 * COMMANDS, "the library's frames, timed"


def test_a_tiny_run_over_the_lte_uplink_times_every_command_through_the_modem(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    result, output = tiny_run(tmp_path_factory, "--uplink", "lte")
    assert result["uplink"] == "lte" and result["line_baud"] == 115200
    assert "the bridge's LTE modem" in output and "paced at 115200 baud" in output
    # The realistic LTE-M model's figures, as the run used them (simulator/lte_network.py).
    assert {"latency_s", "jitter_s", "up_bytes_s", "down_bytes_s", "loss", "rto_s"} <= set(result["lte_network"])
    assert result["lte_network"]["latency_s"] > 0
    assert f"{COMMANDS}/{COMMANDS} commands" in output
    assert result["accepted"]["n"] == result["succeeded"]["n"] == COMMANDS
    assert set(result["hops"]) == HOPS
    for hop, figures in result["hops"].items():
        assert set(figures) == FIGURES and figures["n"] == COMMANDS, hop


def test_the_default_run_says_its_path_is_broadband_and_its_line_unpaced(run: tuple[dict, str]) -> None:
    result, _ = run
    assert result["uplink"] == "broadband" and result["lte_network"] is None
    assert result["line_baud"] is None

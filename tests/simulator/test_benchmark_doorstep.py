"""The doorstep benchmark (benchmarks/doorstep.py) runs end to end on the realistic air with one
command, no warm-up, on a new connection: the reference lock through the bridge's Bluetooth
proxy. The dKey and the hub's own adapter run the same code with another lock and route; they
are the benchmark's runs, not the suite's (the suite's 8 minutes: the dKey on the adapter took
12-44 s, mostly waiting out each link). Its JSON has every
figure, the air's hops add up to the nurse's wait, and no hop is shorter than the air allows
(the realistic model is in force: a connection event per GATT exchange). How long things take
is the benchmark's business, not a test's: nothing here bounds a time from above."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_run import run_benchmark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "doorstep.py"
FIGURES = {"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}
COMMANDS = 1
HUBD_HOPS = {"mqtt_in", "verify", "record", "queue", "transport", "ble", "finish", "mqtt_out"}


def tiny_run(tmp_path_factory: pytest.TempPathFactory, *options: str) -> tuple[dict, str]:
    """One tiny run: (its JSON, what it printed)."""
    out = tmp_path_factory.mktemp("doorstep") / "doorstep.json"
    return run_benchmark(SCRIPT, out, "--commands", str(COMMANDS), "--warmup", "0", *options, timeout=300)


def check(result: dict, lock: str, via: str) -> dict:
    """The run's figures are all there and consistent; the run's entry."""
    assert result["timing"]["name"] == "realistic" and not result["timing"]["instant"]
    (run,) = result["runs"]
    assert (run["lock"], run["via"], run["held"]) == (lock, via, False)
    assert run["commands"] == COMMANDS
    for name in ("to_motor", "succeeded", "accepted"):
        assert set(run[name]) == FIGURES and run[name]["n"] == COMMANDS, name
    # Each command on a new connection: every one has its link's hops.
    assert set(run["air_hops"]) == {"to_link", "link_to_motor", "motor_to_final"}
    for hop, figures in run["air_hops"].items():
        assert set(figures) == FIGURES and figures["n"] == COMMANDS, hop
    assert HUBD_HOPS <= set(run["hubd_hops"])
    if via == "bridge":  # where the BLE time went: a connect and its writes each command
        requests = run["bridge_requests"]
        assert requests["ble_connect"]["per_command"] >= 1
        assert requests["ble_write"]["per_command"] >= 1
        for kind, figures in requests.items():
            assert set(figures["seconds_per_command"]) == FIGURES, kind
    else:
        assert run["bridge_requests"] is None
    hops = run["air_hops"]
    # The motor starts before the answer, which waits at least for its travel.
    assert run["to_motor"]["max_ms"] < run["succeeded"]["max_ms"]
    assert hops["motor_to_final"]["p50_ms"] >= run["travel_s"] * 1000
    # Never kinder than the air: from the connection to the motor, at least the connection's
    # first events and two ATT exchanges (each a request and its answer a connection event apart).
    interval_ms = result["timing"]["conn_interval_s"] * 1000
    assert hops["link_to_motor"]["p50_ms"] >= (result["timing"]["setup_events"] + 2) * interval_ms
    return run


@pytest.mark.long
def test_the_reference_lock_through_the_proxy(tmp_path_factory: pytest.TempPathFactory) -> None:
    result, output = tiny_run(tmp_path_factory, "--lock", "reference", "--via", "bridge")
    check(result, "reference", "bridge")
    assert f"{COMMANDS}/{COMMANDS} commands" in output and "to_motor" in output


@pytest.mark.long
def test_a_prepared_door_takes_the_tap_on_the_held_connection(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--prepared``: the backend's signed prepare before the tap; the tap finds the held
    connection (no connection of its own: no air hop to a link), the prepare's answer and figures
    are in the JSON."""
    result, output = tiny_run(tmp_path_factory, "--lock", "reference", "--via", "bridge", "--prepared",
                              "--prepare-lead", "0.5", "1")
    (run,) = result["runs"]
    assert (run["lock"], run["via"], run["prepared"]) == ("reference", "bridge", True)
    assert run["prepare_answers"] == {"succeeded": COMMANDS}, run["prepare_answers"]
    assert set(run["prepare"]) == FIGURES and run["prepare"]["n"] == COMMANDS
    assert run["taps_on_a_new_connection"] == 0, "the tap made a connection of its own"
    assert run["to_motor"]["n"] == COMMANDS and run["to_motor"]["max_ms"] < run["succeeded"]["max_ms"]
    assert run["prepare_lead_s"] == [0.5, 1.0]
    assert f"1/{COMMANDS}: prepare succeeded" in output

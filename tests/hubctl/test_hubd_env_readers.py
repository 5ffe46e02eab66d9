"""hubd.env has one reader (hubd/envfile.py) for everyone who reads it: hubd started by hand
(``--env-file``), hubctl doctor, hubctl provision and hub-sim's bench. A file systemd would read
differently is refused by each of them with the same line, so none of them checks hubd.toml
against an environment hubd.service would not get; and each leaves this process's environment as
it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubd import __main__ as hubd_main
from hubd.envfile import applied, environment
from simulator import bench
from tests.hubctl.test_hubctl_provision import Inputs, inputs  # noqa: F401 - the fixture
from tests.hubctl_cli import hubctl_in_process, one_error_line

# systemd skips this line ("Ignoring invalid environment assignment"): hubd would run without it.
BAD_NAME = "HUBD-MQTT-PASSWORD=secret\n"


def test_a_name_systemd_would_skip_is_refused_alike_by_hubd_doctor_provision_and_hub_sim(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    toml, env = etc / "hubd.toml", etc / "hubd.env"
    toml.write_text('hub_id = "hub-env"\n')
    env.write_text(f'HUBD_MQTT__USERNAME="hub-env"\n{BAD_NAME}')
    refusal = (f"environment file {env}: 'HUBD-MQTT-PASSWORD' is not a variable name (systemd "
               'would skip the line): fix the line, e.g. HUBD_MQTT__PASSWORD="..."')
    before = dict(os.environ)

    assert hubd_main.main(["--config", str(toml), "--env-file", str(env)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"hubd: {refusal}"]

    doctor = hubctl_in_process("doctor", "--config", toml)
    assert doctor.returncode == 1
    loads = next(line for line in doctor.stdout.splitlines() if "configuration loads" in line)
    assert loads == f"✗ configuration loads: {refusal}", doctor.stdout

    provision = hubctl_in_process("provision", "--etc-dir", etc)
    assert one_error_line(provision) == f"hubctl: error: {refusal}"

    with pytest.raises(bench.BenchError) as sim:
        bench.read_hubd_config(toml)
    assert str(sim.value) == refusal

    assert dict(os.environ) == before
    assert env.read_text().endswith(BAD_NAME), "a refused file is left as it was"


def test_the_files_values_win_while_applied_and_the_callers_are_back_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "hubd.env"
    env.write_text('HUBD_MQTT__PASSWORD="from the file"\nHUBD_MQTT__USERNAME=hub\n')
    monkeypatch.setenv("HUBD_MQTT__PASSWORD", "the shell's")
    monkeypatch.setenv("HUBD_MQTT__HOST", "the shell's host")
    before = dict(os.environ)

    with applied(env) as replaced:  # hubd by hand, hub-sim: the shell's others stay
        assert replaced == ["HUBD_MQTT__PASSWORD"]
        assert os.environ["HUBD_MQTT__PASSWORD"] == "from the file"
        assert os.environ["HUBD_MQTT__HOST"] == "the shell's host"
    assert dict(os.environ) == before

    with applied(env, aside="HUBD_"):  # doctor, provision: as hubd.service gets it, none of the shell's
        assert "HUBD_MQTT__HOST" not in os.environ
        assert {k: v for k, v in os.environ.items() if k.startswith("HUBD_")} == {
            "HUBD_MQTT__PASSWORD": "from the file", "HUBD_MQTT__USERNAME": "hub"}
    assert dict(os.environ) == before

    with applied(tmp_path / "nothing.env", missing_ok=True, aside="HUBD_") as replaced:
        assert replaced == [] and not [k for k in os.environ if k.startswith("HUBD_")]
    with pytest.raises(RuntimeError), environment({"HUBD_X": "1"}):
        raise RuntimeError("a failure inside the block")
    assert dict(os.environ) == before


def test_the_doctor_looks_for_hubd_where_hubd_env_puts_its_socket(inputs: Inputs, short_dir: Path) -> None:
    """hubd serves its socket where hubd.toml and hubd.env say together; the doctor reads both
    (hubctl status cannot read hubd.env, root's) and looks there, naming where it came from."""
    assert hubctl_in_process("provision", *inputs.args()).returncode == 0
    socket = short_dir / "elsewhere.sock"
    env = inputs.etc / "hubd.env"
    env.write_text(env.read_text() + f"HUBD_STATUS_SOCKET={socket}\n")
    doctor = hubctl_in_process("doctor", "--config", inputs.etc / "hubd.toml")
    running = next(line for line in doctor.stdout.splitlines() if "hubd running" in line)
    assert str(socket) in running and f"HUBD_STATUS_SOCKET in {env}" in running, doctor.stdout

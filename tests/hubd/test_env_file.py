"""hubd started by hand as under systemd: ``--env-file`` reads hubd.env by systemd's
EnvironmentFile= rules (hubd/envfile.py), its values winning over the caller's; a hubd started
without it is told where its broker password is before the broker refuses it. hubd itself as a
process, with a real Mosquitto that asks for a password and a pty for the bridge's port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Callable
from pathlib import Path

import pytest

from hubd import __main__ as hubd_main
from hubd.envfile import env_line, parse_env_file
from tests.fixtures import LINK_KEY, BackendKey
from tests.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "hub-env"
# Everything systemd's double quotes must carry through: a quote, a backslash, $ and a backtick.
PASSWORD = 'pa"ss\\wo$rd`1 '


def hubd_toml(path: Path, broker: Mosquitto, port: str, key: BackendKey) -> Path:
    """hubd.toml as provision writes it: no secret in it."""
    path.write_text(f'hub_id = "{HUB_ID}"\nstate_dir = "{path.parent / "state"}"\n'
                    f'status_socket = "{path.parent / "status.sock"}"\n'
                    f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "{HUB_ID}"\n'
                    f'[serial]\nport = "{port}"\n[keys]\n"{key.kid}" = "{key.public_text}"\n')
    return path


def log_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def run_until(args: list[str], env: dict[str, str], log: Path,
              seen: Callable[[list[dict[str, object]]], bool]) -> list[dict[str, object]]:
    """hubd with ``args`` until its log shows ``seen``; then SIGTERM, and its whole log."""
    with log.open("wb") as out:
        hubd = subprocess.Popen([sys.executable, "-m", "hubd", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a hang guard, not a speed bound
        while not seen(log_of(log)):
            assert hubd.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        hubd.send_signal(signal.SIGTERM)
        assert hubd.wait(30) == 0, log.read_text()
    finally:
        if hubd.poll() is None:
            hubd.kill()
            hubd.wait()
    return log_of(log)


def messages(lines: list[dict[str, object]]) -> str:
    return "\n".join(str(line["msg"]) for line in lines)


def test_hubd_by_hand_reads_hubd_env_as_systemd_does_and_says_where_the_password_is(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], backend_key: BackendKey) -> None:
    broker = mosquitto_factory(passwords={HUB_ID: PASSWORD})
    master, slave = os.openpty()  # the bridge's port; no bridge answers, hubd serves anyway
    tty.setraw(master)
    try:
        config = hubd_toml(tmp_path / "hubd.toml", broker, os.ttyname(slave), backend_key)
        env_file = tmp_path / "hubd.env"
        env_file.write_text("# hubd's secrets\n; as provision writes them\n"
                            + env_line("HUBD_MQTT__PASSWORD", PASSWORD) + "\n"
                            + env_line("HUBD_SERIAL__LINK_KEY", LINK_KEY.hex()) + "\n")
        assert parse_env_file(env_file.read_text())["HUBD_MQTT__PASSWORD"] == PASSWORD
        shell = {k: v for k, v in os.environ.items() if not k.startswith("HUBD_")}

        # As hub-sim's hint started it: the link key in the shell, hubd.env not read.
        lines = run_until(["--config", str(config)],
                          {**shell, "HUBD_SERIAL__LINK_KEY": LINK_KEY.hex()}, tmp_path / "a.log",
                          lambda log: "broker refused the connection" in messages(log))
        warning = next(line for line in lines if "no broker password" in str(line["msg"]))
        assert warning["level"] == "WARNING"
        assert "hubd.env" in str(warning["msg"]) and "--env-file /etc/hubd/hubd.env" in str(warning["msg"])
        assert "connected to" not in messages(lines)

        # By hand with --env-file: the file's link key replaces the shell's, as systemd's
        # EnvironmentFile= would, and the password in it logs in.
        lines = run_until(["--config", str(config), "--env-file", str(env_file)],
                          {**shell, "HUBD_SERIAL__LINK_KEY": "ab" * 32}, tmp_path / "b.log",
                          lambda log: "connected to" in messages(log))
        text = messages(lines)
        assert f"HUBD_SERIAL__LINK_KEY of the environment replaced by {env_file}'s" in text
        assert "no broker password" not in text and "broker refused" not in text
        assert PASSWORD not in (tmp_path / "b.log").read_text() and "ab" * 32 not in text
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize(("content", "expected"), [
    (None, "does not exist: hubctl provision writes it"),
    ("dir", "is a directory"),
    (b"HUBD_MQTT__PASSWORD=\xff\xfe\n", "is not UTF-8 text"),
    (b"HUBD-MQTT-PASSWORD=x\n", "'HUBD-MQTT-PASSWORD' is not a variable name (systemd would skip"),
], ids=["missing", "directory", "binary", "bad-name"])
def test_an_environment_file_hubd_cannot_use_is_one_line_and_exit_status_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | str | None,
        expected: str) -> None:
    path = tmp_path / "hubd.env"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    before = dict(os.environ)
    assert hubd_main.main(["--config", str(tmp_path / "hubd.toml"), "--env-file", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hubd: environment file {path}"), lines
    assert expected in lines[0]
    assert dict(os.environ) == before


def test_a_missing_link_key_names_hubd_env_and_the_flag(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         backend_key: BackendKey) -> None:
    config = tmp_path / "hubd.toml"
    config.write_text(f'hub_id = "{HUB_ID}"\nstate_dir = "{tmp_path}"\n'
                      f'[keys]\n"{backend_key.kid}" = "{backend_key.public_text}"\n')
    assert hubd_main.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "serial.link_key is missing: it is a secret, HUBD_SERIAL__LINK_KEY in hubd.env" in err
    assert "hubd --env-file /etc/hubd/hubd.env" in err

"""`hubctl provision`: the hub's configuration from the technician's flags.

The command runs as the technician runs it (`.venv/bin/hubctl`, a subprocess), but for the thirty
refusals of bad flags, which run hubctl's own main() in-process (tests.hubctl_cli.hubctl_in_process:
the same status, output and error line, without thirty interpreter start-ups). What it writes is
read back by hubd's own config loader and the bridge firmware's own parser. End to end, it starts
hubd against a password-protected Mosquitto together with the simulated bridge (whose second path
reaches a real DC-09 receiver with the provisioned account and key), and hubd alone over TLS with
the provisioned client certificate.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import pwd
import re
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from hubapi import topics
from hubapi.client import BackendClient
from hubd.envfile import env_line, parse_env_file
from hubd.config import load_config
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome
from tests.fixtures import BackendKey
from tests.sia_receiver import ACCOUNT, Receiver
from tests.mosquitto import TlsListener
from tests.tls import TestCA
from wire import alarms
from hil_tests.harness import start_hubd, stop_hubd
from tests.hubctl_cli import hubctl, hubctl_in_process, one_error_line

ROOT = Path(__file__).resolve().parents[2]
HUB = "hub-0042"
# Every character systemd's EnvironmentFile quoting cares about, and a space at the end.
PASSWORD = "pa$$ \"w`o\\rd' #1 "
DC09_KEY = "F00DCAFE12345678"  # pysiaalarm takes 16 hex characters as the key bytes
LOCK_SECRET = "ab" * 32




@dataclass
class Inputs:
    """What the technician brings: key files, the password file, the DC-09 key."""

    dir: Path
    etc: Path
    state: Path
    backend: BackendKey
    backend_pub: Path
    password: Path
    dc09_key: Path

    def args(self, **override: str | Path | None) -> list[str | Path]:
        """A whole first provision; ``override`` replaces flags (None drops one)."""
        flags: dict[str, str | Path | None] = {
            "--etc-dir": self.etc, "--state-dir": self.state, "--hub-id": HUB,
            "--broker": "mqtt://127.0.0.1:1883", "--password-file": self.password,
            "--backend-key": f"{self.backend.kid}={self.backend_pub}",
            "--alarm-account": ACCOUNT, "--dc09-receiver": "127.0.0.1:12000",
            "--dc09-key-file": self.dc09_key, "--dc09-receiver-number": "1", "--dc09-line": "1",
            "--apn": "internet.m2m", "--resident": "resident-208", "--serial": "/dev/ttyUSB0",
        }
        flags.update({k if k.startswith("--") else "--" + k.replace("_", "-"): v
                      for k, v in override.items()})
        return [x for k, v in flags.items() if v is not None for x in (k, v)]


@pytest.fixture
def inputs(tmp_path: Path, backend_key: BackendKey) -> Inputs:
    given = tmp_path / "given"
    given.mkdir()
    pub = given / "backend.pub"
    pub.write_text(backend_key.public_text + "\n")
    password = given / "hub.pw"
    password.write_text(PASSWORD + "\n")
    dc09 = given / "dc09.key"
    dc09.write_text(DC09_KEY + "\n")
    return Inputs(given, tmp_path / "etc", tmp_path / "state", backend_key, pub, password, dc09)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hubd_sees(etc: Path):
    """hubd's configuration as hubd reads it under systemd: the file plus hubd.env's values."""
    env = parse_env_file((etc / "hubd.env").read_text())
    mp = pytest.MonkeyPatch()
    try:
        for name, value in env.items():
            mp.setenv(name, value)
        return load_config(etc / "hubd.toml")
    finally:
        mp.undo()


def firmware_parse(path: Path) -> dict:
    from hubctl.bundle import firmware_config
    return firmware_config().parse(json.loads(path.read_text()))


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# --- what it writes ------------------------------------------------------------------------------


def test_provision_writes_hubd_toml_env_and_bridge_json_each_with_its_mode(inputs: Inputs) -> None:
    proc = hubctl("provision", *inputs.args())
    assert proc.returncode == 0, proc.stderr
    etc = inputs.etc
    assert sorted(p.name for p in files_under(etc)) == ["bridge.json", "hubd.env", "hubd.toml"]
    assert (mode(etc / "hubd.toml"), mode(etc / "hubd.env"), mode(etc / "bridge.json")) == \
        (0o644, 0o600, 0o600)
    assert not list(etc.glob(".*")), "no temporary file is left behind"

    config = hubd_sees(etc)
    assert (config.hub_id, config.state_dir, config.serial.port) == (HUB, inputs.state, "/dev/ttyUSB0")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert config.mqtt.username == HUB and config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == PASSWORD
    assert set(config.public_keys()) == {inputs.backend.kid}
    assert config.alarms.resident == "resident-208"
    assert config.locks == {}, "a hub is provisioned before any lock is paired"
    assert "password" not in (etc / "hubd.toml").read_text()
    env_lines = (etc / "hubd.env").read_text().splitlines()
    assert env_line("HUBD_MQTT__PASSWORD", PASSWORD) in env_lines

    bridge = firmware_parse(etc / "bridge.json")
    assert "locks" not in json.loads((etc / "bridge.json").read_text()), "hubd drives the locks"
    assert (bridge["link"]["uart"], bridge["link"]["baudrate"]) == (1, 115200)
    # The serial link's key: made once, the same for hubd and the bridge, in no file others read.
    assert config.serial.key == bridge["link"]["key"] and len(config.serial.key) == 32
    assert env_line("HUBD_SERIAL__LINK_KEY", config.serial.key.hex()) in env_lines
    assert config.serial.key.hex() not in (etc / "hubd.toml").read_text() + proc.stdout + proc.stderr
    assert "a new serial link key was made: the bridge must be flashed with this bridge.json" in proc.stdout
    assert bridge["alarm_unit"]["uart"] == 2
    lte = bridge["lte"]
    assert (lte["apn"], lte["host"], lte["port"], lte["account"], lte["receiver"], lte["line"],
            lte["key"]) == ("internet.m2m", "127.0.0.1", 12000, ACCOUNT, "1", "1", DC09_KEY)

    assert "password set (hubd.env, 0600)" in proc.stdout
    assert "AES key set (bridge.json, 0600)" in proc.stdout
    for path in (etc / "hubd.toml", etc / "hubd.env", etc / "bridge.json"):
        assert str(path) in proc.stdout


def test_the_env_file_uses_systemds_double_quoting_so_any_printable_password_survives() -> None:
    # systemd src/basic/env-file.c: inside "...", a backslash makes " \ ` $ literal; nothing else
    # is special (no variable expansion in an EnvironmentFile).
    line = env_line("HUBD_MQTT__PASSWORD", PASSWORD)
    assert line == 'HUBD_MQTT__PASSWORD="pa\\$\\$ \\"w\\`o\\\\rd\' #1 "'
    assert parse_env_file(f"# comment\n{line}\n") == {"HUBD_MQTT__PASSWORD": PASSWORD}
    assert parse_env_file("A=plain value  \nB='single $x'\n; other comment\n") == \
        {"A": "plain value", "B": "single $x"}


def test_a_client_certificate_goes_under_tls_with_the_key_0600_for_the_user_hubd_runs_as(
        inputs: Inputs, test_ca: TestCA) -> None:
    client = test_ca.issue_client(HUB)
    me = pwd.getpwuid(os.geteuid()).pw_name
    proc = hubctl("provision", *inputs.args(
        broker="mqtts://broker.kommune.example", password_file=None, client_cert=client.cert,
        client_key=client.key, ca=test_ca.ca_file, service_user=me))
    assert proc.returncode == 0, proc.stderr
    tls = inputs.etc / "tls"
    assert (mode(tls / "ca.pem"), mode(tls / "client.crt"), mode(tls / "client.key")) == \
        (0o644, 0o644, 0o600)
    assert (tls / "client.key").stat().st_uid == os.geteuid()
    assert (tls / "client.key").read_bytes() == client.key.read_bytes()
    config = hubd_sees(inputs.etc)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.kommune.example", 8883, True)
    assert (config.mqtt.ca_file, config.mqtt.cert_file, config.mqtt.key_file) == \
        (tls / "ca.pem", tls / "client.crt", tls / "client.key")
    assert config.mqtt.username is None and config.mqtt.password is None
    assert "HUBD_MQTT__PASSWORD" not in parse_env_file((inputs.etc / "hubd.env").read_text())
    assert f"CA {tls / 'ca.pem'}, login client certificate {tls / 'client.crt'}" in proc.stdout
    assert f"{tls / 'client.key'} (0600, owner {me}): its private key" in proc.stdout


def test_as_root_the_client_key_needs_the_user_hubd_runs_as(inputs: Inputs, test_ca: TestCA) -> None:
    client = test_ca.issue_client(HUB)
    proc = hubctl("provision", *inputs.args(
        broker="mqtts://broker.kommune.example", password_file=None, client_cert=client.cert,
        client_key=client.key, service_user="no-such-hubd-user"))
    if os.geteuid() == 0:
        line = one_error_line(proc)
        assert "'--service-user'" in line and "useradd" in line
        assert not inputs.etc.exists() or not files_under(inputs.etc)
    else:  # not root: the key stays the technician's, who runs hubd
        assert proc.returncode == 0, proc.stderr


def test_no_secret_appears_in_any_output_or_in_a_file_others_can_read(
        inputs: Inputs, test_ca: TestCA) -> None:
    outputs = [hubctl("provision", *inputs.args())]
    bridge = inputs.etc / "bridge.json"
    paired = json.loads(bridge.read_text())
    paired["locks"] = [{"id": "front-door", "kind": "inside_turner", "protocol": "reference",
                        "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": LOCK_SECRET}]
    bridge.write_text(json.dumps(paired))
    outputs.append(hubctl("provision", "--etc-dir", inputs.etc, "--apn", "other.apn"))
    assert LOCK_SECRET not in bridge.read_text(), "an older release's lock secret is removed"
    # Refusals, with the secrets given, say nothing of them either.
    outputs.append(hubctl("provision", *inputs.args(apn="bad apn!")))
    outputs.append(hubctl("provision", *inputs.args(broker=f"mqtt://{HUB}:{PASSWORD}@host")))
    client = test_ca.issue_client(HUB)
    me = pwd.getpwuid(os.geteuid()).pw_name
    outputs.append(hubctl("provision", *inputs.args(
        broker="mqtts://127.0.0.1", password_file=None, client_cert=client.cert,
        client_key=client.key, service_user=me)))
    outputs.append(hubctl("provision", *inputs.args(  # a key that is not the certificate's
        broker="mqtts://127.0.0.1", password_file=None, client_cert=client.cert,
        client_key=test_ca.issue_client("other").key, service_user=me)))
    assert [p.returncode for p in outputs] == [0, 0, 2, 2, 0, 2]

    key_lines = [ln for ln in client.key.read_text().splitlines() if "-----" not in ln]
    secrets = [PASSWORD, DC09_KEY, LOCK_SECRET, *key_lines]
    for proc in outputs:
        for secret in secrets:
            assert secret not in proc.stdout + proc.stderr
    for path in files_under(inputs.etc):
        if mode(path) & 0o077:
            text = path.read_text()
            for secret in secrets:
                assert secret not in text, f"{path} ({mode(path):04o}) holds a secret"


# --- a second run ------------------------------------------------------------------------------


def test_a_rerun_keeps_the_paired_locks_and_changes_only_what_was_given(inputs: Inputs) -> None:
    assert hubctl("provision", *inputs.args()).returncode == 0
    toml_path, bridge_path = inputs.etc / "hubd.toml", inputs.etc / "bridge.json"
    # What hubctl pair and a hand edit add afterwards.
    hub = tomllib.loads(toml_path.read_text())
    hub["locks"] = {"front-door": "inside_turner"}
    hub["log_level"] = "DEBUG"
    toml_path.write_text(tomli_w.dumps(hub))
    before = hubd_sees(inputs.etc)
    before_bridge = firmware_parse(bridge_path)

    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--apn", "telenor.m2m",
                             "--broker", "mqtt://broker.kommune.example:1884")
    assert proc.returncode == 0, proc.stderr
    after = hubd_sees(inputs.etc)
    after_bridge = firmware_parse(bridge_path)
    assert after.locks == {"front-door": "inside_turner"} and after.log_level == "DEBUG"
    assert (after.mqtt.host, after.mqtt.port) == ("broker.kommune.example", 1884)
    assert after.mqtt.password is not None and after.mqtt.password.get_secret_value() == PASSWORD
    assert after.model_dump(exclude={"mqtt"}) == before.model_dump(exclude={"mqtt"})
    assert after_bridge["lte"]["apn"] == "telenor.m2m"
    assert {k: v for k, v in after_bridge["lte"].items() if k != "apn"} == \
        {k: v for k, v in before_bridge["lte"].items() if k != "apn"}
    assert "locks front-door" in proc.stdout
    assert (mode(inputs.etc / "hubd.env"), mode(bridge_path)) == (0o600, 0o600)
    assert after.serial.key == before.serial.key == after_bridge["link"]["key"]
    assert "serial link key: kept" in proc.stdout and "must be flashed" not in proc.stdout
    assert "removed" not in proc.stdout, "nothing of an older release to remove"
    # Not /etc/hubd: hubd.service does not read these files; hubd by hand does, with hubd.env.
    etc = inputs.etc.absolute()
    assert proc.stdout.strip().splitlines()[-1] == (
        f"next: hubctl flash ... --config {etc}/bridge.json; hubd --config {etc}/hubd.toml "
        f"--env-file {etc}/hubd.env (stop the one running on them first); hubctl doctor --config "
        f"{etc}/hubd.toml (it logs in to the broker through LTE)")


def test_next_steps_name_systemd_for_etc_hubd_and_hubd_by_hand_for_any_other_directory() -> None:
    from hubctl import service

    assert service.run_hubd(Path("/etc/hubd")) == "systemctl restart hubd"
    assert service.run_hubd(Path("/etc/hubd/"), "start") == "systemctl start hubd"
    assert service.doctor_command(Path("/etc/hubd")) == "hubctl doctor"
    assert service.stop_hubd(Path("/etc/hubd")) == "systemctl disable --now hubd"
    bench = Path("/home/tech/bench/etc")
    assert service.run_hubd(bench, "start") == (
        "hubd --config /home/tech/bench/etc/hubd.toml --env-file /home/tech/bench/etc/hubd.env")
    assert "systemctl" not in service.stop_hubd(bench) + service.doctor_command(bench)
    # A line written for hubd.service, said for each (hubctl doctor's fixes, hubd not running):
    line = "hubd is not running: systemctl start hubd (journalctl -u hubd says why it stopped)"
    assert service.for_etc(line, Path("/etc/hubd")) == line
    assert service.for_etc(line, bench) == (
        "hubd is not running: hubd --config /home/tech/bench/etc/hubd.toml --env-file "
        "/home/tech/bench/etc/hubd.env (its output says why it stopped)")
    assert "systemctl" not in service.for_etc(
        "systemctl stop hubd; flash; systemctl start hubd; systemctl restart hubd", bench)


# Where the lines hubctl says for a configuration come from: hubd's answers and refusals and
# control.ask's own (hubctl.reach says them all), doctor's checks, pairing's steps.
_SAID_FOR_ETC = (*sorted((ROOT / "hubd").rglob("*.py")),
                 *(ROOT / "hubctl" / name for name in ("doctor.py", "reach.py", "pairing.py")))


def _unit_sentences(path: Path) -> list[tuple[int, str]]:
    """The string literals of ``path`` that name hubd.service's tools (systemctl, journalctl),
    docstrings left out; an f-string as its text with ``{}`` for each value put in, so a
    sentence that puts a value inside a step (``systemctl {verb} hubd``) is seen as it is."""
    source = path.read_text()
    if "systemctl" not in source and "journalctl" not in source:
        return []
    tree = ast.parse(source)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)}
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docs | parts:
            text = node.value
        else:
            continue
        if "systemctl" in text or "journalctl" in text:
            found.append((node.lineno, text))
    return found


def test_every_line_naming_hubd_service_is_said_for_a_bench_by_hand() -> None:
    """service.for_etc rewrites hubd.service's steps into hubd by hand for a bench, sentence
    by sentence: a new or reworded sentence it does not know would tell a bench technician to run
    systemctl on a hubd that systemd does not run. Each such sentence hubctl can print is
    pinned here: reword one, and this names it."""
    from hubctl import service

    bench = Path("/home/tech/bench/etc")
    sentences = [(path.relative_to(ROOT), line, text) for path in _SAID_FOR_ETC
                 for line, text in _unit_sentences(path)]
    assert len({str(path) for path, _, _ in sentences}) >= 4, sentences  # control, status socket, doctor...
    said = [(path, line, service.for_etc(text, bench)) for path, line, text in sentences]
    left = [f"{path}:{line}: {text!r}" for path, line, text in said
            if "systemctl" in text or "journalctl" in text]
    assert not left, "for_etc leaves hubd.service's steps in (add the sentence to it):\n" + "\n".join(left)
    assert all(service.for_etc(text, Path("/etc/hubd")) == text for _, _, text in sentences)


def test_outside_etc_hubd_hubds_status_socket_goes_beside_hubd_toml_and_a_hand_set_one_stays(
        inputs: Inputs) -> None:
    # hubd by hand (a bench) cannot make /run/hubd, which is hubd.service's: its socket goes where
    # hubctl finds it by hubd.toml alone (hubctl status --config, pair --etc-dir).
    assert hubctl_in_process("provision", *inputs.args()).returncode == 0
    toml_path = inputs.etc / "hubd.toml"
    assert hubd_sees(inputs.etc).status_socket == inputs.etc.absolute() / "status.sock"
    hub = tomllib.loads(toml_path.read_text())
    hub["status_socket"] = "/run/user/1000/hubd.sock"
    toml_path.write_text(tomli_w.dumps(hub))
    assert hubctl_in_process("provision", "--etc-dir", inputs.etc, "--apn", "telenor.m2m").returncode == 0
    assert hubd_sees(inputs.etc).status_socket == Path("/run/user/1000/hubd.sock")


@pytest.mark.parametrize("driver", ["bridge", "hubd"])
def test_a_rerun_on_an_older_releases_files_removes_the_bridges_lock_drivers_and_says_what_next(
        inputs: Inputs, driver: str) -> None:
    # An older release: the bridge drove the locks (their secrets in bridge.json) or hubd did.
    assert hubctl("provision", *inputs.args()).returncode == 0
    toml_path, bridge_path = inputs.etc / "hubd.toml", inputs.etc / "bridge.json"
    hub = tomllib.loads(toml_path.read_text())
    hub["locks"] = {"front-door": "inside_turner"}
    hub["lock_driver"] = driver
    toml_path.write_text(tomli_w.dumps(hub))
    bridge = json.loads(bridge_path.read_text())
    if driver == "bridge":
        bridge["locks"] = [{"id": "front-door", "kind": "inside_turner", "protocol": "reference",
                            "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": LOCK_SECRET}]
    bridge["policy"] = {"poll_ms": 600000}
    bridge_path.write_text(json.dumps(bridge))

    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = hubd_sees(inputs.etc)
    assert after.locks == {"front-door": "inside_turner"} and after.upgrade_notes == []
    assert "lock_driver" not in toml_path.read_text()
    left = json.loads(bridge_path.read_text())
    assert "locks" not in left and "policy" not in left
    assert LOCK_SECRET not in bridge_path.read_text() + proc.stdout + proc.stderr
    assert "lock_driver removed" in proc.stdout
    if driver == "bridge":
        assert "locks and policy removed" in proc.stdout
        assert "the bridge drove front-door: pair each again with hubctl pair" in proc.stdout
    else:
        assert "policy removed" in proc.stdout and "pair each again" not in proc.stdout


def test_the_alarm_unit_serial_pins_the_bridge_to_that_unit(inputs: Inputs) -> None:
    proc = hubctl("provision", *inputs.args())
    assert "serial not pinned (give --alarm-unit-serial)" in proc.stdout
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--alarm-unit-serial", "5a0000ab")
    assert proc.returncode == 0, proc.stderr
    assert firmware_parse(inputs.etc / "bridge.json")["alarm_unit"]["serial"] == 0x5A0000AB
    assert "alarm unit on UART 2, serial 5A0000AB" in proc.stdout


def test_a_rerun_gives_a_bridge_json_with_another_link_key_hubds_and_says_to_flash(inputs: Inputs) -> None:
    assert hubctl("provision", *inputs.args()).returncode == 0
    bridge_path = inputs.etc / "bridge.json"
    hubs = hubd_sees(inputs.etc).serial.key
    bridge = json.loads(bridge_path.read_text())
    bridge["link"]["key"] = "77" * 32  # e.g. a bridge.json copied from another hub
    bridge_path.write_text(json.dumps(bridge))
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(bridge_path.read_text())["link"]["key"] == hubs.hex()
    assert hubd_sees(inputs.etc).serial.key == hubs
    assert "the bridge's link key differed from hubd's and is now hubd's" in proc.stdout
    assert "must be flashed" in proc.stdout
    assert "77" * 32 not in proc.stdout and hubs.hex() not in proc.stdout


def test_a_rerun_moves_a_password_written_into_hubd_toml_by_hand_into_hubd_env(
        inputs: Inputs) -> None:
    assert hubctl("provision", *inputs.args(password_file=None)).returncode == 0
    toml_path = inputs.etc / "hubd.toml"
    hub = tomllib.loads(toml_path.read_text())
    hub["mqtt"].update(username=HUB, password=PASSWORD)
    toml_path.write_text(tomli_w.dumps(hub))
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc)
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in toml_path.read_text() + proc.stdout
    config = hubd_sees(inputs.etc)
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == PASSWORD
    assert mode(inputs.etc / "hubd.env") == 0o600


def test_a_rerun_can_switch_the_login_from_a_password_to_a_certificate(
        inputs: Inputs, test_ca: TestCA) -> None:
    assert hubctl("provision", *inputs.args()).returncode == 0
    client = test_ca.issue_client(HUB)
    me = pwd.getpwuid(os.geteuid()).pw_name
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--broker", "mqtts://127.0.0.1:8883",
                             "--client-cert", client.cert, "--client-key", client.key, "--service-user", me)
    assert proc.returncode == 0, proc.stderr
    config = hubd_sees(inputs.etc)
    assert config.mqtt.cert_file == inputs.etc / "tls" / "client.crt"
    assert config.mqtt.username is None and config.mqtt.password is None


# --- refusals ------------------------------------------------------------------------------------


def _bad_inputs(i: Inputs, ca: TestCA) -> dict[str, tuple[dict[str, str | Path | None], str]]:
    two_lines = i.dir / "two-lines.pw"
    two_lines.write_text("first\nsecond\n")
    short_key = i.dir / "short.key"
    short_key.write_text("0123456789\n")
    private = i.dir / "backend.pem"
    from hubapi import signing
    private.write_bytes(signing.private_key_pem(i.backend.private))
    garbage = i.dir / "garbage.pub"
    garbage.write_text("not a key\n")
    not_ca = i.dir / "not-ca.pem"
    not_ca.write_text("hello\n")
    other = ca.issue_client("hub-0041")
    return {
        "hub id": ({"--hub-id": "hub 42!"}, "--hub-id"),
        "reserved hub id": ({"--hub-id": "backend"}, "--hub-id"),
        "broker scheme": ({"--broker": "http://broker:1883"}, "--broker"),
        "broker port": ({"--broker": "mqtt://broker:99999"}, "--broker"),
        "broker path": ({"--broker": "mqtt://broker:1883/x"}, "--broker"),
        "password file missing": ({"--password-file": i.dir / "nope"}, "--password-file"),
        "password on two lines": ({"--password-file": two_lines}, "--password-file"),
        "username not the hub id": ({"--username": "someone"}, "--username"),
        "password and certificate": ({"--client-cert": ca.ca_file, "--client-key": ca.ca_file},
                                     "--client-cert"),
        "certificate without key": ({"--password-file": None, "--broker": "mqtts://b",
                                     "--client-cert": other.cert}, "--client-key"),
        "certificate of another hub": ({"--password-file": None, "--broker": "mqtts://b",
                                        "--client-cert": other.cert, "--client-key": other.key},
                                       "--client-cert"),
        "ca not a certificate": ({"--broker": "mqtts://b", "--ca": not_ca}, "--ca"),
        "ca without tls": ({"--ca": ca.ca_file}, "--broker"),
        "backend key not KID=PATH": ({"--backend-key": "backend.pub"}, "--backend-key"),
        "backend key id": ({"--backend-key": f"bad kid!={i.backend_pub}"}, "--backend-key"),
        "backend private key": ({"--backend-key": f"k={private}"}, "--backend-key"),
        "backend key garbage": ({"--backend-key": f"k={garbage}"}, "--backend-key"),
        "alarm account": ({"--alarm-account": "XYZ"}, "--alarm-account"),
        "dc09 receiver without port": ({"--dc09-receiver": "dc09.example"}, "--dc09-receiver"),
        "dc09 receiver port 0": ({"--dc09-receiver": "dc09.example:0"}, "--dc09-receiver"),
        "dc09 key length": ({"--dc09-key-file": short_key}, "--dc09-key-file"),
        "dc09 receiver number": ({"--dc09-receiver-number": "R1"}, "--dc09-receiver-number"),
        "dc09 line": ({"--dc09-line": "1234567"}, "--dc09-line"),
        "apn": ({"--apn": "internet m2m"}, "--apn"),
        "alarm unit serial": ({"--alarm-unit-serial": "5A0000A"}, "--alarm-unit-serial"),
        "relative state dir": ({"--state-dir": "var/lib/hubd"}, "--state-dir"),
        "serial not a device path": ({"--serial": "ttyUSB0"}, "--serial"),
        "empty resident": ({"--resident": ""}, "--resident"),
        "first provision without apn": ({"--apn": None}, "--apn"),
        "first provision without broker": ({"--broker": None}, "--broker"),
    }


BAD = ["hub id", "reserved hub id", "broker scheme", "broker port", "broker path",
       "password file missing", "password on two lines", "username not the hub id",
       "password and certificate", "certificate without key", "certificate of another hub",
       "ca not a certificate", "ca without tls", "backend key not KID=PATH", "backend key id",
       "backend private key", "backend key garbage", "alarm account",
       "dc09 receiver without port", "dc09 receiver port 0", "dc09 key length",
       "dc09 receiver number", "dc09 line", "apn", "alarm unit serial", "relative state dir",
       "serial not a device path", "empty resident", "first provision without apn",
       "first provision without broker"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_flag_and_writes_nothing(
        case: str, inputs: Inputs, test_ca: TestCA) -> None:
    override, flag = _bad_inputs(inputs, test_ca)[case]
    proc = hubctl_in_process("provision", *inputs.args(**override))
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert flag in line, line
    assert line.startswith("hubctl provision: ")
    assert not inputs.etc.exists() or not files_under(inputs.etc)


def test_the_bad_input_cases_cover_every_case(inputs: Inputs, test_ca: TestCA) -> None:
    assert sorted(BAD) == sorted(_bad_inputs(inputs, test_ca))


def test_a_backend_private_key_is_refused_without_showing_it(inputs: Inputs, test_ca: TestCA) -> None:
    override, _ = _bad_inputs(inputs, test_ca)["backend private key"]
    line = one_error_line(hubctl("provision", *inputs.args(**override)))
    assert "private key" in line and "never put" in line
    pem = (inputs.dir / "backend.pem").read_text().splitlines()[1]
    assert pem not in line


def test_an_etc_dir_that_is_a_file_or_writable_by_others_is_one_line(inputs: Inputs) -> None:
    inputs.etc.write_text("")
    line = one_error_line(hubctl("provision", *inputs.args()))
    assert "is not a directory" in line and "--etc-dir" in line
    inputs.etc.unlink()
    inputs.etc.mkdir()
    inputs.etc.chmod(0o777)
    line = one_error_line(hubctl_in_process("provision", *inputs.args()))
    assert "writable by others" in line and "chmod go-w" in line
    assert files_under(inputs.etc) == []


def test_an_etc_dir_owned_by_someone_else_is_one_line(inputs: Inputs) -> None:
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: giving a directory to another user needs root (CI runs as root)")
    inputs.etc.mkdir()
    os.chown(inputs.etc, 65534, 65534)  # nobody
    proc = hubctl("provision", *inputs.args())
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert f"{inputs.etc} belongs to {pwd.getpwuid(65534).pw_name}" in line and "--etc-dir" in line
    assert files_under(inputs.etc) == []


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Not writable even for root (chattr +i): a read-only /etc, as root meets it."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"chattr +i {path} failed: {done.stderr.strip()} (needs root, e2fsprogs and a "
                    "filesystem with the immutable flag)", pytrace=False)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_etc_dir_that_cannot_be_written_is_one_line(inputs: Inputs) -> None:
    if os.geteuid() != 0:
        inputs.etc.mkdir()
        inputs.etc.chmod(0o555)
        ctx: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        inputs.etc.mkdir()
        ctx = immutable(inputs.etc)
    with ctx:
        proc = hubctl("provision", *inputs.args())
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert f"{inputs.etc}" in line and "--etc-dir" in line
    assert files_under(inputs.etc) == []


def test_existing_files_that_do_not_parse_are_one_line_naming_the_file(inputs: Inputs) -> None:
    inputs.etc.mkdir()
    (inputs.etc / "hubd.toml").write_text("hub_id = \n")
    line = one_error_line(hubctl("provision", *inputs.args()))
    assert f"{inputs.etc / 'hubd.toml'} is not valid TOML" in line
    (inputs.etc / "hubd.toml").unlink()
    (inputs.etc / "bridge.json").write_text("{")
    line = one_error_line(hubctl_in_process("provision", *inputs.args()))
    assert f"{inputs.etc / 'bridge.json'} is not valid JSON" in line
    (inputs.etc / "bridge.json").write_text(json.dumps({"log": "deafening"}))
    line = one_error_line(hubctl_in_process("provision", *inputs.args()))
    assert "the bridge would not start with" in line and "deafening" in line
    assert sorted(p.name for p in files_under(inputs.etc)) == ["bridge.json"]


def test_help_shows_an_example() -> None:
    proc = hubctl("provision", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example: hubctl provision --hub-id hub-0042 --broker mqtts://" in \
        re.sub(r"\s+", " ", proc.stdout)


# --- end to end: hubd and the simulated bridge start from what provision wrote --------------------


async def _online(host: str, port: int, user: str | None, password: str | None,
                  hubd: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    async with BackendClient(host, port, username=user, password=password) as probe:
        async with probe.watch(topics.online(HUB)) as queue:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline and hubd.poll() is None:
                try:
                    message = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                if b'"online"' in message.payload:
                    return
    raise AssertionError(f"hubd did not come online; its log:\n{log.read_text(errors='replace')}")


async def _until(check, what: str, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _start_hubd(etc: Path, log: Path) -> subprocess.Popen[bytes]:
    """hubd as systemd starts it: the config file, and hubd.env's lines as its environment."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HUBD_")}
    env.update(parse_env_file((etc / "hubd.env").read_text()))
    return start_hubd(etc / "hubd.toml", log, env)


async def test_a_provisioned_certificate_login_brings_hubd_online_over_tls(
        inputs: Inputs, mosquitto_factory, test_ca: TestCA, tmp_path: Path) -> None:
    server = test_ca.issue_server()
    broker = mosquitto_factory(tls=TlsListener(cafile=test_ca.ca_file, certfile=server.cert,
                                               keyfile=server.key))
    client = test_ca.issue_client(HUB)
    master, slave = os.openpty()  # the bridge's port; no bridge needed to come online
    try:
        proc = hubctl("provision", *inputs.args(
            broker=f"mqtts://127.0.0.1:{broker.tls_port}", password_file=None,
            ca=test_ca.ca_file, client_cert=client.cert, client_key=client.key,
            service_user=pwd.getpwuid(os.geteuid()).pw_name, serial=os.ttyname(slave)))
        assert proc.returncode == 0, proc.stderr
        log = tmp_path / "hubd.log"
        hubd = _start_hubd(inputs.etc, log)
        try:
            # The probe reads the plain listener; hubd is on TLS with the copied CA, cert and key.
            await _online(broker.host, broker.port, None, None, hubd, log)
        finally:
            assert stop_hubd(hubd, 20) == 0, log.read_text(errors="replace")
        assert f"connected to 127.0.0.1:{broker.tls_port}" in log.read_text(errors="replace")
    finally:
        os.close(master)
        os.close(slave)


async def test_a_provisioned_hub_runs_hubd_without_locks_and_the_simulated_bridge(
        inputs: Inputs, mosquitto_factory, tmp_path: Path) -> None:
    broker = mosquitto_factory(passwords={HUB: PASSWORD, "probe": "probe-pw"})
    receiver = Receiver(key=DC09_KEY)
    async with receiver:
        unit = AlarmUnit()
        # The home's modem connects to the receiver; the bridge gets the provisioned bridge.json.
        home = SimulatedHome(tmp_path / "home", locks=[], alarm_unit=unit, lte={
            "apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port, "account": ACCOUNT})
        proc = hubctl("provision", *inputs.args(
            broker=f"mqtt://{broker.host}:{broker.port}", serial=home.port,
            dc09_receiver=f"127.0.0.1:{receiver.port}"))
        assert proc.returncode == 0, proc.stderr
        provisioned = json.loads((inputs.etc / "bridge.json").read_text())
        # As provisioned, but for one timing: the bridge turns to LTE after 2 s without hubd
        # instead of the default 10 s (when is not what this test is about).
        home.bridge.config = {**provisioned, "alarm_unit": {**provisioned["alarm_unit"], "hub_down_ms": 2000}}
        await home.start()
        hubd: subprocess.Popen[bytes] | None = None
        log = tmp_path / "hubd.log"
        try:
            await _until(lambda: any("alarm unit on UART" in ln for ln in home.bridge.log),
                         "the bridge booted with the provisioned bridge.json")
            # No hubd yet: after hub_down_ms the bridge sends the press over LTE, with the
            # provisioned APN, account, receiver and line numbers and AES key.
            event_id = unit.press(alarms.BUTTON, "pendant")
            alarm_id = unit.alarm_id(event_id)
            await _until(lambda: any(alarm_id in (e.x_data or "") for e in receiver.events),
                         f"{alarm_id} at the DC-09 receiver over LTE")
            event = next(e for e in receiver.events if alarm_id in (e.x_data or ""))
            assert (event.account, event.receiver, event.line) == (ACCOUNT, "R1", "L1")
            assert any("AT+QICSGP=1,1,\"internet.m2m\"" in c for c in home.modem.commands)

            hubd = _start_hubd(inputs.etc, log)
            await _online(broker.host, broker.port, "probe", "probe-pw", hubd, log)
            await _until(lambda: "bridge link up" in log.read_text(errors="replace"),
                         "hubd hears the bridge over the provisioned serial port")
            # With hubd there, a press takes the primary path: unit, bridge, link, hubd's store.
            second = unit.alarm_id(unit.press(alarms.BUTTON, "pendant"))
            await _until(lambda: f"alarm {second} stored" in log.read_text(errors="replace"),
                         "hubd stores an alarm the bridge sends")
            assert hubd.poll() is None
        finally:
            status = stop_hubd(hubd, 20) if hubd is not None else None
            await home.stop()
    assert status == 0, log.read_text(errors="replace")


def test_the_visit_route_is_of_paired_locks_and_decommission_takes_it_out(inputs: Inputs) -> None:
    """``--visit-route`` writes [visit] route of locks hubctl pair added; a door not paired is
    one error line that says to pair it; ``none`` removes it; decommission's removal of the
    locks takes the route with them, so the hub can be provisioned again (hubd, and so
    provision, refuse a route of locks [locks] lacks)."""
    from hubctl import access, hubfiles

    first = one_error_line(hubctl_in_process("provision", *inputs.args(visit_route="entrance,front-door")))
    assert "'entrance', 'front-door' is not a lock this hub has paired (none yet)" in first
    assert "pair each door first (hubctl pair)" in first
    assert not (inputs.etc / "hubd.toml").exists(), "nothing written"
    proc = hubctl_in_process("provision", *inputs.args())
    assert proc.returncode == 0, proc.stderr
    assert "  visit route: none (a signed prepare from the backend holds a door" in proc.stdout
    files = hubfiles.HubFiles.at(inputs.etc)
    for lock, kind in (("entrance", "entrance_door"), ("front-door", "inside_turner")):
        access.add_lock(files, lock, kind)  # as hubctl pair leaves them

    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--visit-route", "entrance, front-door")
    assert proc.returncode == 0, proc.stderr
    assert hubd_sees(inputs.etc).visit.route == ["entrance", "front-door"]
    assert "  visit route: entrance -> front-door (when a visit's door opened" in proc.stdout
    # The hold's time set by hand stays through a re-run, and shows.
    text = (inputs.etc / "hubd.toml").read_text().replace("[visit]\n", "[visit]\nhold_s = 90\n")
    (inputs.etc / "hubd.toml").write_text(text)
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--resident", "resident-9")
    assert proc.returncode == 0, proc.stderr
    assert "for the visit's command, 90 s at most)" in proc.stdout
    line = one_error_line(hubctl_in_process("provision", "--etc-dir", inputs.etc, "--visit-route", "entrance"))
    assert "--visit-route" in line and "a route is two doors or more" in line, line
    line = one_error_line(hubctl_in_process("provision", "--etc-dir", inputs.etc,
                                            "--visit-route", "entrance,back-door"))
    assert "'back-door' is not a lock this hub has paired (entrance, front-door)" in line

    access.remove_secrets(files)
    kept = tomllib.loads((inputs.etc / "hubd.toml").read_text())
    assert "locks" not in kept and kept["visit"] == {"hold_s": 90}, kept
    proc = hubctl_in_process("provision", *inputs.args())  # the hub provisioned again
    assert proc.returncode == 0, proc.stderr
    proc = hubctl_in_process("provision", "--etc-dir", inputs.etc, "--visit-route", "none")
    assert proc.returncode == 0 and "visit route: none" in proc.stdout, proc.stderr

"""hubd.config: TOML file, HUBD_ environment overrides, and one-line errors a person can act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hubapi import signing
from hubd.config import ConfigError, load_config
from tests.fixtures import LINK_KEY

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def link_key(monkeypatch) -> None:
    # As systemd gives it to hubd from hubd.env; the tests below that are about it remove it.
    monkeypatch.setenv("HUBD_SERIAL__LINK_KEY", LINK_KEY.hex())


@pytest.fixture
def public_key() -> str:
    return signing.public_key_text(signing.generate_private_key())


@pytest.fixture
def write(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "hubd.toml"
        path.write_text(text)
        return path

    return write


def minimal(public_key: str, extra: str = "", locks: str = 'front = "inside_turner"') -> str:
    return (f'hub_id = "hub-1"\nstate_dir = "/var/lib/hubd"\n{extra}\n[keys]\n"k1" = "{public_key}"\n'
            f'[locks]\n{locks}\n')


def test_file_is_read_with_defaults(write, public_key):
    config = load_config(write(minimal(public_key, 'command_timeout_s = 12\n[mqtt]\nhost = "broker"\npassword = "never-in-a-repr-7#"')))
    assert config.hub_id == "hub-1" and config.locks == {"front": "inside_turner"}
    assert str(config.state_dir) == "/var/lib/hubd"
    assert config.mqtt.host == "broker" and config.mqtt.port == 1883 and config.mqtt.protocol == "5"
    assert config.mqtt.password.get_secret_value() == "never-in-a-repr-7#" and "never-in-a-repr" not in repr(config)
    assert config.command_timeout_s == 12
    assert config.client_id == "hubd-hub-1"
    assert set(config.public_keys()) == {"k1"}


def test_bluetooth_defaults_to_the_bridges_proxy_and_takes_the_hubs_own_adapter(write, public_key):
    assert load_config(write(minimal(public_key))).bluetooth.via == "bridge"
    direct = load_config(write(minimal(public_key, '[bluetooth]\nvia = "adapter"\nadapter = "hci1"')))
    assert (direct.bluetooth.via, direct.bluetooth.adapter) == ("adapter", "hci1")


def test_pem_keys_are_accepted(write):
    pem = signing.public_key_pem(signing.generate_private_key())
    config = load_config(write(f'hub_id = "h"\nstate_dir = "s"\n[locks]\na = "key_box"\n[keys]\nk1 = """{pem}"""\n'))
    assert signing.public_key_text(config.public_keys()["k1"])


def test_environment_overrides_the_file(write, public_key, monkeypatch):
    path = write(minimal(public_key, '[mqtt]\nhost = "from-file"\nport = 1884'))
    monkeypatch.setenv("HUBD_MQTT__HOST", "from-env")
    monkeypatch.setenv("HUBD_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("HUBD_LOCKS", '{"front": "in_cylinder", "keybox": "key_box"}')
    config = load_config(path)
    assert (config.mqtt.host, config.mqtt.port) == ("from-env", 1884)
    assert config.mqtt.password.get_secret_value() == "s3cret"
    assert config.locks == {"front": "in_cylinder", "keybox": "key_box"}


def test_config_path_from_environment(write, public_key, monkeypatch):
    monkeypatch.setenv("HUBD_CONFIG", str(write(minimal(public_key))))
    assert load_config().hub_id == "hub-1"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[mqtt]\nport = 70000", "mqtt.port: Input should be less than or equal to 65535 (got 70000)"),
        ("[mqtt]\nprotocol = \"4\"", "mqtt.protocol"),
        ("[mqtt]\ncert_file = \"/nonexistent\"", "mqtt.cert_file"),
        ("clock_skew_s = -1", "clock_skew_s"),
        ("lokcs = [\"x\"]", "lokcs is not a known setting"),
        ("[serial]\nbaudrate = \"fast\"", "serial.baudrate"),
        ("[bluetooth]\nvia = \"wifi\"", "bluetooth.via"),
        ("[bluetooth]\nadapter = \"hci0\"", "adapter and simulated_radio are for via = \"adapter\""),
        ("[bluetooth]\nvia = \"adapter\"\nadapter = \"hci0; rm\"", "bluetooth.adapter"),
        ("[bluetooth]\nvia = \"adapter\"\nadapter = \"hci0\"\nsimulated_radio = \"/tmp/r.sock\"",
         "not both"),
    ],
    ids=["port", "protocol", "missing-file", "skew", "typo", "baudrate", "via", "adapter-via-bridge",
         "adapter-name", "adapter-and-simulated"],
)
def test_bad_values_name_the_field_in_one_line(write, public_key, extra, expected):
    path = write(minimal(public_key, extra))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
    assert str(path) in message or "not a known setting" in message


def test_missing_hub_id_says_where_to_set_it(write, public_key):
    with pytest.raises(ConfigError, match=r"hub_id is missing: set it in .* or HUBD_HUB_ID"):
        load_config(write(f'state_dir = "s"\n[locks]\na = "key_box"\n[keys]\nk1 = "{public_key}"\n'))


def test_bad_key_names_the_kid_and_hides_the_key(write):
    with pytest.raises(ConfigError, match=r"keys: key 'k1': .*Ed25519 public key as PEM or raw base64url") as raised:
        load_config(write('hub_id = "h"\nstate_dir = "s"\n[locks]\na = "key_box"\n[keys]\nk1 = "secret-looking-garbage"\n'))
    assert "secret-looking-garbage" not in str(raised.value)


def test_lock_ids_must_fit_the_topic_tree(write, public_key):
    with pytest.raises(ConfigError, match=r"locks\.front/door"):
        load_config(write(minimal(public_key, locks='"front/door" = "inside_turner"')))


def test_unknown_lock_kind_lists_the_kinds(write, public_key):
    with pytest.raises(ConfigError, match=r"locks\.front: Input should be 'inside_turner', 'in_cylinder', "
                                          r"'key_box' or 'entrance_door' \(got 'deadbolt'\)"):
        load_config(write(minimal(public_key, locks='front = "deadbolt"')))


def test_a_plain_list_of_locks_asks_for_their_kinds(write, public_key):
    path = write(f'hub_id = "h"\nstate_dir = "s"\nlocks = ["front"]\n[keys]\nk1 = "{public_key}"\n')
    with pytest.raises(ConfigError, match=r'locks: give each lock its kind as a table, e\.g\. \[locks\] '
                                          r'front = "inside_turner"'):
        load_config(path)


def test_state_dir_is_required(write, public_key):
    with pytest.raises(ConfigError, match=r"state_dir is missing: set it in .* or HUBD_STATE_DIR"):
        load_config(write(minimal(public_key).replace('state_dir = "/var/lib/hubd"\n', "")))


def test_bad_value_from_environment_names_the_variable(write, public_key, monkeypatch):
    monkeypatch.setenv("HUBD_MQTT__KEEPALIVE", "soon")
    with pytest.raises(ConfigError, match="HUBD_MQTT__KEEPALIVE"):
        load_config(write(minimal(public_key)))


def test_toml_syntax_error_is_one_line(write):
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write("hub_id = \n"))


def test_daemon_exits_2_with_one_line_and_no_traceback(write, public_key):
    path = write(minimal(public_key, "[mqtt]\nport = 0"))
    result = subprocess.run(
        [sys.executable, "-m", "hubd", "--config", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubd: invalid configuration: mqtt.port"), result.stderr


def test_help_shows_an_example():
    result = subprocess.run([sys.executable, "-m", "hubd", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0
    assert "hubd --config /etc/hubd/hubd.toml" in result.stdout
    assert "--env-file /etc/hubd/hubd.env" in result.stdout and "EnvironmentFile=" in result.stdout


@pytest.mark.parametrize(("content", "expected"), [
    (bytes(range(128, 256)) * 8, "is not UTF-8 text"),
    (b"a = " + b"[" * 3000 + b"]" * 3000, "nests arrays or tables too deeply"),
    (b"garbage [[[", "is not valid TOML"),
], ids=["binary", "deep", "garbage"])
def test_a_file_that_is_no_config_at_all_is_one_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "hubd.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert expected in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_serial_link_key_is_required_and_never_quoted_back(write, public_key, monkeypatch):
    monkeypatch.delenv("HUBD_SERIAL__LINK_KEY")
    with pytest.raises(ConfigError) as missing:
        load_config(write(minimal(public_key)))
    assert "serial.link_key is missing" in str(missing.value) and "HUBD_SERIAL__LINK_KEY" in str(missing.value)
    for bad in ("0123", "zz" * 32, "ab" * 33):
        monkeypatch.setenv("HUBD_SERIAL__LINK_KEY", bad)
        with pytest.raises(ConfigError) as wrong:
            load_config(write(minimal(public_key)))
        text = str(wrong.value)
        assert "serial.link_key: must be 64 hex digits" in text and bad not in text and "\n" not in text
    monkeypatch.setenv("HUBD_SERIAL__LINK_KEY", "AB" * 32)
    config = load_config(write(minimal(public_key)))
    assert config.serial.key == b"\xab" * 32 and "ab" * 32 not in repr(config).lower()

"""hubd.config's lock_driver: who runs the lock protocols. With "hubd" the locks' addresses and
secrets come from hubd's state (hubd/store/pairings.py), never from the config: a [lock_links]
table or HUBD_LOCK_LINKS, which once carried them, is refused in one line naming the fix and
never quoting a secret."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from hubapi import signing
from hubd.config import ConfigError, load_config
from tests.fixtures import LINK_KEY

SECRET = os.urandom(32).hex()


@pytest.fixture(autouse=True)
def link_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_SERIAL__LINK_KEY", LINK_KEY.hex())


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    key = signing.public_key_text(signing.generate_private_key())

    def write(extra: str = "", tables: str = "") -> Path:
        path = tmp_path / "hubd.toml"
        path.write_text(f'hub_id = "hub-1"\nstate_dir = "/var/lib/hubd"\n{extra}\n[keys]\n"k1" = "{key}"\n'
                        f'[locks]\nfront = "in_cylinder"\n{tables}\n')
        return path

    return write


def _link(secret: str = SECRET, address: str = "c0:ff:ee:00:00:01") -> str:
    return f'[lock_links.front]\naddress = "{address}"\naddr_type = 1\nsecret = "{secret}"\n'


def test_the_bridge_drives_the_locks_unless_told_otherwise(write: Callable[..., Path]) -> None:
    config = load_config(write())
    assert config.lock_driver == "bridge"


def test_with_hubd_as_driver_the_config_needs_no_lock_secret(write: Callable[..., Path]) -> None:
    config = load_config(write('lock_driver = "hubd"'))
    assert config.lock_driver == "hubd" and config.locks == {"front": "in_cylinder"}
    assert not hasattr(config, "lock_links") and not hasattr(config, "paired_locks")


def test_lock_links_in_the_file_is_refused_naming_the_fix_never_the_secret(
        write: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write('lock_driver = "hubd"', _link()))
    text = str(bad.value)
    assert "lock_links is gone" in text and "hubctl pair" in text and "\n" not in text
    assert SECRET not in text


def test_hubd_lock_links_in_the_environment_is_refused_too(
        write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_LOCK_LINKS", json.dumps(
        {"front": {"address": "C0:FF:EE:00:00:07", "secret": SECRET}}))
    with pytest.raises(ConfigError) as bad:
        load_config(write('lock_driver = "hubd"'))
    assert "HUBD_LOCK_LINKS" in str(bad.value) and SECRET not in str(bad.value)


def test_a_bad_lock_driver_names_the_field_in_one_line(write: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write('lock_driver = "firmware"'))
    assert "lock_driver: Input should be 'bridge' or 'hubd'" in str(bad.value)
    assert "\n" not in str(bad.value)

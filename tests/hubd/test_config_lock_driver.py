"""hubd.config's lock_driver and lock_links: who runs the lock protocols, and, when hubd does,
how it reaches each lock; one-line errors that name the field and never quote a secret."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from hubapi import signing
from hubd.config import ConfigError, load_config
from hubd.locks import PairedLock
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
    assert config.lock_driver == "bridge" and config.lock_links == {}


def test_hubd_drives_the_locks_with_their_address_and_secret(write: Callable[..., Path]) -> None:
    config = load_config(write('lock_driver = "hubd"', _link()))
    assert config.lock_driver == "hubd"
    assert config.paired_locks() == {"front": PairedLock("in_cylinder", "C0:FF:EE:00:00:01",
                                                         bytes.fromhex(SECRET), 1)}
    assert SECRET not in repr(config) and SECRET not in repr(config.paired_locks())


def test_the_secrets_may_come_from_the_environment(write: Callable[..., Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_LOCK_LINKS", json.dumps(
        {"front": {"address": "C0:FF:EE:00:00:07", "secret": SECRET}}))
    config = load_config(write('lock_driver = "hubd"'))
    assert config.paired_locks()["front"].address == "C0:FF:EE:00:00:07"
    assert config.paired_locks()["front"].secret == bytes.fromhex(SECRET)


def test_hubd_as_driver_needs_every_locks_link(write: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as missing:
        load_config(write('lock_driver = "hubd"'))
    text = str(missing.value)
    assert "lock_links: front is missing" in text and "HUBD_LOCK_LINKS" in text and "\n" not in text


@pytest.mark.parametrize(("extra", "tables", "expected"), [
    ('lock_driver = "firmware"', "", "lock_driver: Input should be 'bridge' or 'hubd'"),
    ("", _link(address="C0:FF:EE:00:01"), "lock_links.front.address"),
    ("", _link().replace("[lock_links.front]", "[lock_links.garage]"),
     "lock_links: garage names no lock of [locks]"),
])
def test_bad_lock_driver_settings_name_the_field_in_one_line(
        write: Callable[..., Path], extra: str, tables: str, expected: str) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write(extra, tables))
    assert expected in str(bad.value) and "\n" not in str(bad.value)


def test_a_bad_secret_names_the_field_and_is_never_quoted_back(write: Callable[..., Path]) -> None:
    bad = SECRET[:-2] + "zz"
    with pytest.raises(ConfigError) as error:
        load_config(write('lock_driver = "hubd"', _link(secret=bad)))
    text = str(error.value)
    assert "lock_links.front.secret: must be 64 hex digits" in text and bad not in text

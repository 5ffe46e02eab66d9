"""hubd.config and the lock drivers: hubd always drives the locks, each from its pairing in the
state (hubd/store/pairings.py), never from the config. What an older hubd.toml said about it:
``lock_driver = "hubd"`` is accepted, named for removal in hubd's log; ``"bridge"`` (the
firmware's drivers, gone) is refused in one line naming the fix; a [lock_links] table or
HUBD_LOCK_LINKS, which once carried secrets, is refused in one line naming the fix and never
quoting a secret. The driver's times are settings ([lock_timing], [lock_upkeep]) whose names are
the driver's own."""

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


def test_a_config_without_lock_driver_needs_no_lock_secret_and_has_nothing_to_remove(
        write: Callable[..., Path]) -> None:
    config = load_config(write())
    assert config.locks == {"front": "in_cylinder"} and config.upgrade_notes == []
    assert not hasattr(config, "lock_driver") and not hasattr(config, "lock_links")


def test_an_old_lock_driver_hubd_is_accepted_and_named_for_removal(write: Callable[..., Path]) -> None:
    config = load_config(write('lock_driver = "hubd"'))
    assert config.locks == {"front": "in_cylinder"} and not hasattr(config, "lock_driver")
    assert len(config.upgrade_notes) == 1 and "lock_driver is gone" in config.upgrade_notes[0]


@pytest.mark.parametrize("where", ["file", "environment"])
def test_an_old_lock_driver_bridge_is_refused_in_one_line_naming_the_fix(
        write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    if where == "file":
        path = write('lock_driver = "bridge"')
    else:
        monkeypatch.setenv("HUBD_LOCK_DRIVER", "bridge")
        path = write()
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    text = str(bad.value)
    assert "lock_driver = 'bridge' is gone" in text and "hubctl pair" in text and "hubctl flash" in text
    assert "\n" not in text


def test_any_other_lock_driver_is_refused_too(write: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write('lock_driver = "firmware"'))
    assert "lock_driver = 'firmware' is gone" in str(bad.value) and "\n" not in str(bad.value)


def test_lock_links_in_the_file_is_refused_naming_the_fix_never_the_secret(
        write: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write("", _link()))
    text = str(bad.value)
    assert "lock_links is gone" in text and "hubctl pair" in text and "\n" not in text
    assert SECRET not in text


def test_hubd_lock_links_in_the_environment_is_refused_too(
        write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBD_LOCK_LINKS", json.dumps(
        {"front": {"address": "C0:FF:EE:00:00:07", "secret": SECRET}}))
    with pytest.raises(ConfigError) as bad:
        load_config(write())
    assert "HUBD_LOCK_LINKS" in str(bad.value) and SECRET not in str(bad.value)


def test_the_drivers_times_are_settings_left_out_ones_keep_the_drivers_defaults(
        write: Callable[..., Path]) -> None:
    from hubd.locks import Timings, UpkeepTimings

    config = load_config(write("", "[lock_timing]\nconnect_s = 1\nsettle_s = 0.5\n"
                                   "[lock_upkeep]\npoll_s = 60\n"))
    assert config.lock_timing.given() == {"connect_s": 1.0, "settle_s": 0.5}
    timings = Timings(**config.lock_timing.given())
    assert (timings.connect_s, timings.settle_s, timings.result_s) == (1.0, 0.5, Timings().result_s)
    assert UpkeepTimings(**config.lock_upkeep.given()).poll_s == 60.0
    every = {name: 1.0 for name in config.lock_timing.model_fields}
    Timings(**every)  # each setting is one of the driver's times
    UpkeepTimings(**{name: 1.0 for name in config.lock_upkeep.model_fields})


def test_a_dkeys_times_are_settings_left_out_ones_keep_its_drivers_defaults(
        write: Callable[..., Path]) -> None:
    from hubd.locks import DkeyTimings

    config = load_config(write("", "[dkey_timing]\nidle_s = 5\nresult_s = 20\nheld_s = 22\n"))
    assert config.dkey_timing.given() == {"idle_s": 5.0, "result_s": 20.0, "held_s": 22.0}
    timings = DkeyTimings(**config.dkey_timing.given())
    assert (timings.idle_s, timings.result_s, timings.held_s, timings.deadline_s) == (
        5.0, 20.0, 22.0, DkeyTimings().deadline_s)
    DkeyTimings(**{name: 1.0 for name in config.dkey_timing.model_fields})
    assert load_config(write("")).dkey_timing.given() == {}


@pytest.mark.parametrize(("table", "named"), [("[lock_timing]\nconnect_s = 0\n", "lock_timing.connect_s"),
                                              ("[lock_timing]\nconect_s = 1\n", "lock_timing.conect_s"),
                                              ("[lock_upkeep]\npoll_s = 0.1\n", "lock_upkeep.poll_s"),
                                              ("[dkey_timing]\nidle_s = 40\n", "dkey_timing.idle_s"),
                                              ("[dkey_timing]\nheld_s = 30\n", "dkey_timing.held_s")])
def test_a_bad_time_names_its_setting_in_one_line(write: Callable[..., Path], table: str,
                                                   named: str) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(write("", table))
    assert named in str(bad.value) and "\n" not in str(bad.value)

"""hubd.toml's [uplink]: its defaults, and a wrong mode or time as one line naming the field and
the fix (hubd.config.UplinkConfig)."""

from __future__ import annotations

import pytest

from hubd.config import ConfigError, load_config
from tests.hubd.test_config import link_key, minimal, public_key, write  # noqa: F401 (fixtures)


def test_uplink_defaults_to_broadband_with_lte_figures(write, public_key):  # noqa: F811
    uplink = load_config(write(minimal(public_key))).uplink
    assert (uplink.mode, uplink.fallback_s, uplink.probe_s, uplink.lte_keepalive_s) == ("broadband", 60, 120, 240)
    auto = load_config(write(minimal(public_key, '[uplink]\nmode = "auto"\nfallback_s = 30\nprobe_s = 300'))).uplink
    assert (auto.mode, auto.fallback_s, auto.probe_s) == ("auto", 30, 300)


def test_uplink_from_the_environment(write, public_key, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HUBD_UPLINK__MODE", "lte")
    assert load_config(write(minimal(public_key))).uplink.mode == "lte"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[uplink]\nmode = "wifi"', "uplink.mode: Input should be 'broadband', 'lte' or 'auto' (got 'wifi')"),
        ("[uplink]\nfallback_s = -1", "uplink.fallback_s: Input should be greater than 0 (got -1)"),
        ("[uplink]\nprobe_s = 0", "uplink.probe_s: Input should be greater than 0 (got 0)"),
        ("[uplink]\nlte_keepalive_s = -240", "uplink.lte_keepalive_s: Input should be greater than or equal to 5"),
        ('[uplink]\nprobe_s = "often"', "uplink.probe_s"),
        ("[uplink]\nfalback_s = 60", "uplink.falback_s is not a known setting"),
    ],
    ids=["mode", "negative-fallback", "zero-probe", "negative-keepalive", "not-a-number", "typo"],
)
def test_a_wrong_uplink_setting_is_one_line_with_the_fix(write, public_key, extra, expected):  # noqa: F811
    path = write(minimal(public_key, extra))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert expected in message and "\n" not in message
    assert f"fix it in {path} or HUBD_UPLINK__" in message or "remove it from" in message

"""bridge.json validation, inside MicroPython (run by tests/firmware/runner.py)."""

import config

SECRET = "00" * 32
LINK_KEY = "4b" * 32


def _parse(obj):
    # Every bridge.json has its link key (hubctl provision writes it); the tests of the link
    # section give their own.
    if isinstance(obj, dict) and "link" not in obj:
        obj = dict(obj)
        obj["link"] = {"key": LINK_KEY}
    return config.parse(obj)


def _lock(**kw):
    entry = {"id": "front-door", "kind": "inside_turner", "protocol": "reference",
             "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": SECRET}
    entry.update(kw)
    return entry


def _error(obj):
    try:
        _parse(obj)
    except config.ConfigError as e:
        return str(e)
    return None


def test_every_lock_kind_is_accepted_with_its_own_secret():
    cfg = _parse({"locks": [
        _lock(id="a", kind="inside_turner", addr="C0:FF:EE:00:00:01", secret="11" * 32),
        _lock(id="b", kind="in_cylinder", addr="C0:FF:EE:00:00:02", secret="22" * 32),
        _lock(id="c", kind="key_box", addr="C0:FF:EE:00:00:03", secret="33" * 32),
        _lock(id="d", kind="entrance_door", addr="C0:FF:EE:00:00:04", secret="44" * 32),
    ]})
    assert [lk["kind"] for lk in cfg["locks"]] == [
        "inside_turner", "in_cylinder", "key_box", "entrance_door"]
    assert cfg["locks"][1]["secret"] == b"\x22" * 32
    assert cfg["locks"][2]["addr"] == b"\xc0\xff\xee\x00\x00\x03"
    assert cfg["locks"][0]["protocol"] == "reference"


def test_an_unknown_kind_is_refused_and_named():
    err = _error({"locks": [_lock(kind="garage_door")]})
    assert err is not None and "garage_door" in err


def test_a_missing_kind_is_refused():
    entry = _lock()
    del entry["kind"]
    assert _error({"locks": [entry]}) is not None


def test_an_unknown_protocol_is_refused():
    assert "protocol" in _error({"locks": [_lock(protocol="danalock")]})


def test_duplicate_ids_are_refused():
    err = _error({"locks": [_lock(), _lock(addr="C0:FF:EE:00:00:02")]})
    assert "twice" in err


def test_duplicate_addresses_are_refused():
    err = _error({"locks": [_lock(), _lock(id="other")]})
    assert err is not None and "address" in err


def test_secret_must_be_32_bytes_of_hex():
    assert "32 bytes" in _error({"locks": [_lock(secret="00" * 31)]})
    assert "32 bytes" in _error({"locks": [_lock(secret="00" * 33)]})
    assert "hex" in _error({"locks": [_lock(secret="zz" * 32)]})
    assert "hex" in _error({"locks": [_lock(secret=None)]})


def test_bad_addresses_and_address_types_are_refused():
    assert _error({"locks": [_lock(addr="C0:FF:EE:00:00")]}) is not None
    assert _error({"locks": [_lock(addr="C0:FF:EE:00:00:0G")]}) is not None
    assert _error({"locks": [_lock(addr_type=2)]}) is not None


def test_policy_defaults_and_overrides():
    cfg = _parse({"locks": [_lock()], "policy": {"idle_ms": 500, "poll_ms": 1000}})
    assert cfg["policy"]["idle_ms"] == 500
    assert cfg["policy"]["poll_ms"] == 1000
    assert cfg["policy"]["settle_ms"] == config.POLICY["settle_ms"]
    assert _parse({})["policy"] == config.POLICY


def test_policy_typos_and_bad_values_are_refused():
    assert "idle_msec" in _error({"policy": {"idle_msec": 5}})
    assert _error({"policy": {"idle_ms": 0}}) is not None
    assert _error({"policy": {"idle_ms": "3000"}}) is not None
    assert _error({"policy": []}) is not None


def test_hostile_shapes_are_config_errors_not_crashes():
    for obj in ([], {"locks": {}}, {"locks": [5]}, {"locks": [_lock(id="")]},
                {"locks": [_lock(id="x" * 65)]}, {"link": 3}):
        assert _error(obj) is not None


def test_health_timings_have_defaults_and_take_overrides():
    cfg = _parse({})
    assert cfg["health"] == config.HEALTH
    assert cfg["policy"]["absent_ms"] == config.POLICY["absent_ms"]
    cfg = _parse({"health": {"health_ms": 1000, "wdt_ms": 3000},
                        "policy": {"absent_ms": 2000}})
    assert (cfg["health"]["health_ms"], cfg["health"]["wdt_ms"], cfg["policy"]["absent_ms"]) == (
        1000, 3000, 2000)
    assert cfg["health"]["ble_stuck_ms"] == config.HEALTH["ble_stuck_ms"]


def test_bad_health_timings_are_refused_and_named():
    for bad, name in (({"health_ms": 0}, "health_ms"), ({"wdt_ms": "30s"}, "wdt_ms"),
                      ({"watchdog": 1}, "watchdog"), ({"ble_stuck_ms": True}, "ble_stuck_ms")):
        err = _error({"health": bad})
        assert err is not None and name in err, (bad, err)
    assert "health" in _error({"health": []})
    assert "absent_ms" in _error({"policy": {"absent_ms": -1}})


def test_the_supply_section_is_optional_and_checked():
    assert _parse({})["supply"] is None
    cfg = _parse({"supply": {"cell_adc": 34, "cell_divider": 3.2, "ext_pin": 35}})
    assert cfg["supply"] == {"cell_adc": 34, "cell_divider": 3.2, "ext_pin": 35}
    assert _parse({"supply": {"cell_adc": 34}})["supply"] == {
        "cell_adc": 34, "cell_divider": 2, "ext_pin": None}
    for bad, name in (({}, "cell_adc"), ({"cell_adc": "34"}, "cell_adc"),
                      ({"cell_adc": 34, "cell_divider": 0}, "cell_divider"),
                      ({"cell_adc": 34, "ext_pin": -1}, "ext_pin"),
                      ({"cell_adc": 34, "volts": 1}, "volts")):
        err = _error({"supply": bad})
        assert err is not None and name in err, (bad, err)


def test_the_link_key_is_required_hex_and_never_quoted_back():
    assert "link.key is missing" in _error({"link": {"uart": 1}})
    for bad in ("ab" * 31, "zz" * 32, 5, None, "ab" * 33):
        err = _error({"link": {"key": bad}}) if bad is not None else _error({"link": {}})
        assert err is not None and "link.key" in err
        assert not isinstance(bad, str) or bad not in err
    assert "keey" in _error({"link": {"keey": LINK_KEY}})
    assert _parse({})["link"]["key"] == b"\x4b" * 32


def test_the_proxy_holds_three_connections_unless_bridge_json_says_otherwise():
    assert _parse({})["proxy"] == {"slots": 3}
    assert _parse({"proxy": {}})["proxy"] == {"slots": 3}
    assert _parse({"proxy": {"slots": 1}})["proxy"] == {"slots": 1}
    assert _parse({"proxy": {"slots": 4}})["proxy"] == {"slots": 4}


def test_proxy_slots_out_of_range_or_not_a_number_are_refused_in_one_line_naming_the_field():
    for bad in (0, 5, -1, True, 2.0, "3", None):
        err = _error({"proxy": {"slots": bad}})
        assert err is not None and "proxy.slots" in err and "\n" not in err, (bad, err)
    assert "proxy" in _error({"proxy": [3]})
    err = _error({"proxy": {"slot": 3}})
    assert "proxy" in err and "slot" in err

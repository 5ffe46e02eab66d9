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
    # A lock entry as an older provisioning wrote it, for the bridge's own drivers.
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


def test_an_older_provisionings_locks_and_policy_are_named_and_never_read():
    # The bridge drives no lock since hubd does: whatever these hold, they do not stop the boot.
    for locks, policy in (([_lock()], {"idle_ms": 500}),
                          ([_lock(kind="garage_door"), _lock(secret="zz")], {"idle_msec": "x"}),
                          ([5, None, {"id": ""}], [1]), ({"a": 1}, 7), ("x", True)):
        cfg = _parse({"locks": locks, "policy": policy})
        assert cfg["stale"] == ["locks", "policy"], (locks, policy)
        assert "locks" not in cfg and "policy" not in cfg
    assert _parse({"locks": [_lock()]})["stale"] == ["locks"]
    assert _parse({"policy": {"poll_ms": 1000}})["stale"] == ["policy"]
    # Empty ones, as a provisioning may still write them, say nothing.
    assert _parse({"locks": [], "policy": {}})["stale"] == []
    assert _parse({})["stale"] == []


def test_hostile_shapes_are_config_errors_not_crashes():
    for obj in ([], 5, "x", None, {"link": 3}, {"health": 3}, {"proxy": "3"},
                {"alarm_unit": []}, {"lte": 1}, {"supply": True}, {"log": {}}):
        assert _error(obj) is not None


def test_health_timings_have_defaults_and_take_overrides():
    cfg = _parse({})
    assert cfg["health"] == config.HEALTH
    cfg = _parse({"health": {"health_ms": 1000, "wdt_ms": 3000}})
    assert (cfg["health"]["health_ms"], cfg["health"]["wdt_ms"]) == (1000, 3000)
    assert cfg["health"]["ble_stuck_ms"] == config.HEALTH["ble_stuck_ms"]


def test_bad_health_timings_are_refused_and_named():
    for bad, name in (({"health_ms": 0}, "health_ms"), ({"wdt_ms": "30s"}, "wdt_ms"),
                      ({"watchdog": 1}, "watchdog"), ({"ble_stuck_ms": True}, "ble_stuck_ms")):
        err = _error({"health": bad})
        assert err is not None and name in err, (bad, err)
    assert "health" in _error({"health": []})


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
    scans = {"scan_every_ms": 10000, "scan_ms": 1000, "presence_ms": 60000}
    assert _parse({})["proxy"] == dict(scans, slots=3)
    assert _parse({"proxy": {}})["proxy"] == dict(scans, slots=3)
    assert _parse({"proxy": {"slots": 1}})["proxy"] == dict(scans, slots=1)
    assert _parse({"proxy": {"slots": 4}})["proxy"] == dict(scans, slots=4)


def test_the_proxys_scan_windows_and_presence_for_watches_have_defaults_and_take_overrides():
    assert _parse({"proxy": {"scan_every_ms": 200, "scan_ms": 150, "presence_ms": 2000}})[
        "proxy"] == {"slots": 3, "scan_every_ms": 200, "scan_ms": 150, "presence_ms": 2000}
    for bad, name in (({"scan_every_ms": 0}, "scan_every_ms"), ({"scan_ms": "1s"}, "scan_ms"),
                      ({"presence_ms": 0}, "presence_ms"), ({"presence_ms": "1m"}, "presence_ms"),
                      ({"scan_ms": True}, "scan_ms"), ({"scan_ms": 2000, "scan_every_ms": 1000},
                                                       "scan_ms")):
        err = _error({"proxy": bad})
        assert err is not None and name in err and "\n" not in err, (bad, err)


def test_proxy_slots_out_of_range_or_not_a_number_are_refused_in_one_line_naming_the_field():
    for bad in (0, 5, -1, True, 2.0, "3", None):
        err = _error({"proxy": {"slots": bad}})
        assert err is not None and "proxy.slots" in err and "\n" not in err, (bad, err)
    assert "proxy" in _error({"proxy": [3]})
    err = _error({"proxy": {"slot": 3}})
    assert "proxy" in err and "slot" in err

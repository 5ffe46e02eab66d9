"""Fuzzing bridge.json inside MicroPython: whatever the file holds (wrong types, values out of
range, missing settings, deep nesting, garbage), config.load() and parse() give a configuration
or one ConfigError line naming the setting (tests/firmware/fuzz.py)."""

import json
import os

import config
import fuzz
from fuzz import fail, mutants, noise, rand, rbytes

VALID = {
    "link": {"uart": 1, "baudrate": 115200, "tx": 17, "rx": 16, "key": "cd" * 32},
    "log": "info",
    "alarm_unit": {"uart": 2, "baudrate": 9600, "tx": 4, "rx": 5, "heartbeat_ms": 10000,
                   "missed": 3, "serial": "5A0000AB"},
    "lte": {"uart": 3, "apn": "internet.m2m", "host": "dc09.example", "port": 12000,
            "account": "12AB", "receiver": "1", "line": "1", "key": "0123456789ABCDEF"},
    "health": {"health_ms": 60000, "wdt_ms": 30000},
    "supply": {"cell_adc": 34, "cell_divider": 2, "ext_pin": 35},
    "proxy": {"slots": 3, "scan_every_ms": 10000, "scan_ms": 1000},
}
# What an older provisioning wrote for the bridge's own lock drivers: ignored whatever it holds.
STALE = {
    "policy": {"idle_ms": 3000, "poll_ms": 1800000},
    "locks": [{"id": "front-door", "kind": "inside_turner", "protocol": "reference",
               "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": "ab" * 32}],
}
# Values no setting takes: each must be refused wherever it is put.
WRONG = [True, -1, 10 ** 30, float("nan"), float("inf"), "x" * 300, [[[]]], 1.5e300]
# Text an AT command or a DC-09 frame cannot carry: refused in every LTE string.
NOT_PLAIN = ["\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9",
             'a"b', "a,b", "a;b", "a b", "a\rb", "abcdefghijklmnop\u00e9"]


def _copy(obj):
    return json.loads(json.dumps(obj))


def _paths(obj, prefix=()):
    """Every (path, name) to a setting of the valid configuration, sections included."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        yield prefix + (key,)
        if isinstance(value, (dict, list)):
            for p in _paths(value, prefix + (key,)):
                yield p


def _set(obj, path, value):
    try:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass  # an earlier change put something else where this setting's section was


def _parse(obj, shown):
    try:
        return config.parse(obj), None
    except config.ConfigError as e:
        msg = str(e)
    except Exception as e:  # noqa: BLE001 - anything else is the failure we look for
        raise AssertionError(fail(shown, "raised %r" % e))
    assert "\n" not in msg and 0 < len(msg) <= 300, fail(shown, "the message %r" % msg)
    return None, msg


def test_the_valid_configuration_is_taken():
    cfg, err = _parse(_copy(VALID), b"")
    assert err is None and cfg["lte"]["port"] == 12000 and cfg["stale"] == []


def test_anything_in_an_older_provisionings_locks_and_policy_is_ignored():
    fuzz.start()
    kinds = [None, True, 0, -5, 10 ** 20, 0.5, "", "x" * 70, [], {}, [1], {"a": 1}, [[[]]]]
    paths = list(_paths(STALE))
    for _ in range(300):
        stale = _copy(STALE)
        for _ in range(1 + rand(3)):
            _set(stale, paths[rand(len(paths))], _copy(kinds[rand(len(kinds))]))
        obj = _copy(VALID)
        obj.update(stale)
        cfg, err = _parse(obj, json.dumps(stale).encode())
        assert err is None, fail(json.dumps(stale).encode(), "refused: %s" % err)
        assert "locks" not in cfg and "policy" not in cfg


def test_a_wrong_value_anywhere_is_refused_naming_its_setting():
    fuzz.start()
    for path in _paths(VALID):
        name = str(path[-1])
        for value in WRONG:
            if path[-1] == "line" and value == "x" * 300:
                continue
            obj = _copy(VALID)
            _set(obj, path, value)
            shown = repr(path).encode() + b"=" + repr(value)[:40].encode()
            cfg, err = _parse(obj, shown)
            assert err is not None, fail(shown, "accepted")
            if isinstance(path[-1], str):
                assert name in err, fail(shown, "the message %r does not name %s" % (err, name))


def test_text_the_modem_or_the_receiver_cannot_carry_is_refused():
    fuzz.start()
    for name in ("apn", "host", "user", "password", "account", "receiver", "line", "key"):
        for value in NOT_PLAIN:
            obj = _copy(VALID)
            obj["lte"][name] = value
            cfg, err = _parse(obj, (name + "=" + repr(value)).encode())
            assert err is not None and name in err, fail(name.encode(), repr((value, err)))


def test_a_missing_setting_or_section_is_a_default_or_refused():
    fuzz.start()
    for path in _paths(VALID):
        obj = _copy(VALID)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        _parse(obj, repr(path).encode())


def test_random_values_of_every_type_anywhere():
    fuzz.start()
    kinds = [None, True, 0, 1, -5, 2 ** 29, 2 ** 31, 10 ** 20, 0.5, "", "1", "x" * 70, [], {},
             [1], {"a": 1}, "C0:FF:EE:00:00:01", "0" * 64]
    paths = list(_paths(VALID))
    for _ in range(400):
        obj = _copy(VALID)
        for _ in range(1 + rand(3)):
            _set(obj, paths[rand(len(paths))], _copy(kinds[rand(len(kinds))]))
        _parse(obj, json.dumps(obj).encode())


def _load(data):
    path = "/tmp/fuzz-bridge-%s.json" % rbytes(6).hex()
    with open(path, "wb") as f:
        f.write(data)
    try:
        return config.load(path), None
    except config.ConfigError as e:
        msg = str(e)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(fail(data, "load raised %r" % e))
    finally:
        os.remove(path)
    assert "\n" not in msg and 0 < len(msg) <= 300, fail(data, "the message %r" % msg)
    return None, msg


def test_any_file_content_loads_or_is_one_config_error():
    fuzz.start()
    text = json.dumps(VALID).encode()
    assert _load(text)[1] is None
    for data in mutants(text, 150, 4):
        _load(data)
    for data in noise(60, 200):
        _load(data)
    for data in (b"", b"\xff\xfe", b"[" * 5000, b'{"locks": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                 b'{"log": "info"}' + b" " * config.MAX_FILE, b"null", b"[]", b'"x"', b"5"):
        cfg, err = _load(data)
        assert err is not None, fail(data, "accepted")
    assert "no " in _load_missing()


def _load_missing():
    try:
        config.load("/tmp/no-such-dir-%s/bridge.json" % rbytes(4).hex())
    except config.ConfigError as e:
        return str(e)
    return ""

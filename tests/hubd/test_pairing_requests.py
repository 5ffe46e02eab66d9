"""The local socket's pair request (hubd.technician.control.PairRequest), as hubd parses a line
from hubctl: each protocol takes exactly its own secret input, a dKey's activation code is read
as the library reads it and checked as the lock's code is, and neither secret input is shown
in a repr or an error.
"""

from __future__ import annotations

import json

import pytest
from py_dormakaba_dkey.dkey import ACTIVATION_CODE_ALLOWED

from hubd.technician import control
from wire import lockkinds

KEY = "ab" * 32
REFERENCE = {"request": "pair", "lock": "front-door", "kind": "inside_turner",
             "addr": "C0:FF:EE:00:00:07", "setup_key": KEY}
DKEY = {"request": "pair", "lock": "front-door", "kind": "in_cylinder",
        "addr": "F0:94:0A:00:00:01", "protocol": "dkey", "activation_code": "BCDF-2345"}


def _parse(**fields: object) -> control.PairRequest:
    request = control.parse_request(json.dumps(fields).encode())
    assert isinstance(request, control.PairRequest)
    return request


def test_the_alphabet_is_the_librarys_and_the_protocols_are_wires() -> None:
    assert lockkinds.DKEY_CODE_ALPHABET == ACTIVATION_CODE_ALLOWED
    assert control.PairRequest.model_fields["protocol"].default == lockkinds.REFERENCE
    for protocol in lockkinds.PROTOCOLS:
        kind = lockkinds.PROTOCOL_KINDS[protocol][0]
        secret = {"activation_code": "BCDF2345"} if protocol == "dkey" else {"setup_key": KEY}
        fields = {k: v for k, v in REFERENCE.items() if k not in ("setup_key", "kind")}
        assert _parse(**fields, kind=kind, protocol=protocol, **secret).protocol == protocol


def test_a_reference_lock_is_paired_with_its_setup_key_by_default() -> None:
    request = _parse(**REFERENCE)
    assert (request.protocol, request.setup_key, request.activation_code) == ("reference", KEY, None)


@pytest.mark.parametrize("code", ["BCDF-2345", "bcdf 2345", "BCDF2345", " BC-DF-23-45\t"])
def test_a_dkeys_code_is_read_as_the_library_reads_it(code: str) -> None:
    request = _parse(**{**DKEY, "activation_code": code})
    assert request.activation_code == "BCDF2345" and request.setup_key is None


@pytest.mark.parametrize("code", ["BCDF-234A", "BCDF-234", "BCDF-23456", "", "BCDF-23Y5", "BCDF_2345"])
def test_a_code_that_cannot_be_a_dkeys_is_refused(code: str) -> None:
    with pytest.raises(ValueError, match="activation_code") as refused:
        _parse(**{**DKEY, "activation_code": code})
    assert code.replace("-", "") not in str(refused.value) or not code


@pytest.mark.parametrize("fields, why", [
    ({**DKEY, "activation_code": None}, "activation_code"),
    ({k: v for k, v in DKEY.items() if k != "activation_code"}, "activation_code"),
    ({**DKEY, "setup_key": KEY}, "no setup_key"),
    ({**REFERENCE, "activation_code": "BCDF2345"}, "no activation_code"),
    ({k: v for k, v in REFERENCE.items() if k != "setup_key"}, "setup_key"),
    ({**DKEY, "kind": "key_box"}, "not a key_box"),
    ({**DKEY, "protocol": "danalock"}, "protocol"),
])
def test_exactly_the_secret_input_of_its_protocol(fields: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        _parse(**fields)
    assert KEY not in str(refused.value) and "BCDF2345" not in str(refused.value)


def test_neither_secret_input_is_in_a_repr() -> None:
    assert KEY not in repr(_parse(**REFERENCE))
    shown = repr(_parse(**DKEY))
    assert "BCDF" not in shown and "2345" not in shown and "dkey" in shown


def test_a_found_dkey_may_not_say_whether_it_is_pairing() -> None:
    found = control.FoundLock(addr="F0:94:0A:00:00:01", addr_type=0, kind="in_cylinder", rssi=-60,
                              battery=None, name="Front door", pairing=None, lock=None,
                              protocol="dkey")
    again = control.ScanResult.model_validate_json(control.ScanResult(locks=[found]).model_dump_json())
    assert again.locks == [found] and again.locks[0].pairing is None

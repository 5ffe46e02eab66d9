"""How a proxy request ends, sorted in one place (hubd/ble/errors.py): every status the bridge
or hubd's side can give is a BleakError that names it in words, and a write that may have reached
the peer is WriteUnknown, never a plain failure a library would retry."""

from __future__ import annotations

import pytest
from bleak.exc import BleakError, BleakGATTProtocolError

from hubd.ble import errors
from wire import messages

FAILURES = [s for s in messages.BLE_STATUSES if s != "ok"] + list(errors.HUB_STATUSES)


@pytest.mark.parametrize("status", FAILURES)
def test_every_failure_is_a_bleak_error_with_its_status_said_in_words(status: str) -> None:
    with pytest.raises(BleakError) as failed:
        errors.raise_for(status, 0x0E, "read x")
    if status == "gatt_error":
        assert isinstance(failed.value, BleakGATTProtocolError) and failed.value.code == 0x0E
    else:
        assert failed.value.status == status  # type: ignore[attr-defined]
        assert str(failed.value) != f"read x: {status}", "said in words, not only its code"


@pytest.mark.parametrize("status", ["timeout", "disconnected", errors.LINK_LOST, errors.NO_ANSWER,
                                    errors.BAD_ANSWER])
def test_a_write_that_may_have_gone_out_is_unknown(status: str) -> None:
    with pytest.raises(errors.WriteUnknown, match="not repeated"):
        errors.raise_for(status, None, "write x", write=True)


@pytest.mark.parametrize("status", ["unreachable", "busy", "no_conn", "refused", errors.LINK_DOWN,
                                    errors.LINK_BUSY])
def test_a_write_that_never_went_out_is_a_plain_failure(status: str) -> None:
    with pytest.raises(errors.ProxyError) as failed:
        errors.raise_for(status, None, "write x", write=True)
    assert not isinstance(failed.value, errors.WriteUnknown)


def test_a_refused_pairing_is_auth_failed() -> None:
    with pytest.raises(errors.ProxyAuthFailed, match="refused to pair") as failed:
        errors.raise_for("auth_failed", None, "pair with x")
    assert failed.value.status == "auth_failed"


def test_ok_raises_nothing() -> None:
    errors.raise_for("ok", None, "read x", write=True)

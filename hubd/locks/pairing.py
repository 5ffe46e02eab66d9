"""Pairing and unpairing a reference-protocol lock from hubd (docs/lock-protocol.md, "Pairing"),
through the same driver that runs its commands (hubd.locks.reference.ReferenceLock.exchange).

    secret = new_secret()
    outcome = await pair(address, addr_type, secret, setup_key, radio=radio, timeout=40)
    outcome.result == "ok"         # the lock holds ``secret``: only now is it recorded
    await unpair(address, addr_type, secret, radio=radio, timeout=40)

The judgement is the firmware's (firmware/locks/pairing.py), with one correction: a PAIR the
lock refused with ``auth_failed`` (a wrong setup key, or a recorded PAIR replayed) is
``auth_failed``, not ``failed`` (issue 18). ``ok`` only when the RESULT verifies under the NEW
secret (PAIR) or the secret being taken away (UNPAIR): an answer that is not proven is never
taken for success. Refusals cannot be verified (the lock MACs them with a key hubd does not
share, or with none) and come without state or battery. Neither function raises (but for
cancellation); both close the driver's connection. The secret is never logged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from hubd.ble.radio import Radio
from hubd.locks.reference import ReferenceLock, Timings
from wire import lockpair
from wire import lockproto as lp
from wire import outcomes as oc

log = logging.getLogger(__name__)

#: What a PAIR ends as (docs/lock-protocol.md, "Pairing"); an UNPAIR the same but not_pairing.
OK = "ok"
NOT_PAIRING = oc.NOT_PAIRING
AUTH_FAILED = oc.AUTH_FAILED
UNREACHABLE = oc.UNREACHABLE
BAD_LOCK_MAC = oc.BAD_LOCK_MAC
FAILED = "failed"
PAIR_RESULTS = (OK, NOT_PAIRING, AUTH_FAILED, UNREACHABLE, BAD_LOCK_MAC, FAILED)
UNPAIR_RESULTS = (OK, AUTH_FAILED, UNREACHABLE, BAD_LOCK_MAC, FAILED)



def new_secret() -> bytes:
    """A fresh pairing secret, made by hubd and kept in its state only."""
    return secrets.token_bytes(lp.SECRET_LEN)


@dataclass(frozen=True)
class Outcome:
    """How a PAIR or UNPAIR ended: ``result`` one of PAIR_RESULTS; ``why`` what the driver said
    when there was no RESULT (a reason of wire.outcomes), for the log; ``state`` and ``battery``
    only with ``ok``."""

    result: str
    why: str | None = None
    state: str | None = None
    battery: int | None = None


async def pair(address: str, addr_type: int, secret: bytes, setup_key: bytes, *, timeout: float,
               radio: Radio | None = None, timings: Timings = Timings()) -> Outcome:
    """Give the lock at ``address`` (in pairing mode) the NEW ``secret``, sealed and MACed under
    its 32-byte ``setup_key``; through ``radio`` (default the installed proxy)."""
    if len(setup_key) != lp.SECRET_LEN:
        return Outcome(FAILED, "setup key length")
    addr = _addr(address)
    return await _run(ReferenceLock(address, secret, addr_type=addr_type, radio=radio,
                                    timings=timings),
                      lambda nonce: lockpair.encode_pair(setup_key, secret, addr, nonce),
                      secret, addr, lockpair.PAIR_TAG, timeout)


async def unpair(address: str, addr_type: int, secret: bytes, *, timeout: float,
                 radio: Radio | None = None, timings: Timings = Timings()) -> Outcome:
    """Make the lock at ``address`` forget ``secret`` (the one it holds)."""
    addr = _addr(address)
    outcome = await _run(ReferenceLock(address, secret, addr_type=addr_type, radio=radio,
                                       timings=timings),
                         lambda nonce: lockpair.encode_unpair(secret, addr, nonce),
                         secret, addr, lockpair.UNPAIR_TAG, timeout)
    if outcome.result == NOT_PAIRING:  # not an answer to UNPAIR
        return Outcome(FAILED, NOT_PAIRING)
    return outcome


def _addr(address: str) -> bytes:
    return bytes.fromhex(address.replace(":", ""))


async def _run(driver: ReferenceLock, build: Callable[[bytes], bytes], secret: bytes, addr: bytes,
               tag: bytes, timeout: float) -> Outcome:
    try:
        got = await driver.exchange(build, timeout)
        if isinstance(got, str):  # no RESULT: nothing written, or the write's fate unknown
            return Outcome(UNREACHABLE if got == oc.UNREACHABLE else FAILED, got)
        nonce, (status, state, battery, mac) = got
        if status == lp.STATUS_OK:
            if lp.verify_result(secret, addr, nonce, tag, status, state, battery, mac):
                return Outcome(OK, None, lp.state_name(state), battery)
            return Outcome(BAD_LOCK_MAC)
        if status == lp.STATUS_AUTH_FAILED:
            return Outcome(AUTH_FAILED)
        if status == lockpair.STATUS_NOT_PAIRING:
            return Outcome(NOT_PAIRING)
        try:
            return Outcome(FAILED, lp.status_name(status))
        except lp.ProtocolError:
            return Outcome(FAILED, f"status {status}")
    except Exception:  # a bug, or a library's: the technician gets an answer, not a crash
        log.exception("pairing exchange with %s failed", driver.address)
        return Outcome(FAILED, oc.DRIVER_ERROR)
    finally:
        try:
            await driver.close()
        except Exception:
            log.exception("closing the connection to %s", driver.address)

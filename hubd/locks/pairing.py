"""Pairing and unpairing a lock from hubd: a reference-protocol lock (docs/lock-protocol.md,
"Pairing") through the same driver that runs its commands (hubd.locks.reference.ReferenceLock.exchange),
and a dormakaba dKey's association through the unmodified py-dormakaba-dkey (docs/dkey.md).

    secret = new_secret()
    outcome = await pair(address, addr_type, secret, setup_key, radio=radio, timeout=40)
    outcome.result == "ok"         # the lock holds ``secret``: only now is it recorded
    await unpair(address, addr_type, secret, radio=radio, timeout=40)

    outcome = await associate(address, addr_type, "BCDF-2345", radio=radio, timeout=40)
    outcome.association            # ok: the dKey's key holder id and association secret

The judgement of a PAIR is the firmware's (firmware/locks/pairing.py), with one correction: a
PAIR the lock refused with ``auth_failed`` (a wrong setup key, or a recorded PAIR replayed) is
``auth_failed``, not ``failed`` (issue 18). ``ok`` only when the RESULT verifies under the NEW
secret (PAIR) or the secret being taken away (UNPAIR): an answer that is not proven is never
taken for success. Refusals cannot be verified (the lock MACs them with a key hubd does not
share, or with none) and come without state or battery.

A dKey is associated with the 8-character activation code of its card (:func:`associate`): the
lock and hubd agree a key holder id and a 32-byte secret (ECDH under the code); ``ok`` only once
the lock has also authenticated hubd with them (the library's ``update()``, which reads its state
and battery), so the association data recorded is proven. A dKey has no unpairing the library
can send: decommissioning forgets the association in hubd and the bond in the radio
(hubd.technician.commissioning).

None of these raises (but for cancellation); each closes its connection. Neither the secret,
the association data nor the activation code is ever logged: py-dormakaba-dkey logs the code,
its ECDH keys and the association data at DEBUG, so its logger is held at INFO (hubd.locks.dkey,
which also reads its errors, states and battery for both the driver and this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import bleak
from py_dormakaba_dkey import DKEYLock
from py_dormakaba_dkey.errors import WrongActivationCode

from hubd.ble import errors as proxy_errors
from hubd.ble import vendor
from hubd.ble.radio import Radio
from hubd.locks.dkey import battery_percent, close_session, reason_of, state_name
from hubd.locks.reference import ReferenceLock, Timings
from wire import lockpair
from wire import lockproto as lp
from wire import outcomes as oc

log = logging.getLogger(__name__)

#: What a PAIR ends as (docs/lock-protocol.md, "Pairing"); an UNPAIR the same but not_pairing
#: (wire.outcomes, the one vocabulary hubctl hears them in).
OK = oc.PAIRED
NOT_PAIRING = oc.NOT_PAIRING
AUTH_FAILED = oc.AUTH_FAILED
UNREACHABLE = oc.UNREACHABLE
BAD_LOCK_MAC = oc.BAD_LOCK_MAC
FAILED = oc.FAILED
#: A dKey's bonding failed on the hub's own adapter: the lock refused (its activation window is
#: closed) or the radio lost it while bonding. Both end ``pair()`` in a plain ``BleakError`` (the
#: simulated adapter's backend raises what bleak's BlueZ backend does; on a real hub BlueZ's D-Bus
#: error name might tell them apart: not checked), so hubd cannot. Through the bridge's proxy a
#: refusal is its own status (``ProxyAuthFailed``): ``not_pairing``.
NOT_BONDED = oc.NOT_BONDED
PAIR_RESULTS = oc.PAIR_RESULTS
UNPAIR_RESULTS = oc.UNPAIR_RESULTS

#: A dKey's GATT request (one frame written or read): the lock answers each at once.
DKEY_GATT_TIMEOUT_S = 5.0



def new_secret() -> bytes:
    """A fresh pairing secret, made by hubd and kept in its state only."""
    return secrets.token_bytes(lp.SECRET_LEN)


@dataclass(frozen=True)
class Outcome:
    """How a PAIR, UNPAIR or a dKey's association ended: ``result`` one of PAIR_RESULTS; ``why``
    what the driver said when there was no RESULT (a reason of wire.outcomes, or what failed),
    for the log; ``state`` and ``battery`` only with ``ok``; ``association`` only with a dKey's
    ``ok``: its key holder id (4 bytes) then its association secret (32 bytes), never shown."""

    result: str
    why: str | None = None
    state: str | None = None
    battery: int | None = None
    association: bytes | None = field(default=None, repr=False)


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
                      secret, addr, lockpair.PAIR_TAG, timeout, "paired")


async def unpair(address: str, addr_type: int, secret: bytes, *, timeout: float,
                 radio: Radio | None = None, timings: Timings = Timings()) -> Outcome:
    """Make the lock at ``address`` forget ``secret`` (the one it holds)."""
    addr = _addr(address)
    outcome = await _run(ReferenceLock(address, secret, addr_type=addr_type, radio=radio,
                                       timings=timings),
                         lambda nonce: lockpair.encode_unpair(secret, addr, nonce),
                         secret, addr, lockpair.UNPAIR_TAG, timeout, "unpaired")
    if outcome.result == NOT_PAIRING:  # not an answer to UNPAIR
        return Outcome(FAILED, NOT_PAIRING)
    return outcome


def _addr(address: str) -> bytes:
    return bytes.fromhex(address.replace(":", ""))


async def _run(driver: ReferenceLock, build: Callable[[bytes], bytes], secret: bytes, addr: bytes,
               tag: bytes, timeout: float, why: str) -> Outcome:
    # A lock paired or unpaired is discovered afresh (a reset lock may run other firmware):
    # ``why`` ("paired", "unpaired") is what the radio's cache counts and logs.
    with contextlib.suppress(bleak.exc.BleakError):  # no radio: exchange() says so
        driver.radio.forget(driver.address, why)
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


# --- a dKey's association -------------------------------------------------------------------


async def associate(address: str, addr_type: int, activation_code: str, *, radio: Radio,
                    timeout: float, gatt_timeout: float = DKEY_GATT_TIMEOUT_S) -> Outcome:
    """Associate hubd with the dKey at ``address`` (in its activation window) using its
    ``activation_code``, through ``radio``, all within ``timeout`` s; ``ok`` carries the
    association data, proven by the lock authenticating hubd with it, and the lock's state and
    battery read then. The connection is closed before this returns, whatever happened.

    ``auth_failed``: the lock refused the code (it keeps no association). ``not_pairing``: the
    lock refused to bond through the bridge's proxy (its activation window is closed);
    ``not_bonded``: bonding failed on the hub's own adapter (the same, or the radio lost the
    lock meanwhile: :data:`NOT_BONDED`). ``unreachable``: no connection was made. ``failed``:
    anything else, ``why`` says what; after the association itself it is ``not_proven`` (the
    lock may keep a key holder entry hubd did not record)."""
    vendor.install()
    seen = vendor.Clients()
    lock = DKEYLock(radio.ble_device(address))
    proven = False
    association: bytes | None = None
    with vendor.on_radio(radio, addr_type=addr_type, gatt_timeout=gatt_timeout, clients=seen):
        try:
            async with asyncio.timeout(timeout) as bound:
                data = await lock.associate(activation_code)
                association = bytes(data.key_holder_id) + bytes(data.secret)
                await lock.update()  # authenticates with the new association data
                proven = True
        except Exception as exc:  # every way the library or the radio can end it
            _pass_on_cancellation()
            return _association_failed(address, exc, bound.expired(), seen,
                                       associated=association is not None)
        finally:
            await close_session(lock, seen, DKEY_GATT_TIMEOUT_S * 2)
    assert proven and association is not None
    state, battery = state_name(lock.state.unlock_status), battery_percent(lock.state.battery)
    return Outcome(OK, None, state, battery, association)


async def unbond(address: str, addr_type: int, *, radio: Radio, timeout: float) -> bool:
    """The radio forgets its Bluetooth bond with the dKey at ``address`` (decommissioned): the
    bridge's bond through its proxy, or the hub's own adapter's (BlueZ removes the device). No
    connection is needed. False, logged, if it could not within ``timeout`` s: the bridge's
    wipe deletes every bond anyway, and without its association data a bond opens nothing."""
    client = bleak.BleakClient(radio.ble_device(address), backend=radio.client_backend,
                               **radio.client_kwargs(addr_type, DKEY_GATT_TIMEOUT_S))
    try:
        async with asyncio.timeout(timeout):
            await client.unpair()
        return True
    except Exception as exc:
        log.warning("the radio could not forget its bond with %s: %s", address, exc)
        return False


def _pass_on_cancellation() -> None:
    """The library turns a cancellation into ``DkeyError``: if the cancellation was not our
    timeout's but the caller's (hubd stopping), it is passed on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _association_failed(address: str, exc: Exception, expired: bool, seen: vendor.Clients, *,
                        associated: bool) -> Outcome:
    """What a failed association means (:func:`associate`), the library's errors read by
    hubd.locks.dkey.reason_of, which the driver shares; logged without any secret."""
    reason = reason_of(exc)
    if expired and reason == oc.NO_RESULT:  # the library's DkeyError for our timeout
        reason = "timeout"
    if isinstance(exc, WrongActivationCode):
        outcome = Outcome(AUTH_FAILED, reason)
    elif associated:  # the lock may keep the key holder: hubd does not
        outcome = Outcome(FAILED, f"not_proven: {reason}")
    elif any(isinstance(e, proxy_errors.ProxyAuthFailed) for e in seen.bond_failures):
        outcome = Outcome(NOT_PAIRING, "the lock refused to bond")
    elif seen.bond_failures:
        outcome = Outcome(NOT_BONDED, str(seen.bond_failures[-1]))
    elif reason == oc.NOT_PAIRING:  # the lock has no room for another key holder
        outcome = Outcome(NOT_PAIRING, "the lock takes no more key holders")
    elif reason == oc.UNREACHABLE or (not seen.connected and reason in (oc.LINK_FAILED,
                                                                         "timeout")):
        outcome = Outcome(UNREACHABLE, reason)
    else:
        outcome = Outcome(FAILED, reason)
    log.warning("association with %s: %s (%s: %s)", address, outcome.result, outcome.why,
                type(exc).__name__)
    return outcome

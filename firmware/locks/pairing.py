"""Pairing and unpairing a reference-protocol lock (docs/lock-protocol.md, "Pairing").

Imported only while a technician pairs or decommissions a lock, then dropped from sys.modules by
the caller, so it stays small; the PDU codec it brings (``wire.lockpair``) it drops itself after
each call. ``drv`` is a ``locks.reference.ReferenceLock``: for ``pair`` one built with the lock's
NEW secret, for ``unpair`` one with the secret the lock holds. Neither function raises (but for
cancellation); both leave the link closed and the driver usable.
"""

import sys

import wire
from wire import lockpair
from wire import lockproto as lp


def _forget_codec():
    """Let wire.lockpair go with this module: the bridge keeps no pairing code between pairings."""
    sys.modules.pop("wire.lockpair", None)
    if hasattr(wire, "lockpair"):
        delattr(wire, "lockpair")


async def _run(drv, encode, tag):
    """One PAIR / UNPAIR exchange: (result name, state, battery)."""
    try:
        nonce, got = await drv.exchange(encode)
        if nonce is None:
            return ("unreachable" if got == "unreachable" else "failed"), None, None
        status, state, battery, mac = got
        if status == lp.STATUS_OK:
            if lp.verify_result(drv.secret, drv.addr, nonce, tag, status, state, battery, mac):
                return "ok", lp.state_name(state), battery
            return "bad_lock_mac", None, None
        # A refusal cannot be verified (the lock MACs it with a key we do not share) and can
        # never be mistaken for success: reported as it came, without its state or battery.
        if status in (lp.STATUS_AUTH_FAILED, lockpair.STATUS_NOT_PAIRING):
            return lp.status_name(status), None, None
        return "failed", None, None
    except Exception:  # BLE, protocol or memory trouble: the caller gets an answer, not a crash
        return "failed", None, None
    finally:
        _forget_codec()
        try:
            await drv.close()
        except Exception:
            pass


async def pair(drv, setup_key):
    """Give the lock (in pairing mode) ``drv.secret``, proven with its 32-byte setup key.

    Returns {"result": one of ok, not_pairing, auth_failed, unreachable, bad_lock_mac, failed,
    "state", "battery"}; "ok" only when the lock answered with a MAC under the new secret.
    """
    if len(setup_key) != lp.SECRET_LEN:
        _forget_codec()
        return {"result": "failed", "state": None, "battery": None}
    result, state, battery = await _run(
        drv, lambda nonce: lockpair.encode_pair(setup_key, drv.secret, drv.addr, nonce),
        lockpair.PAIR_TAG)
    return {"result": result, "state": state, "battery": battery}


async def unpair(drv):
    """Make the lock forget ``drv.secret``: {"result": ok, unreachable, auth_failed,
    bad_lock_mac or failed}. "ok" only when the lock confirmed with a MAC under that secret."""
    result = (await _run(drv, lambda nonce: lockpair.encode_unpair(drv.secret, drv.addr, nonce),
                         lockpair.UNPAIR_TAG))[0]
    if result == "not_pairing":
        result = "failed"  # not an answer to UNPAIR
    return {"result": result}

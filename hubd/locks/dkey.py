"""A dormakaba dKey (docs/dkey.md), driven from hubd through the unmodified py-dormakaba-dkey
on hubd's radio (hubd.ble.vendor).

This first part holds what pairing shares with the driver: :func:`reason_of`, the library's
errors as wire.outcomes' reasons.
"""

from __future__ import annotations

from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak_retry_connector import BleakNotFoundError, BleakOutOfConnectionSlotsError
from py_dormakaba_dkey.errors import (
    CommandFailed,
    Disconnected,
    DkeyError,
    InvalidActivationCode,
    InvalidCommand,
    NotAssociated,
    NotAuthenticated,
    NotConnected,
    Timeout,
    UnsupportedProtocolVersion,
    WrongActivationCode,
)
from py_dormakaba_dkey.models import ErrorCode

from hubd.ble import errors
from hubd.ble.vendor import SecondAttempt
from wire import outcomes as oc

#: An error code of the lock's acknowledgement (the library's CommandFailed) as a reason.
_REFUSALS = {
    ErrorCode.NOT_AUTHENTICATED: oc.AUTH_FAILED,
    ErrorCode.AUTHENTICATION_FAILED: oc.AUTH_FAILED,
    ErrorCode.WRONG_PIN: oc.AUTH_FAILED,
    ErrorCode.NO_AVAILABLE_KEYS: oc.NOT_PAIRING,  # no room for another key holder
    ErrorCode.MAX_ADMINS: oc.NOT_PAIRING,
    ErrorCode.MAX_PENDING_KEYS: oc.NOT_PAIRING,
    ErrorCode.MAX_KEY_FOBS_PENDING: oc.NOT_PAIRING,
    ErrorCode.WRONG_STATE: oc.BUSY,  # the motor runs
    ErrorCode.UNKNOWN_CMD: oc.UNSUPPORTED,
    ErrorCode.PARAM_NOT_SUPPORTED: oc.UNSUPPORTED,
}

# A write whose answer did not come because the connection or the link went down.
_LINK_GONE = ("disconnected", errors.LINK_LOST)


def reason_of(exc: BaseException) -> str:
    """What a py-dormakaba-dkey call that raised ``exc`` ended as, in wire.outcomes' reasons.

    The library wraps what it meets (bleak-retry-connector raises ``BleakNotFoundError`` *from*
    the radio's ``ProxyUnreachable``), so the chain of causes is read, the most telling error
    first: ``unreachable`` (not found, not connectable), ``bridge_unavailable`` and
    ``bridge_busy`` (the bridge's link is down, or it has no connection slot), ``auth_failed``
    (the lock forgot the key holder, or a wrong activation code), ``bad_request`` (an activation
    code that is no code, refused before any radio traffic), ``not_pairing`` (the lock has no
    room for another key holder), ``busy`` (its motor runs), ``unsupported`` (a protocol version
    or request it does not know), ``link_lost`` (the link went down under a call: the library's
    ``Disconnected``, ``NotConnected``, its idle ``Timeout``, or a second attempt hubd refused,
    hubd.ble.vendor.SecondAttempt), ``link_failed`` (any other bleak error: a failed pairing, a
    GATT error). A bare ``DkeyError`` is how the library ends a call that was cancelled: with an
    ``asyncio.timeout`` around it, the caller's timeout, ``no_result`` here; the caller tells a
    timeout from a cancellation with the timeout's ``expired()``. Anything else is a bug:
    ``driver_error``.

    Whether the lock may have taken a command is not this function's business: the caller knows
    whether it wrote one (hubd.ble.vendor.OneCommand).
    """
    for link in _causes(exc):
        reason = _telling(link)
        if reason is not None:
            return reason
    if isinstance(exc, DkeyError):
        return oc.NO_RESULT
    if isinstance(exc, errors.ProxyTimeout):  # the bridge, or a GATT request, did not answer
        return oc.LINK_FAILED
    if isinstance(exc, TimeoutError):  # a connection that did not come (the hub's adapter)
        return oc.UNREACHABLE
    if isinstance(exc, BleakError):
        return oc.LINK_FAILED
    return oc.DRIVER_ERROR


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain and len(chain) < 8:
        chain.append(link)
        # As Python shows a traceback: the explicit cause, else the implicit context unless
        # ``raise ... from None`` suppressed it.
        link = link.__cause__ if link.__cause__ is not None else (
            None if link.__suppress_context__ else link.__context__)
    return chain


def _telling(exc: BaseException) -> str | None:
    """The reason an error names by itself, or None for a generic one."""
    if isinstance(exc, SecondAttempt):
        return oc.LINK_LOST
    if isinstance(exc, errors.ProxyUnavailable):
        return oc.BRIDGE_UNAVAILABLE
    if isinstance(exc, (errors.ProxyBusy, BleakOutOfConnectionSlotsError)):
        return oc.BRIDGE_BUSY
    if isinstance(exc, (errors.ProxyUnreachable, BleakDeviceNotFoundError, BleakNotFoundError)):
        return oc.UNREACHABLE
    if isinstance(exc, (NotAssociated, WrongActivationCode, NotAuthenticated)):
        return oc.AUTH_FAILED
    if isinstance(exc, InvalidActivationCode):
        return oc.BAD_REQUEST
    if isinstance(exc, UnsupportedProtocolVersion):
        return oc.UNSUPPORTED
    if isinstance(exc, CommandFailed):
        return _REFUSALS.get(exc.error, oc.BAD_REQUEST)
    if isinstance(exc, errors.WriteUnknown):
        return oc.LINK_LOST if exc.status in _LINK_GONE else oc.NO_RESULT
    if isinstance(exc, (Timeout, Disconnected, NotConnected, InvalidCommand,
                        errors.ProxyDisconnected)):
        return oc.LINK_LOST
    return None

"""How a Bluetooth proxy request ends, as bleak's exceptions (one module, as bleak's exc.py).

Every error is a ``bleak.exc.BleakError``, so a vendor library's ``except BleakError`` holds; an
ATT error from the peer is bleak's own ``BleakGATTProtocolError``. Each carries the ``status``
it came from: one of ``wire.messages.BLE_STATUSES`` (the bridge's answer) or of
:data:`HUB_STATUSES` (hubd's side never got an answer). :func:`raise_for` is the one place that
sorts an answer into them, writes apart: a write that may have reached the peer is
:class:`WriteUnknown`, never a plain failure, so nobody retries it.
"""

from __future__ import annotations

from bleak.exc import BleakError, BleakGATTProtocolError


# hubd's side: the link was down, so nothing was sent; the link's queue was full, nothing was
# sent; the link went down while the request was out; no answer came within the request's
# ms plus hubd's margin; the answer came but broke the spec (counted, see BleProxy.dropped).
LINK_DOWN = "link_down"
LINK_BUSY = "link_busy"
LINK_LOST = "link_lost"
NO_ANSWER = "no_answer"
BAD_ANSWER = "bad_answer"
HUB_STATUSES = (LINK_DOWN, LINK_BUSY, LINK_LOST, NO_ANSWER, BAD_ANSWER)

# After these a write may have gone out over the air: the peer did not answer in time
# (timeout), the connection went down during it (disconnected), the link to the bridge went
# down or the bridge never answered.
_WRITE_UNKNOWN = ("timeout", "disconnected", LINK_LOST, NO_ANSWER, BAD_ANSWER)


class ProxyError(BleakError):
    """A proxy request failed; ``status`` says how (see the module docstring)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class ProxyTimeout(ProxyError, TimeoutError):
    """The peer, or the bridge, did not answer in time (also a TimeoutError, as bleak's own
    backends raise on a connect that takes too long)."""


class ProxyUnreachable(ProxyError):
    """No connection to the address within the request's time: absent, out of range, or not
    connectable."""


class ProxyDisconnected(ProxyError):
    """The connection is gone (or never was): no request on it can succeed."""


class ProxyBusy(ProxyError):
    """The bridge has no free connection slot, or the link's queue is full: nothing was sent."""


class ProxyUnavailable(ProxyError):
    """The link to the bridge is down: nothing was sent."""


class WriteUnknown(ProxyError):
    """A write was handed to the bridge and no answer says whether it reached the peer: it may
    have. Never retried by the backend; the caller reads the peer's state instead."""


class ProxyAuthFailed(ProxyError):
    """The peer refused to pair (not in pairing mode) or to encrypt with the bond the bridge
    holds (it lost it): the link stays up, unencrypted."""


class PairingUnsupported(BleakError):
    """A pairing the bridge cannot make: with MITM protection (it has no display or keyboard;
    docs/ble-proxy.md, "Bonding")."""


_BY_STATUS: dict[str, type[ProxyError]] = {
    "timeout": ProxyTimeout,
    NO_ANSWER: ProxyTimeout,
    "unreachable": ProxyUnreachable,
    "disconnected": ProxyDisconnected,
    "no_conn": ProxyDisconnected,
    LINK_LOST: ProxyDisconnected,
    "busy": ProxyBusy,
    LINK_BUSY: ProxyBusy,
    LINK_DOWN: ProxyUnavailable,
    "auth_failed": ProxyAuthFailed,
}


def raise_for(status: str, att: int | None, what: str, *, write: bool = False) -> None:
    """Raise what ``status`` (of a request doing ``what``) means; return on ``ok``."""
    if status == "ok":
        return
    if status == "gatt_error":
        raise BleakGATTProtocolError(att if att is not None else 0)
    if write and status in _WRITE_UNKNOWN:
        raise WriteUnknown(f"{what}: {status}; the write may have reached the peer, it is not "
                           "repeated: read the peer's state", status)
    cls = _BY_STATUS.get(status, ProxyError)
    raise cls(f"{what}: {_MEANING.get(status, status)}", status)


_MEANING = {
    "timeout": "the peer did not answer in time (the bridge dropped the connection)",
    "unreachable": "no connection within the time given: the device is absent, out of range "
                   "or not connectable",
    "disconnected": "the connection went down",
    "busy": "every connection slot of the bridge is taken",
    "no_conn": "the bridge has no such connection",
    "refused": "the bridge refused the request (bad handle, too much data, time out of range, "
               "too many watches)",
    "error": "the bridge's Bluetooth stack failed",
    "auth_failed": "the peer refused to pair, or to encrypt with the bond the bridge holds "
                   "(not in pairing mode, or it forgot the bond)",
    LINK_DOWN: "the link to the bridge is down",
    LINK_BUSY: "the link to the bridge is full",
    LINK_LOST: "the link to the bridge went down",
    NO_ANSWER: "the bridge did not answer in time",
    BAD_ANSWER: "the bridge's answer broke the proxy protocol",
}

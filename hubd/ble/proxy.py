"""The bridge's Bluetooth proxy, as hubd sees it: `ble_*` requests and their answers over the
serial link (docs/ble-proxy.md).

:class:`BleProxy` gives each request a request id (``rid``), sends it as part of a lock
operation (it may use the link's reserved slots) and waits for the one `ble_done` with that id;
a discovery gathers its `ble_service`, `ble_char` and `ble_desc` on the way. It hands
`ble_notify` and `ble_lost` to the connection they name and `ble_adv` to whoever listens.

It never guesses: a request whose answer cannot come any more (the link went down, or the
bridge's ``ms`` and hubd's margin passed) ends with a status of hubd's side
(:data:`hubd.ble.errors.HUB_STATUSES`), and the caller decides what that means (a write: unknown,
never repeated). Whatever the bridge sends that breaks the protocol (an answer to no request, a
notification for no connection, a discovery result after its answer, a malformed field) is
dropped and counted in :attr:`BleProxy.dropped` and in hubd's input counts (inputs.BRIDGE).

When the link goes down the bridge drops every proxy connection and watch; so does hubd: every
connection hears it is lost (``host_link``), and the watches are sent again when the link is up.

The peers' GATT databases kept across connections (hubd.ble.gatt_cache) are the proxy's:
:attr:`BleProxy.gatt_cache`, one per hubd, in memory (``gatt_cache=False``: none kept).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

from hubd.ble import errors
from hubd.ble.advert import parse
from hubd.ble.gatt import Discovery
from hubd.ble.gatt_cache import GattCache
from hubd.ble.radio import AdvertCallback
from hubd.link.bridge import Bridge
from wire import messages
from wire.messages import make

log = logging.getLogger(__name__)

#: Added to a request's ``ms`` before hubd stops waiting for its answer: the link's transit and
#: retransmissions (docs/serial-link.md) and the bridge's own queue.
MARGIN_S = 3.0
#: The time a request without an ``ms`` of its own (subscribe, disconnect, watch) may take on
#: the bridge, and a discovery between two of its messages (the bridge's 2,000 ms per step).
STEP_MS = 2000
#: The bounds of a request's ``ms`` (docs/ble-proxy.md: refused outside them).
MIN_MS = 1
MAX_MS = 60000
MAX_SCAN_MS = 30000
#: Requests hubd stopped waiting for (timed out, cancelled, the link went down) whose answer
#: may still come, and connections dropped with the link whose ble_lost may still come: kept,
#: at most this many, so that answer is known as late, not unexpected.
_LATE_MAX = 32

_ADDR = re.compile(messages.ADDR_PATTERN)


@dataclass
class Done:
    """How one request ended: ``status`` from the bridge's `ble_done`
    (``wire.messages.BLE_STATUSES``) or from hubd's side (``hubd.ble.errors.HUB_STATUSES``)."""

    status: str
    conn: int | None = None
    data: bytes | None = None
    mtu: int | None = None
    count: int | None = None
    att: int | None = None
    discovery: Discovery | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Request:
    kind: str
    future: asyncio.Future[Done]
    discovery: Discovery | None = None
    timeout: asyncio.Timeout | None = None  # moved on by each discovery message


@dataclass
class Connection:
    """What hubd hears about one proxy connection: ``on_notify(handle, data)`` and
    ``on_lost(reason)`` (``wire.messages.BLE_LOST_REASONS``)."""

    on_notify: Callable[[int, bytes], str | None]  # a str: dropped, and why
    on_lost: Callable[[str], None]


def clamp_ms(seconds: float, top: int = MAX_MS) -> int:
    """A time in seconds as a request's ``ms``, within what the bridge accepts."""
    return max(MIN_MS, min(top, int(seconds * 1000)))


class BleProxy:
    """The bridge's Bluetooth proxy over ``bridge``; bleak's backends (hubd.ble.client,
    hubd.ble.scanner) are its callers."""

    _default: BleProxy | None = None

    def __init__(self, bridge: Bridge, margin_s: float = MARGIN_S,
                 gatt_cache: bool = True) -> None:
        self.bridge = bridge
        self.margin_s = margin_s
        self.gatt_cache = GattCache(gatt_cache)
        self.dropped: Counter[str] = Counter()
        self._rids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._conns: dict[int, Connection] = {}
        self._mtus: dict[int, int] = {}
        self._rewatching: asyncio.Task[None] | None = None
        self._advert_callbacks: dict[object, AdvertCallback] = {}
        self._watches: set[str] = set()
        # The bridge answers every request and reports every loss, also those it could not
        # send while the link was down, once it is back (docs/ble-proxy.md): hubd has given up
        # on them by then. Expected, so taken (and counted here), not dropped.
        self._given_up: dict[int, str] = {}  # rid -> kind
        self._dropped_with_link: dict[int, None] = {}  # oldest first, at most _LATE_MAX
        self._to_disconnect: set[int] = set()  # once the link is up again
        self.late_answers: Counter[str] = Counter()  # per request kind
        self.late_losses = 0
        self.addr_types: dict[str, int] = {}  # the address type each address advertised with
        for kind, handler in ((messages.BLE_DONE, self._on_done),
                              (messages.BLE_SERVICE, self._on_discovered),
                              (messages.BLE_CHAR, self._on_discovered),
                              (messages.BLE_DESC, self._on_discovered),
                              (messages.BLE_NOTIFY, self._on_notify),
                              (messages.BLE_LOST, self._on_lost),
                              (messages.BLE_ADV, self._on_adv)):
            bridge.on_message(kind, self._counted(handler))
        bridge.on_link_change(self._on_link)

    # -- the proxy backends find -------------------------------------------------------------

    def install(self) -> BleProxy:
        """Make this the proxy of bleak backends created without one
        (``BleakScanner(backend=ProxyScanner)``, ``BleakClient("C0:FF:..", backend=ProxyClient)``)."""
        BleProxy._default = self
        return self

    def uninstall(self) -> None:
        if BleProxy._default is self:
            BleProxy._default = None

    def close(self) -> None:
        """hubd stops: every request out ends ``link_lost``, every connection is lost, and the
        proxy is no longer the installed one."""
        self.uninstall()
        self._on_link(False)

    @classmethod
    def current(cls, given: BleProxy | None = None) -> BleProxy:
        """``given``, else the installed proxy; a BleakError naming the fix if there is none."""
        proxy = given if given is not None else cls._default
        if proxy is None:
            raise errors.ProxyError("no Bluetooth proxy: pass proxy=BleProxy(bridge) or call "
                                    "BleProxy(bridge).install() first", errors.LINK_DOWN)
        return proxy

    # -- hubd.ble.radio.Radio: what a lock driver needs, as through the hub's own adapter ----

    name = "the bridge's Bluetooth proxy"

    @property
    def down_reason(self) -> str | None:
        return None if self.bridge.is_up else "the link to the bridge is down"

    @property
    def is_up(self) -> bool:
        return self.bridge.is_up

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the link to the bridge is up; False if it did not come up in time."""
        return await self.bridge.wait_up(timeout)

    @property
    def client_backend(self) -> type[BaseBleakClient]:
        from hubd.ble.client import ProxyClient  # the client module imports this one

        return ProxyClient

    def client_kwargs(self, addr_type: int, gatt_timeout: float) -> dict[str, Any]:
        """This proxy, the address type and each read or write's time on the bridge."""
        return {"proxy": self, "addr_type": addr_type, "gatt_timeout": gatt_timeout}

    @property
    def scanner_backend(self) -> type[BaseBleakScanner]:
        from hubd.ble.scanner import ProxyScanner

        return ProxyScanner

    def scanner_kwargs(self) -> dict[str, Any]:
        return {"proxy": self}

    def ble_device(self, address: str) -> BLEDevice:
        """The proxy's client needs only the address (and the address type, from its kwargs)."""
        return BLEDevice(address.upper(), None, None)

    def forget(self, address: str, why: str) -> None:
        self.gatt_cache.forget(address, why)

    # -- requests ---------------------------------------------------------------------------

    async def request(self, kind: str, *fields: Any, wait_ms: int) -> Done:
        """Send one request (its fields after ``rid``, in wire.messages order) and wait for its
        answer for ``wait_ms`` plus the margin. Never raises but for cancellation."""
        rid = next(self._rids)
        loop = asyncio.get_running_loop()
        req = _Request(kind, loop.create_future())
        if kind == messages.BLE_DISCOVER:
            conn = fields[0]
            req.discovery = Discovery(lambda: self.write_without_response_size(conn))
        self._requests[rid] = req
        try:
            if not self.is_up:
                return Done(errors.LINK_DOWN)
            if not self.bridge.send_lock_message(make(kind, rid, *fields)):
                return Done(errors.LINK_DOWN if not self.is_up else errors.LINK_BUSY)
            try:
                async with asyncio.timeout(wait_ms / 1000 + self.margin_s) as req.timeout:
                    return await req.future
            except TimeoutError:
                self._give_up(rid, kind)
                log.warning("bridge gave no answer to %s (rid %d) in %.1f s", kind, rid,
                            wait_ms / 1000 + self.margin_s)
                return Done(errors.NO_ANSWER)
        except asyncio.CancelledError:
            self._give_up(rid, kind)
            raise
        finally:
            del self._requests[rid]

    def _give_up(self, rid: int, kind: str) -> None:
        self._given_up[rid] = kind
        while len(self._given_up) > _LATE_MAX:
            del self._given_up[next(iter(self._given_up))]

    def write_without_response_size(self, conn: int) -> int:
        """The largest write without response on ``conn``: its MTU less 3, within MAX_DATA."""
        mtu = self._mtus.get(conn, 23)
        return min(mtu, messages.MAX_DATA + 3) - 3

    def attach(self, conn: int, connection: Connection, mtu: int) -> None:
        """Hear ``conn``'s notifications and its loss (until it is lost or detached)."""
        self._conns[conn] = connection
        self._mtus[conn] = mtu
        self._dropped_with_link.pop(conn, None)  # the handle is a new connection's now

    def detach(self, conn: int) -> None:
        self._conns.pop(conn, None)
        self._mtus.pop(conn, None)

    async def scan(self, seconds: float) -> Done:
        """One active ``ble_scan`` of ``seconds`` (at most MAX_SCAN_MS); its adverts reach
        :meth:`on_advert`. A scan already running on the bridge (``refused``) is waited out:
        its adverts reach us too."""
        ms = clamp_ms(seconds, MAX_SCAN_MS)
        done = await self.request(messages.BLE_SCAN, ms, True, wait_ms=ms)
        if done.status == "refused":
            await asyncio.sleep(ms / 1000)
            return Done("ok")
        return done

    async def watch(self, addr: str, on: bool = True) -> Done:
        """Ask the bridge to forward ``addr``'s adverts (on False: stop); kept and sent again
        whenever the link comes back up. At most ``MAX_WATCH`` addresses."""
        if on and addr not in self._watches and len(self._watches) >= messages.MAX_WATCH:
            return Done("refused")
        if on:
            self._watches.add(addr)
        else:
            self._watches.discard(addr)
        return await self.request(messages.BLE_WATCH, addr, on, wait_ms=STEP_MS)

    @property
    def watches(self) -> frozenset[str]:
        return frozenset(self._watches)

    def on_advert(self, callback: AdvertCallback) -> Callable[[], None]:
        """Hear every advert the bridge forwards (scans and watches); returns the way to stop."""
        token = object()
        self._advert_callbacks[token] = callback
        return lambda: self._advert_callbacks.pop(token, None)  # type: ignore[func-returns-value]

    # -- what the bridge sends --------------------------------------------------------------

    def _counted(self, handler: Callable[[dict[str, Any]], str | None]) -> Callable[[dict[str, Any]], str | None]:
        def take(msg: dict[str, Any]) -> str | None:
            why = handler(msg)
            if why is not None:
                self.dropped[why.split(":", 1)[0]] += 1
            return why  # Bridge counts it again under inputs.BRIDGE, and logs it
        return take

    def _on_done(self, msg: dict[str, Any]) -> str | None:
        rid = msg["rid"]
        req = self._requests.get(rid)
        if req is None or req.future.done():
            kind = self._given_up.pop(rid, None)
            if kind is None:
                return f"done_for_no_request: rid {rid}"
            self.late_answers[kind] += 1
            # For a write reported unknown this is what became of it: evidence, so said louder.
            log.log(logging.WARNING if kind == messages.BLE_WRITE else logging.INFO,
                    "late answer to %s (rid %d): %s", kind, rid, msg["status"])
            if kind == messages.BLE_CONNECT and msg["status"] == "ok" and msg["conn"] is not None:
                # A connect hubd gave up on went through after all: give its slot back.
                self.bridge.send_lock_message(make(messages.BLE_DISCONNECT, next(self._rids),
                                                   msg["conn"]))
            return None
        done = Done(msg["status"], msg["conn"], None, msg["mtu"], msg["count"], msg["att"],
                    req.discovery)
        if msg["data"] is not None:
            done.data = bytes.fromhex(msg["data"])
        why = self._check_done(req, done)
        if why is not None:
            req.future.set_result(Done(errors.BAD_ANSWER))
            return why
        req.future.set_result(done)
        return None

    @staticmethod
    def _check_done(req: _Request, done: Done) -> str | None:
        if done.status == "gatt_error" and done.att is None:
            return "bad_done: gatt_error without att"
        if not done.ok:
            return None
        if req.kind == messages.BLE_CONNECT and (done.conn is None or done.mtu is None
                                                 or not 23 <= done.mtu <= 517):
            return "bad_done: connect without conn or mtu"
        if req.kind == messages.BLE_READ and done.data is None:
            return "bad_done: read without data"
        if req.discovery is not None and done.count != req.discovery.received:
            return (f"bad_done: discovery count {done.count}, {req.discovery.received} "
                    "messages came")
        return None

    def _on_discovered(self, msg: dict[str, Any]) -> str | None:
        req = self._requests.get(msg["rid"])
        if req is None or req.discovery is None or req.future.done():
            if self._given_up.get(msg["rid"]) == messages.BLE_DISCOVER:
                return None  # the rest of a discovery hubd stopped waiting for
            return f"discovery_unexpected: {msg['m']} for rid {msg['rid']}"
        if req.timeout is not None:  # the bridge's timeout is per step
            req.timeout.reschedule(asyncio.get_running_loop().time() + STEP_MS / 1000 + self.margin_s)
        return req.discovery.take(msg)

    def _on_notify(self, msg: dict[str, Any]) -> str | None:
        connection = self._conns.get(msg["conn"])
        if connection is None:
            return f"notify_for_no_conn: {msg['conn']}"
        return connection.on_notify(msg["handle"], bytes.fromhex(msg["data"]))

    def _on_lost(self, msg: dict[str, Any]) -> str | None:
        connection = self._conns.get(msg["conn"])
        if connection is None:
            # host_link, or what ended it first (the lock dropped it meanwhile: peer)
            if msg["conn"] in self._dropped_with_link:
                del self._dropped_with_link[msg["conn"]]
                self.late_losses += 1
                return None
            return f"lost_for_no_conn: {msg['conn']}"
        self.detach(msg["conn"])
        _call(connection.on_lost, msg["reason"])
        return None

    def _on_adv(self, msg: dict[str, Any]) -> str | None:
        addr = msg["addr"]
        if not _ADDR.fullmatch(addr) or msg["addr_type"] not in (0, 1) \
                or not -127 <= msg["rssi"] <= 20:
            return "bad_adv"
        advert = parse(bytes.fromhex(msg["data"]),
                       bytes.fromhex(msg["resp"]) if msg["resp"] is not None else None)
        self.addr_types[addr] = msg["addr_type"]
        if len(self.addr_types) > 256:  # radio input must not grow memory
            del self.addr_types[next(iter(self.addr_types))]
        for callback in list(self._advert_callbacks.values()):
            _call(callback, addr, msg["addr_type"], msg["rssi"], advert, msg)
        return None

    def _on_link(self, up: bool) -> None:
        # Either way the bridge has no proxy connection or watch left (docs/ble-proxy.md).
        if not up:
            for rid, req in self._requests.items():
                if not req.future.done():
                    req.future.set_result(Done(errors.LINK_LOST))
                    self._give_up(rid, req.kind)
        for conn, connection in list(self._conns.items()):
            self.detach(conn)
            if not up:
                self._dropped_with_link[conn] = None
                self._to_disconnect.add(conn)
            _call(connection.on_lost, "host_link")
        while len(self._dropped_with_link) > _LATE_MAX:  # a restarted bridge sends none
            del self._dropped_with_link[next(iter(self._dropped_with_link))]
        if up:
            # Each end judges the link down by its own silence: one the bridge did not see go
            # down kept its connections. Asked once more to drop them ("ok" if it has), before
            # anything else can take their handles.
            for conn in sorted(self._to_disconnect):
                rid = next(self._rids)
                self._give_up(rid, messages.BLE_DISCONNECT)
                self.bridge.send_lock_message(make(messages.BLE_DISCONNECT, rid, conn))
            self._to_disconnect.clear()
        if up and self._watches and (self._rewatching is None or self._rewatching.done()):
            self._rewatching = asyncio.get_running_loop().create_task(self._rewatch(),
                                                                      name="ble-rewatch")

    async def _rewatch(self) -> None:
        for addr in sorted(self._watches):
            done = await self.request(messages.BLE_WATCH, addr, True, wait_ms=STEP_MS)
            if not done.ok:
                log.warning("could not watch %s again after the link came up: %s", addr, done.status)


def _call(callback: Callable[..., Any], *args: Any) -> None:
    # A listener is a library's code: its bug must not keep the message from the others.
    try:
        callback(*args)
    except Exception:
        log.exception("a Bluetooth proxy listener raised")

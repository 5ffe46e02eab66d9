"""The bleak clients a vendor's lock library makes itself, put on hubd's radio, and the
at-most-once guard around one command sent through such a library.

py-dormakaba-dkey (docs/dkey.md, "The library's seams") builds its own ``BleakClient`` through
bleak-retry-connector, with no ``backend=`` and no keyword arguments, so bleak would pick the
platform's backend (BlueZ) with BlueZ's default adapter: not the bridge's Bluetooth proxy, not a
configured ``adapter``, not a test bench's simulated radio. Neither library is edited. Instead
:func:`install` wraps bleak's backend lookup (``bleak.get_platform_client_backend_type``, which
``BleakClient.__init__`` calls whenever it is given no backend) once per process, and the
wrapped lookup asks the current context: inside :func:`on_radio` every client made without a
backend is the radio's (hubd.ble.radio: its ``client_backend``, or the platform's, bound to its
``client_kwargs`` for that address); outside it the platform's, as before. A context variable
carries it, so it follows the library's awaits and the tasks they start, and two locks on two
calls never see each other's. (Home Assistant does the equivalent for its ESPHome proxies by
replacing ``BleakClient`` itself; that only works before a library imports the class by name.)

    vendor.install()
    with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0):
        await dkey.update()                       # connects through the radio
    guard = vendor.OneCommand(on_written)
    with vendor.on_radio(radio, addr_type=0, gatt_timeout=2.0, guard=guard):
        await dkey.unlock()
    guard.written                                 # whether a write was attempted

**At most once** (docs/architecture.md, "Trust and safety") cannot rest on such a library: on a
``BleakError`` inside a procedure py-dormakaba-dkey reconnects, authenticates and runs the whole
procedure again, so a write whose answer was lost is sent twice. A :class:`OneCommand` guard
enforces the rule under the library, where its writes reach the radio: the first write made
in the guarded call (the command; the caller has connected and authenticated before) calls
``on_written`` (hubd's journal) before it goes; after a write, a new connection in the same call
is refused, and after a write that failed so is any further write; both with
:class:`SecondAttempt`, which is no bleak error, so the library's retry gives up at once. Writes
the library makes from its own tasks (the ACKs it sends for the lock's reports) are outside the
call's context and not counted. If the library had to connect and authenticate again inside
the call (the link dropped after the caller's own connect), those writes come first and count:
the rule then errs on the safe side (an answerless command reported ``incomplete`` that may not
have gone), never the other way.

The guard's limit: writes after a successful first one pass (a command of several frames needs
them, and so does a handshake the library redoes inside the call), so a library that resends a command on the same
link when an answer is late (pyNukiBT does: docs/danalock.md) is not stopped by it; such a
library needs a guard that knows its command frames.

Given a :class:`Clients` record, :func:`on_radio` notes what the library's clients did in its
context: every client made (py-dormakaba-dkey never disconnects a client whose ``pair()`` failed,
so its caller closes the ones left connected itself), the connections made, and the bondings that
failed. After a failed bonding no new connection is made in that context (``SecondAttempt``):
the library would retry ``pair()`` from a new connection while the client it left still holds
the lock's one connection, so the retries could only wait out the caller's timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bleak
from bleak.backends.client import BaseBleakClient
from bleak.exc import BleakError

from hubd.ble.radio import Radio

log = logging.getLogger(__name__)


class SecondAttempt(Exception):
    """A library tried to connect again, or to write again after a failed write, within one
    guarded command: refused, so the command is never sent twice. Deliberately not a
    ``BleakError``: a library's retry must not catch it."""


@dataclass
class OneCommand:
    """The at-most-once guard of one command (module docstring): ``on_written`` is called once,
    just before the first write is attempted."""

    on_written: Callable[[], None]
    written: bool = False  # a write was attempted: the lock may have taken the command
    failed: bool = False  # a write raised: its fate is unknown
    refused: int = 0  # attempts refused with SecondAttempt


@dataclass
class Clients:
    """What the clients a library made in one :func:`on_radio` context did (module docstring)."""

    made: list[BaseBleakClient] = field(default_factory=list)  # every client, in order
    connected: int = 0  # connections made
    bond_failures: list[BleakError] = field(default_factory=list)  # what pair() raised


@dataclass(frozen=True)
class _Binding:
    backend: type[BaseBleakClient]
    kwargs: dict[str, Any] = field(default_factory=dict)
    guard: OneCommand | None = None
    clients: Clients | None = None


_current: contextvars.ContextVar[_Binding | None] = contextvars.ContextVar("hubd_ble_vendor",
                                                                           default=None)
_platform_lookup: Callable[[], tuple[type[BaseBleakClient], str]] | None = None


def install() -> None:
    """Wrap bleak's backend lookup once per process (module docstring); idempotent."""
    global _platform_lookup
    if _platform_lookup is not None:
        return
    original = bleak.get_platform_client_backend_type
    _platform_lookup = original

    def lookup() -> tuple[type[BaseBleakClient], str]:
        binding = _current.get()
        if binding is None:
            return original()
        return _bound(binding), binding.backend.__name__

    bleak.get_platform_client_backend_type = lookup


@contextlib.contextmanager
def on_radio(radio: Radio, *, addr_type: int, gatt_timeout: float,
             guard: OneCommand | None = None,
             clients: Clients | None = None) -> Iterator[None]:
    """Every ``BleakClient`` made without a backend in this context is on ``radio`` (reaching an
    address of ``addr_type``, each GATT request given ``gatt_timeout`` s); with ``guard``, its
    connects and writes are held to one command; with ``clients``, what they do is noted there
    and a failed bonding is not followed by a new connection (module docstring). Needs
    :func:`install`."""
    if _platform_lookup is None:
        raise RuntimeError("hubd.ble.vendor.install() was not called")
    backend = radio.client_backend
    if backend is None:
        backend = _platform_lookup()[0]
    token = _current.set(_Binding(backend, radio.client_kwargs(addr_type, gatt_timeout), guard,
                                  clients))
    try:
        yield
    finally:
        _current.reset(token)


@functools.lru_cache(maxsize=None)
def _guarded(backend: type[BaseBleakClient]) -> type[BaseBleakClient]:
    """``backend`` with its connects, bondings and writes checked against, and noted in, the
    context each is made in."""

    class Guarded(backend):  # type: ignore[valid-type,misc]
        async def connect(self, *args: Any, **kwargs: Any) -> Any:
            binding = _current.get()
            guard, clients = (None, None) if binding is None else (binding.guard, binding.clients)
            if guard is not None and guard.written:
                guard.refused += 1
                raise SecondAttempt("a second connection after the command's write")
            if clients is not None and clients.bond_failures:
                raise SecondAttempt("bonding failed: no new connection in this call")
            done = await super().connect(*args, **kwargs)
            if clients is not None:
                clients.connected += 1
            return done

        async def pair(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().pair(*args, **kwargs)
            except BleakError as exc:
                binding = _current.get()
                if binding is not None and binding.clients is not None:
                    binding.clients.bond_failures.append(exc)
                raise

        async def write_gatt_char(self, characteristic: Any, data: Any, response: bool) -> Any:
            binding = _current.get()
            guard = None if binding is None else binding.guard
            if guard is not None:
                if guard.failed:
                    guard.refused += 1
                    raise SecondAttempt("a write after the command's write failed")
                if not guard.written:
                    guard.written = True
                    guard.on_written()
            try:
                return await super().write_gatt_char(characteristic, data, response)
            except BaseException:
                if guard is not None:
                    guard.failed = True
                raise

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{backend.__name__}"
    return Guarded


def _bound(binding: _Binding) -> type[BaseBleakClient]:
    """A backend class that makes ``binding.backend`` clients with the binding's keyword
    arguments (the caller's win), each one noted in the binding's Clients. Its requests are
    checked against the context each is made in (a client made before the command, when the
    library connected, is held to the command's guard as well)."""
    guarded = _guarded(binding.backend)
    kwargs, clients = binding.kwargs, binding.clients

    class Bound(guarded):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **given: Any) -> None:
            super().__init__(*args, **{**kwargs, **given})
            if clients is not None:
                clients.made.append(self)

    Bound.__name__ = Bound.__qualname__ = binding.backend.__name__
    return Bound

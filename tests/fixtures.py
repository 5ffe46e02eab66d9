"""Pytest fixtures shared by ``tests/`` and ``hil_tests/`` (registered in the root ``conftest.py``).

- ``mosquitto``: a started private broker (:class:`tests.mosquitto.Mosquitto`); the test may
  ``stop()``, ``kill()``, ``start()`` or ``restart()`` it.
- ``mosquitto_factory``: ``mosquitto_factory(passwords=..., acl=..., tls=TlsListener(...),
  extra_config=[...])`` starts another configured broker; all are stopped at teardown.
- ``test_ca``: a fresh certificate authority (:class:`tests.tls.TestCA`) for TLS listeners and
  client certificates.
- ``backend_key``: a fresh backend signing key (:class:`BackendKey`) with its kid.

:func:`record_pairings` puts simulated locks' pairings into hubd's state, as ``hubctl pair``
leaves them: the one way tests give hubd a lock already paired (simulator.home.record_pairings).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hubapi import signing
from hubapi.models import CommandClaims
from simulator import bleak_backend
from simulator.locks import ReferenceProtocolLock
from simulator.radio import Radio
from tests.mosquitto import Mosquitto, MosquittoNotInstalled
from tests.tls import TestCA

if TYPE_CHECKING:
    from hubd.ble.direct import DirectRadio


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start configured private brokers on free loopback ports; stop them all afterwards."""
    brokers: list[Mosquitto] = []

    def start(**settings: Any) -> Mosquitto:
        try:
            broker = Mosquitto(tmp_path / f"mosquitto-{len(brokers)}", **settings)
        except MosquittoNotInstalled as exc:
            pytest.fail(str(exc), pytrace=False)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A started private broker allowing anonymous clients."""
    return mosquitto_factory()


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCA:
    """A fresh test CA writing its certificates under the test's temp directory."""
    return TestCA(tmp_path / "pki")


#: A serial link key for hubd configurations in tests that run no bridge (any 32 bytes do).
LINK_KEY = bytes(range(32))


@dataclass(frozen=True)
class BackendKey:
    """A backend signing key as the hub config names it."""

    kid: str
    private: Ed25519PrivateKey

    @property
    def public_text(self) -> str:
        """The public key in the form a hub's ``[keys]`` section takes."""
        return signing.public_key_text(self.private)

    def sign(self, claims: CommandClaims) -> str:
        """The command as its MQTT payload."""
        return signing.sign(claims, self.private, self.kid)


@pytest.fixture
def backend_key() -> BackendKey:
    """A fresh Ed25519 backend key with kid ``backend-test``."""
    return BackendKey("backend-test", signing.generate_private_key())


def record_pairings(state_dir: Path, locks: Iterable[ReferenceProtocolLock]) -> None:
    """Record each (paired) simulated lock under its lock id in hubd's state database in
    ``state_dir``, with its kind, address, address type and secret, as hubd's pairing keeps
    them (hubd/store/pairings.py)."""
    from simulator.home import record_pairings as record

    record(state_dir, locks)


@pytest.fixture
async def air() -> AsyncIterator[Radio]:
    """The simulated radio, started, on a socket in a short temporary directory (a unix socket's
    path must stay under ~100 bytes); afterwards the simulator's bleak adapters on it are
    closed and its default socket forgotten (simulator.bleak_backend)."""
    path = os.path.join(tempfile.mkdtemp(prefix="air-"), "radio.sock")
    radio = Radio(path)
    await radio.start()
    yield radio
    await bleak_backend.close_adapters()
    bleak_backend.uninstall()
    await radio.stop()
    os.rmdir(os.path.dirname(path))


@contextlib.asynccontextmanager
async def sim_adapter(air: Radio, *watched: str, **options: Any) -> AsyncIterator[DirectRadio]:
    """The hub's own adapter in direct mode on the simulated ``air`` (hubd.ble.direct.DirectRadio
    on the simulator's bleak backends, as hubd.toml's ``simulated_radio`` makes it), started,
    with bleak's lookup wrapped for vendor libraries (hubd.ble.vendor) and ``watched`` addresses
    watched; closed after. ``options``: DirectRadio's (presence_s, window_s, retry_s)."""
    from hubd.ble import vendor
    from hubd.ble.direct import DirectRadio

    vendor.install()
    radio = DirectRadio(backends=(bleak_backend.SimClient, bleak_backend.SimScanner),
                        options={"radio_socket": air.socket_path}, **options)
    try:
        assert await radio.start(), radio.down_reason
        for address in watched:
            await radio.watch(address)
        yield radio
    finally:
        await radio.close()

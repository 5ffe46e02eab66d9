"""Fixtures for hubd/hubapi unit and broker tests (the broker fixtures come from tests/fixtures.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from hubapi.models import Actor, CommandClaims, Role

HUB = "hub-test"
LOCKS = ("front", "keybox")


@pytest.fixture
def make_claims() -> Callable[..., CommandClaims]:
    """Claims for a valid staff unlatch of ``front`` on ``hub-test``; keyword arguments override fields."""

    def make(**overrides: Any) -> CommandClaims:
        fields: dict[str, Any] = dict(
            hub=HUB,
            lock="front",
            action="unlatch",
            actor=Actor(id="staff-7", role=Role.STAFF),
            assignment="visit-42",
            ttl_s=30,
            now=time.time(),
        )
        fields.update(overrides)
        return CommandClaims.new(**fields)

    return make


@pytest.fixture(autouse=True)
def _no_hubd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HUBD_* variables of the developer's shell must not leak into a test's configuration."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("HUBD_"):
            monkeypatch.delenv(name)

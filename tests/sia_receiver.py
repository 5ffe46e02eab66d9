"""The alarm centre's DC-09 receiver (simulator/dc09_receiver.py: pysiaalarm, unmodified) with the
account and key the tests use."""

from __future__ import annotations

import pytest

from simulator import dc09_receiver
from simulator.dc09_receiver import Dc09Receiver

ACCOUNT = "12AB"
KEY = "0123456789ABCDEF"  # pysiaalarm takes the key as ASCII characters
KEY_B = KEY.encode()


def require_pysiaalarm() -> None:
    """Interop with pysiaalarm is a requirement: its absence fails loudly, never skips."""
    if dc09_receiver.SIAClient is None:
        pytest.fail(dc09_receiver.MISSING, pytrace=False)


class Receiver(Dc09Receiver):
    """pysiaalarm on loopback for the test account (AES with ``key`` when given)."""

    def __init__(self, key: str | None = None, timeband: tuple[int, int] = (40, 20)) -> None:
        require_pysiaalarm()
        super().__init__({ACCOUNT: key}, timeband=timeband)

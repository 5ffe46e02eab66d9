"""Ports for the listeners the simulator and the tests start (brokers, DC-09 receivers).

Chosen below the kernel's ephemeral range: a port picked by binding port 0 comes from that range,
the same one every outgoing connection takes its local port from, so between choosing it and the
listener binding it any client could take it (a scenario failed "address already in use" while
another suite ran beside it). Below the range only another listener can, and the choice is random
over twenty thousand ports.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_pick = random.SystemRandom()  # not the random module's state, which tests seed


def _ephemeral_start() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now and that no outgoing connection will take."""
    top = max(_LOWEST + 1000, _ephemeral_start())
    for _ in range(500):
        port = _pick.randrange(_LOWEST, top)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free TCP port on {host} in {_LOWEST}..{top - 1}")

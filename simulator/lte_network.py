"""The LTE-M network between the simulated BG95 (simulator/modem.py) and the internet: what its
sockets' bytes go through, and the addresses it reaches.

Each TCP connection the modem opens is real TCP on this host; the model sits on its bytes, one
`Pipe` a direction: a segment (at most MSS bytes) leaves when the link has sent the ones before
it at the direction's bandwidth, and arrives one-way latency plus jitter later. Loss is shown
the way TCP shows it to both ends: a lost segment is retransmitted, so it arrives a
retransmission timeout late and holds up the segments behind it (TCP delivers in order); no byte
is ever lost or damaged while the connection lives. Coverage loss is not the pipe's business: the
modem tears its connections down (pdpdeact).

`Conditions` are the knobs; `realistic()` is the default, from published LTE-M figures
(docs/second-path.md, "The LTE network model", gives them and their sources), `fast()` a network
without delay for tests that need speed. A modem's ``network.conditions`` (or any field of it)
may change while running: a segment takes the conditions of the moment it is sent.

`Network.addresses` is the network's view of the world: (host, port) asked for in AT+QIOPEN ->
the address this host really connects to. The home maps the broker's address as hubd knows it
(the home router's, simulator/router.py) to the broker itself, so LTE reaches the broker while
the home's broadband is cut.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from simulator.pacing import Timeline

MSS = 1460  # a TCP segment's payload on a 1500-byte MTU
UP = "up"  # modem -> internet
DOWN = "down"  # internet -> modem


@dataclass
class Conditions:
    """The network's figures. Bandwidths in bytes per second (math.inf: no limit)."""

    latency_s: float  # one way, each direction
    jitter_s: float  # up to this much more, drawn per segment
    up_bytes_s: float  # the modem's uplink
    down_bytes_s: float
    loss: float  # share of segments lost once (0..1): each costs rto_s
    rto_s: float  # what a lost segment costs: retransmission timeout

    @property
    def rtt_s(self) -> float:
        """The round trip without jitter."""
        return 2 * self.latency_s


def realistic() -> Conditions:
    """LTE-M as a BG95 in a home meets it (figures and sources: docs/second-path.md, "The LTE
    network model"): 75-125 ms one way (a 150-250 ms round trip, inside the 100-300 ms measured
    on LTE-M), 16 kB/s each way (128 kbit/s, the order of the ~100 kbit/s application
    throughput reported in the field, far under the BG95's 588/1119 kbit/s peaks), 1 % of
    segments lost once, each costing a 1 s retransmission timeout (RFC 6298's minimum)."""
    return Conditions(latency_s=0.075, jitter_s=0.05, up_bytes_s=16_000, down_bytes_s=16_000,
                      loss=0.01, rto_s=1.0)


def fast() -> Conditions:
    """No latency, no bandwidth limit, no loss: for tests that need speed, not realism."""
    return Conditions(latency_s=0.0, jitter_s=0.0, up_bytes_s=math.inf, down_bytes_s=math.inf,
                      loss=0.0, rto_s=0.0)


class Network:
    """The network the modem's sockets cross: its conditions and its address map."""

    def __init__(self, conditions: Conditions | None = None,
                 addresses: Mapping[tuple[str, int], tuple[str, int]] | None = None,
                 seed: int = 0) -> None:
        self.conditions = conditions if conditions is not None else realistic()
        self.addresses: dict[tuple[str, int], tuple[str, int]] = dict(addresses or {})
        self._rng = random.Random(seed)

    def set(self, **figures: float) -> None:
        """Change some figures while running, e.g. ``network.set(latency_s=0.5)``."""
        self.conditions = replace(self.conditions, **figures)

    def route(self, host: str, port: int) -> tuple[str, int] | None:
        """Where a connection to host:port really goes: the address map's entry, else an IP
        address as it is; None for a name the network cannot resolve (the simulated network's
        DNS knows only its map)."""
        if (host, port) in self.addresses:
            return self.addresses[(host, port)]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return host, port

    def one_way(self) -> float:
        """One crossing of the network: latency plus this crossing's jitter."""
        c = self.conditions
        return c.latency_s + (self._rng.uniform(0, c.jitter_s) if c.jitter_s > 0 else 0.0)

    def lost(self) -> bool:
        c = self.conditions
        return c.loss > 0 and self._rng.random() < c.loss

    def pipe(self, direction: str, deliver: Callable[[bytes | None], None]) -> Pipe:
        return Pipe(self, direction, deliver)


class Pipe:
    """One direction of one connection. ``send(data)`` puts bytes on it; ``finish()`` puts the
    connection's end (FIN) behind them; ``deliver`` gets each segment on arrival, then None for
    the end. ``clear()`` forgets what is on its way (the connection is gone)."""

    def __init__(self, network: Network, direction: str,
                 deliver: Callable[[bytes | None], None]) -> None:
        self._network = network
        self._direction = direction
        self._line = Timeline(self._arrive)
        self._deliver = deliver
        self._free = 0.0  # when the link has sent everything given so far
        self.in_flight = 0  # bytes sent, not yet arrived

    def _bandwidth(self) -> float:
        c = self._network.conditions
        return c.up_bytes_s if self._direction == UP else c.down_bytes_s

    def _due(self, n: int) -> float:
        now = asyncio.get_running_loop().time()
        bw = self._bandwidth()
        self._free = max(now, self._free) + (n / bw if bw and not math.isinf(bw) else 0.0)
        due = self._free + self._network.one_way()
        if n and self._network.lost():
            due += self._network.conditions.rto_s
        return due

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), MSS):
            segment = bytes(data[i:i + MSS])
            self.in_flight += len(segment)
            self._line.at(self._due(len(segment)), segment)

    def finish(self) -> None:
        self._line.at(self._due(0), None)

    def clear(self) -> None:
        self._line.clear()
        self.in_flight = 0

    def _arrive(self, segment: bytes | None) -> None:
        if segment is not None:
            self.in_flight -= len(segment)
        self._deliver(segment)

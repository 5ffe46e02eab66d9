"""The LTE-M network model's pipes (simulator/lte_network.py) on their own: bytes arrive whole and
in order whatever the jitter and loss, never sooner than the model allows (its time is a lower
bound: a loaded machine only makes them later), and the address map routes as the modem needs."""

from __future__ import annotations

import asyncio

from simulator import lte_network
from simulator.lte_network import DOWN, UP, Conditions, Network
from tests.waiting import until


class Arrivals:
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes | None]] = []

    def __call__(self, segment: bytes | None) -> None:
        self.got.append((asyncio.get_running_loop().time(), segment))


async def test_segments_arrive_in_order_whole_and_no_sooner_than_latency_and_bandwidth() -> None:
    c = Conditions(latency_s=0.05, jitter_s=0.1, up_bytes_s=20_000, down_bytes_s=1e9, loss=0.0,
                   rto_s=0.0)
    arrivals = Arrivals()
    pipe = Network(c, seed=7).pipe(UP, arrivals)
    loop = asyncio.get_running_loop()
    sent = [bytes([i]) * 1000 for i in range(10)]
    start = loop.time()
    for s in sent:
        pipe.send(s)
    pipe.finish()
    assert pipe.in_flight == 10_000
    await until(lambda: arrivals.got and arrivals.got[-1][1] is None, "the FIN")
    assert [seg for _, seg in arrivals.got] == [*sent, None]  # jitter never reorders
    assert pipe.in_flight == 0
    for i, (at, _) in enumerate(arrivals.got[:-1]):
        # the link has sent i + 1 segments at 20 kB/s, then the latency
        assert at - start >= (i + 1) * 1000 / 20_000 + c.latency_s


async def test_a_lost_segment_is_late_by_the_retransmission_timeout_never_missing() -> None:
    net = Network(lte_network.fast())
    arrivals = Arrivals()
    pipe = net.pipe(DOWN, arrivals)
    loop = asyncio.get_running_loop()
    net.set(loss=1.0, rto_s=0.2)  # changed while running: every segment lost once
    start = loop.time()
    pipe.send(b"x" * 3000)  # three segments (MSS 1460)
    await until(lambda: sum(len(s or b"") for _, s in arrivals.got) == 3000, "the bytes")
    assert [len(s or b"") for _, s in arrivals.got] == [1460, 1460, 80]
    assert all(at - start >= 0.2 for at, _ in arrivals.got)


async def test_fast_is_immediate_and_realistic_is_lte_m() -> None:
    arrivals = Arrivals()
    Network(lte_network.fast()).pipe(UP, arrivals).send(b"now")
    assert [s for _, s in arrivals.got] == [b"now"]  # delivered within send(): no delay at all
    r = lte_network.realistic()
    assert 0.1 <= r.rtt_s <= r.rtt_s + 2 * r.jitter_s <= 0.3  # a 100-300 ms round trip
    assert 10_000 <= r.up_bytes_s <= 100_000 and 10_000 <= r.down_bytes_s <= 100_000


def test_the_address_map_routes_and_unknown_names_do_not_resolve() -> None:
    net = Network(addresses={("broker.example", 8883): ("127.0.0.1", 18883)})
    assert net.route("broker.example", 8883) == ("127.0.0.1", 18883)
    assert net.route("10.1.2.3", 1883) == ("10.1.2.3", 1883)
    assert net.route("::1", 1883) == ("::1", 1883)
    assert net.route("broker.example", 1883) is None  # another port: not in the map
    assert net.route("elsewhere.example", 8883) is None

"""The home's broadband (simulator/router.py) between a client and a TCP server standing in for
the broker, over real TCP on loopback; and a simulated home wired with it (simulator/home.py):
hubd's broker address is the router's, and the modem's network reaches the broker itself."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.home import SimulatedHome
from simulator.router import BLACKHOLE, RESET, Router
from tests.simulator.test_modem import Peer
from tests.waiting import until


@pytest.fixture
async def broadband() -> AsyncIterator[tuple[Router, Peer]]:
    broker = await Peer(echo=True).start()
    router = Router(("127.0.0.1", broker.port))
    await router.start()
    yield router, broker
    await router.stop()
    await broker.stop()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 10) == data


async def test_connections_are_forwarded_to_the_broker(broadband: tuple[Router, Peer]) -> None:
    router, broker = broadband
    assert router.address[1] != broker.port
    reader, writer = await asyncio.open_connection(*router.address)
    await echo(reader, writer, os.urandom(100_000))
    assert router.accepted == 1 and len(broker.conns) == 1
    writer.close()
    await until(lambda: broker.conns[0][0].at_eof(), "the broker hearing the close")


async def test_a_reset_resets_open_connections_and_refuses_new_ones(
        broadband: tuple[Router, Peer]) -> None:
    router, broker = broadband
    reader, writer = await asyncio.open_connection(*router.address)
    await echo(reader, writer, b"before")
    router.cut(RESET)
    assert not router.up
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 10)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*router.address)
    assert not broker.conns[0][0].at_eof()  # the broker heard nothing of the cut
    router.restore()
    reader, writer = await asyncio.open_connection(*router.address)
    await echo(reader, writer, b"after")
    assert len(broker.conns) == 2
    writer.close()


async def test_a_black_hole_holds_bytes_and_handshakes_until_the_line_is_back(
        broadband: tuple[Router, Peer]) -> None:
    router, broker = broadband
    reader, writer = await asyncio.open_connection(*router.address)
    await echo(reader, writer, b"before")
    router.cut(BLACKHOLE)
    writer.write(b"held")
    # A new connection's SYN is dropped: its connect hangs. Meanwhile nothing crossed.
    pending = asyncio.ensure_future(asyncio.open_connection(*router.address))
    done, _ = await asyncio.wait([pending], timeout=0.3)
    assert not done, "a connect through a black hole completed"
    assert bytes(broker.got[0]) == b"before" and not reader.at_eof()
    router.restore()
    # The held bytes cross (TCP retransmitted them), the same connection carries on ...
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"held"
    assert bytes(broker.got[0]) == b"beforeheld"
    # ... and the hanging connect gets through on its SYN's retransmission.
    reader2, writer2 = await asyncio.wait_for(pending, 10)
    await echo(reader2, writer2, b"new")
    assert len(broker.conns) == 2
    for w in (writer, writer2):
        w.close()


async def test_a_cut_can_change_its_kind_and_stopping_closes_everything(
        broadband: tuple[Router, Peer]) -> None:
    router, broker = broadband
    reader, writer = await asyncio.open_connection(*router.address)
    await echo(reader, writer, b"x")
    router.cut(BLACKHOLE)
    router.cut(RESET)  # restored in between: the held connection is reset now
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 10)
    with pytest.raises(ValueError):
        router.cut("sulk")
    await router.stop()
    await until(lambda: broker.conns[0][0].at_eof(), "the broker's side closed at stop")


async def test_a_home_wires_hubds_broker_address_through_its_router(tmp_path: Path) -> None:
    broker = await Peer(echo=True).start()
    home = SimulatedHome(tmp_path / "home", broker=("127.0.0.1", broker.port), broadband=False,
                         lte={"apn": "internet.m2m", "host": "127.0.0.1", "port": 9,
                              "account": "1234"})
    try:
        await home.start()
        assert home.router is not None and home.modem is not None
        assert home.broker_address == ("127.0.0.1", home.router.address[1])
        # LTE's view of the world: the broker's address as hubd knows it is the broker itself
        assert home.modem.network.route(*home.broker_address) == ("127.0.0.1", broker.port)
        with pytest.raises(ConnectionRefusedError):  # no broadband from the start
            await asyncio.open_connection(*home.broker_address)
        home.router.restore()
        reader, writer = await asyncio.open_connection(*home.broker_address)
        await echo(reader, writer, b"over broadband")
        writer.close()
    finally:
        await home.stop()
        await broker.stop()

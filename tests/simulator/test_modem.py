"""The BG95 model (simulator/modem.py) and the LTE-M network model under it
(simulator/lte_network.py), driven over its UART socketpair with AT commands as a host would;
its sockets reach real TCP servers on loopback. Timing is asserted only as a lower bound computed
from the model: a loaded machine can only make things slower."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator import lte_network
from simulator.lte_network import Network
from simulator.modem import Modem, pair
from simulator.pacing import line_time
from tests.waiting import until

FINAL = ("OK", "ERROR", "SEND OK", "SEND FAIL")


class Host:
    """The host's end of the modem's UART: sends AT commands, splits what comes back into the
    answer of the command and URCs, and reads AT+QIRD's raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.urcs: list[str] = []
        self._answer: list[str] = []
        self._data = b""
        self._final: asyncio.Future[str] | None = None
        self._prompt = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        buf = b""
        while True:
            chunk = await self.reader.read(4096)
            if not chunk:
                return
            buf += chunk
            while True:
                if buf.startswith(b"> "):
                    buf = buf[2:]
                    self._prompt.set()
                    continue
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                line = buf[:i].decode(errors="replace").strip()
                if line.startswith("+QIRD: ") and "," not in line:
                    n = int(line[7:])
                    if len(buf) < i + 2 + n:
                        break  # the data is still on the line
                    self._data += buf[i + 2:i + 2 + n]
                    buf = buf[i + 2 + n:]
                else:
                    buf = buf[i + 2:]
                self._line(line)

    def _line(self, line: str) -> None:
        if not line or line.startswith("AT"):
            return
        if line.startswith(("+QIURC:", "+QIOPEN:")):
            self.urcs.append(line)
        elif line in FINAL or line.startswith("+CME ERROR"):
            if self._final is not None and not self._final.done():
                self._final.set_result(line)
        else:
            self._answer.append(line)

    async def at(self, cmd: str, data: bytes | None = None) -> tuple[str, list[str]]:
        """(final result, information lines) of one command."""
        self._answer = []
        self._final = asyncio.get_running_loop().create_future()
        self._prompt.clear()
        self.writer.write(cmd.encode() + b"\r")
        if data is not None:
            prompt = asyncio.ensure_future(self._prompt.wait())
            await asyncio.wait([prompt, self._final], timeout=10,
                               return_when=asyncio.FIRST_COMPLETED)
            prompt.cancel()
            if not self._final.done():
                self.writer.write(data)
        final = await asyncio.wait_for(self._final, 10)
        return final, list(self._answer)

    async def ok(self, cmd: str) -> list[str]:
        final, lines = await self.at(cmd)
        assert final == "OK", (cmd, final, lines)
        return lines

    async def open(self, connect_id: int, host: str, port: int) -> int:
        """AT+QIOPEN; the +QIOPEN result code."""
        await self.ok(f'AT+QIOPEN=1,{connect_id},"TCP","{host}",{port},0,0')
        prefix = f"+QIOPEN: {connect_id},"
        await until(lambda: any(u.startswith(prefix) for u in self.urcs), f"+QIOPEN {connect_id}")
        result = next(u for u in self.urcs if u.startswith(prefix))
        self.urcs.remove(result)
        return int(result[len(prefix):])

    async def read_all(self, connect_id: int, n: int) -> bytes:
        """AT+QIRD until n bytes came."""
        self._data = b""
        while len(self._data) < n:
            await until(lambda: f'+QIURC: "recv",{connect_id}' in self.urcs or self._data,
                        "data")
            await self.ok(f"AT+QIRD={connect_id},1500")
        data, self._data = self._data, b""
        return data


class Peer:
    """A TCP server on loopback that records its connections (and echoes, if asked)."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.got: list[bytearray] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.append((reader, writer))
        got = bytearray()
        self.got.append(got)
        while True:
            try:
                data = await reader.read(65536)
            except (OSError, asyncio.CancelledError):
                return  # cancelled: the test is over (a handler's cancellation is logged, not ours)
            if not data:
                return
            got += data
            if self.echo:
                writer.write(data)

    async def stop(self) -> None:
        for _, w in self.conns:
            w.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def rig() -> AsyncIterator[Any]:
    made: list[tuple[Modem, asyncio.Task[None], Host, Peer]] = []

    async def go(echo: bool = False, conditions: lte_network.Conditions | None = None,
                 **knobs: Any) -> tuple[Modem, Host, Peer]:
        peer = await Peer(echo).start()
        modem_end, host_end = pair()
        network = Network(conditions if conditions is not None else lte_network.fast())
        modem = Modem(modem_end, network=network, **knobs)
        task = asyncio.create_task(modem.run())
        host = Host(*await asyncio.open_connection(sock=host_end))
        made.append((modem, task, host, peer))
        if knobs.get("sim", True) and knobs.get("coverage", True):
            await host.ok("ATE0")
            await host.ok('AT+QICSGP=1,1,"internet.m2m","","",1')
            await host.ok("AT+QIACT=1")
        return modem, host, peer

    yield go
    for modem, task, host, peer in made:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        host.writer.close()
        host._task.cancel()
        await peer.stop()


async def test_twelve_sockets_each_its_own_connection(rig: Any) -> None:
    modem, host, peer = await rig(echo=True)
    for cid in range(12):
        assert await host.open(cid, "127.0.0.1", peer.port) == 0
    assert len(peer.conns) == 12 and modem.opens == 12
    assert (await host.at(f'AT+QIOPEN=1,12,"TCP","127.0.0.1",{peer.port},0,0'))[0] == "ERROR"
    assert await host.open(5, "127.0.0.1", peer.port) == 563  # socket identity in use
    sent = {}
    for cid in (3, 11):
        sent[cid] = payload = b"socket %d " % cid + os.urandom(40 - len(str(cid)))
        assert (await host.at(f"AT+QISEND={cid},{len(payload)}", payload))[0] == "SEND OK"
        assert await host.read_all(cid, len(payload)) == payload  # the echo, on its own id
    # connections were accepted in the order of the ids
    assert [bytes(g) for g in peer.got] == [sent.get(cid, b"") for cid in range(12)]
    # the queries: sent, acknowledged, unacknowledged; received, read, unread
    n = len(sent[3])
    assert await host.ok("AT+QISEND=3,0") == [f"+QISEND: {n},{n},0"]
    assert await host.ok("AT+QIRD=3,0") == [f"+QIRD: {n},{n},0"]
    await host.ok("AT+QICLOSE=3")
    assert await host.open(3, "127.0.0.1", peer.port) == 0  # closed, the id is free again


async def test_the_bg95s_failure_answers(rig: Any) -> None:
    modem, host, peer = await rig()
    refused = Peer()
    await refused.start()
    await refused.stop()  # nothing listens on its port any more
    assert refused._server is not None
    await refused._server.wait_closed()
    assert await host.open(0, "no-such-host.example", 8883) == 565  # DNS parse failed
    assert await host.open(0, "127.0.0.1", refused.port) == 566  # socket connect failed
    assert (await host.at("AT+QISEND=0,5", b"hello"))[0] == "ERROR"  # not open
    assert await host.open(0, "127.0.0.1", peer.port) == 0
    assert (await host.at("AT+QISEND=0,1461"))[0] == "ERROR"  # 0..1460
    assert (await host.at("AT+QIRD=0,1501"))[0] == "ERROR"  # 0..1500
    assert await host.ok("AT+QIRD=0,1500") == ["+QIRD: 0"]  # nothing yet
    assert (await host.at('AT+QIOPEN=1,1,"TCP","127.0.0.1",1,0,2'))[0] == "ERROR"  # transparent
    await host.ok("AT+QIDEACT=1")
    assert await host.open(1, "127.0.0.1", peer.port) == 561  # PDP context not active
    no_sim, host2, _ = await rig(sim=False)
    assert (await host2.at("AT+CPIN?"))[0] == "+CME ERROR: 10"


async def test_a_full_send_buffer_answers_send_fail(rig: Any) -> None:
    slow = lte_network.fast()
    slow.up_bytes_s = 100  # ten seconds a kB: nothing is acknowledged while the test runs
    modem, host, peer = await rig(conditions=slow, send_buffer=2000)
    assert await host.open(2, "127.0.0.1", peer.port) == 0
    chunk = os.urandom(1000)
    assert (await host.at("AT+QISEND=2,1000", chunk))[0] == "SEND OK"
    assert (await host.at("AT+QISEND=2,1000", chunk))[0] == "SEND OK"
    assert (await host.at("AT+QISEND=2,1000", chunk))[0] == "SEND FAIL"
    (sent, acked, unacked), = [tuple(map(int, ln.split(": ")[1].split(",")))
                               for ln in await host.ok("AT+QISEND=2,0")]
    assert sent == 2000 and acked + unacked == 2000 and unacked > 1000  # SEND FAIL took nothing


async def test_coverage_loss_closes_every_socket_with_pdpdeact(rig: Any) -> None:
    modem, host, peer = await rig(echo=True)
    for cid in (0, 1, 7):
        assert await host.open(cid, "127.0.0.1", peer.port) == 0
    modem.coverage = False
    await until(lambda: '+QIURC: "pdpdeact",1' in host.urcs, "pdpdeact")
    assert host.urcs.count('+QIURC: "pdpdeact",1') == 1
    for cid in (0, 1, 7):
        assert (await host.at(f"AT+QISEND={cid},3", b"abc"))[0] == "ERROR"
    assert (await host.at("AT+QIACT=1"))[0] == "ERROR"  # not registered
    modem.coverage = True
    await host.ok("AT+QIACT=1")
    assert await host.open(0, "127.0.0.1", peer.port) == 0  # the id is free, a new connection
    assert len(peer.conns) == 4
    # the far ends of the lost connections heard nothing (a device out of coverage says nothing)
    assert not any(r.at_eof() for r, _ in peer.conns[:3])


async def test_drop_socket_closes_that_one_only(rig: Any) -> None:
    modem, host, peer = await rig(echo=True)
    for cid in (0, 1):
        assert await host.open(cid, "127.0.0.1", peer.port) == 0
    modem.drop_socket(1)
    await until(lambda: '+QIURC: "closed",1' in host.urcs, "closed 1")
    assert '+QIURC: "closed",0' not in host.urcs
    await until(lambda: peer.conns[1][0].at_eof(), "the peer losing connection 1")
    assert (await host.at("AT+QISEND=1,3", b"abc"))[0] == "ERROR"
    assert (await host.at("AT+QISEND=0,3", b"abc"))[0] == "SEND OK"
    assert await host.read_all(0, 3) == b"abc"
    assert await host.open(1, "127.0.0.1", peer.port) == 563  # closed, not yet AT+QICLOSE'd
    await host.ok("AT+QICLOSE=1")
    assert await host.open(1, "127.0.0.1", peer.port) == 0


async def test_the_peer_closing_is_heard_after_its_last_bytes(rig: Any) -> None:
    modem, host, peer = await rig(conditions=lte_network.Conditions(
        latency_s=0.05, jitter_s=0.0, up_bytes_s=1e9, down_bytes_s=1e9, loss=0.0, rto_s=0.0))
    assert await host.open(4, "127.0.0.1", peer.port) == 0
    writer = peer.conns[0][1]
    writer.write(b"last words")
    writer.close()
    await until(lambda: '+QIURC: "closed",4' in host.urcs, "closed 4")
    assert host.urcs.index('+QIURC: "recv",4') < host.urcs.index('+QIURC: "closed",4')
    assert await host.read_all(4, 10) == b"last words"  # still readable after "closed"


async def test_the_receive_buffer_holds_no_more_than_its_size(rig: Any) -> None:
    modem, host, peer = await rig(rx_buffer=4096, baud=None)
    assert await host.open(0, "127.0.0.1", peer.port) == 0
    blob = os.urandom(30_000)
    peer.conns[0][1].write(blob)
    await until(lambda: '+QIURC: "recv",0' in host.urcs, "recv")
    got = b""
    while len(got) < len(blob):
        sock = modem.sockets[0]
        assert len(sock.rx) + sock.down.in_flight <= 4096 + 1460  # a window, one segment over
        got += await host.read_all(0, 1)
    assert got == blob


async def test_latency_bandwidth_and_loss_are_lower_bounds_and_never_lose_bytes(rig: Any) -> None:
    c = lte_network.Conditions(latency_s=0.06, jitter_s=0.02, up_bytes_s=50_000,
                               down_bytes_s=50_000, loss=0.0, rto_s=0.0)
    modem, host, peer = await rig(echo=True, conditions=c, baud=None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await host.open(0, "127.0.0.1", peer.port) == 0
    assert loop.time() - start >= 2 * c.latency_s  # the handshake's round trip
    payload = os.urandom(1460)
    start = loop.time()
    assert (await host.at("AT+QISEND=0,1460", payload))[0] == "SEND OK"
    assert await host.read_all(0, 1460) == payload
    # up and back: each way the bandwidth's time for the bytes and the latency
    assert loop.time() - start >= 2 * (1460 / 50_000 + c.latency_s)
    # changed while running: every segment lost once costs its retransmission timeout
    modem.network.set(loss=1.0, rto_s=0.3, latency_s=0.01)
    start = loop.time()
    assert (await host.at("AT+QISEND=0,1460", payload))[0] == "SEND OK"
    assert await host.read_all(0, 1460) == payload  # late, never lost nor damaged
    assert loop.time() - start >= 2 * (0.3 + 0.01)
    assert bytes(peer.got[0]) == payload * 2


async def test_the_uart_runs_at_its_baud_rate(rig: Any) -> None:
    modem, host, peer = await rig()  # 115200 baud by default
    assert modem.baud == 115200
    assert await host.open(0, "127.0.0.1", peer.port) == 0
    payload = os.urandom(1460)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await host.at("AT+QISEND=0,1460", payload))[0] == "SEND OK"
    # the payload alone is 126.7 ms on a real UART: the model is never faster
    assert loop.time() - start >= line_time(1460, 115200) > 0.126

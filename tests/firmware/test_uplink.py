"""hubd's LTE uplink through the whole bridge: the real firmware in MicroPython in the simulated
home, its modem (simulator/modem.py) opening real TCP on loopback, and the test playing hubd's
end of the serial link with hubd's own link driver (hubd.link.serial_port.SerialLink), bulk
payloads and messages as wire/uplink.py and wire/messages.py define them.

Each test asserts what the contract (docs/second-path.md, "The uplink") promises: bytes both
ways, the window, each closing cause with its why, the host link's reset, hostile modem output on
the uplink's socket, and an alarm's DC-09 exchange going on while the uplink streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hubd.link.serial_port import SerialLink
from simulator import lte_network
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome
from tests.sia_receiver import ACCOUNT, Receiver
from tests.waiting import until
from wire import link, messages, uplink

BROKER = ("broker.example", 8883)  # the name hubd asks for; the modem's network maps it


class Hub:
    """hubd's end of the serial link, as far as the uplink goes: messages decoded, the uplink's
    bytes gathered, and a writer that keeps hubd's window (wire.uplink.WINDOW)."""

    def __init__(self, home: SimulatedHome) -> None:
        self.messages: list[dict[str, Any]] = []
        self.down = bytearray()  # the uplink's bytes from the broker, in order
        self.events: list[str] = []
        self.sent = 0  # bytes written to the uplink
        self.link = SerialLink(home.port, 115200, "test-hub", home.link_key, self._event)

    def _event(self, kind: str, value: Any) -> None:
        if kind != link.EV_DATA:
            self.events.append(kind)
        elif uplink.is_data(value):
            self.down += uplink.chunk(value)
        else:
            msg = messages.decode(value)
            if msg["m"] == messages.UPLINK_STATE:
                msg["down_before"] = len(self.down)  # the stream's bytes that came before it
            self.messages.append(msg)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["m"] == kind]

    def states(self) -> list[tuple[str, str | None]]:
        return [(m["state"], m["why"]) for m in self.of(messages.UPLINK_STATE)]

    @property
    def acked(self) -> int:
        return sum(m["n"] for m in self.of(messages.UPLINK_ACK))

    async def open(self, host: str = BROKER[0], port: int = BROKER[1]) -> tuple[str, str | None]:
        before = len(self.states())
        self.link.send(messages.make(messages.UPLINK_OPEN, host, port))
        await until(lambda: len(self.states()) > before, "the uplink's answer to open")
        return self.states()[before]

    async def close(self) -> tuple[str, str | None]:
        before = len(self.states())
        self.link.send(messages.make(messages.UPLINK_CLOSE))
        await until(lambda: len(self.states()) > before, "the uplink's answer to close")
        return self.states()[before]

    async def write(self, data: bytes) -> None:
        """Send `data` through the uplink, never more than WINDOW bytes unacknowledged."""
        for i in range(0, len(data), uplink.MAX_CHUNK):
            piece = data[i:i + uplink.MAX_CHUNK]
            await until(lambda n=len(piece): self.sent + n - self.acked <= uplink.WINDOW
                        and self.link.engine.bulk_room() > 0, "room in hubd's window")
            self.link.send(uplink.data(piece))
            self.sent += len(piece)


class Peer:
    """The broker's side: a real TCP server on loopback; each connection's bytes, and its
    writer to answer with. `echo`: every byte goes back."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.received = bytearray()
        self.connections = 0
        self.closed = 0
        self.writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        try:
            while data := await reader.read(4096):
                self.received += data
                if self.echo:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed += 1
            writer.close()

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._server is not None:
            self._server.close()


@contextlib.asynccontextmanager
async def home_with_uplink(tmp_path: Path, peer: Peer, *, receiver: Receiver | None = None,
                           unit: AlarmUnit | None = None, handled_deadline_ms: int = 30000,
                           conditions: lte_network.Conditions | None = None, with_unit: bool = True,
                           **home_kw: Any) -> AsyncIterator[tuple[SimulatedHome, Hub]]:
    """A home whose bridge has an alarm unit (not `with_unit`: none, so no second path) and an
    LTE modem (its second path to `receiver`'s port; the broker's name mapped to `peer`), hubd's
    link up."""
    port = await peer.start()
    own_receiver = receiver is None
    if receiver is None:
        receiver = Receiver()
        await receiver.start()
    lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port, "account": ACCOUNT,
           "receiver": "1", "retry_ms": 500}
    if with_unit:
        home_kw.update(alarm_unit=unit or AlarmUnit(heartbeat_s=0.5),
                       alarm_timings={"heartbeat_ms": 500, "handled_deadline_ms": handled_deadline_ms})
    home = SimulatedHome(tmp_path / "home", lte=lte, **home_kw)
    assert home.modem is not None
    home.modem.network.conditions = conditions or lte_network.fast()
    home.modem.network.addresses[BROKER] = ("127.0.0.1", port)
    hub = Hub(home)
    await home.start()
    try:
        await hub.link.start()
        await until(lambda: hub.link.state == link.UP, "the host link", timeout=60)
        yield home, hub
    finally:
        await asyncio.sleep(0.2)  # hubd.link.serial_port's close must not race a message (3.11)
        await hub.link.close()
        await home.stop()
        await peer.stop()
        if own_receiver:
            await receiver.stop()


def _uplink_commands(home: SimulatedHome) -> list[str]:
    assert home.modem is not None
    return [c for c in home.modem.commands if c.startswith(("AT+QISEND=1,", "AT+QIRD=1,"))]


async def test_bytes_go_both_ways_through_the_modem_and_hubd_closes(tmp_path: Path) -> None:
    peer = Peer()
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        assert await hub.open() == ("open", None), home.bridge.log[-20:]
        assert home.modem is not None
        assert 'AT+QIOPEN=1,1,"TCP","broker.example",8883,0,0' in home.modem.commands
        data = bytes(range(256)) * 80  # 20 KB: many chunks, many windows
        await hub.write(data)
        await until(lambda: len(hub.down) >= len(data), "the echo back at hubd")
        assert bytes(peer.received) == data and bytes(hub.down) == data
        # every byte acknowledged once the modem took it, and only then
        await until(lambda: hub.acked == len(data), "every byte acknowledged")
        # The modem was written in writes of whole chunks, up to its 1460-byte limit.
        sends = [int(c.rsplit(",", 1)[1]) for c in home.modem.commands
                 if c.startswith("AT+QISEND=1,")]
        assert sum(sends) == len(data) and max(sends) <= 1460
        # and read in reads of at most one DATA payload's bytes
        reads = [int(c.rsplit(",", 1)[1]) for c in home.modem.commands
                 if c.startswith("AT+QIRD=1,")]
        assert reads and max(reads) <= uplink.MAX_CHUNK
        assert await hub.close() == ("closed", "hubd")
        assert "AT+QICLOSE=1" in home.modem.commands
        await until(lambda: peer.closed == 1, "the broker's side closed")
        # and again, as a reconnecting hubd does
        assert await hub.open() == ("open", None)
        await hub.write(b"again")
        await until(lambda: bytes(hub.down).endswith(b"again"), "the second echo")
        assert peer.connections == 2
        assert home.bridge.resets == 0


async def test_what_cannot_be_opened_is_closed_with_its_why(tmp_path: Path) -> None:
    peer = Peer()
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        # A host that would break out of AT+QIOPEN's quotes never reaches the modem.
        assert await hub.open('broker"example') == ("closed", "error")
        assert home.modem is not None
        assert not [c for c in home.modem.commands if "QIOPEN=1,1" in c]
        # Nothing listens where the name leads: the modem's 566
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        home.modem.network.addresses[("refused.example", 8883)] = ("127.0.0.1", free)
        assert await hub.open("refused.example", 8883) == ("closed", "open_failed")
        # No coverage: the PDP context is gone, attaching again finds no network
        assert await hub.open() == ("open", None)
        home.modem.coverage = False
        await until(lambda: hub.states()[-1] == ("closed", "network"), "closed by coverage loss")
        home.modem.coverage = True
        assert await hub.open() == ("open", None)
        await hub.write(b"back")
        await until(lambda: bytes(hub.down).endswith(b"back"), "the echo after coverage returned")


async def test_a_home_without_a_modem_answers_no_modem(tmp_path: Path) -> None:
    home = SimulatedHome(tmp_path / "home")
    hub = Hub(home)
    await home.start()
    try:
        await hub.link.start()
        await until(lambda: hub.link.state == link.UP, "the host link", timeout=60)
        assert await hub.open() == ("closed", "no_modem")
        hub.link.send(uplink.data(b"stray bytes"))  # for no socket: dropped, nothing breaks
        assert await hub.close() == ("closed", "no_modem")
        assert not [ln for ln in home.bridge.log if "dropped a bad message" in ln]
    finally:
        await asyncio.sleep(0.2)
        await hub.link.close()
        await home.stop()


async def test_more_than_the_window_unacknowledged_closes_with_error(tmp_path: Path) -> None:
    peer = Peer()
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        assert await hub.open() == ("open", None)
        assert home.modem is not None
        # The modem takes nothing until the whole burst is at the bridge: no ack can come
        # between, so the bridge holds all of it.
        gate = asyncio.Event()
        real = home.modem._send

        async def held(*args: Any) -> Any:
            await gate.wait()
            return await real(*args)

        home.modem._send = held  # type: ignore[method-assign]
        burst = b"x" * (uplink.WINDOW + 1)
        for i in range(0, len(burst), uplink.MAX_CHUNK):
            await until(lambda: hub.link.engine.bulk_room() > 0, "room on hubd's link")
            hub.link.send(uplink.data(burst[i:i + uplink.MAX_CHUNK]))
        await until(lambda: any("over its window" in ln for ln in home.bridge.log),
                    "the bridge sees the violation")
        gate.set()
        await until(lambda: ("closed", "error") in hub.states(), "closed for the violation")
        assert hub.acked < len(burst)
        await until(lambda: peer.closed == 1, "the broker's side closed")


async def test_the_peer_closing_is_closed_peer_after_its_last_bytes(tmp_path: Path) -> None:
    peer = Peer(echo=False)
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        assert await hub.open() == ("open", None)
        await until(lambda: peer.writer is not None, "the broker's side")
        assert peer.writer is not None
        last_words = b"goodbye" * 1000  # more than the link's bulk queue holds
        peer.writer.write(last_words)
        await peer.writer.drain()
        peer.writer.close()
        await until(lambda: ("closed", "peer") in hub.states(), "closed by the peer")
        assert bytes(hub.down) == last_words  # read to the end before closing
        closed = next(m for m in hub.of(messages.UPLINK_STATE) if m["why"] == "peer")
        assert closed["down_before"] == len(last_words), "closed overtook the stream's end"
        # The network dropping the connection (the modem's "closed" without a FIN) is the same
        # to hubd: the peer is gone.
        assert await hub.open() == ("open", None)
        assert home.modem is not None
        home.modem.drop_socket(1)
        await until(lambda: hub.states()[-1] == ("closed", "peer"), "closed by the network")
        assert home.modem.commands.count("AT+QICLOSE=1") == 2  # each end closed the socket


async def test_the_host_link_resetting_closes_the_socket_and_the_new_session_hears_so(
        tmp_path: Path) -> None:
    peer = Peer()
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        assert await hub.open() == ("open", None)
        await hub.write(b"before")
        await until(lambda: bytes(hub.down) == b"before", "the echo")
        hub.link.restart_session()  # hubd restarted: a new session on the link
        await until(lambda: peer.closed == 1, "the socket closed when hubd's session ended")
        assert home.modem is not None and "AT+QICLOSE=1" in home.modem.commands
        await until(lambda: ("closed", "host_link") in hub.states(), "the new session told")
        assert hub.states().count(("closed", "host_link")) == 1
        assert await hub.open() == ("open", None)
        assert peer.connections == 2


async def test_hostile_modem_output_on_the_uplinks_socket(tmp_path: Path) -> None:
    peer = Peer()
    async with home_with_uplink(tmp_path, peer) as (home, hub):
        assert await hub.open() == ("open", None)
        assert home.modem is not None
        # URCs for sockets nobody opened, opens nobody asked for, a "recv" flood for ours with
        # nothing to read, garbage, an overlong line and bytes that are not text.
        home.modem.inject(b'\r\n+QIURC: "recv",1\r\n' * 50 + b"\r\n+QIOPEN: 1,0\r\n"
                          b'\r\n+QIURC: "closed",7\r\n+QIOPEN: 9,566\r\n\xff\xfe\r\n'
                          + b"z" * 700 + b"\r\n+QIURC:\r\n")
        await hub.write(b"still here")
        await until(lambda: bytes(hub.down).endswith(b"still here"), "the echo after the noise")
        assert hub.states() == [("open", None)]
        # A read whose length is a lie ends the socket, not the bridge.
        real = home.modem._command

        async def lying(cmd: str, *args: Any) -> Any:
            if cmd.startswith("AT+QIRD=1,"):
                home.modem.inject(b"\r\n+QIRD: 4000\r\n" + b"q" * 600)
                return args[1]
            return await real(cmd, *args)

        home.modem._command = lying  # type: ignore[method-assign]
        peer_writer = peer.writer
        assert peer_writer is not None
        peer_writer.write(b"bait")
        await until(lambda: hub.states()[-1][0] == "closed", "the lying read closed it")
        assert hub.states()[-1] in (("closed", "error"), ("closed", "timeout"))
        home.modem._command = real  # type: ignore[method-assign]
        assert await hub.open() == ("open", None)
        assert home.bridge.resets == 0


async def test_an_alarm_goes_over_dc09_while_the_uplink_streams(tmp_path: Path) -> None:
    peer = Peer()
    receiver = Receiver()
    await receiver.start()
    unit = AlarmUnit(heartbeat_s=0.5)
    try:
        async with home_with_uplink(tmp_path, peer, receiver=receiver, unit=unit,
                                    handled_deadline_ms=1000) as (home, hub):
            assert home.modem is not None
            await until(lambda: any("alarm unit on UART" in ln for ln in home.bridge.log),
                        "the alarm unit")
            assert await hub.open() == ("open", None)
            # When the receiver's answer arrives, the second path waits for the one uplink
            # command in progress before it reads it: mark the URC in the command log. Two may
            # come between: the one in progress when the URC left the modem, and one the
            # bridge began before its reader reached the URC (the modem's UART carries the
            # URC behind that command's answer).
            marks = home.modem.commands
            real_urc = home.modem._urc

            def urc(line: str) -> None:
                if line == '+QIURC: "recv",0':
                    marks.append("URC recv 0")
                real_urc(line)

            home.modem._urc = urc  # type: ignore[method-assign]
            stream = bytes(range(256)) * 144  # 36 KB echoed: the uplink saturated both ways
            writing = asyncio.create_task(hub.write(stream))
            await until(lambda: len(hub.down) > 10_000, "the stream under way")
            # hubd stores nothing: the alarm goes to the centre over the second path.
            sent_at = time.monotonic()
            press = unit.press()
            alarm_id = unit.alarm_id(press)
            await until(lambda: any(alarm_id in (e.x_data or "") for e in receiver.events),
                        "the alarm at the centre", timeout=60)
            took = time.monotonic() - sent_at
            assert len(hub.down) < len(stream), "the alarm was carried while the stream ran"
            await writing
            await until(lambda: len(hub.down) == len(stream), "the whole stream")
            assert bytes(hub.down) == stream
            cmds = home.modem.commands
            answered = [i for i, c in enumerate(cmds) if c == "URC recv 0"]
            assert answered
            for i in answered:
                nxt = next(j for j in range(i + 1, len(cmds)) if cmds[j].startswith("AT+QIRD=0"))
                between = [c for c in cmds[i + 1:nxt] if c.startswith(("AT+QISEND=1", "AT+QIRD=1"))]
                assert len(between) <= 2, cmds[i:nxt + 1]
            print(f"alarm to the centre while streaming: {took:.2f} s")
    finally:
        await receiver.stop()


async def test_a_session_that_ends_while_its_open_is_under_way_never_hears_open(
        tmp_path: Path) -> None:
    peer = Peer()
    slow = lte_network.fast()
    slow.latency_s = 1.0  # the TCP handshake takes two seconds
    async with home_with_uplink(tmp_path, peer, conditions=slow) as (home, hub):
        assert home.modem is not None
        hub.link.send(messages.make(messages.UPLINK_OPEN, *BROKER))
        await until(lambda: any(c.startswith("AT+QIOPEN=1,1,") for c in home.modem.commands),
                    "the open under way")
        hub.link.restart_session()  # hubd restarted before the modem answered
        before = len(hub.states())
        await until(lambda: ("closed", "host_link") in hub.states()[before:],
                    "the new session told", timeout=60)
        assert ("open", None) not in hub.states()[before:]
        await until(lambda: peer.closed == peer.connections == 1, "the socket closed again")
        assert await hub.open() == ("open", None)  # and the new session may open its own


async def test_a_full_send_buffer_is_waited_out_not_a_lost_stream(tmp_path: Path) -> None:
    # The network slower than the serial line: the modem's send buffer fills and it answers
    # SEND FAIL (nothing of that write sent). The bridge writes the same bytes again once the
    # network has drained some; hubd's window holds hubd meanwhile; no byte is lost or doubled.
    peer = Peer(echo=False)
    slow = lte_network.fast()
    slow.up_bytes_s = 4000
    async with home_with_uplink(tmp_path, peer, conditions=slow) as (home, hub):
        assert home.modem is not None
        home.modem.send_buffer = 1500
        assert await hub.open() == ("open", None)
        data = bytes(range(256)) * 40  # 10 KB: 2.5 s of this network
        await hub.write(data)
        await until(lambda: len(peer.received) == len(data), "every byte at the broker")
        assert bytes(peer.received) == data
        written = sum(int(c.rsplit(",", 1)[1]) for c in home.modem.commands
                      if c.startswith("AT+QISEND=1,"))
        assert written > len(data), "no SEND FAIL: the test did not fill the modem's buffer"
        await until(lambda: hub.acked == len(data), "every byte acknowledged once")
        assert hub.states() == [("open", None)]


async def test_a_bridge_with_a_modem_and_no_alarm_unit_carries_the_uplink(tmp_path: Path) -> None:
    # No alarm unit, so no second path; the modem is there for hubd all the same.
    async with home_with_uplink(tmp_path, Peer(), with_unit=False) as (home, hub):
        assert any("for hubd's uplink (no alarm unit" in ln for ln in home.bridge.log)
        assert await hub.open() == ("open", None)
        await hub.write(b"no unit")
        await until(lambda: bytes(hub.down) == b"no unit", "the echo")

"""A Quectel BG95 LTE modem in software: the AT command set the bridge's firmware uses (its
second path, firmware/lte.py, and its uplink), on the modem's end of a socketpair (the firmware's
end is its UART, e.g. SIM_UART3_FD).

Sockets: connect ids 0..11, each its own real TCP connection on this host, its own receive
buffer and URCs, in buffer access mode (the only one modelled: AT+QIOPEN with another access
mode is answered ERROR). The bytes of each cross the LTE-M network model
(simulator/lte_network.py: latency, jitter, bandwidth, loss as retransmission delay), realistic
by default; ``modem.network.conditions = lte_network.fast()`` for speed. Where a connection goes:
``network.addresses`` ((host, port) asked -> address really connected), else ``connect_to`` when
given (every other host: the alarm centre's DC-09 receiver in most tests), else an IP address as
it is; a name nothing maps is a DNS failure.

The answers are the BG95's, as its TCP/IP Application Note (BG95&BG77&BG600L Series, V1.1)
describes them: ``OK`` then ``+QIOPEN: <id>,<err>`` with 0, 561 (PDP context not active), 563
(socket identity in use), 565 (DNS parse failed) or 566 (socket connect failed); ``SEND FAIL``
when the socket's send buffer (``send_buffer`` bytes unacknowledged) is full, ``ERROR`` for a
socket that is not open or a length out of range (QISEND 0..1460, QIRD 0..1500); QISEND and
QIRD with length 0 are the queries (``+QISEND: sent,acked,unacked``, ``+QIRD:
total,read,unread``); one ``+QIURC: "recv",<id>`` each time the receive buffer goes from empty to
not empty; ``+QIURC: "closed",<id>`` after the peer's last byte (the buffer can still be read);
``+CME ERROR: 10`` without a SIM.

The UART runs at ``baud`` (115200 by default, None: unpaced) both ways, 10 bits a byte, as a
real one does: a 1460-byte AT+QISEND payload takes 127 ms to reach the modem.

Knobs, all changeable while running: `coverage` (registered or not; losing it deactivates the PDP
context: every socket is closed, one ``+QIURC: "pdpdeact",1``, and the far ends hear nothing, as
a peer of a device gone out of coverage does), `attach_delay` (seconds from coverage to
registration), `delay` (seconds before each answer; zero for benchmarks), `sim` (a SIM
inserted), `network` (its conditions and address map), `baud`, `send_buffer`, `rx_buffer`;
drop_socket(id) (the network drops one connection).
"""

from __future__ import annotations

import asyncio
import socket
import time

from simulator.lte_network import DOWN, MSS, UP, Network
from simulator.pacing import Uart

CONTEXT = 1  # the one PDP context the model has
CONNECT_IDS = range(12)
CONNECT_ID = 0  # the second path's socket (firmware/lte.py SOCKET)
MAX_SEND = 1460  # AT+QISEND takes at most this many bytes
MAX_READ = 1500  # AT+QIRD reads at most this many
BAUD = 115200
# The BG95's socket buffers are not published; these are assumptions (docs/second-path.md).
SEND_BUFFER = 8192  # bytes a socket holds unacknowledged before SEND FAIL
RX_BUFFER = 8192  # bytes a socket holds unread (AT+QIRD) before it closes its TCP window
OPEN_TIMEOUT_S = 10.0  # a connect the far end never answers: 566

# +QIOPEN result codes (the TCP/IP Application Note's summary of result codes)
OPEN_OK = 0
PDP_NOT_ACTIVE = 561
SOCKET_IN_USE = 563
DNS_FAILED = 565
CONNECT_FAILED = 566


class Socket:
    """One connect id's TCP connection through the network: an up pipe to the peer, a down pipe
    into its receive buffer, and the counters AT+QISEND=<id>,0 and AT+QIRD=<id>,0 report."""

    def __init__(self, modem: Modem, connect_id: int) -> None:
        self.modem = modem
        self.id = connect_id
        self.open = False  # connected, not closed by the peer or the network
        self.rx = bytearray()  # arrived, not yet read with AT+QIRD
        self.received = 0  # bytes that ever arrived
        self.read = 0
        self.sent = 0  # bytes taken by AT+QISEND
        self.acked = 0  # of those, arrived at the peer
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self.up = modem.network.pipe(UP, self._to_peer)
        self.down = modem.network.pipe(DOWN, self._from_peer)

    @property
    def unacked(self) -> int:
        waiting = self._writer.transport.get_write_buffer_size() if self._writer else 0
        return self.sent - self.acked + waiting

    def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.open = True
        self._pump = asyncio.get_running_loop().create_task(self._read_peer(reader))

    async def _read_peer(self, reader: asyncio.StreamReader) -> None:
        while True:
            # The receive window: nothing more is taken from the peer while the buffer and what
            # is on its way fill it (the peer's own TCP stack holds the rest).
            while len(self.rx) + self.down.in_flight >= self.modem.rx_buffer:
                self._room.clear()
                await self._room.wait()
            try:
                data = await reader.read(MSS)
            except OSError:
                data = b""
            if not data:
                self.down.finish()
                return
            self.down.send(data)

    def _from_peer(self, segment: bytes | None) -> None:
        if segment is None:
            if self.open:
                self.open = False
                self.modem._urc('+QIURC: "closed",%d' % self.id)
            return
        was_empty = not self.rx
        self.rx += segment
        self.received += len(segment)
        if was_empty:  # buffer access mode: one "recv" until the buffer was read empty
            self.modem._urc('+QIURC: "recv",%d' % self.id)

    def _to_peer(self, segment: bytes | None) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        if segment is None:
            self._writer.close()
            return
        self._writer.write(segment)
        self.acked += len(segment)

    def take(self, n: int) -> bytes:
        data, self.rx = bytes(self.rx[:n]), self.rx[n:]
        self.read += len(data)
        self._room.set()
        return data

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.up.send(data)

    def close(self) -> None:
        """AT+QICLOSE: what was sent still goes, then the FIN; nothing more is read."""
        self.open = False
        self._stop_pump()
        self.down.clear()
        self.up.finish()

    def drop(self) -> None:
        """The network dropped the connection: both ends lose it now."""
        self.open = False
        self._stop_pump()
        self.up.clear()
        self.down.clear()
        if self._writer is not None:
            self._writer.close()

    def abandon(self) -> asyncio.StreamWriter | None:
        """Coverage lost: the modem forgets the connection; its peer hears nothing (the caller
        keeps the writer open until the modem stops)."""
        self.open = False
        self._stop_pump()
        self.up.clear()
        self.down.clear()
        writer, self._writer = self._writer, None
        return writer

    def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None


class Modem:
    """The model. `run()` serves the UART until the firmware's end closes."""

    def __init__(self, uart: socket.socket, *, coverage: bool = True, attach_delay: float = 0.0,
                 delay: float = 0.0, sim: bool = True, rssi: int = 20,
                 connect_to: tuple[str, int] | None = None, network: Network | None = None,
                 baud: int | None = BAUD, send_buffer: int = SEND_BUFFER,
                 rx_buffer: int = RX_BUFFER) -> None:
        self._uart = uart
        self.sim = sim
        self.rssi = rssi
        self.delay = delay
        self.attach_delay = attach_delay
        self.connect_to = connect_to
        self.network = network if network is not None else Network()
        self.send_buffer = send_buffer
        self.rx_buffer = rx_buffer
        self._coverage = coverage
        self._coverage_since = time.monotonic()
        self.echo = True
        self.apn: str | None = None
        self.pdp_active = False
        self._writer: asyncio.StreamWriter | None = None
        self._to_fw = Uart(baud, self._write)
        self._from_fw = Uart(baud)
        self.sockets: dict[int, Socket] = {}  # by connect id: opening, open, or closed by the peer
        self._opening: dict[int, asyncio.Task[None]] = {}
        self._abandoned: list[asyncio.StreamWriter] = []
        self.commands: list[str] = []  # every command line, for tests
        self.sent: list[bytes] = []  # every AT+QISEND payload, for tests
        self.opens = 0

    # knobs
    @property
    def baud(self) -> int | None:
        return self._to_fw.baud

    @baud.setter
    def baud(self, baud: int | None) -> None:
        self._to_fw.baud = self._from_fw.baud = baud

    @property
    def coverage(self) -> bool:
        return self._coverage

    @coverage.setter
    def coverage(self, on: bool) -> None:
        if on and not self._coverage:
            self._coverage_since = time.monotonic()
        if not on and self._coverage:
            for task in self._opening.values():
                task.cancel()
            self._opening.clear()
            for sock in self.sockets.values():
                writer = sock.abandon()
                if writer is not None:
                    self._abandoned.append(writer)
            self.sockets.clear()
            if self.pdp_active:
                self.pdp_active = False
                self._urc('+QIURC: "pdpdeact",%d' % CONTEXT)
        self._coverage = on

    @property
    def registered(self) -> bool:
        # Without a SIM ready no modem attaches to a network (it reports 0: not searching).
        return self.sim and self._coverage \
            and time.monotonic() - self._coverage_since >= self.attach_delay

    def inject(self, data: bytes) -> None:
        """Send raw bytes to the bridge as if the modem said them (garbage, a bogus URC)."""
        self._out(data)

    def drop_socket(self, connect_id: int = CONNECT_ID) -> None:
        """The network drops the TCP connection of ``connect_id``: its peer loses it, the
        firmware hears +QIURC "closed" (what was not read stays readable)."""
        sock = self.sockets.get(connect_id)
        if sock is not None and sock.open:
            sock.drop()
            self._urc('+QIURC: "closed",%d' % connect_id)

    # the UART
    async def run(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._uart)
        buf = b""
        try:
            while True:
                chunk = await self._read(reader)
                if not chunk:
                    return
                buf += chunk
                while b"\r" in buf:
                    line, buf = buf.split(b"\r", 1)
                    cmd = line.strip().decode(errors="replace")
                    if not cmd:
                        continue
                    if self.echo:
                        self._out(cmd.encode() + b"\r")
                    self.commands.append(cmd)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    buf = await self._command(cmd, reader, buf)
        finally:
            self._to_fw.clear()
            for task in self._opening.values():
                task.cancel()
            for sock in self.sockets.values():
                sock.drop()
            for writer in self._abandoned:
                writer.close()
            # The UART's own transport too: left open, a later home on the same event loop got
            # a modem that heard nothing (the reused descriptor's reads went to this dead one).
            if self._writer is not None:
                self._writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        """The firmware's next bytes, once the UART has carried them."""
        chunk = await reader.read(512)
        if chunk:
            await self._from_fw.carry(len(chunk))
        return chunk

    def _write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def _out(self, data: bytes) -> None:
        self._to_fw.write(data)

    def _reply(self, *lines: str) -> None:
        for ln in lines:
            self._out(b"\r\n" + ln.encode() + b"\r\n")

    def _urc(self, line: str) -> None:
        self._reply(line)

    async def _command(self, cmd: str, reader: asyncio.StreamReader, buf: bytes) -> bytes:
        """Answer one command; returns what is left of the UART input after it."""
        up = cmd.upper()
        if up in ("AT", "ATI"):
            self._reply("OK")
        elif up == "ATE0":
            self.echo = False
            self._reply("OK")
        elif up == "AT+CPIN?":
            self._reply("+CPIN: READY", "OK") if self.sim else self._reply("+CME ERROR: 10")
        elif up == "AT+CSQ":
            self._reply("+CSQ: %d,99" % (self.rssi if self._coverage else 99), "OK")
        elif up in ("AT+CEREG?", "AT+CREG?"):
            stat = 1 if self.registered else (2 if self._coverage and self.sim else 0)
            self._reply("%s: 0,%d" % (up[2:-1], stat), "OK")
        elif up.startswith("AT+QICSGP="):
            args = _args(cmd)
            if len(args) < 3:
                self._reply("ERROR")
            else:
                self.apn = args[2]
                self._reply("OK")
        elif up == "AT+QIACT?":
            if self.pdp_active:
                self._reply('+QIACT: 1,1,1,"10.64.0.2"', "OK")
            else:
                self._reply("OK")
        elif up == "AT+QIACT=1":
            if self.registered and self.apn:
                self.pdp_active = True
                self._reply("OK")
            else:
                self._reply("ERROR")
        elif up == "AT+QIDEACT=1":
            self.pdp_active = False
            for task in self._opening.values():
                task.cancel()
            self._opening.clear()
            for sock in self.sockets.values():
                sock.drop()
            self.sockets.clear()
            self._reply("OK")
        elif up.startswith("AT+QIOPEN="):
            self._open(_args(cmd))
        elif up.startswith("AT+QISEND="):
            return await self._send(_args(cmd), reader, buf)
        elif up.startswith("AT+QIRD="):
            self._read_socket(_args(cmd))
        elif up.startswith("AT+QICLOSE="):
            args = _args(cmd)
            connect_id = _int(args[0]) if args else -1
            if connect_id not in CONNECT_IDS:
                self._reply("ERROR")
            else:
                task = self._opening.pop(connect_id, None)
                if task is not None:
                    task.cancel()
                sock = self.sockets.pop(connect_id, None)
                if sock is not None:
                    sock.close()
                self._reply("OK")
        else:
            self._reply("ERROR")
        return buf

    def _open(self, args: list[str]) -> None:
        # AT+QIOPEN=<contextID>,<connectID>,<service_type>,<host>,<remote_port>[,<local_port>
        # [,<access_mode>]]
        connect_id = _int(args[1]) if len(args) > 1 else -1
        port = _int(args[4]) if len(args) > 4 else -1
        mode = _int(args[6]) if len(args) > 6 else 0
        if (len(args) < 5 or _int(args[0]) != CONTEXT or connect_id not in CONNECT_IDS
                or args[2] != "TCP" or not 0 < port < 65536 or mode != 0):
            self._reply("ERROR")
            return
        self._reply("OK")
        if connect_id in self.sockets or connect_id in self._opening:
            self._urc("+QIOPEN: %d,%d" % (connect_id, SOCKET_IN_USE))
            return
        task = asyncio.get_running_loop().create_task(self._connect(connect_id, args[3], port))
        self._opening[connect_id] = task

    async def _connect(self, connect_id: int, host: str, port: int) -> None:
        try:
            err = await self._connecting(connect_id, host, port)
        finally:
            self._opening.pop(connect_id, None)
        if err is not None:
            self._urc("+QIOPEN: %d,%d" % (connect_id, err))

    async def _connecting(self, connect_id: int, host: str, port: int) -> int | None:
        if not self.pdp_active or not self.registered:
            return PDP_NOT_ACTIVE
        target = self.network.route(host, port) if (host, port) in self.network.addresses \
            else self.connect_to or self.network.route(host, port)
        if target is None:
            await asyncio.sleep(self.network.one_way() * 2)  # the DNS query's round trip
            return DNS_FAILED
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target),
                                                    OPEN_TIMEOUT_S)
        except (OSError, TimeoutError):
            return CONNECT_FAILED
        # The handshake crosses the network: SYN out, SYN-ACK back.
        try:
            await asyncio.sleep(self.network.one_way() + self.network.one_way())
        except asyncio.CancelledError:
            writer.close()
            raise
        sock = Socket(self, connect_id)
        sock.attach(reader, writer)
        self.sockets[connect_id] = sock
        self.opens += 1
        self._urc("+QIOPEN: %d,%d" % (connect_id, OPEN_OK))
        return None

    def _read_socket(self, args: list[str]) -> None:
        connect_id = _int(args[0]) if args else -1
        n = _int(args[1]) if len(args) > 1 else MAX_READ
        sock = self.sockets.get(connect_id)
        if sock is None or not 0 <= n <= MAX_READ:
            self._reply("ERROR")
        elif n == 0:
            self._reply("+QIRD: %d,%d,%d" % (sock.received, sock.read, len(sock.rx)), "OK")
        else:
            data = sock.take(n)
            self._out(b"\r\n+QIRD: %d\r\n" % len(data) + data + b"\r\n")
            self._reply("OK")

    async def _send(self, args: list[str], reader: asyncio.StreamReader, buf: bytes) -> bytes:
        connect_id = _int(args[0]) if args else -1
        n = _int(args[1]) if len(args) > 1 else -1
        sock = self.sockets.get(connect_id)
        if sock is not None and n == 0:
            self._reply("+QISEND: %d,%d,%d" % (sock.sent, sock.sent - sock.unacked,
                                               sock.unacked), "OK")
            return buf
        if sock is None or not sock.open or not 0 < n <= MAX_SEND:
            self._reply("ERROR")
            return buf
        self._out(b"> ")
        while len(buf) < n:
            chunk = await self._read(reader)
            if not chunk:
                return b""
            buf += chunk
        data, buf = buf[:n], buf[n:]
        self.sent.append(data)
        if self.sockets.get(connect_id) is not sock or not sock.open:
            self._reply("SEND FAIL")  # the connection went while the data came in
        elif sock.unacked + n > self.send_buffer:
            self._reply("SEND FAIL")
        else:
            sock.send(data)
            self._reply("SEND OK")
        return buf


def _args(cmd: str) -> list[str]:
    return [a.strip().strip('"') for a in cmd.split("=", 1)[1].split(",")] if "=" in cmd else []


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def pair() -> tuple[socket.socket, socket.socket]:
    """(modem end, firmware end): give the firmware's end to the bridge as SIM_UART<n>_FD
    (inheritable), the modem's end to Modem."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    b.set_inheritable(True)
    return a, b

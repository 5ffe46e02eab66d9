"""A Quectel BG95 LTE modem in software: the AT command set the bridge's firmware/lte.py uses, on
the modem's end of a socketpair (the firmware's end is its UART, e.g. SIM_UART3_FD).

When the firmware opens a TCP socket (AT+QIOPEN) the model opens a real TCP connection on this
host, to the address asked for or to `connect_to`; the alarm centre's DC-09 receiver listens there.

Knobs, all changeable while running: `coverage` (registered or not; losing it deactivates the PDP
context and drops the socket), `attach_delay` (seconds from coverage to registration), `delay`
(seconds before each answer; zero for benchmarks), `sim` (a SIM inserted), drop_socket().
"""

from __future__ import annotations

import asyncio
import socket
import time

CONNECT_ID = 0
MAX_SEND = 1460  # AT+QISEND takes at most this many bytes


class Modem:
    """The model. `run()` serves the UART until the firmware's end closes."""

    def __init__(self, uart: socket.socket, *, coverage: bool = True, attach_delay: float = 0.0,
                 delay: float = 0.0, sim: bool = True, rssi: int = 20,
                 connect_to: tuple[str, int] | None = None) -> None:
        self._uart = uart
        self.sim = sim
        self.rssi = rssi
        self.delay = delay
        self.attach_delay = attach_delay
        self.connect_to = connect_to
        self._coverage = coverage
        self._coverage_since = time.monotonic()
        self.echo = True
        self.apn: str | None = None
        self.pdp_active = False
        self._writer: asyncio.StreamWriter | None = None
        self._tcp: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._rx = bytearray()  # received on the TCP socket, not yet read with AT+QIRD
        self.commands: list[str] = []  # every command line, for tests
        self.sent: list[bytes] = []  # every AT+QISEND payload, for tests
        self.opens = 0

    # knobs
    @property
    def coverage(self) -> bool:
        return self._coverage

    @coverage.setter
    def coverage(self, on: bool) -> None:
        if on and not self._coverage:
            self._coverage_since = time.monotonic()
        if not on and self._coverage and self.pdp_active:
            self.pdp_active = False
            self._close_tcp()
            self._urc('+QIURC: "pdpdeact",1')
        self._coverage = on

    @property
    def registered(self) -> bool:
        return self._coverage and time.monotonic() - self._coverage_since >= self.attach_delay

    def inject(self, data: bytes) -> None:
        """Send raw bytes to the bridge as if the modem said them (garbage, a bogus URC)."""
        self._out(data)

    def drop_socket(self) -> None:
        """The network drops our TCP connection: the firmware hears +QIURC "closed"."""
        if self._tcp is not None:
            self._close_tcp()
            self._urc('+QIURC: "closed",%d' % CONNECT_ID)

    # the UART
    async def run(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._uart)
        buf = b""
        try:
            while True:
                chunk = await reader.read(512)
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
            self._close_tcp()

    def _out(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

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
            stat = 1 if self.registered else (2 if self._coverage else 0)
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
            self._close_tcp()
            self._reply("OK")
        elif up.startswith("AT+QIOPEN="):
            self._open(_args(cmd))
        elif up.startswith("AT+QISEND="):
            return await self._send(_args(cmd), reader, buf)
        elif up.startswith("AT+QIRD="):
            args = _args(cmd)
            n = min(_int(args[1]) if len(args) > 1 else 1500, 1500)
            if self._tcp is None and not self._rx or _int(args[0]) != CONNECT_ID or n < 0:
                self._reply("ERROR")
            else:
                data, self._rx = bytes(self._rx[:n]), self._rx[n:]
                self._out(b"\r\n+QIRD: %d\r\n" % len(data) + data + b"\r\n")
                self._reply("OK")
        elif up.startswith("AT+QICLOSE="):
            self._close_tcp()
            self._rx = bytearray()
            self._reply("OK")
        else:
            self._reply("ERROR")
        return buf

    def _open(self, args: list[str]) -> None:
        if len(args) < 5 or _int(args[1]) != CONNECT_ID or args[2] != "TCP":
            self._reply("ERROR")
            return
        if self._tcp is not None:
            self._reply("OK", "+QIOPEN: %d,563" % CONNECT_ID)  # socket identity in use
            return
        self._reply("OK")
        asyncio.get_running_loop().create_task(self._connect(args[3], _int(args[4])))

    async def _connect(self, host: str, port: int) -> None:
        if not self.pdp_active or not self.registered:
            self._urc("+QIOPEN: %d,561" % CONNECT_ID)  # PDP context not active
            return
        target = self.connect_to or (host, port)
        try:
            self._tcp = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, TimeoutError):
            self._urc("+QIOPEN: %d,566" % CONNECT_ID)  # could not connect
            return
        self.opens += 1
        self._rx = bytearray()
        self._pump = asyncio.get_running_loop().create_task(self._read_tcp(self._tcp[0]))
        self._urc("+QIOPEN: %d,0" % CONNECT_ID)

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await reader.read(1500)
            except OSError:
                data = b""
            if not data:
                if self._tcp is not None and self._tcp[0] is reader:
                    self._close_tcp(keep_pump=True)
                    self._urc('+QIURC: "closed",%d' % CONNECT_ID)
                return
            was_empty = not self._rx
            self._rx += data
            if was_empty:  # buffer access mode: one "recv" until the buffer was read empty
                self._urc('+QIURC: "recv",%d' % CONNECT_ID)

    async def _send(self, args: list[str], reader: asyncio.StreamReader, buf: bytes) -> bytes:
        n = _int(args[1]) if len(args) > 1 else -1
        if self._tcp is None or _int(args[0]) != CONNECT_ID or not 0 < n <= MAX_SEND:
            self._reply("ERROR")
            return buf
        self._out(b"> ")
        while len(buf) < n:
            chunk = await reader.read(512)
            if not chunk:
                return b""
            buf += chunk
        data, buf = buf[:n], buf[n:]
        self.sent.append(data)
        if self._tcp is None:
            self._reply("SEND FAIL")
            return buf
        self._tcp[1].write(data)
        self._reply("SEND OK")
        return buf

    def _close_tcp(self, keep_pump: bool = False) -> None:
        if self._tcp is not None:
            self._tcp[1].close()
            self._tcp = None
        if self._pump is not None and not keep_pump:
            self._pump.cancel()
        self._pump = None


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

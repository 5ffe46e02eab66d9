"""The home's broadband in software: its router, as a TCP forwarder between hubd and the broker.

hubd connects to the router's address (`Router.address`) as if it were the broker's; each
connection is forwarded to the broker. The broadband can then fail the two ways a real outage
does, and come back:

    router.cut("blackhole")   # the line goes dead: nothing crosses, nothing is said
    router.cut("reset")       # the router drops its connections: hubd's are reset, new ones refused
    router.restore()

A black-holed connection is held, not closed: its bytes wait (in the kernel's buffers, as TCP
retransmits them) and cross when the line is restored, if neither end gave up before. A new
connection during a black hole hangs in its handshake: the listening socket's accept queue is
kept full, so the kernel drops the SYNs (the client retransmits them, and gets through once the
line is back). A reset resets hubd's open connections and refuses new ones, as a router with no
route out answers at once. Either way the broker hears nothing of the cut (a far end never
does): its side of each connection stays open and silent until the broker gives up on it (its
keepalive, or the client's new session taking over) or the router stops.
"""

from __future__ import annotations

import asyncio
import socket
import struct

BLACKHOLE = "blackhole"
RESET = "reset"
CUTS = (BLACKHOLE, RESET)


def _listener(host: str, port: int, backlog: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Connection:
    """One forwarded connection: hubd's side, the broker's side, a pump each way."""

    def __init__(self, router: Router, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 server: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.router = router
        self.client = client[1]
        self.server = server[1]
        self._ended = 0
        self.pumps = [asyncio.get_running_loop().create_task(self._pump(client[0], self.server)),
                      asyncio.get_running_loop().create_task(self._pump(server[0], self.client))]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                await self.router._up.wait()  # black-holed: the bytes wait for the line
                if not data:
                    self._ended += 1
                    if self._ended == 2:  # both ways ended: the connection is over
                        self.close()
                    elif writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            self.close()

    def silence(self) -> None:
        """The cut: stop carrying; the broker's side is kept open and silent."""
        for pump in self.pumps:
            pump.cancel()

    def close(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        for w in (self.client, self.server):
            w.close()
        self.router._connections.discard(self)


class Router:
    """Forwards connections to its address on to ``broker`` (host, port), until cut."""

    def __init__(self, broker: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.broker = broker
        self._host = host
        self._sock: socket.socket | None = _listener(host, 0, 64)
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._up = asyncio.Event()
        self._up.set()
        self.cut_as: str | None = None  # None while the broadband is up
        self._connections: set[_Connection] = set()
        self._silent: list[asyncio.StreamWriter] = []  # broker sides of reset connections
        self._hole: list[socket.socket] = []  # the black hole's listener and what fills it
        self.accepted = 0  # connections forwarded, for tests

    @property
    def up(self) -> bool:
        return self.cut_as is None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._listen()

    def _listen(self) -> None:
        # A plain listening socket and a reader on it (no asyncio.Server): cutting and restoring
        # stay synchronous, with no moment where two sockets want the port.
        if self._sock is None:
            self._sock = _listener(self._host, self.address[1], 64)
        assert self._loop is not None
        self._loop.add_reader(self._sock.fileno(), self._on_connect)

    def _unlisten(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_connect(self) -> None:
        assert self._sock is not None and self._loop is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._forward(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        if self.cut_as is not None:
            _reset(writer)
            return
        try:
            server = await asyncio.wait_for(asyncio.open_connection(*self.broker), 10)
        except (OSError, TimeoutError):
            _reset(writer)  # the broker is down: the client hears what the broker's host said
            return
        self.accepted += 1
        self._connections.add(_Connection(self, (reader, writer), server))

    def cut(self, how: str = BLACKHOLE) -> None:
        """The broadband fails: ``"blackhole"`` (nothing crosses, nothing is said; new
        connections hang) or ``"reset"`` (open connections reset, new ones refused)."""
        if how not in CUTS:
            raise ValueError(f"cut how? {how!r}: one of {CUTS}")
        if self.cut_as is not None:
            self.restore()
        self.cut_as = how
        self._up.clear()
        self._unlisten()  # the listening socket goes; accepted connections stay
        if how == BLACKHOLE:
            # A full accept queue: the kernel drops every SYN, the client's connect hangs.
            hole = _listener(self._host, self.address[1], 0)
            filler = socket.socket(hole.family, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(self.address)
            self._hole = [hole, filler]
        else:
            for conn in list(self._connections):
                conn.silence()
                _reset(conn.client)
                self._silent.append(conn.server)
            self._connections.clear()

    def restore(self) -> None:
        """The broadband is back: black-holed connections carry on, new ones are forwarded."""
        if self.cut_as is None:
            return
        for s in self._hole:
            s.close()
        self._hole = []
        self.cut_as = None
        self._up.set()
        self._listen()

    async def stop(self) -> None:
        self._unlisten()
        for s in self._hole:
            s.close()
        self._hole = []
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections):
            conn.close()
        for w in self._silent:
            w.close()
        self._silent.clear()

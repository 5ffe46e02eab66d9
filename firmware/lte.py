"""The LTE modem (Quectel BG95 family) over a UART: AT commands, the PDP context and its TCP
sockets: connect id 0 for the second path to the alarm centre (firmware/second_path.py), connect
id 1 for hubd's uplink to its broker (firmware/uplink.py), each with its own state and URCs.

One command is in flight at a time, whoever asks (asyncio.Lock hands the modem to the next waiter
in turn, so a party waits for at most one command of each other party); a reader task splits the
modem's output into the answer of that command and unsolicited result codes (URCs: +QIURC
"recv"/"closed"/"pdpdeact", +QIOPEN), each for the socket its connect id names. Socket 0's state
lives here; the other socket's owner registers itself as `other` (it is made only when hubd opens
the uplink, so a bridge that never does pays one attribute for it). Every step has a timeout, and
every failure is returned as a value (an E_* string), never raised: the caller decides whether to
retry. Modem output is hostile: lines and reads are bounded, and a length the modem announces is
never trusted beyond our own limit. docs/second-path.md lists the AT sequence.
"""

import time

import asyncio

import heap
import log
import timed
import vital

# Errors, returned as values; None means success.
E_TIMEOUT = "timeout"  # the modem did not answer in time
E_ERROR = "error"  # ERROR or +CME ERROR
E_NO_SIM = "no_sim"
E_NOT_REGISTERED = "not_registered"  # no network (coverage) within the attach time
E_PDP = "pdp_failed"
E_OPEN = "open_failed"
E_CLOSED = "closed"  # the peer or the network closed the socket
E_SEND = "send_failed"

CONTEXT = 1  # PDP context id
SOCKET = 0  # connect id of the second path's TCP socket (the uplink's is firmware/uplink.py's)

_MAX_LINE = 256  # a longer line without a newline is noise: dropped
_MAX_LINES = 8  # information lines kept per command
_MAX_READ = 512  # bytes asked of AT+QIRD at a time
_MAX_RX = 1024  # socket bytes held before the sender takes them
_FINAL = ("OK", "ERROR", "SEND OK", "SEND FAIL", "NO CARRIER")


def _args(text):
    """The comma-separated arguments of a "+XYZ: a,b" line, quotes removed."""
    return [a.strip().strip('"') for a in text[text.find(":") + 1:].split(",")]


def _int(text, default=-1):
    try:
        return int(text)
    except ValueError:
        return default


class Lte:
    """AT command driver of a BG95 on `uart` (a machine.UART). Call start() once, inside the
    event loop, before any command. `apn`, `user`, `password` and open()'s host go into AT
    commands as they are: firmware/config.py lets only printable ASCII without quotes, commas
    or semicolons through."""

    def __init__(self, uart, apn, user="", password="", cmd_timeout_ms=3000,
                 attach_timeout_ms=60000, pdp_timeout_ms=30000, open_timeout_ms=20000):
        self._uart = uart
        self.apn = apn
        self.user = user
        self.password = password
        self.cmd_timeout_ms = cmd_timeout_ms
        self.attach_timeout_ms = attach_timeout_ms
        self.pdp_timeout_ms = pdp_timeout_ms
        self.open_timeout_ms = open_timeout_ms
        self._buf = b""
        self._lock = asyncio.Lock()
        self._pending = False
        self._want_prompt = False
        self._lines = []
        self._final = None
        self._done = asyncio.Event()
        self._prompt = asyncio.Event()
        self._raw_need = 0
        self._open_err = None
        self._opened = asyncio.Event()
        self._recv = asyncio.Event()
        self._data = b""  # socket data the command in progress (AT+QIRD) read
        self.rx = b""  # socket 0's data read from the modem, for the second path to take
        self.connected = False  # socket 0 is open
        # The other socket's owner: an object with `cid`, `opened` (an Event), `open_err` and
        # urc(kind) for "recv", "closed" and "pdpdeact" (firmware/uplink.py); None until hubd
        # opens the uplink.
        self.other = None
        self.pdp_up = False
        self.noise = 0  # bytes dropped as unparseable: a bad line or a lying modem
        self._writer = None
        self._task = None

    def start(self):
        """Start reading the modem."""
        # One stream for both ways (MicroPython's read and write): a second costs heap.
        self._writer = asyncio.StreamReader(self._uart)
        self._task = vital.start(self._read_loop(self._writer), "modem reader")

    def stop(self):
        """Stop reading the modem."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _read_loop(self, reader):
        while True:
            try:
                data = await reader.read(128)
            except MemoryError:
                heap.survive("modem in")  # what it answered is lost: the AT command times out
                data = b""
            if not data:
                await asyncio.sleep_ms(10)
                continue
            try:
                self._buf += data
                self._parse()
            except MemoryError:
                self.noise += len(self._buf)
                self._buf = b""
                self._raw_need = 0
                heap.survive("modem in")  # what it answered is lost: the AT command times out
            except Exception as e:  # a modem's output must never stop its reader
                self.noise += len(self._buf)
                self._buf = b""
                self._raw_need = 0
                log.error("modem: output dropped: %r" % e)

    def _parse(self):
        while self._buf:
            buf = self._buf
            if self._raw_need:
                n = min(self._raw_need, len(buf))
                if len(self._data) + n <= _MAX_READ:
                    self._data += buf[:n]
                else:
                    self.noise += n  # more than one command asked for: a lying modem
                self._buf = buf[n:]
                self._raw_need -= n
                continue
            if self._want_prompt and buf[:1] == b">":
                self._buf = buf[2:] if buf[1:2] == b" " else buf[1:]
                self._want_prompt = False
                self._prompt.set()
                continue
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > _MAX_LINE:
                    self.noise += len(buf)
                    self._buf = b""
                return
            line, self._buf = buf[:i], buf[i + 1:]
            if i > _MAX_LINE:
                self.noise += i
                continue
            try:
                text = line.decode().strip()
            except UnicodeError:
                self.noise += i
                continue
            if text:
                self._line(text)

    def _line(self, text):
        if text.startswith("+QIURC:"):
            a = _args(text)
            cid = _int(a[1]) if len(a) > 1 else -1
            other = self.other
            if a[0] == "pdpdeact":  # every socket is gone with the context
                self.pdp_up = False
                self.connected = False
                self._recv.set()
                if other is not None:
                    other.urc("pdpdeact")
            elif cid == SOCKET:
                if a[0] == "closed":
                    self.connected = False
                    self._recv.set()  # wake a reader: there will be no answer on this socket
                elif a[0] == "recv":
                    self._recv.set()
            elif other is not None and cid == other.cid and a[0] in ("recv", "closed"):
                other.urc(a[0])
            return
        if text.startswith("+QIOPEN:"):
            a = _args(text)
            cid = _int(a[0])
            err = _int(a[1]) if len(a) > 1 else -1
            other = self.other
            if cid == SOCKET:
                self._open_err = err
                self._opened.set()
            elif other is not None and cid == other.cid:
                other.open_err = err
                other.opened.set()
            return
        if not self._pending:
            log.debug("modem: %s" % text)  # RDY, unsolicited +CEREG and the like
            return
        if text in _FINAL or text.startswith("+CME ERROR"):
            self._final = text
            self._prompt.set()  # a command waiting for ">" must hear the error too
            self._done.set()
            return
        if text.startswith("+QIRD:"):
            n = _int(_args(text)[0])
            if n < 0 or n > _MAX_READ:
                # We asked for at most _MAX_READ: a larger length means we lost the framing.
                self.noise += 1
                self._final = "ERROR"
                self._done.set()
                return
            self._raw_need = n
        # Not the echo of our own command, nor more lines than any answer has.
        if not text.startswith("AT") and len(self._lines) < _MAX_LINES:
            self._lines.append(text)

    async def command(self, cmd, timeout_ms=None, data=None):
        """Send one AT command; with `data` (bytes, or a list of bytes written one after the
        other), write it after the ">" prompt. Returns (error or None, information lines)."""
        timeout_ms = timeout_ms or self.cmd_timeout_ms
        async with self._lock:
            self._lines = []
            self._data = b""
            self._final = None
            self._done.clear()
            self._prompt.clear()
            self._want_prompt = data is not None
            self._pending = True
            try:
                self._writer.write(cmd.encode() + b"\r")
                await self._writer.drain()
                if data is not None:
                    if not await timed.wait(self._prompt, timeout_ms):
                        self._want_prompt = False
                        return E_TIMEOUT, self._lines
                    if self._final is not None:
                        return E_ERROR, self._lines
                    if isinstance(data, list):  # no joined copy of up to 1460 bytes
                        for piece in data:
                            self._writer.write(piece)
                    else:
                        self._writer.write(data)
                    await self._writer.drain()
                if not await timed.wait(self._done, timeout_ms):
                    return E_TIMEOUT, self._lines
                if self._final in ("OK", "SEND OK"):
                    return None, self._lines
                log.warn("modem: %s -> %s" % (cmd, self._final))
                return (E_SEND if self._final.startswith("SEND") else E_ERROR), self._lines
            finally:
                self._pending = False
                self._want_prompt = False

    async def _value(self, cmd, prefix):
        err, lines = await self.command(cmd)
        if err:
            return err, None
        for ln in lines:
            if ln.startswith(prefix):
                return None, _args(ln)
        return E_ERROR, None

    async def probe(self):
        """Is a modem answering? Turns echo off. None or an error."""
        err, _ = await self.command("AT")
        if err:
            return err
        err, _ = await self.command("ATE0")
        return err

    async def sim_ready(self):
        """None when the SIM is ready (no PIN needed), else E_NO_SIM or a transport error."""
        err, a = await self._value("AT+CPIN?", "+CPIN:")
        if err == E_ERROR:
            return E_NO_SIM  # +CME ERROR: 10, SIM not inserted
        if err:
            return err
        return None if a[0] == "READY" else E_NO_SIM

    async def signal(self):
        """(rssi in dBm or None when unknown, error or None), from AT+CSQ."""
        err, a = await self._value("AT+CSQ", "+CSQ:")
        if err:
            return None, err
        rssi = _int(a[0])
        return (None if rssi < 0 or rssi > 31 else -113 + 2 * rssi), None

    async def registration(self):
        """The network registration state, AT+CEREG? (LTE), else AT+CREG?: 0 not registered, 1
        home, 2 searching, 3 denied, 4 unknown, 5 roaming; None when the modem did not say."""
        stat = None
        for cmd, prefix in (("AT+CEREG?", "+CEREG:"), ("AT+CREG?", "+CREG:")):
            err, a = await self._value(cmd, prefix)
            n = _int(a[1]) if not err and len(a) > 1 else -1
            if n in (1, 5):
                return n
            if stat is None and 0 <= n <= 5:
                stat = n
        return stat

    async def attach(self, timeout_ms=None):
        """Probe, SIM, wait for registration, set up and activate the PDP context with the APN.
        None when the modem can carry data, else an error."""
        timeout_ms = timeout_ms or self.attach_timeout_ms
        start = time.ticks_ms()
        err = await self.probe() or await self.sim_ready()
        if err:
            return err
        while await self.registration() not in (1, 5):  # home or roaming
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                return E_NOT_REGISTERED
            await asyncio.sleep_ms(min(1000, max(10, timeout_ms // 20)))
        rssi, _ = await self.signal()
        log.info("lte: registered, signal %s dBm" % rssi)
        err, _ = await self.command('AT+QICSGP=%d,1,"%s","%s","%s",1'
                                    % (CONTEXT, self.apn, self.user, self.password))
        if err:
            return E_PDP
        err, a = await self._value("AT+QIACT?", "+QIACT:")
        if err or _int(a[0]) != CONTEXT or len(a) < 2 or a[1] != "1":
            err, _ = await self.command("AT+QIACT=%d" % CONTEXT, self.pdp_timeout_ms)
            if err:
                return E_PDP
        self.pdp_up = True
        return None

    async def open(self, host, port, timeout_ms=None, cid=SOCKET):
        """Open the TCP socket `cid` (0, or `other`'s) to host:port, in buffer access mode (data
        arrives as +QIURC "recv"). None or an error: E_PDP when the modem says the context is
        not active (561: pdp_up is cleared, attach again), else E_OPEN or E_TIMEOUT."""
        ours = cid == SOCKET
        opened = self._opened if ours else self.other.opened
        opened.clear()
        if ours:
            self._open_err = None
            self.rx = b""
            self._recv.clear()
        else:
            self.other.open_err = None
        err, _ = await self.command('AT+QIOPEN=%d,%d,"TCP","%s",%d,0,0'
                                    % (CONTEXT, cid, host, port))
        if err:
            return E_TIMEOUT if err == E_TIMEOUT else E_OPEN
        if not await timed.wait(opened, timeout_ms or self.open_timeout_ms):
            await self.close(cid)
            return E_TIMEOUT
        code = self._open_err if ours else self.other.open_err
        if code != 0:
            log.warn("lte: open %d to %s:%d failed with %s" % (cid, host, port, code))
            await self.close(cid)  # 563 "socket identity used" and the like need a close first
            if code == 561:  # PDP context not active
                self.pdp_up = False
                return E_PDP
            return E_OPEN
        if ours:
            self.connected = True
        return None

    async def send(self, data, cid=SOCKET):
        """Write `data` (bytes, or a list of bytes sent as one write; at most 1460 bytes, the
        BG95's limit; for the second path one DC-09 frame: pysiaalarm refuses two in one write)
        to socket `cid`. E_SEND: the modem's send buffer is full (SEND FAIL)."""
        if cid == SOCKET and not self.connected:
            return E_CLOSED
        n = len(data)
        if isinstance(data, list):
            n = 0
            for piece in data:
                n += len(piece)
        err, _ = await self.command("AT+QISEND=%d,%d" % (cid, n), data=data)
        return err

    async def read(self, cid, n=_MAX_READ):
        """(error or None, bytes): at most `n` (<= 512) bytes the modem holds for socket `cid`,
        b"" when it holds none (AT+QIRD)."""
        err, lines = await self.command("AT+QIRD=%d,%d" % (cid, min(n, _MAX_READ)))
        # Taken before anything else can run: the next command starts with none.
        data, self._data = self._data, b""
        if not err and (not lines or not lines[0].startswith("+QIRD:")):
            err = E_ERROR  # OK without a +QIRD line: not an answer to a read
        return err, (b"" if err else data)

    async def _drain(self):
        # Read what the modem buffered for socket 0; bounded: _MAX_RX / _MAX_READ reads.
        for _ in range(_MAX_RX // _MAX_READ + 1):
            err, data = await self.read(SOCKET)
            if err or not data:
                return
            if len(self.rx) + len(data) <= _MAX_RX:
                self.rx += data
            else:
                self.noise += len(data)  # the caller is not taking data: keep the oldest

    async def recv(self, timeout_ms):
        """(bytes, error or None): what the peer sent on socket 0, waiting up to `timeout_ms`
        for it."""
        start = time.ticks_ms()
        while True:
            self._recv.clear()
            await self._drain()
            if self.rx:
                data, self.rx = self.rx, b""
                return data, None
            if not self.connected:
                return b"", E_CLOSED
            left = timeout_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0 or not await timed.wait(self._recv, left):
                return b"", E_TIMEOUT

    async def close(self, cid=SOCKET):
        """Close socket `cid` (harmless when it is already closed)."""
        if cid == SOCKET:
            self.connected = False
        err, _ = await self.command("AT+QICLOSE=%d" % cid, 10000)
        return err

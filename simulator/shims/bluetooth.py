"""Host stand-in for MicroPython's `bluetooth` module (central role), backed by the simulated radio.

Mirrors the real module where the firmware can tell the difference:
- ``BLE()`` returns one shared object; nothing works until ``active(True)``.
- Calls return at once; their results arrive later as IRQ events with MicroPython's event numbers
  and tuple shapes, never from inside the call.
- ``addr``, ``adv_data``, ``char_data`` and ``notify_data`` are memoryviews into one buffer, and
  ``uuid`` is one reused ``UUID`` object; both are overwritten after the handler returns, so
  firmware that keeps them without copying (``bytes(...)`` / ``bluetooth.UUID(...)``) reads
  garbage, as it would on an ESP32.
- Calls on a handle that is not connected raise ``OSError(ENOTCONN)``; a second ``gap_connect``
  while one is pending raises ``OSError(EALREADY)``; a failed or cancelled connect raises event 8
  with conn_handle 0xFFFF and addr_type 0xFF, as NimBLE does.
- ``active(False)`` shuts the stack down: every link is gone without a disconnect event, calls
  raise ``OSError(EPERM)``, and nothing more is delivered; ``active(True)`` starts it afresh (a
  new controller session on the simulated air). The IRQ handler stays registered, as it does on
  the ESP32.

- ``gap_pair`` raises ``_IRQ_GET_SECRET`` (29) for the peer's stored secret from inside the
  call, as NimBLE's ``ble_gap_security_initiate`` reads its store there; the radio then sends
  ``_IRQ_SET_SECRET`` (30) with new keys and ``_IRQ_ENCRYPTION_UPDATE`` (28) later, as events.
  A second ``gap_pair`` on a link that is encrypted or being encrypted raises
  ``OSError(EALREADY)``. ``config(bond=...)`` is kept; ``io``, ``mitm`` and ``le_secure`` are
  accepted and unused (the radio pairs "Just Works").

Differences: events are delivered by an asyncio task (started by ``active(True)``), so a handler
runs at the firmware's next ``await`` rather than between any two bytecodes; the GATT server and
advertiser roles are not provided (the bridge is a central). ``UUID`` has the buffer protocol
(``bytes(uuid)``: its over-the-air bytes) as MicroPython's does.

Heap: on an ESP32 the Bluetooth host (NimBLE) runs in a task of its own, in memory outside
MicroPython's heap. So what stands for it here (the radio's socket, its poller and stream, the
pump's coroutine, tables for 8 links) is made with the BLE object, which the simulated chip
makes inside its hardware allowance (simulator/bridge_device.py), not at ``active(True)`` in the
firmware's heap (when it was: 2.8 KB on 64-bit, 1.5 KB on 32-bit, measured alone; 1.3 KB in
the soak on 64-bit, where the UARTs had grown asyncio's poll tables already); a link's peer address
is kept as an int, not a bytes object each. Still counted against the firmware, harsher than
the chip: the pump's task, its wait on the socket (a generator and asyncio's entry), each
event's objects, and the same parts made again after ``active(False)``.

Environment: ``SIM_RADIO`` is the radio's unix socket path; ``SIM_BLE_MAC`` (12 hex digits,
optional) is this central's public address.
"""

import asyncio
import binascii
import errno
import os
import select
import socket
import struct

import airwire

FLAG_BROADCAST = 0x0001
FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_AUTHENTICATED_SIGNED_WRITE = 0x0040
FLAG_AUX_WRITE = 0x0100
FLAG_READ_ENCRYPTED = 0x0200
FLAG_READ_AUTHENTICATED = 0x0400
FLAG_READ_AUTHORIZED = 0x0800
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000
FLAG_WRITE_AUTHORIZED = 0x4000

_NO_CONN = 0xFFFF
_GARBAGE = 0xEE
_BUF_SIZE = 1024
_LINKS = 8  # the links the tables are sized for when made (more grow them in the firmware's heap)


class UUID(bytearray):
    """A 16-, 32- or 128-bit Bluetooth UUID, held in over-the-air (little-endian) byte order.

    Like MicroPython's, it has the buffer protocol: ``bytes(uuid)`` is those bytes. (A bytearray
    underneath is the only way a Python class gets a buffer in MicroPython, whose ``bytes()``
    ignores ``__bytes__``; firmware must not rely on the rest of bytearray, ``len()`` included,
    which a real UUID lacks.)"""

    def __init__(self, value):
        if isinstance(value, UUID):
            raw = bytes(value)
        elif isinstance(value, int):
            if value < 0 or value > 0xFFFFFFFF:
                raise ValueError("invalid UUID")
            raw = value.to_bytes(2 if value <= 0xFFFF else 4, "little")
        elif isinstance(value, str):
            hexdigits = value.replace("-", "")
            if len(hexdigits) != 32:
                raise ValueError("invalid UUID")
            be = binascii.unhexlify(hexdigits)
            raw = bytes(be[15 - i] for i in range(16))
        else:
            raw = bytes(value)
            if len(raw) not in (2, 4, 16):
                raise ValueError("invalid UUID")
        super().__init__(raw)

    def __eq__(self, other):
        return isinstance(other, UUID) and bytes(self) == bytes(other)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(bytes(self))

    def __repr__(self):
        b = bytes(self)
        if len(b) != 16:
            return "UUID(0x%x)" % int.from_bytes(b, "little")
        h = binascii.hexlify(bytes(b[15 - i] for i in range(16))).decode()
        return "UUID('%s-%s-%s-%s-%s')" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class _BLE:
    def __init__(self):
        self._active = False
        self._handler = None
        self._mtu = 23
        self._gap_name = b"MPY BTSTACK"
        mac = os.getenv("SIM_BLE_MAC") or "02005e000001"
        self._mac = binascii.unhexlify(mac)
        self._bond = False
        self._connecting = False
        self._buf = bytearray(_BUF_SIZE)
        self._uuid = UUID(0)
        self._pump_task = None
        self._host()

    def _host(self):
        # What NimBLE's host holds in its own memory on the chip (module docstring): the radio's
        # socket (connected at active(True)), poller, stream and pump coroutine, and the tables
        # of links grown to _LINKS entries (removing keys leaves a table its size).
        self._conns = set()
        self._peers = {}  # conn_handle -> the peer's ble_addr_t (type, address LSB first) as an int
        self._securing = set()  # conn handles encrypted or being encrypted
        for table in (self._conns, self._securing):
            for i in range(_LINKS):
                table.add(-1 - i)
            for i in range(_LINKS):
                table.discard(-1 - i)
        for i in range(_LINKS):
            self._peers[-1 - i] = 0
        for i in range(_LINKS):
            del self._peers[-1 - i]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._poller = select.poll()
        self._poller.register(self._sock, select.POLLOUT)
        self._pump_coro = self._pump(self._sock, asyncio.StreamReader(self._sock))

    # --- radio socket -------------------------------------------------------------------------

    def _open(self):
        path = os.getenv("SIM_RADIO")
        if not path:
            raise OSError(errno.ENODEV)  # no simulated radio: like a board without BLE
        sock = self._sock
        # The unix port takes a raw sockaddr: sun_family (native u16) + NUL-terminated path.
        sock.connect(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\x00")
        sock.setblocking(False)
        self._send(airwire.HELLO, (self._mac,))
        self._pump_task = asyncio.create_task(self._pump_coro)
        self._pump_coro = None

    def _send(self, kind, args):
        frame = memoryview(airwire.encode(kind, args))
        while frame:
            n = self._sock.write(frame)
            if n is None:  # socket buffer full: wait until the radio drains it
                self._poller.poll(1000)
                continue
            frame = frame[n:]

    def _request(self, kind, args):
        self._check_active()
        self._send(kind, args)

    def _check_active(self):
        if not self._active:
            raise OSError(errno.EPERM)

    def _check_conn(self, conn_handle):
        self._check_active()
        if conn_handle not in self._conns:
            raise OSError(errno.ENOTCONN)

    async def _pump(self, sock, reader):
        while True:
            try:
                header = await reader.readexactly(2)
                body = await reader.readexactly(airwire.body_length(header))
            except (EOFError, OSError, airwire.WireError):
                if self._sock is sock:
                    print("bluetooth shim: lost the simulated radio")
                    self._conns.clear()
                return
            if self._sock is not sock:
                return  # deactivated meanwhile
            event, args = airwire.decode(body)
            self._dispatch(event, args)

    def _dispatch(self, event, args):
        if event == 7:
            self._conns.add(args[0])
            addr = args[2]  # ble_addr_t: type, then the address least significant byte first
            key = args[1]
            for i in range(6):
                key = key << 8 | addr[5 - i]
            self._peers[args[0]] = key
            self._connecting = False
        elif event == 8:
            if args[0] == _NO_CONN:
                self._connecting = False
            else:
                self._conns.discard(args[0])
                self._peers.pop(args[0], None)
                self._securing.discard(args[0])
        elif event == 28 and not args[1]:
            self._securing.discard(args[0])
        handler = self._handler
        if handler is None:
            return
        # Stage bytes in the shared buffer and hand out views, as modbluetooth's ringbuffer does.
        data = []
        used = 0
        uuid_used = False
        for i in range(len(args)):
            a = args[i]
            if isinstance(a, bytes) and _is_uuid_slot(event, i):
                self._uuid[:] = a
                uuid_used = True
                data.append(self._uuid)
            elif isinstance(a, bytes):
                n = len(a)
                self._buf[used : used + n] = a
                data.append(memoryview(self._buf)[used : used + n])
                used += n
            else:
                data.append(a)
        try:
            handler(event, tuple(data))
        except Exception as e:
            print("Uncaught exception in IRQ callback handler")
            print(repr(e))
        for i in range(used):
            self._buf[i] = _GARBAGE
        if uuid_used:
            self._uuid[:] = bytes(_GARBAGE for _ in range(len(self._uuid)))

    # --- public API ---------------------------------------------------------------------------

    def active(self, active=None):
        if active is None:
            return self._active
        if active and not self._active:
            self._open()
            self._active = True
        elif not active and self._active:
            self._active = False
            self._connecting = False
            if self._pump_task is not None:
                self._pump_task.cancel()  # before the close: it must not read a dead socket
                self._pump_task = None
            self._sock.close()
            self._host()  # afresh for the next active(True): no link, a new socket and pump
        return self._active

    def config(self, *args, **kwargs):
        if args:
            if len(args) != 1 or kwargs:
                raise TypeError("must query one param")
            name = args[0]
            if name == "mac":
                return (0, self._mac)
            if name == "mtu":
                return self._mtu
            if name == "gap_name":
                return self._gap_name
            raise ValueError("unknown config param")
        for name, value in kwargs.items():
            if name == "mtu":
                if value < 23 or value > 517:
                    raise ValueError("invalid MTU")
                self._mtu = value
            elif name == "gap_name":
                self._gap_name = value.encode() if isinstance(value, str) else bytes(value)
            elif name == "bond":
                self._bond = bool(value)
            elif name in ("rxbuf", "io", "mitm", "le_secure", "addr_mode"):
                pass  # accepted for compatibility; the simulated stack does not use them
            else:
                raise ValueError("unknown config param")
        return None

    def irq(self, handler):
        self._handler = handler

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self._request(airwire.SCAN, (duration_ms, 1 if active else 0))

    def gap_connect(self, addr_type, addr=None, scan_duration_ms=2000,
                    min_conn_interval_us=None, max_conn_interval_us=None):
        self._check_active()
        if addr_type is None:
            if self._connecting:
                self._send(airwire.CONNECT_CANCEL, ())
            return
        if self._connecting:
            raise OSError(errno.EALREADY)
        if len(addr) != 6:
            raise ValueError("invalid addr")
        self._connecting = True
        self._send(airwire.CONNECT, (addr_type, bytes(addr), scan_duration_ms))

    def gap_disconnect(self, conn_handle):
        self._check_active()
        if conn_handle not in self._conns:
            return False
        self._send(airwire.DISCONNECT, (conn_handle,))
        return True

    def gap_pair(self, conn_handle):
        self._check_conn(conn_handle)
        if conn_handle in self._securing:
            raise OSError(errno.EALREADY)
        secret = None
        handler = self._handler
        if handler is not None:
            # The stack asks for the peer's keys now (NimBLE: ble_store_read_peer_sec).
            key = self._peers[conn_handle].to_bytes(7, "big")
            self._buf[: len(key)] = key
            try:
                value = handler(29, (2, 0, memoryview(self._buf)[: len(key)]))
            except Exception as e:
                print("Uncaught exception in IRQ callback handler")
                print(repr(e))
                value = None
            for i in range(len(key)):
                self._buf[i] = _GARBAGE
            if value is not None:
                secret = bytes(value)
        self._securing.add(conn_handle)
        self._send(airwire.PAIR, (conn_handle, secret, 1 if self._bond else 0))

    def gattc_discover_services(self, conn_handle, uuid=None):
        self._check_conn(conn_handle)
        self._send(airwire.DISCOVER_SERVICES, (conn_handle, _uuid_arg(uuid)))

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        self._check_conn(conn_handle)
        self._send(
            airwire.DISCOVER_CHARACTERISTICS,
            (conn_handle, start_handle, end_handle, _uuid_arg(uuid)),
        )

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        self._check_conn(conn_handle)
        self._send(airwire.DISCOVER_DESCRIPTORS, (conn_handle, start_handle, end_handle))

    def gattc_read(self, conn_handle, value_handle):
        self._check_conn(conn_handle)
        self._send(airwire.READ, (conn_handle, value_handle))

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        self._check_conn(conn_handle)
        self._send(airwire.WRITE, (conn_handle, value_handle, mode, bytes(data)))

    def gattc_exchange_mtu(self, conn_handle):
        self._check_conn(conn_handle)
        self._send(airwire.EXCHANGE_MTU, (conn_handle, self._mtu))


def _uuid_arg(uuid):
    if uuid is None:
        return None
    return bytes(UUID(uuid))


def _is_uuid_slot(event, index):
    # Service result (9) and characteristic result (11) end in a uuid; descriptor result (13) too.
    return (event == 9 and index == 3) or (event == 11 and index == 4) or (event == 13 and index == 2)


_instance = None


def BLE():
    """Return the one BLE object, as ``bluetooth.BLE()`` does on a board."""
    global _instance
    if _instance is None:
        _instance = _BLE()
    return _instance

"""The Bluetooth proxy's own logic inside MicroPython, with a stand-in for ble_central: request
checks, slots, one request at a time per connection in order, one ble_done per request whatever
happens, the host link's events, and which adverts go out when."""

import asyncio

import ble_central
import ble_proxy
from ble_central import DISCONNECTED, ERROR, GATT_ERROR, TIMEOUT, UNREACHABLE, BLEError
from wire import link, messages

# firmware/ble_proxy.py's limits (const() names are not module attributes in MicroPython).
MAX_QUEUED = 8
MAX_HEARD = 16


class Conn:
    """A connection whose procedures wait for ``gate`` (when set) and record what ran."""

    def __init__(self, handle, notified):
        self.conn_handle = handle
        self.connected = True
        self.log = []
        self.gate = None
        self.running = None  # (what, its result) of a read or write started
        self.fail = None  # an exception the next procedure raises
        self.notes = []
        self.notified = notified  # the central's, as ble_central's Connection sets it
        self.addr_type = 0
        self.addr = b"\xc0\xff\xee\x00\x00\x01"
        self.sec = 5  # what the next pairing ends with: encrypted, bonded
        self.security = 0
        self.bonds = None  # the Bonds the stack's SET_SECRET reaches while pairing

    async def _procedure(self, what):
        self.log.append(what)
        if self.gate is not None:
            await self.gate.wait()
        if not self.connected:
            raise BLEError(DISCONNECTED, what)
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.log.append(("done",) + what)

    async def exchange_mtu(self, ms):
        return 177

    # A read or write the proxy starts and waits for itself, as on ble_central's Connection:
    # start_*, wait on ``flag`` while waiting(), then end() (or free()).
    def start_read(self, handle, ms):
        self._start(("read", handle), b"\x01\x02")

    def start_write(self, handle, data, ms, response=True):
        self._start(("write", handle, bytes(data), response), None)

    def _start(self, what, result):
        if self.running is not None:
            raise AssertionError("a procedure started while another runs: %r" % (what,))
        self.log.append(what)
        self.running = (what, result)

    @property
    def flag(self):
        return self.gate

    def waiting(self):
        return self.gate is not None and not self.gate.is_set() and self.connected

    def end(self, what):
        (procedure, result), self.running = self.running, None
        if not self.connected:
            raise BLEError(DISCONNECTED, what)
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.log.append(("done",) + procedure)
        return result

    def free(self):
        self.running = None

    async def pair(self, ms):
        await self._procedure(("pair", ms))
        self.security = self.sec
        if self.sec & 4 and self.bonds is not None:  # the stack handed the keys over
            self.bonds.held.add((self.addr_type, self.addr))
            self.bonds.dirty = True
        return self.sec

    async def services(self, uuid, ms):
        await asyncio.sleep_ms(2)  # each step a radio exchange: other tasks run meanwhile
        if not self.connected:
            raise BLEError(DISCONNECTED, "service discovery")
        return [(1, 6, b"\xf0\xff")]

    async def characteristics(self, start, end, uuid, ms):
        await asyncio.sleep_ms(2)
        return [(2, 3, 0x08, b"\xf1\xff"), (4, 5, 0x10, b"\xf2\xff")]

    async def descriptors(self, start, end, ms):
        return [(6, b"\x02\x29")] if start <= 6 <= end else []

    def note(self):
        if self.notes:
            return self.notes.pop(0)
        if not self.connected:
            raise BLEError(DISCONNECTED, "gone")
        return None

    def notify(self, handle, data):
        self.notes.append((handle, data))
        self.notified.set()

    def disconnect_nowait(self):
        self.connected = False
        self.notified.set()
        if self.gate is not None:
            self.gate.set()

    async def disconnect(self):
        self.disconnect_nowait()


class Gate:
    """What a connection's procedures wait for (an asyncio.Event); set, it also sets the
    central's ``notified``, as the event that ends a real procedure does (ble_central)."""

    def __init__(self, notified):
        self._event = asyncio.Event()
        self._notified = notified

    def set(self):
        self._event.set()
        self._notified.set()

    def is_set(self):
        return self._event.is_set()

    def wait(self):
        return self._event.wait()


class Central:
    def __init__(self):
        self.restarts = 0
        self.notified = asyncio.ThreadSafeFlag()  # every connection's notifications and losses
        self.on_advert = None
        self.conns = []
        self.reachable = True
        self.gate = None
        self.scans = []
        self.scan_gate = None
        self.asked = []  # addresses connect was called for

    async def connect(self, addr_type, addr, ms):
        self.asked.append(addr)
        if self.gate is not None:
            await self.gate.wait()
        if not self.reachable:
            raise BLEError(UNREACHABLE, "no")
        conn = Conn(len(self.conns) + 1, self.notified)
        self.conns.append(conn)
        return conn

    async def scan(self, ms, active=True):
        self.scans.append((ms, active))
        if self.scan_gate is not None:
            await self.scan_gate.wait()
        else:
            await asyncio.sleep_ms(ms)


class Host:
    def __init__(self):
        self.sent = []
        self.idle = True

        self.refuse = []  # exceptions the next sends raise (link.LinkFull, MemoryError)

    def send(self, payload):
        if self.refuse:
            raise self.refuse.pop(0)
        self.sent.append(messages.decode(payload))  # every message must be a valid one


class Bonds:
    """A bond store in RAM that records its saves (ble_bonds.Bonds has its own tests)."""

    def __init__(self):
        self.dirty = False
        self.held = set()
        self.saves = 0
        self.fail_save = None

    def holds(self, addr_type, addr):
        return (addr_type, bytes(addr)) in self.held

    def forget(self, addr_type, addr):
        key = (addr_type, bytes(addr))
        if key in self.held:
            self.held.discard(key)
            self.dirty = True
            return 1
        return 0

    def save(self):
        if self.fail_save is not None:
            raise self.fail_save
        self.saves += 1
        self.dirty = False


def _proxy(slots=3, **scans):
    central = Central()
    host = Host()
    proxy = ble_proxy.Proxy(central, host.send, lambda: host.idle, slots, Bonds(), **scans)
    return proxy, central, host


async def test_pair_answers_the_links_security_and_saves_the_bond_first():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    bonds = proxy._bonds
    central.conns[0].bonds = bonds
    done = await _call(proxy, host, messages.BLE_PAIR, conn, 5000)
    assert done["status"] == "ok" and done["count"] == 5, done  # encrypted, bonded
    assert bonds.saves == 1 and not bonds.dirty and central.conns[0].log[-1] == ("done", "pair", 5000)
    assert central.conns[0].bonds is bonds and central.secrets is bonds  # the stack asks it


async def test_a_refused_pairing_is_auth_failed_and_an_unsaved_bond_is_not_said_bonded():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    c = central.conns[0]
    c.bonds = proxy._bonds
    c.sec = 0  # the peer refused
    assert (await _call(proxy, host, messages.BLE_PAIR, conn, 5000))["status"] == "auth_failed"
    c.sec = 5
    proxy._bonds.fail_save = OSError(28)  # the flash is full
    done = await _call(proxy, host, messages.BLE_PAIR, conn, 5000)
    assert done["status"] == "ok" and done["count"] == 1, done  # encrypted, not bonded
    proxy._bonds.fail_save = None
    proxy._bonds.held.clear()
    c.bonds = None  # the stack paired but the store refused the keys (full)
    done = await _call(proxy, host, messages.BLE_PAIR, conn, 5000)
    assert done["status"] == "ok" and done["count"] == 1, done


async def test_pair_and_unpair_refuse_bad_values_and_every_one_ends_in_one_ble_done():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    for ms in (0, -1, 60001):
        assert (await _call(proxy, host, messages.BLE_PAIR, conn, ms))["status"] == "refused"
    assert (await _call(proxy, host, messages.BLE_PAIR, conn + 7, 100))["status"] == "no_conn"
    for addr, addr_type in (("C0:FF:EE:00:00", 0), ("C0-FF-EE-00-00-01", 0),
                            ("C0:FF:EE:00:00:0G", 0), ("C0:FF:EE:00:00:01", 2)):
        done = await _call(proxy, host, messages.BLE_UNPAIR, addr, addr_type)
        assert done["status"] == "refused", (addr, addr_type, done)
    central.conns[0].fail = BLEError(DISCONNECTED, "gone")
    assert (await _call(proxy, host, messages.BLE_PAIR, conn, 100))["status"] == "disconnected"
    central.conns[0].fail = BLEError(TIMEOUT, "no answer")
    assert (await _call(proxy, host, messages.BLE_PAIR, conn, 100))["status"] == "timeout"
    rids = [m["rid"] for m in host.sent if m["m"] == "ble_done"]
    assert len(rids) == len(set(rids)), "one ble_done per request"


async def test_a_connect_to_a_bonded_peer_re_encrypts_before_its_answer():
    proxy, central, host = _proxy()
    proxy._bonds.held.add((0, b"\xc0\xff\xee\x00\x00\x01"))
    done = await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:01", 0, 1000)
    assert done["status"] == "ok" and done["count"] == 5, done
    assert central.conns[0].log == [("pair", 1000), ("done", "pair", 1000)]
    done = await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:02", 0, 1000)
    assert done["status"] == "ok" and done["count"] == 0 and central.conns[1].log == [], done


async def test_unpair_forgets_the_bond_and_saves_even_with_no_connection():
    proxy, central, host = _proxy()
    bonds = proxy._bonds
    bonds.held.add((0, b"\xc0\xff\xee\x00\x00\x01"))
    done = await _call(proxy, host, messages.BLE_UNPAIR, "C0:FF:EE:00:00:01", 0)
    assert done["status"] == "ok" and done["count"] == 1 and not bonds.held and bonds.saves == 1
    done = await _call(proxy, host, messages.BLE_UNPAIR, "c0:ff:ee:00:00:01", 0)
    assert done["status"] == "ok" and done["count"] == 0, done
    bonds.held.add((1, b"\xc0\xff\xee\x00\x00\x02"))
    bonds.fail_save = OSError(5)
    done = await _call(proxy, host, messages.BLE_UNPAIR, "C0:FF:EE:00:00:02", 1)
    assert done["status"] == "error", done  # forgotten until the next boot only: said so


async def test_the_bond_store_is_loaded_with_its_file_or_at_the_first_pairing():
    # Real files, in a directory of the test's own (the bond file's path is relative).
    import os
    import random
    import sys

    home = os.getcwd()
    d = "/tmp/mp_test_proxy_%08x" % random.getrandbits(32)
    os.mkdir(d)
    os.chdir(d)
    try:
        central, host = Central(), Host()
        proxy = ble_proxy.Proxy(central, host.send, lambda: host.idle, 3)
        # No bond file: ble_bonds is not imported, a connect re-encrypts nothing.
        assert proxy._bonds is None and getattr(central, "secrets", None) is None
        conn = await _connect(proxy, host)
        assert central.conns[0].log == [] and "ble_bonds" not in sys.modules
        central.conns[0].sec = 1  # the peer encrypts, hands over no keys
        done = await _call(proxy, host, messages.BLE_PAIR, conn, 5000)
        assert done["status"] == "ok" and done["count"] == 1, done
        import ble_bonds

        bonds = proxy._bonds  # loaded before the stack asked for keys
        assert isinstance(bonds, ble_bonds.Bonds) and central.secrets is bonds
        assert ble_proxy._BONDS_FILE == ble_bonds.PATH
        # The stack hands keys over, they are saved: the next proxy loads them at once.
        assert bonds.set(2, ble_bonds.peer_key(0, b"\xc0\xff\xee\x00\x00\x02"), b"k" * 80)
        bonds.save()
        central, host = Central(), Host()
        proxy = ble_proxy.Proxy(central, host.send, lambda: host.idle, 3)
        assert isinstance(proxy._bonds, ble_bonds.Bonds) and central.secrets is proxy._bonds
        done = await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:02", 0, 1000)
        assert done["status"] == "ok" and central.conns[0].log[0] == ("pair", 1000), done
    finally:
        for name in os.listdir():
            os.remove(name)
        os.chdir(home)
        os.rmdir(d)


async def _until(cond, what="the condition"):
    # Lets the proxy's tasks run until ``cond()``; the time limit only ends a test that fails.
    import time

    start = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), start) > 10000:
            raise AssertionError("never: " + what)
        await asyncio.sleep_ms(0)


_rid = [0]


def _ask(proxy, kind, *values):
    _rid[0] += 1
    proxy.on_message(messages.decode(messages.make(kind, _rid[0], *values)))
    return _rid[0]


async def _done(host, rid):
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_done" and m["rid"] == rid],
                 "ble_done %d" % rid)
    found = [m for m in host.sent if m["m"] == "ble_done" and m["rid"] == rid]
    assert len(found) == 1, found
    return found[0]


async def _call(proxy, host, kind, *values):
    return await _done(host, _ask(proxy, kind, *values))


async def _connect(proxy, host, addr="C0:FF:EE:00:00:01"):
    done = await _call(proxy, host, messages.BLE_CONNECT, addr, 0, 1000)
    assert done["status"] == "ok", done
    return done["conn"]


def test_the_status_names_are_the_wire_vocabulary():
    assert (ble_proxy.OK, ble_proxy.NO_CONN, ble_proxy.REFUSED, ble_proxy.GATT_ERROR) == (
        "ok", "no_conn", "refused", "gatt_error")
    assert (ble_proxy.PEER, ble_proxy.TIMED_OUT, ble_proxy.HOST_LINK, ble_proxy.BLE_RESTART) == (
        "peer", "timeout", "host_link", "ble_restart")


def test_addresses_are_six_hex_bytes_with_colons():
    assert ble_central.parse_addr("C0:FF:EE:00:00:01") == b"\xc0\xff\xee\x00\x00\x01"
    assert ble_central.parse_addr("c0:ff:ee:00:00:0a") == b"\xc0\xff\xee\x00\x00\x0a"
    for bad in ("", "C0:FF:EE:00:00", "C0:FF:EE:00:00:01:02", "C0-FF-EE-00-00-01",
                "C0:FF:EE:00:00:0G", "C0:FF:EE:00:0:001", "C0:FF:EE:00:00:\u00e9\u00e9",
                " C0:FF:EE:00:00:1", "+0:FF:EE:00:00:01", "C0:FF:EE:00:00:01 "):
        assert ble_central.parse_addr(bad) is None, bad


async def test_bad_values_are_refused_and_unknown_connections_are_no_conn():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    for kind, values in ((messages.BLE_CONNECT, ("C0:FF:EE:00:00:0", 0, 1000)),
                         (messages.BLE_CONNECT, ("C0:FF:EE:00:00:02", -1, 1000)),
                         (messages.BLE_CONNECT, ("C0:FF:EE:00:00:02", 0, 60001)),
                         (messages.BLE_READ, (conn, 0, 1000)),
                         (messages.BLE_READ, (conn, 65536, 1000)),
                         (messages.BLE_READ, (conn, 3, 0)),
                         (messages.BLE_WRITE, (conn, -3, "00", True, 1000)),
                         (messages.BLE_WRITE, (conn, 3, "00", False, 70000)),
                         (messages.BLE_SUBSCRIBE, (conn, 6, -1)),
                         (messages.BLE_SUBSCRIBE, (conn, 0, 1)),
                         (messages.BLE_WATCH, ("nope", True)),
                         (messages.BLE_SCAN, (-1, True)),
                         (messages.BLE_SCAN, (30001, False))):
        assert (await _call(proxy, host, kind, *values))["status"] == "refused", (kind, values)
    assert (await _call(proxy, host, messages.BLE_READ, conn + 1, 3, 100))["status"] == "no_conn"
    assert (await _call(proxy, host, messages.BLE_DISCONNECT, conn + 1))["status"] == "ok"
    assert central.conns[0].log == [] and len(central.conns) == 1


async def test_a_connect_beyond_the_slots_is_busy_counting_those_being_made():
    proxy, central, host = _proxy(slots=2)
    await _connect(proxy, host)
    central.gate = asyncio.Event()
    waiting = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:02", 0, 1000)
    await _until(lambda: proxy._connecting == 1)
    assert (await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:03", 0, 1000))[
        "status"] == "busy"
    central.gate.set()
    assert (await _done(host, waiting))["status"] == "ok"
    central.reachable = False
    assert (await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:03", 0, 1000))[
        "status"] == "busy"
    assert (await _call(proxy, host, messages.BLE_DISCONNECT, 1))["status"] == "ok"
    assert (await _call(proxy, host, messages.BLE_CONNECT, "C0:FF:EE:00:00:03", 0, 1000))[
        "status"] == "unreachable"


async def test_requests_on_one_connection_run_one_at_a_time_in_order():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    c = central.conns[0]
    c.gate = Gate(c.notified)
    rids = [_ask(proxy, messages.BLE_WRITE, conn, 3, "0a", True, 1000),
            _ask(proxy, messages.BLE_READ, conn, 3, 1000),
            _ask(proxy, messages.BLE_WRITE, conn, 3, "0b", False, 1000),
            _ask(proxy, messages.BLE_SUBSCRIBE, conn, 6, 2)]
    await _until(lambda: c.log)
    for _ in range(20):
        await asyncio.sleep_ms(0)
    assert c.log == [("write", 3, b"\x0a", True)], "only the first has started"
    c.gate.set()
    await _done(host, rids[-1])
    assert [m["rid"] for m in host.sent if m["m"] == "ble_done"][-4:] == rids
    assert [e for e in c.log if e[0] != "done"] == [
        ("write", 3, b"\x0a", True), ("read", 3), ("write", 3, b"\x0b", False),
        ("write", 6, b"\x02\x00", True)]


async def test_an_answer_that_raises_stops_neither_its_queue_nor_the_forwarding():
    # A read's ble_done meets an exception no send should raise: it is lost (as when a
    # request's own task ended by one), and the queue behind it and every connection's
    # notifications still go on: the task that ends reads, writes and subscribes serves all.
    proxy, central, host = _proxy()
    conns = [await _connect(proxy, host), await _connect(proxy, host, "C0:FF:EE:00:00:02")]
    c = central.conns[0]
    c.gate = Gate(c.notified)
    lost = _ask(proxy, messages.BLE_READ, conns[0], 3, 1000)
    after = _ask(proxy, messages.BLE_WRITE, conns[0], 3, "0a", True, 1000)
    await _until(lambda: c.log)
    host.refuse.append(ValueError("a bug's exception"))
    c.gate.set()
    assert (await _done(host, after))["status"] == "ok"
    assert lost not in [m.get("rid") for m in host.sent]
    central.conns[1].notify(5, b"\x01")
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_notify"])
    assert (await _call(proxy, host, messages.BLE_READ, conns[0], 3, 1000))["status"] == "ok"


async def test_a_full_queue_on_one_connection_refuses_more():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    central.conns[0].gate = Gate(central.notified)
    rids = [_ask(proxy, messages.BLE_READ, conn, 3, 1000) for _ in range(MAX_QUEUED + 1)]
    assert (await _done(host, rids[-1]))["status"] == "refused"
    central.conns[0].gate.set()
    for rid in rids[:-1]:
        assert (await _done(host, rid))["status"] == "ok"


async def test_every_failure_ends_in_one_ble_done_with_its_status():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    c = central.conns[0]
    for e, status in ((BLEError(GATT_ERROR, "read failed", 0x0E), "gatt_error"),
                      (BLEError(ERROR, "refused"), "error"), (OSError(5), "error"),
                      (ValueError("bug"), "error"), (MemoryError(), "error"),
                      (BLEError(TIMEOUT, "slow"), "timeout")):
        c.fail = e
        done = await _call(proxy, host, messages.BLE_READ, conn, 3, 1000)
        assert done["status"] == status, (e, done)
        assert done["att"] == (0x0E if status == "gatt_error" else None)
    # The timeout: the connection is going (ble_central drops it); nothing more starts on it.
    assert (await _call(proxy, host, messages.BLE_READ, conn, 3, 1000))["status"] == \
        "disconnected"
    c.disconnect_nowait()
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_lost"])
    assert [m["reason"] for m in host.sent if m["m"] == "ble_lost"] == ["timeout"]


async def test_a_full_link_or_heap_delays_an_answer_and_the_queue_goes_on():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    host.refuse = [link.LinkFull("full"), MemoryError(), link.LinkFull("full")]
    first = _ask(proxy, messages.BLE_READ, conn, 3, 1000)
    second = _ask(proxy, messages.BLE_READ, conn, 3, 1000)
    assert (await _done(host, first))["status"] == "ok"
    assert (await _done(host, second))["status"] == "ok"
    assert [m["rid"] for m in host.sent if m["m"] == "ble_done"][-2:] == [first, second]


async def test_while_the_host_link_is_busy_the_proxys_messages_wait_and_then_go_in_order():
    # A busy host link (a window's worth and more waiting for hubd: HostLink.busy) holds the
    # proxy's messages back as they came (a notification's bytes, a discovery's tuples), not as
    # JSON in the link's queue; when it has room they go, in the order they were asked.
    busy = [False]
    central = Central()
    host = Host()
    proxy = ble_proxy.Proxy(central, host.send, lambda: host.idle, 3, Bonds(),
                            busy=lambda: busy[0])
    conn = await _connect(proxy, host)
    c = central.conns[0]
    busy[0] = True
    before = len(host.sent)
    rid = _ask(proxy, messages.BLE_DISCOVER, conn)
    for i in range(3):
        c.notify(5, bytes((i,)))
    await asyncio.sleep_ms(100)
    assert len(host.sent) == before, host.sent[before:]  # nothing went while busy
    busy[0] = False
    await _done(host, rid)
    await _until(lambda: len([m for m in host.sent if m["m"] == "ble_notify"]) == 3)
    said = [m["m"] for m in host.sent[before:]]
    # Each task's messages in its order (the two tasks take turns, each message in the order
    # it was asked for), every one exactly once.
    assert [k for k in said if k != "ble_notify"] == ["ble_service", "ble_char", "ble_char",
                                                      "ble_desc", "ble_done"], said
    assert [m["data"] for m in host.sent if m["m"] == "ble_notify"] == ["00", "01", "02"]


async def test_a_message_whose_turn_meets_a_full_heap_waits_and_the_queue_goes_on():
    # The turn (the FIFO lock) is taken with an allocation: a MemoryError there delays that
    # message; it never ends the task that says it (a connection's queue would stop for good).
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    real = proxy._out

    class FailsOnce:
        failed = False

        def acquire(self):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise MemoryError()
            return real.acquire()

        def release(self):
            real.release()

    proxy._out = FailsOnce()
    first = _ask(proxy, messages.BLE_DISCONNECT, conn)  # answered by its connection's own task
    assert (await _done(host, first))["status"] == "ok"
    assert FailsOnce.failed
    second = await _connect(proxy, host, "C0:FF:EE:00:00:02")
    assert (await _call(proxy, host, messages.BLE_READ, second, 3, 1000))["status"] == "ok"


async def test_discovery_streams_services_characteristics_and_descriptors_before_its_done():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    rid = _ask(proxy, messages.BLE_DISCOVER, conn)
    done = await _done(host, rid)
    got = [m for m in host.sent if m.get("rid") == rid]
    assert [m["m"] for m in got] == ["ble_service", "ble_char", "ble_char", "ble_desc",
                                     "ble_done"]
    assert (got[0]["uuid"], got[0]["start"], got[0]["end"]) == ("f0ff", 1, 6)
    assert [(m["uuid"], m["handle"], m["props"], m["service"]) for m in got[1:3]] == [
        ("f1ff", 3, 0x08, 1), ("f2ff", 5, 0x10, 1)]
    assert (got[3]["uuid"], got[3]["handle"], got[3]["char"]) == ("0229", 6, 5)
    assert done["count"] == 4


async def test_discoveries_asked_at_once_on_every_connection_run_one_after_another():
    # A discovery holds its results and the frames that send them: four at once after a link
    # cut were 5.4 KB of the soak's heap. Each waits for the one before it to end.
    proxy, central, host = _proxy(slots=4)
    conns = []
    for i in range(1, 5):  # no await in a comprehension: MicroPython has none
        conns.append(await _connect(proxy, host, "C0:FF:EE:00:00:0%d" % i))
    rids = [_ask(proxy, messages.BLE_DISCOVER, conn) for conn in conns]
    for rid in rids:
        assert (await _done(host, rid))["count"] == 4
    order = [m["rid"] for m in host.sent if m.get("rid") in rids]
    assert order == [r for r in rids for _ in range(5)], order  # four messages and the done each
    # One that fails lets the next one go.
    central.conns[0].connected = False
    first = _ask(proxy, messages.BLE_DISCOVER, conns[0])
    second = _ask(proxy, messages.BLE_DISCOVER, conns[1])
    assert (await _done(host, second))["count"] == 4
    assert (await _done(host, first))["status"] == "disconnected"


async def test_notifications_go_out_in_order_then_the_loss():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    c = central.conns[0]
    for i in range(5):
        c.notify(5, bytes((i,)))
    c.disconnect_nowait()
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_lost"])
    tail = [m for m in host.sent if m["m"] in ("ble_notify", "ble_lost")]
    assert [m.get("data") for m in tail] == ["00", "01", "02", "03", "04", None]
    assert tail[-1] == {"m": "ble_lost", "conn": conn, "reason": "peer"}


async def test_one_task_forwards_every_connections_notifications_in_order_and_ends_with_them():
    # One forwarding task for all connections while any is followed (a task a connection cost
    # ~400 B of heap each): each connection's notifications in order, its loss after them, the
    # others' meanwhile; a connection made after the last loss has its notifications forwarded
    # by a task of its own again.
    proxy, central, host = _proxy()
    first = await _connect(proxy, host)
    second = await _connect(proxy, host, "C0:FF:EE:00:00:02")
    a, b = central.conns
    for i in range(3):
        a.notify(5, bytes((i,)))
        b.notify(7, bytes((0x10 + i,)))
    a.disconnect_nowait()
    await _until(lambda: len([m for m in host.sent if m["m"] == "ble_notify"]) == 6
                 and [m for m in host.sent if m["m"] == "ble_lost"])
    said = [(m["conn"], m.get("data") or m.get("reason")) for m in host.sent
            if m["m"] in ("ble_notify", "ble_lost")]
    assert [x for x in said if x[0] == first] == [
        (first, "00"), (first, "01"), (first, "02"), (first, "peer")], said
    assert [x for x in said if x[0] == second] == [
        (second, "10"), (second, "11"), (second, "12")], said
    assert proxy._followed == [proxy._conns[second]]
    b.disconnect_nowait()
    await _until(lambda: not proxy._followed)
    await asyncio.sleep_ms(20)  # the task has ended: nothing is followed
    third = await _connect(proxy, host, "C0:FF:EE:00:00:03")
    central.conns[-1].notify(9, b"\x42")
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_notify" and m["conn"] == third])
    assert [m["data"] for m in host.sent if m["m"] == "ble_notify" and m["conn"] == third] == ["42"]


async def test_a_disconnect_hubd_asked_for_has_no_ble_lost_and_a_stack_restart_says_so():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    assert (await _call(proxy, host, messages.BLE_DISCONNECT, conn))["status"] == "ok"
    conn = await _connect(proxy, host, "C0:FF:EE:00:00:02")
    central.restarts += 1
    central.conns[-1].disconnect_nowait()
    await _until(lambda: [m for m in host.sent if m["m"] == "ble_lost"])
    assert [(m["conn"], m["reason"]) for m in host.sent if m["m"] == "ble_lost"] == [
        (conn, "ble_restart")]


async def test_the_host_link_down_drops_every_connection_and_watch_and_stops_new_work():
    proxy, central, host = _proxy()
    conns = [await _connect(proxy, host), await _connect(proxy, host, "C0:FF:EE:00:00:02")]
    assert (await _call(proxy, host, messages.BLE_WATCH, "C0:FF:EE:00:00:09", True))[
        "status"] == "ok"
    c = central.conns[0]
    c.gate = Gate(c.notified)
    first = _ask(proxy, messages.BLE_WRITE, conns[0], 3, "01", True, 1000)
    queued = _ask(proxy, messages.BLE_WRITE, conns[0], 3, "02", True, 1000)
    await _until(lambda: c.log)
    proxy.on_link(link.EV_DOWN)
    assert not central.conns[0].connected and not central.conns[1].connected
    assert proxy._heard == {}
    assert (await _done(host, first))["status"] == "disconnected"
    assert (await _done(host, queued))["status"] == "disconnected"
    assert c.log == [("write", 3, b"\x01", True)], "the queued write never went out"
    await _until(lambda: len([m for m in host.sent if m["m"] == "ble_lost"]) == 2)
    assert sorted((m["conn"], m["reason"]) for m in host.sent if m["m"] == "ble_lost") == [
        (conns[0], "host_link"), (conns[1], "host_link")]
    assert (await _call(proxy, host, messages.BLE_READ, conns[0], 3, 1000))["status"] == \
        "no_conn"


async def test_a_connect_that_completes_after_the_link_went_down_is_dropped():
    proxy, central, host = _proxy()
    central.gate = asyncio.Event()
    rid = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:01", 0, 1000)
    await _until(lambda: central.asked)  # being made
    proxy.on_link(link.EV_DOWN)
    central.gate.set()
    assert (await _done(host, rid))["status"] == "disconnected"
    assert not central.conns[0].connected and proxy._conns == {}


async def test_connects_wait_in_one_queue_and_one_asked_before_the_link_went_down_is_not_made():
    # Connects are made one at a time (the radio's GAP procedure is one at a time anyway),
    # each waiting as a tuple, not a task (2 KB of heap each on 64-bit, four of them after
    # every link cut); one hubd asked for before the link went down is answered disconnected
    # without a connection made for nobody.
    proxy, central, host = _proxy(slots=3)
    central.gate = asyncio.Event()
    first = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:01", 0, 1000)
    second = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:02", 0, 1000)
    third = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:03", 0, 1000)
    await _until(lambda: central.asked)
    for _ in range(20):
        await asyncio.sleep_ms(0)
    assert len(central.asked) == 1 and len(proxy._connects) == 3 and proxy._connecting == 3
    central.gate.set()
    assert (await _done(host, first))["status"] == "ok"
    assert (await _done(host, second))["status"] == "ok"
    assert (await _done(host, third))["status"] == "ok"
    assert [m["rid"] for m in host.sent if m["m"] == "ble_done"] == [first, second, third]
    assert proxy._connects == [] and proxy._connecting == 0 and len(proxy._conns) == 3
    proxy.on_link(link.EV_DOWN)
    central.gate = asyncio.Event()
    made = len(central.asked)
    first = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:01", 0, 1000)
    late = _ask(proxy, messages.BLE_CONNECT, "C0:FF:EE:00:00:04", 0, 1000)
    await _until(lambda: len(central.asked) > made)
    proxy.on_link(link.EV_DOWN)  # down again while the first is being made, the other queued
    central.gate.set()
    assert (await _done(host, first))["status"] == "disconnected"
    assert (await _done(host, late))["status"] == "disconnected"
    assert len(central.asked) == made + 1  # the late one was never made


async def test_nothing_said_for_a_hubd_that_restarted_reaches_the_next_one():
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    c = central.conns[0]
    c.gate = Gate(c.notified)
    rid = _ask(proxy, messages.BLE_READ, conn, 3, 1000)
    await _until(lambda: c.log)
    n = len(host.sent)
    proxy.on_link(link.EV_DOWN)
    proxy.on_link(link.EV_RESET)
    c.notify(5, b"\x01")
    for _ in range(50):
        await asyncio.sleep_ms(0)
    assert host.sent[n:] == [], host.sent[n:]
    # The new hubd's requests are answered.
    assert (await _call(proxy, host, messages.BLE_READ, conn, 3, 1000))["status"] == "no_conn"
    assert rid not in [m.get("rid") for m in host.sent]


def _advert(proxy, addr, adv, rssi=-60, adv_type=0):
    proxy._on_advert(0, addr, adv_type, rssi, memoryview(adv))


async def test_a_watched_address_goes_out_on_news_and_once_a_minute_and_no_other():
    proxy, central, host = _proxy()
    a = b"\xc0\xff\xee\x00\x00\x01"
    b = b"\xc0\xff\xee\x00\x00\x02"
    assert (await _call(proxy, host, messages.BLE_WATCH, "C0:FF:EE:00:00:01", True))[
        "status"] == "ok"
    n = len(host.sent)
    _advert(proxy, a, b"\x02\x01\x06")
    _advert(proxy, b, b"\x02\x01\x06")
    host.idle = False
    proxy._advert_out(1000)
    assert len(host.sent) == n, "not while the host link is busy"
    host.idle = True
    proxy._advert_out(1000)
    assert host.sent[n:] == [{"m": "ble_adv", "addr": "C0:FF:EE:00:00:01", "addr_type": 0,
                              "rssi": -60, "data": "020106", "resp": None}]
    _advert(proxy, a, b"\x02\x01\x04")
    proxy._advert_out(1500)  # news, but within a second of the last
    assert len(host.sent) == n + 1
    proxy._advert_out(2000)
    assert host.sent[-1]["data"] == "020104"
    _advert(proxy, a, b"\x02\x01\x04")  # the same again: presence, once a minute
    proxy._advert_out(30000)
    assert len(host.sent) == n + 2
    proxy._advert_out(62000)
    assert len(host.sent) == n + 3 and host.sent[-1]["data"] == "020104"
    proxy._advert_out(125000)  # not heard since: nothing
    assert len(host.sent) == n + 3
    assert (await _call(proxy, host, messages.BLE_WATCH, "C0:FF:EE:00:00:01", False))[
        "status"] == "ok"
    _advert(proxy, a, b"\x02\x01\x05")
    proxy._advert_out(200000)
    assert [m for m in host.sent[n + 3:] if m["m"] == "ble_adv"] == []


async def test_a_scan_sends_each_advertiser_once_and_again_on_news():
    proxy, central, host = _proxy()
    _ask(proxy, messages.BLE_SCAN, 30000, True)  # its end: tests/firmware/test_ble_proxy.py
    await _until(lambda: central.scans)
    assert central.scans[0] == (1000, True)  # in windows of a second
    n = len(host.sent)
    for i in range(MAX_HEARD + messages.MAX_WATCH + 6):  # more than it keeps track of
        _advert(proxy, bytes((0xC0, 0, 0, 0, 0, i)), b"\x02\x01\x06", -50)
    _advert(proxy, b"\xc0\x00\x00\x00\x00\x00", b"\x03\x09ab", -50, adv_type=4)  # its response
    now = 10000
    for _ in range(40):
        proxy._advert_out(now)
    sent = host.sent[n:]
    assert len(sent) == MAX_HEARD + messages.MAX_WATCH, len(sent)
    assert len(set(m["addr"] for m in sent)) == len(sent), "each once"
    assert [m["resp"] for m in sent if m["addr"] == "C0:00:00:00:00:00"] == ["03096162"]
    _advert(proxy, b"\xc0\x00\x00\x00\x00\x00", b"\x02\x01\x06", -55)  # RSSI moved 5: no news
    _advert(proxy, b"\xc0\x00\x00\x00\x00\x01", b"\x02\x01\x06", -62)  # moved 12: news
    proxy._advert_out(now + 2000)
    proxy._advert_out(now + 2000)
    assert [(m["addr"], m["rssi"]) for m in host.sent[n + len(sent):]] == [
        ("C0:00:00:00:00:01", -62)]


# Values of every JSON type and the edges of the proxy's own bounds.
ODD = [None, True, False, 0, -1, 1, 2, 3, 6, 0xFFFF, 0x10000, 60000, 60001, 30001,
       2 ** 31 - 1, -(2 ** 31), 2 ** 31, 1.5, "", "x", "0", "zz", "00" * 177, "C0:FF:EE:00:00:01",
       "C0:FF:EE:00:00:0", "c0:ff:ee:00:00:0g", "C0:FF:EE:00:00:01\x00", [], {}, {"a": 1}]


async def test_hostile_field_values_are_refused_or_no_conn_and_nothing_escapes():
    import json

    import fuzz

    fuzz.start()
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    central.reachable = False  # a connect that passes its checks finds nobody
    base = [
        (messages.BLE_SCAN, {"ms": 1, "active": True}),
        (messages.BLE_WATCH, {"addr": "C0:FF:EE:00:00:09", "on": False}),
        (messages.BLE_CONNECT, {"addr": "C0:FF:EE:00:00:02", "addr_type": 0, "ms": 10}),
        (messages.BLE_DISCONNECT, {"conn": 99}),
        (messages.BLE_DISCOVER, {"conn": 99}),
        (messages.BLE_READ, {"conn": conn, "handle": 3, "ms": 10}),
        (messages.BLE_WRITE, {"conn": conn, "handle": 3, "data": "00", "response": True,
                              "ms": 10}),
        (messages.BLE_SUBSCRIBE, {"conn": conn, "handle": 6, "mode": 1}),
    ]
    # Which values each field's own check lets through (the rest must be refused or no_conn).
    good = {"ms": lambda v, kind: 0 < v <= (30000 if kind == messages.BLE_SCAN else 60000),
            "handle": lambda v, kind: 0 < v <= 0xFFFF,
            "mode": lambda v, kind: v in (0, 1, 2),
            "addr_type": lambda v, kind: v in (0, 1),
            "addr": lambda v, kind: ble_central.parse_addr(v) is not None,
            "conn": lambda v, kind: v == conn}
    for kind, fields in base:
        for name in fields:
            values = ODD + [fuzz.rand(2 ** 31) - 2 ** 30 for _ in range(4)]
            for value in values:
                if kind == messages.BLE_DISCONNECT and value == conn:
                    continue  # the connection the others are tried on
                obj = {"m": kind, "rid": 1}
                obj.update(fields)
                obj[name] = value
                try:
                    msg = messages.decode(json.dumps(obj).encode())
                except messages.MessageError:
                    continue  # the decoder's refusal (tests/firmware/mp_test_fuzz_messages.py)
                _rid[0] += 1
                msg["rid"] = _rid[0]
                proxy.on_message(msg)  # nothing may raise
                done = await _done(host, _rid[0])
                del host.sent[:]  # the test's own heap
                status = done["status"]
                ok = name not in good or good[name](value, kind)
                if ok:
                    assert status in ("ok", "unreachable", "no_conn"), (kind, name, value, done)
                elif name == "conn":
                    assert status == ("ok" if kind == messages.BLE_DISCONNECT else "no_conn"), (
                        kind, value, done)
                else:
                    assert status == "refused", (fuzz.SEED, kind, name, value, done)
    assert len(central.conns) == 1 and central.conns[0].connected


async def test_a_scan_ends_with_its_window_when_the_host_link_goes_down():
    proxy, central, host = _proxy()
    central.scan_gate = asyncio.Event()
    rid = _ask(proxy, messages.BLE_SCAN, 30000, False)
    await _until(lambda: central.scans)
    proxy.on_link(link.EV_DOWN)
    central.scan_gate.set()
    done = await _done(host, rid)
    assert (done["status"], done["count"]) == ("ok", 0)
    assert central.scans == [(1000, False)]
    # A new one is not refused as a second scan.
    central.scan_gate = None
    assert (await _call(proxy, host, messages.BLE_SCAN, 10, True))["status"] == "ok"


def test_what_the_bridge_says_is_not_taken_as_a_request():
    proxy, central, host = _proxy()
    for payload in (messages.make(messages.BLE_DONE, 1, "ok"),
                    messages.make(messages.BLE_ADV, "C0:FF:EE:00:00:01", 0, -60, "", None),
                    messages.make(messages.BLE_NOTIFY, 1, 3, "00"),
                    messages.make(messages.BLE_LOST, 1, "peer"),
                    messages.make(messages.BLE_SERVICE, 1, "0018", 1, 5)):
        proxy.on_message(messages.decode(payload))
    assert host.sent == [] and central.conns == []


async def test_watches_are_served_by_passive_windows_of_scan_ms_every_scan_every_ms():
    proxy, central, host = _proxy(scan_every_ms=100, scan_ms=40)
    task = asyncio.create_task(proxy.run())
    try:
        await asyncio.sleep_ms(700)
        assert central.scans == []  # nothing watched: the radio is left alone
        assert (await _call(proxy, host, messages.BLE_WATCH, "C0:FF:EE:00:00:01", True))[
            "status"] == "ok"
        await _until(lambda: len(central.scans) >= 3, "three windows")
        assert set(central.scans) == {(40, False)}  # passive, scan_ms long
        # hubd's own ble_scan serves the watches meanwhile: no windows of their own.
        central.scan_gate = asyncio.Event()
        rid = _ask(proxy, messages.BLE_SCAN, 1000, True)
        await _until(lambda: central.scans[-1] == (1000, True), "hubd's scan")
        n = len(central.scans)
        await asyncio.sleep_ms(300)
        assert len(central.scans) == n
        central.scan_gate.set()
        central.scan_gate = None
        await _done(host, rid)
        await _until(lambda: central.scans[-1] == (40, False), "the windows again")
        # The host link down forgets every watch: the windows stop.
        proxy.on_link(link.EV_DOWN)
        await asyncio.sleep_ms(150)
        n = len(central.scans)
        await asyncio.sleep_ms(700)
        assert len(central.scans) == n
    finally:
        task.cancel()
        await asyncio.sleep_ms(0)


def test_watch_windows_come_at_random_gaps_so_a_lock_at_any_phase_is_heard():
    # bridge.json's defaults: a 1 s window every 10 s; a lock advertising every 2 s (+ advDelay,
    # left out: the worst case). At a fixed cadence, 5 intervals, its adverts meet every window
    # at the same phase: one 1.5 s after a window's start is never heard.
    proxy, central, host = _proxy(scan_every_ms=10000, scan_ms=1000)
    gaps = [proxy._watch_gap(r) for r in range(256)]
    assert min(gaps) == 4500 and max(gaps) == 13500
    assert abs(sum(gaps) / len(gaps) - 9000) < 100  # scan_every_ms on average
    import os

    for phase in range(0, 2000, 100):  # the advert's time after the first window's start
        start = 0  # virtual ms: each window [start, start + 1000], then a gap the proxy draws
        for window in range(30):
            # heard when an advert's time, phase + 2000 k, lies inside the window
            if (phase - start) % 2000 <= 1000:
                break
            start += 1000 + proxy._watch_gap(os.urandom(1)[0])
        else:
            # each window hears it at one chance in two: 30 misses in a row are 1e-9, not luck
            raise AssertionError("a lock at phase %d ms unheard in 30 windows" % phase)


async def test_a_write_keeps_its_data_as_bytes_and_data_that_is_not_hex_ends_in_one_error():
    # wire.messages lets no such data through; the proxy answers it anyway, once.
    proxy, central, host = _proxy()
    conn = await _connect(proxy, host)
    assert (await _call(proxy, host, messages.BLE_WRITE, conn, 3, "c0ffee", True, 1000))[
        "status"] == "ok"
    assert central.conns[0].log[-1] == ("done", "write", 3, b"\xc0\xff\xee", True)
    _rid[0] += 1
    proxy.on_message({"m": messages.BLE_WRITE, "rid": _rid[0], "conn": conn, "handle": 3,
                      "data": "zz", "response": True, "ms": 1000})
    assert (await _done(host, _rid[0]))["status"] == "error"
    assert central.conns[0].log[-1] == ("done", "write", 3, b"\xc0\xff\xee", True)

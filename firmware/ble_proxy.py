"""The bridge as a Bluetooth proxy: hubd's bleak backend asks, this performs (docs/ble-proxy.md).

Each ble_* request from hubd ends in exactly one ble_done, whatever happens: a stack error, a
timeout, a disconnect, a MemoryError (firmware/heap.py). Requests on one connection run one at a
time, in the order they came, from that connection's own queue; connects one at a time, in the
order they came, from the proxy's queue of connects (the radio makes one at a time anyway);
requests on different connections, a scan and a connect run side by side. Notifications go out
as ble_notify in the order they arrived (ble_central queues them at IRQ level), and a lost
connection as ble_lost at once, from one task for every connection (one a connection cost ~400
bytes of heap each), there while any connection is followed; one notification per connection a
round, so a chatty lock does not hold back the others' (they share the host link anyway). The
same task answers a read, write or subscribe once its event came (or its time ran out): no task
waits for one. While the host link is busy (a window's worth and more waits for hubd) every
message of the proxy's waits, in the order asked, as what it came from, not as JSON in the
link's queue.

What belongs to a hubd session stays with it: when the host link goes down or hubd restarts,
every proxy connection is dropped and every watch forgotten, and nothing said for a hubd that
restarted (an answer, a notification, a loss) reaches the next one.

Bonds (ble_pair, ble_unpair): the stack's keys are kept by ble_bonds in the bridge's flash,
loaded with the proxy when its file is there (so bonds made before a reboot are there for hubd's
first request after it), else at the first ble_pair or ble_unpair: a bridge whose locks never
bonded does not hold ble_bonds (1.7 KB of heap on 64-bit, 0.9 on 32-bit), and until then the
stack's secret requests are answered with nothing (no bond to give; keys a peer hands over
unasked are not stored, as when the store is full). ble_pair encrypts a connection with them,
or pairs and bonds, and saves what the stack handed over before it answers; a connect to a
bonded peer re-encrypts at once.

Adverts (ble_adv) are heard at IRQ level from every scan (ble_central's ``on_advert``): a
ble_scan's own scan, and the proxy's passive scan windows while an address is watched (a window
of ``scan_ms`` every ``scan_every_ms`` on average, the gap random: ``_watch_gap``; bridge.json's
proxy section). One goes out per tick, only while the host link is idle: they never delay an
alarm or an answer.
"""

import asyncio
import binascii
import os
import time

from micropython import const

import heap
import log
import vital
from ble_central import BLEError, addr_text, parse_addr
from wire import link, messages

OK, TIMEOUT, UNREACHABLE, DISCONNECTED, BUSY, GATT_ERROR, NO_CONN, REFUSED, ERROR, AUTH_FAILED = \
    messages.BLE_STATUSES
PEER, TIMED_OUT, HOST_LINK, BLE_RESTART = messages.BLE_LOST_REASONS
# What hubd asks (the other ble_* kinds are what the bridge says).
_REQUESTS = (messages.BLE_SCAN, messages.BLE_WATCH, messages.BLE_CONNECT, messages.BLE_DISCONNECT,
             messages.BLE_DISCOVER, messages.BLE_READ, messages.BLE_WRITE, messages.BLE_SUBSCRIBE,
             messages.BLE_PAIR, messages.BLE_UNPAIR)

_SLOTS = const(3)  # proxy connections at once unless bridge.json's proxy.slots says otherwise
_MAX_MS = const(60000)  # the longest timeout a request may give
_MAX_SCAN_MS = const(30000)
_STEP_MS = const(2000)  # each discovery step, the MTU exchange and a subscribe
_MAX_QUEUED = const(8)  # requests waiting on one connection; more are refused
_MAX_HEARD = const(16)  # advertisers a ble_scan keeps track of, besides the watched ones
_ADV_TICK_MS = const(50)  # one advert a tick: at most 20 a second in all
_QUIET_TICK_MS = const(500)  # nothing to forward
_ADV_GAP_MS = const(1000)  # at most one advert per address a second
_PRESENCE_MS = const(60000)  # a watched address that is heard goes out at least this often (default)
_RSSI_STEP = const(10)
_RETRY_MS = const(20)
_SCAN_RSP = const(4)
_SCAN_WINDOW_MS = const(1000)  # a ble_scan is scanned in windows: the host link going down
                               # ends it within one, and the watches' scan gets its turn
_WATCH_EVERY_MS = const(10000)  # a passive scan window this often while an address is watched
_WATCH_SCAN_MS = const(1000)  # that long
_BONDS_FILE = "ble_bonds.bin"  # ble_bonds.PATH, without importing it (a test holds them equal)

# A connection's record.
_CONN = const(0)  # the ble_central.Connection
_WHY = const(1)  # why it goes, once the bridge knows better than the stack (None: it does not;
                 # False: hubd asked, and its ble_done says so)
_RESTARTS = const(2)  # the stack's restart count when it was made
_QUEUE = const(3)  # requests waiting, the running one first
_EPOCH = const(4)  # the hubd session that made it
_BUSY = const(5)  # the read, write or subscribe at the head of its queue waits for its event

# An advertiser's record: what was heard last, what hubd heard last.
_TYPE = const(0)
_RSSI = const(1)
_ADV = const(2)
_RESP = const(3)
_NEWS = const(4)  # heard since it last went out
_SENT_AT = const(5)
_SENT_ADV = const(6)
_SENT_RESP = const(7)
_SENT_RSSI = const(8)
_WATCHED = const(9)
_SCANNED = const(10)  # 0: not in a ble_scan; 1: in it, not sent yet; 2: sent in it


class Proxy:
    """See the module docstring. ``central``: the ble_central.Central; ``send(payload)``: the
    host link's (raises link.LinkFull); ``idle()``: whether the host link is idle; ``slots``:
    proxy connections at once; ``busy()``: whether the host link holds enough for now (the
    proxy's messages wait meanwhile: _tell), or None; ``bonds``: the bond store
    (ble_bonds.Bonds, made here unless given; loaded when its file is there, else at the first
    ble_pair or ble_unpair), which answers the stack's secret requests; ``scan_every_ms``,
    ``scan_ms``: the passive scan windows that serve the watches; ``presence_ms``: a watched
    address heard goes out at least this often, unchanged."""

    def __init__(self, central, send, idle, slots=_SLOTS, bonds=None,
                 scan_every_ms=_WATCH_EVERY_MS, scan_ms=_WATCH_SCAN_MS,
                 presence_ms=_PRESENCE_MS, busy=None):
        self._central = central
        self._bonds = None
        if bonds is not None:
            self._use(bonds)
        else:
            try:
                os.stat(_BONDS_FILE)
            except OSError:
                pass  # no bond made yet: ble_bonds waits for the first ble_pair (_store)
            else:
                self._store()
        self._send = send
        self._idle = idle
        self._busy = busy
        self._out = asyncio.Lock()  # _tell's turn: the proxy's messages go in the order asked
        self._discovering = asyncio.Lock()  # one discovery at a time (_discover)
        self.slots = slots
        self.scan_every_ms = scan_every_ms
        self.scan_ms = scan_ms
        self.presence_ms = presence_ms
        self._conns = {}  # conn handle -> record
        self._followed = []  # records whose notifications and loss are still to go out
        self._connects = []  # connects waiting, the one being made first (_queue_connect)
        self._connecting = 0  # those, counted against the slots
        self._heard = {}  # address -> advertiser record, watched or in the ble_scan
        self._scanning = False
        self._scan_sent = 0
        self._epoch = 0  # hubd sessions: what was said for an older one is not said
        self._downs = 0  # the host link went down (or hubd restarted) this often
        central.on_advert = self._on_advert

    # --- hubd's requests ------------------------------------------------------------------

    def on_message(self, msg):
        """A ble_* request from hubd (decoded by wire.messages)."""
        epoch = self._epoch
        kind = msg["m"]
        if kind not in _REQUESTS:
            log.warn("ignored a %s message: the bridge sends those, it does not take them" % kind)
            return
        rid = msg["rid"]
        try:
            if kind == messages.BLE_CONNECT:
                self._queue_connect(rid, msg, epoch)
                return
            if kind == messages.BLE_SCAN or kind == messages.BLE_WATCH \
                    or kind == messages.BLE_UNPAIR:
                asyncio.create_task(self._run([(kind, rid, msg)], None, epoch))
                return
            rec = self._conns.get(msg["conn"])
            if rec is None:  # gone already is what a disconnect asks for
                asyncio.create_task(self._tell(epoch, messages.BLE_DONE, rid, OK
                                               if kind == messages.BLE_DISCONNECT else NO_CONN))
            elif len(rec[_QUEUE]) >= _MAX_QUEUED:
                asyncio.create_task(self._tell(epoch, messages.BLE_DONE, rid, REFUSED))
            else:
                # Queued is what the request needs, not hubd's decoded message (a dict: about
                # 200 B more of heap each, and up to _MAX_QUEUED wait on every connection):
                # (kind, rid, handle, ms, data or mode, response) as far as the kind has them;
                # a write's data as bytes, not hex (half the heap while it waits).
                if kind == messages.BLE_WRITE:
                    req = (kind, rid, msg["handle"], msg["ms"], binascii.unhexlify(msg["data"]),
                           msg["response"])
                elif kind == messages.BLE_SUBSCRIBE:
                    req = (kind, rid, msg["handle"], _STEP_MS, msg["mode"])
                elif kind == messages.BLE_READ:
                    req = (kind, rid, msg["handle"], msg["ms"])
                elif kind == messages.BLE_PAIR:
                    req = (kind, rid, None, msg["ms"])
                else:  # ble_disconnect, ble_discover
                    req = (kind, rid)
                rec[_QUEUE].append(req)
                if len(rec[_QUEUE]) == 1:
                    asyncio.create_task(self._run(rec[_QUEUE], rec, epoch))
        except ValueError:  # data that is not hex (wire.messages lets none through)
            asyncio.create_task(self._tell(epoch, messages.BLE_DONE, rid, ERROR))
        except MemoryError:
            heap.survive(kind)
            try:  # at once or never: no heap for a task (hubd's own timeout ends the request)
                self._send(messages.make(messages.BLE_DONE, rid, ERROR))
            except Exception:  # noqa: BLE001 - link full, or still no heap
                pass

    async def _run(self, queue, rec, epoch):
        # Requests in order, each answered by its ble_done before the next starts: a
        # connection's queue (on_message's tuples), or one request of no connection
        # ((kind, rid, hubd's message)). What a request does, makes of its result and of an
        # exception is decided by plain functions (_begin, _result, _failed). A read, write or
        # subscribe that waits for its event is not waited for here: this task ends, and the
        # forwarding task (_forward, which every connection's events wake) ends the procedure,
        # answers it and starts the queue's next request (_end). Every proxy connection may
        # have one waiting at once, and a task with its frame each cost ~360 B of heap on
        # 64-bit.
        while queue:
            req = queue[0]
            try:
                done = self._begin(req, rec, epoch)
                if done is None:  # a read, write or subscribe started
                    if rec[_CONN].waiting():
                        rec[_BUSY] = True
                        return
                    done = self._result(req, rec, rec[_CONN].end(  # a write without response
                        "read" if req[0] == messages.BLE_READ else "write"))
                elif type(done) is not tuple:
                    done = self._result(req, rec, await done)
            except Exception as e:  # noqa: BLE001 - every request ends in its ble_done
                done = self._failed(req, rec, e)
            await self._tell(epoch, messages.BLE_DONE, req[1], *done)
            queue.pop(0)

    async def _end(self, rec):
        # The read, write or subscribe at the head of rec's queue no longer waits (_run started
        # it): its result or failure, its ble_done, then the rest of the queue in a task. Raises
        # nothing: the forwarding task that calls it serves every connection.
        rec[_BUSY] = False
        queue = rec[_QUEUE]
        req = queue[0]
        try:
            try:
                done = self._result(req, rec, rec[_CONN].end(
                    "read" if req[0] == messages.BLE_READ else "write"))
            except Exception as e:  # noqa: BLE001 - every request ends in its ble_done
                done = self._failed(req, rec, e)
            await self._tell(rec[_EPOCH], messages.BLE_DONE, req[1], *done)
        except Exception as e:  # noqa: BLE001 - lost, as when a request's task ended by one;
            if isinstance(e, MemoryError):  # the queue goes on
                heap.survive("ble_done")
            else:
                log.error("ble_done %d: %r" % (req[1], e))
        queue.pop(0)
        while queue:
            try:
                asyncio.create_task(self._run(queue, rec, rec[_EPOCH]))
                return
            except MemoryError:
                heap.survive("ble_done")
                await asyncio.sleep_ms(_RETRY_MS)

    def _begin(self, req, rec, epoch):
        # The request's ble_done fields after rid, what to await for them (_result), or None:
        # a GATT procedure started on the connection (_gatt; _run says who waits for it).
        kind = req[0]
        if rec is not None and rec[_WHY] is not None:
            # Being dropped: nothing more starts on it (a write either went out or never
            # will), and a disconnect has what it asked for.
            return (OK,) if kind == messages.BLE_DISCONNECT else (DISCONNECTED,)
        if kind == messages.BLE_SCAN:
            return self._scan(req[2])
        if kind == messages.BLE_WATCH:
            return self._watch(req[2])
        if kind == messages.BLE_UNPAIR:
            return self._unpair(req[2])
        if kind == messages.BLE_PAIR:
            return self._pair(req[3], rec[_CONN])
        if kind == messages.BLE_DISCOVER:
            return self._discover(req[1], rec[_CONN], epoch)
        if kind == messages.BLE_DISCONNECT:
            rec[_WHY] = False  # hubd asked: its ble_done says it, no ble_lost
            return rec[_CONN].disconnect()
        return self._gatt(req, rec[_CONN])  # ble_read, ble_write, ble_subscribe

    def _result(self, req, rec, result):
        # The ble_done fields of what _begin handed back to await, from its result.
        kind = req[0]
        if kind == messages.BLE_DISCONNECT:
            if rec[_CONN].connected:
                return (TIMEOUT,)
            # Its slot is free once hubd hears so: a connect right after the answer counts it
            # no more (the forwarding task, which would free it at the loss, may not have run).
            self._free(rec)
            return (OK,)
        if kind == messages.BLE_READ:
            # Cannot be longer: the bridge offers an MTU of MAX_DATA + 1 (startup.py).
            return (OK, None, result) if len(result) <= messages.MAX_DATA else (ERROR,)
        if kind == messages.BLE_WRITE or kind == messages.BLE_SUBSCRIBE:
            return (OK,)
        return result  # the others' coroutines return their fields

    def _failed(self, req, rec, e):
        # The ble_done fields of a request that raised ``e``.
        kind = req[0]
        if isinstance(e, MemoryError):
            heap.survive(kind)
            return (ERROR,)
        if isinstance(e, BLEError):
            # ble_central's causes are the ble_done statuses they answer with.
            if e.why == TIMEOUT and rec is not None and rec[_WHY] is None:
                rec[_WHY] = TIMED_OUT  # the bearer's state is unknown: the link is dropped
            elif e.why == ERROR:
                log.warn("%s %d: %r" % (kind, req[1], e))
            return (GATT_ERROR, None, None, None, None, e.status) if e.why == GATT_ERROR \
                else (e.why,)
        log.warn("%s %d: %r" % (kind, req[1], e))
        return (ERROR,)

    async def _tell(self, epoch, kind, *values):
        """Send a message to the hubd of ``epoch``; a bytes value goes as hex. One at a time, in
        the order asked (the lock is FIFO), each waiting while the host link is ``busy()``,
        while its queue is full and while the heap has no room, as long as that hubd is there.
        The message is built only when it can go: what waits stays as it came (a notification's
        bytes, a discovery's tuples), half the heap of its JSON, and a burst (once four
        discoveries at once after a link cut, 1070 B of payloads queued at the soak's lowest;
        discoveries run one at a time now: _discover) never piles up in the link's queue."""
        out = self._out
        while True:  # never raises: its callers' queues go on after it
            try:
                await out.acquire()  # not "async with": its coroutine is made here, guarded
                break
            except MemoryError:
                heap.survive(kind)
                await asyncio.sleep_ms(_RETRY_MS)
        try:
            busy = self._busy
            while epoch == self._epoch:
                try:
                    if busy is None or not busy():
                        fields = list(values)
                        for i in range(len(fields)):
                            if isinstance(fields[i], bytes):
                                fields[i] = binascii.hexlify(fields[i]).decode()
                        self._send(messages.make(kind, *fields))
                        return
                except link.LinkFull:
                    pass
                except MemoryError:
                    heap.survive(kind)
                await asyncio.sleep_ms(_RETRY_MS)
        finally:
            out.release()

    # --- the requests, each returning its ble_done's fields after rid ----------------------

    def _queue_connect(self, rid, msg, epoch):
        # A connect waits as a tuple in the proxy's one queue of connects (the radio makes one
        # at a time anyway: ble_central's GAP lock), served by one task while it has any: a
        # task each, waiting on that lock with its frames and hubd's decoded message, cost
        # 2 KB of heap on 64-bit (1 KB on 32-bit) a connect, and after every link cut hubd
        # connects to every lock at once (8.2 KB for four).
        addr = parse_addr(msg["addr"])
        ms = msg["ms"]
        if addr is None or msg["addr_type"] not in (0, 1) or not 0 < ms <= _MAX_MS:
            done = REFUSED
        elif len(self._conns) + self._connecting >= self.slots:
            done = BUSY
        else:
            queue = self._connects
            if not queue:  # first the task, which finds nothing if the append fails
                asyncio.create_task(self._connect_all())
            queue.append((rid, msg["addr_type"], addr, ms, epoch, self._downs))
            self._connecting += 1
            return
        asyncio.create_task(self._tell(epoch, messages.BLE_DONE, rid, done))

    async def _connect_all(self):
        # The queued connects in order, each answered by its ble_done before the next starts.
        # Raises nothing (as _end): a connect that ended this task would leave every later one
        # queued for ever, its slot counted.
        queue = self._connects
        while queue:
            rid, addr_type, addr, ms, epoch, downs = queue[0]
            try:
                try:
                    done = await self._connect(addr_type, addr, ms, epoch, downs)
                except Exception as e:  # noqa: BLE001 - every request ends in its ble_done
                    done = self._failed((messages.BLE_CONNECT, rid), None, e)
                finally:
                    self._connecting -= 1
                await self._tell(epoch, messages.BLE_DONE, rid, *done)
            except Exception as e:  # noqa: BLE001 - lost, as in _end; the queue goes on
                if isinstance(e, MemoryError):
                    heap.survive("ble_done")
                else:
                    log.error("ble_done %d: %r" % (rid, e))
            queue.pop(0)

    async def _connect(self, addr_type, addr, ms, epoch, downs):
        # ``downs``: the host link's downs when hubd asked; a connect of a session the link
        # has lost since is not made, or dropped once made.
        if downs != self._downs:
            return (DISCONNECTED,)
        conn = await self._central.connect(addr_type, addr, ms)
        try:
            mtu = await conn.exchange_mtu(min(ms, _STEP_MS))
            bonds = self._bonds  # None: no bond file, so none held
            if bonds is not None and bonds.holds(addr_type, addr):
                # Encrypted before hubd's first request, as BlueZ does for a bonded device;
                # a peer that refuses leaves the link unencrypted (ble_pair then says so).
                await conn.pair(min(ms, _STEP_MS))
            if downs != self._downs:
                raise BLEError(DISCONNECTED, "the host link went down meanwhile")
        except Exception:
            conn.disconnect_nowait()
            raise
        rec = [conn, None, self._central.restarts, [], epoch, False]
        self._conns[conn.conn_handle] = rec
        followed = self._followed
        followed.append(rec)
        if len(followed) == 1:  # none was followed: the task ended, or was never started
            asyncio.create_task(self._forward())
        return (OK, conn.conn_handle, None, mtu, conn.security)

    async def _discover(self, rid, conn, epoch):
        # One discovery at a time across the proxy's connections: each holds its results (a
        # service's characteristics as tuples and UUIDs) and the frames that tell them while
        # they go out, and after a link cut or hubd's start every lock is discovered at once:
        # two at once were 3 KB under the soak's steady four connections (sampled every 500 ms),
        # and CI's lowest, 5.4 KB under them (39.5 % of the heap), was the size of three or four.
        # Those waiting here hold a frame each.
        # hubd waits for the first message of a discovery as long as slots discoveries take
        # (docs/ble-proxy.md, "Discovery").
        lock = self._discovering
        await lock.acquire()
        try:
            return await self._discovered(rid, conn, epoch)
        finally:
            lock.release()

    async def _discovered(self, rid, conn, epoch):
        n = 0
        for start, end, uuid in await conn.services(None, _STEP_MS):
            await self._tell(epoch, messages.BLE_SERVICE, rid, bytes(uuid), start, end)
            n += 1
            chars = await conn.characteristics(start, end, None, _STEP_MS)
            for i in range(len(chars)):
                value = chars[i][1]
                await self._tell(epoch, messages.BLE_CHAR, rid, bytes(chars[i][3]), value,
                                 chars[i][2], start)
                n += 1
                # Its descriptors sit between its value and the next characteristic.
                last = chars[i + 1][0] - 1 if i + 1 < len(chars) else end
                if value < last:
                    for handle, uuid in await conn.descriptors(value + 1, last, _STEP_MS):
                        await self._tell(epoch, messages.BLE_DESC, rid, bytes(uuid), handle,
                                         value)
                        n += 1
        return (OK, None, None, None, n)

    def _gatt(self, req, conn):
        # ble_read, ble_write, ble_subscribe (on_message's tuples): a refusal's ble_done
        # fields, or None once the procedure is started (waited for by no frame of its own:
        # _run, _end).
        kind, handle, ms = req[0], req[2], req[3]
        if not 0 < handle <= 0xFFFF or not 0 < ms <= _MAX_MS:
            return (REFUSED,)
        if kind == messages.BLE_READ:
            return conn.start_read(handle, ms)
        if kind == messages.BLE_WRITE:
            return conn.start_write(handle, req[4], ms, req[5])
        if req[4] not in (0, 1, 2):
            return (REFUSED,)
        # the CCCD: 0 off, 1 notifications, 2 indications
        return conn.start_write(handle, bytes((req[4], 0)), ms)

    def _store(self):
        # The bond store, loaded from flash at its first use (the module docstring).
        if self._bonds is None:
            from ble_bonds import Bonds

            self._use(Bonds())
        return self._bonds

    def _use(self, bonds):
        self._bonds = bonds
        self._central.secrets = bonds

    async def _pair(self, ms, conn):
        if not 0 < ms <= _MAX_MS:
            return (REFUSED,)
        bonds = self._store()  # before the stack asks for a peer's keys and hands new ones over
        sec = await conn.pair(ms)
        if sec & messages.BLE_SEC_BONDED:
            try:  # what the stack handed over while pairing
                bonds.save()
            except OSError as e:
                log.error("bonds: cannot save: %r" % e)
            if bonds.dirty or not bonds.holds(conn.addr_type, conn.addr):
                sec &= ~messages.BLE_SEC_BONDED  # encrypted now, but not again after this
        if not sec & messages.BLE_SEC_ENCRYPTED:
            return (AUTH_FAILED,)
        return (OK, None, None, None, sec)

    def _unpair(self, msg):
        addr = parse_addr(msg["addr"])
        if addr is None or msg["addr_type"] not in (0, 1):
            return (REFUSED,)
        bonds = self._store()
        n = bonds.forget(msg["addr_type"], addr)
        bonds.save()  # an OSError ends it "error": forgotten until the next boot only
        return (OK, None, None, None, n)

    def _watch(self, msg):
        addr = parse_addr(msg["addr"])
        if addr is None:
            return (REFUSED,)
        heard = self._heard
        rec = heard.get(addr)
        if not msg["on"]:
            if rec is not None:
                rec[_WATCHED] = False
                if not rec[_SCANNED]:
                    del heard[addr]
        elif rec is None or not rec[_WATCHED]:
            watched = 0
            for other in heard.values():
                watched += 1 if other[_WATCHED] else 0
            if watched >= messages.MAX_WATCH:
                return (REFUSED,)
            if rec is None:
                # [type, rssi, adv, resp, news, sent_at, sent_adv, sent_resp, sent_rssi,
                #  watched, scanned]: not heard yet
                rec = heard[addr] = [0, 0, b"", None, False, None, None, None, 0, True, 0]
            rec[_WATCHED] = True
        return (OK,)

    async def _scan(self, msg):
        ms = msg["ms"]
        if not 0 < ms <= _MAX_SCAN_MS or self._scanning:
            return (REFUSED,)
        self._scanning = True
        self._scan_sent = 0
        for rec in self._heard.values():
            rec[_SCANNED] = 1
        end = time.ticks_add(time.ticks_ms(), ms)
        downs = self._downs
        try:
            while downs == self._downs:
                left = time.ticks_diff(end, time.ticks_ms())
                if left <= 0:
                    break
                # A connect ends a window early (ble_central): the rest is scanned after it.
                await self._central.scan(min(left, _SCAN_WINDOW_MS), active=msg["active"])
        finally:
            self._scanning = False
            heard = self._heard
            for addr in list(heard):
                if heard[addr][_WATCHED]:
                    heard[addr][_SCANNED] = 0
                else:
                    del heard[addr]
        return (OK, None, None, None, self._scan_sent)

    # --- connections ----------------------------------------------------------------------

    async def _forward(self):
        # Every followed connection's read, write or subscribe that ended (_end), its
        # notifications in order, then its loss; ends when none is followed (a connection
        # stays followed until its loss went out, so no second task starts meanwhile). Woken
        # by the central's ``notified``, set at IRQ level for each notification, each loss and
        # each procedure's end (its event or its deadline).
        followed = self._followed
        while followed:
            busy = False
            i = 0
            while i < len(followed):  # a connect may add one meanwhile
                rec = followed[i]
                conn = rec[_CONN]
                if rec[_BUSY] and not conn.waiting():  # before its loss: answered first
                    await self._end(rec)
                    busy = True
                try:
                    note = conn.note()
                except BLEError:  # gone, and every notification taken
                    note = False
                except MemoryError:
                    heap.survive("ble_notify")
                    await asyncio.sleep_ms(_RETRY_MS)
                    busy = True
                    continue
                except Exception as e:  # noqa: BLE001 - never a connection nobody watches
                    log.error("ble_notify %d: %r; dropping the connection" % (conn.conn_handle, e))
                    conn.disconnect_nowait()
                    note = False
                if note is False:
                    await self._lost(rec)
                    followed.pop(i)
                    busy = True
                    continue
                if note is not None:
                    busy = True
                    await self._tell(rec[_EPOCH], messages.BLE_NOTIFY, conn.conn_handle, note[0],
                                     note[1])
                i += 1
            if not busy:
                await self._central.notified.wait()

    def _free(self, rec):
        # The connection's slot, unless the handle is another connection's already (the stack
        # reuses handles) or the link's going down emptied the table.
        handle = rec[_CONN].conn_handle
        if self._conns.get(handle) is rec:
            del self._conns[handle]

    async def _lost(self, rec):
        self._free(rec)
        handle = rec[_CONN].conn_handle
        why = rec[_WHY]
        if why is None:
            why = BLE_RESTART if self._central.restarts != rec[_RESTARTS] else PEER
        if why:
            await self._tell(rec[_EPOCH], messages.BLE_LOST, handle, why)

    def on_link(self, kind):
        """The host link's events (hostlink's on_state): down, or hubd restarted, drops every
        proxy connection and every watch."""
        if kind == link.EV_RESET:
            self._epoch += 1
        elif kind != link.EV_DOWN:
            return
        self._downs += 1
        heard = self._heard
        for addr in list(heard):
            heard[addr][_WATCHED] = False
            if not heard[addr][_SCANNED]:
                del heard[addr]
        conns = self._conns
        self._conns = {}
        for rec in conns.values():
            if rec[_WHY] is None:
                rec[_WHY] = HOST_LINK
            rec[_CONN].disconnect_nowait()
        if conns:
            log.warn("host link %s: dropped %d proxy connection(s)" % (kind, len(conns)))

    # --- adverts --------------------------------------------------------------------------

    def _on_advert(self, addr_type, addr, adv_type, rssi, adv):
        # IRQ level: adv is a memoryview valid only now; copied only when it changed.
        try:
            rec = self._heard.get(addr)
            if rec is None:
                if not self._scanning or adv_type == _SCAN_RSP \
                        or len(self._heard) >= _MAX_HEARD + messages.MAX_WATCH:
                    return
                rec = self._heard[addr] = [addr_type, rssi, b"", None, False, None, None, None,
                                           0, False, 1]
            if len(adv) > messages.MAX_DATA:
                return
            if adv_type == _SCAN_RSP:
                if rec[_RESP] != adv:
                    rec[_RESP] = bytes(adv)
            else:
                if rec[_ADV] != adv:
                    rec[_ADV] = bytes(adv)
                rec[_TYPE] = addr_type
                rec[_RSSI] = rssi
            rec[_NEWS] = True
        except MemoryError:
            pass  # this advert is lost; the next one is heard

    async def run(self):
        """Forward adverts, one a tick while the host link is idle, and scan for the watched
        addresses; until cancelled. The scans are a task of their own (one that ends resets the
        chip: vital.py), not asyncio.gather's, whose bookkeeping costs heap."""
        scans = vital.start(self._watch_scans(), "proxy's watch scans")
        try:
            await self._adverts()
        finally:
            scans.cancel()

    async def _adverts(self):
        while True:
            try:
                self._advert_out(time.ticks_ms())
            except MemoryError:
                heap.survive("ble_adv")
            except Exception as e:  # noqa: BLE001 - an advert must not stop the forwarding
                log.error("ble_adv: %r" % e)
            await asyncio.sleep_ms(_ADV_TICK_MS if self._heard else _QUIET_TICK_MS)

    def _watched(self):
        for rec in self._heard.values():
            if rec[_WATCHED]:
                return True
        return False

    def _watch_gap(self, r):
        """The wait from one watch window's end to the next one's start for a random byte ``r``:
        from half to one and a half of ``scan_every_ms - scan_ms``, that on average. A fixed
        cadence that is a multiple of a lock's advertising interval meets its adverts at the
        same phase in every window: a lock advertising every 2 s that falls outside a 1 s window
        every 10 s goes unheard for minutes (advDelay's 0-10 ms moves it only slowly), and
        counts as gone. A random one hears it within a few windows (its share: window over
        interval)."""
        gap = self.scan_every_ms - self.scan_ms
        return gap // 2 + gap * r // 255

    async def _watch_scans(self):
        # A passive window every scan_every_ms while something is watched (a ble_scan running
        # meanwhile hears the watched addresses itself); looked at twice a second otherwise.
        while True:
            wait = _QUIET_TICK_MS
            if self._watched() and not self._scanning:
                wait = self._watch_gap(os.urandom(1)[0])
                try:
                    await self._central.scan(self.scan_ms, active=False)
                except MemoryError:
                    heap.survive("watch scan")
                    wait = self.scan_every_ms
                except Exception as e:  # noqa: BLE001 - the radio refused (busy): next window
                    log.warn("watch scan failed: %r" % e)
                    wait = self.scan_every_ms
            await asyncio.sleep_ms(wait)

    def _advert_out(self, now):
        # The first advertiser that is due, while the host link is idle: heard since it last
        # went out, not within the last second, and news (a ble_scan: first heard in it, data
        # changed, RSSI moved; a watch: data changed, or a minute since).
        if not self._idle():
            return
        for addr in list(self._heard):
            rec = self._heard.get(addr)
            if rec is None or not rec[_NEWS]:
                continue
            sent = rec[_SENT_AT]
            if sent is not None and time.ticks_diff(now, sent) < _ADV_GAP_MS:
                continue
            changed = rec[_ADV] != rec[_SENT_ADV] or rec[_RESP] != rec[_SENT_RESP]
            scanned = rec[_SCANNED]
            if not (scanned == 1 or (scanned and (changed or abs(rec[_RSSI] - rec[_SENT_RSSI])
                                                  >= _RSSI_STEP))
                    or (rec[_WATCHED] and (changed or sent is None
                                           or time.ticks_diff(now, sent) >= self.presence_ms))):
                continue
            self._send(messages.make(
                messages.BLE_ADV, addr_text(addr), rec[_TYPE],
                rec[_RSSI], binascii.hexlify(rec[_ADV]).decode(),
                None if rec[_RESP] is None else binascii.hexlify(rec[_RESP]).decode()))
            rec[_NEWS] = False
            rec[_SENT_AT] = now
            rec[_SENT_ADV] = rec[_ADV]
            rec[_SENT_RESP] = rec[_RESP]
            rec[_SENT_RSSI] = rec[_RSSI]
            if scanned:
                rec[_SCANNED] = 2
                self._scan_sent += 1
            return

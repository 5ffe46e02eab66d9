"""The BLE connection policy for battery locks.

A battery lock cannot keep a link open: it connects on demand (the driver's short attempts
within an overall deadline), stays connected ``idle_ms`` after its last exchange so a follow-up
operation is fast, then disconnects. Between operations the bridge learns what happened at the
lock two ways:

- a slow poll (``poll_ms``, and once at start) reads the lock's kept reports, state and
  battery; the state goes to hubd with source "poll";
- a passive scan every ``scan_every_ms`` reads each lock's advert, whose counter is the lock's
  latest report number: when it differs from the last report taken in, the bridge connects and
  reads the new reports.

Every report (a manual turn, a key taken, an auto-relock) goes to hubd as a ``state`` or
``event`` message through the driver's ``on_report``. Polls and operations on one lock never
overlap: both hold the lock's mutex. Polls and report reads of different locks do not overlap
either: one at a time, because every BLE link costs the bridge's short heap (four first polls at
once at boot once exhausted it); operations do not wait for them.

Adverts and polls also tell the device reports (devices.py) that a lock is there, with its
battery and, for adverts, its signal.
"""

import asyncio
import time

import log
from wire import lockproto as lp
from wire import messages

_TICK_MS = 100
_SERVICE_LE = lp.uuid128_le(lp.SERVICE_UUID)


class Policy:
    """Runs idle disconnects, polls and advert checks for the bridge's locks."""

    def __init__(self, central, drivers, mutex, send, settings, devices=None):
        self.central = central
        self.devices = devices
        self.drivers = drivers  # lock id -> driver (see locks/reference.py)
        self._mutex = mutex  # lock id -> asyncio.Lock shared with the bridge's operations
        self._send = send
        self.settings = settings
        self._by_addr = {}
        self._next_poll = {}
        self._advert = {}  # lock id -> report counter in its last advert seen, None: not seen
        self._refreshing = {}
        now = time.ticks_ms()
        for lock_id, drv in drivers.items():
            self._by_addr[drv.addr] = lock_id
            self._next_poll[lock_id] = now  # the first poll right at start
            self._advert[lock_id] = None
            self._refreshing[lock_id] = False

    async def run(self):
        """Until cancelled."""
        await asyncio.gather(self._tick(), self._scan())

    async def _tick(self):
        idle_ms = self.settings["idle_ms"]
        while True:
            now = time.ticks_ms()
            busy = True in self._refreshing.values()
            for lock_id, drv in self.drivers.items():
                drv.service(idle_ms)
                if busy:
                    continue
                poll = time.ticks_diff(now, self._next_poll[lock_id]) >= 0
                # Right after an operation a status read may show the old state: wait.
                if poll and not drv.settling():
                    self._start(lock_id, True)
                    busy = True
                elif self._news(lock_id, drv):
                    self._start(lock_id, drv.report_counter < 0)
                    busy = True
            await asyncio.sleep_ms(_TICK_MS)

    def _news(self, lock_id, drv):
        # Reports that arrived over a live link meanwhile make the advert old news by themselves.
        advert = self._advert[lock_id]
        known = drv.report_counter
        return advert is not None and (known < 0 or advert != known & 0xFFFF)

    def _start(self, lock_id, poll):
        self._refreshing[lock_id] = True
        self._advert[lock_id] = None  # the next scan tells again if there is still news
        if poll:
            self._next_poll[lock_id] = time.ticks_add(time.ticks_ms(), self.settings["poll_ms"])
        asyncio.create_task(self._refresh(lock_id, poll))

    async def _refresh(self, lock_id, poll):
        drv = self.drivers[lock_id]
        try:
            async with self._mutex[lock_id]:
                got = await drv.refresh(poll and not drv.settling())
        except Exception as e:  # a driver bug must not stop the policy
            log.error("%s: refresh raised %r" % (lock_id, e))
            got = None
        finally:
            self._refreshing[lock_id] = False
        if got is not None and self.devices is not None:
            self.devices.lock_heard(lock_id, got["battery"])
        if got is None:
            log.warn("%s: %s failed: lock not reachable" % (lock_id, "poll" if poll else "read"))
        elif got["state"] is not None:
            log.info("%s: polled, %s, battery %d%%" % (lock_id, got["state"], got["battery"]))
            self._send(messages.make(messages.STATE, lock_id, got["state"], got["battery"],
                                     "poll"))

    async def _scan(self):
        while True:
            await asyncio.sleep_ms(self.settings["scan_every_ms"])
            try:
                seen = await self.central.scan(self.settings["scan_ms"], _SERVICE_LE,
                                               active=False)
            except Exception as e:  # the radio refused (e.g. busy): try again next round
                log.warn("advert scan failed: %r" % e)
                continue
            for result in seen:
                lock_id = self._by_addr.get(result.addr)
                if lock_id is None:
                    continue
                try:
                    _, battery, counter, _ = lp.decode_advert(result.adv)
                except lp.ProtocolError:
                    continue  # hostile or foreign advert
                self._advert[lock_id] = counter
                if self.devices is not None:
                    self.devices.lock_heard(lock_id, battery, result.rssi)

"""The bridge's health for hubd, and the watchdogs that act when a part of the bridge is stuck.

`health` (wire/messages.py) goes to hubd every ``health_ms`` while the host link is up and at
once on `health_request` (hubd asks when it sees the link come up): uptime, why the chip last
reset, free heap after a collection and the least of it since boot (sampled every 5 s and at each
report), the least largest free block since boot (measured at each report: heap.largest_block),
the host link's counters, BLE stack restarts and why, LTE registration and signal, the alarm
unit link, journal sizes and the bridge's clock (Unix s by hubd's last `clock`).

Watchdogs, both run from this module's loop:
- the chip's WDT (``wdt_ms``) is fed only while the host link's task goes round: a hung event
  loop or a link stuck in a write stops the feeding, and the chip resets;
- a BLE stack that owes an event and has raised none for ``ble_stuck_ms``, or whose calls keep
  failing, is restarted (ble_central.Central.restart); health carries the count and the reason.

The same loop reads the bridge's supply every 5 s, counts the uptime (ticks_ms wraps; this does
not) and lets device reports out (devices.py).
"""

import gc
import time

import asyncio
import machine

from micropython import const

import heap
import log
import vital
from wire import link, messages

_TICK_MS = const(500)
_SUPPLY_TICKS = const(10)  # the supply is read every 5 s
_CAP = messages.COUNT_CAP
_REGISTRATION = ("no", "home", "searching", "denied", "unknown", "roaming")  # Lte.registration()


class Health:
    """See the module docstring. ``host``: the HostLink; ``central``: the BLE Central;
    ``devices``: the Devices; ``settings``: config HEALTH;
    ``flow``, ``unit``, ``modem``: the alarm flow, unit link and LTE modem where the bridge has
    them; ``supply``: bridge.json's "supply" (the backup cell on an ADC pin behind a divider,
    the external supply's presence on an input pin), or None."""

    def __init__(self, host, central, devices, settings, flow=None, unit=None, modem=None,
                 supply=None):
        self._host = host
        self._central = central
        self._devices = devices
        self.settings = settings
        self._flow = flow
        self._unit = unit
        self._modem = modem
        self._cell = self._ext = None
        if supply is not None:
            self._cell = machine.ADC(machine.Pin(supply["cell_adc"]), atten=machine.ADC.ATTN_11DB)
            self._divider = supply["cell_divider"]
            if supply["ext_pin"] is not None:
                self._ext = machine.Pin(supply["ext_pin"], machine.Pin.IN)
        cause = machine.reset_cause()
        self.reset = messages.RESETS[cause - 1 if 0 < cause < len(messages.RESETS) else -1]
        self._up_ms = 0
        self._since = time.ticks_ms()
        self._next = None  # ticks_ms when the next periodic health is due; None: link down
        self._lte = {"registered": None, "rssi": None}
        self.heap_min = None  # the least free heap after a collection since boot (bytes)
        self.heap_blk = None  # the least largest free block since boot (bytes, per report)

    def _heap_free(self):
        # After a collection, what live data leaves: its low-water mark is the heap's margin.
        gc.collect()
        free = gc.mem_free()
        if self.heap_min is None or free < self.heap_min:
            self.heap_min = free
        return free

    def message(self):
        """The `health` payload now."""
        free = self._heap_free()
        # Free heap in holes too small for a frame is no margin: the largest block is. Measured
        # here only (a few collections), so its low-water mark is per report, not every 5 s.
        blk = heap.largest_block()
        if self.heap_blk is None or blk < self.heap_blk:
            self.heap_blk = blk
        host = self._host
        stats = host.link.stats
        counts = {}
        for name in messages.LINK_COUNTERS:
            counts[name] = min(_CAP, stats[name] if name in stats else getattr(host, name))
        c = self._central
        unit = self._unit
        flow = self._flow
        up_s = (self._up_ms + time.ticks_diff(time.ticks_ms(), self._since)) // 1000
        return messages.make(
            messages.HEALTH, min(_CAP, up_s), self.reset, free, self.heap_min, self.heap_blk,
            counts,
            {"restarts": c.restarts, "last_restart": c.last_restart, "connected": c.connected()},
            None if self._modem is None else self._lte,
            None if unit is None else {"up": unit.up, "last_heard_s": unit.heard_s()},
            # No command journal since the lock drivers left the bridge (hubd journals them):
            # "commands" stays in the message for hubd, always 0.
            {"commands": 0, "alarms": 0 if flow is None else len(flow.journal)},
            None if flow is None else flow.now())

    def send_now(self):
        """Send a `health` to hubd now (on `health_request`)."""
        try:
            self._host.send(self.message())
        except link.LinkFull:
            log.warn("health not sent: host link backlog full")
        except MemoryError:
            # A report that meets a full heap is dropped like an input (and counted in
            # heap_drops): this task feeds the watchdog and must not end for it.
            heap.survive("health")

    def on_link_state(self, kind, value):
        """The host link's events (HostLink's on_state): the alarm flow hears them all; when the
        link comes up, hubd hears every device, and health every ``health_ms`` from then on."""
        if self._flow is not None:
            self._flow.on_link_state(kind, value)
        if kind == link.EV_UP:
            # hubd asks when it sees the link come up: no second report at the busiest moment
            self._next = time.ticks_add(time.ticks_ms(), self.settings["health_ms"])
            self._devices.on_link(True)
        elif kind == link.EV_DOWN or kind == link.EV_INCOMPATIBLE:
            self._next = None
            self._devices.on_link(False)

    async def run(self):
        """Until cancelled."""
        s = self.settings
        wdt = machine.WDT(timeout=s["wdt_ms"])
        if self._modem is not None:
            vital.start(self._lte_loop(), "LTE status")
        ticks = 0
        while True:
            now = time.ticks_ms()
            self._up_ms += time.ticks_diff(now, self._since)
            self._since = now
            # This task runs, so the event loop does; the link's task must have gone round too.
            if time.ticks_diff(now, self._host.beat) < s["wdt_ms"] // 2:
                wdt.feed()
            why = self._central.stuck(s["ble_stuck_ms"])
            if why is not None:
                log.error("BLE stack stuck (%s): restarting it" % why)
                self._central.restart(why)
                if self._next is not None:
                    self._next = now
            ticks = (ticks + 1) % _SUPPLY_TICKS
            if ticks == 0:
                self._heap_free()  # every 5 s: a collection costs a few ms on the chip
            if self._cell is not None and ticks == 1:
                self._devices.supply(int(self._cell.read_uv() * self._divider) // 1000,
                                     None if self._ext is None else bool(self._ext.value()))
            self._devices.tick()
            if self._next is not None and time.ticks_diff(now, self._next) >= 0:
                self._next = time.ticks_add(now, s["health_ms"])
                self.send_now()
            await asyncio.sleep_ms(_TICK_MS)

    async def _lte_loop(self):
        # AT commands wait behind the second path's: never in the loop that feeds the WDT.
        import lte as lte_mod  # loaded already: the modem is one of its Lte

        modem = self._modem
        while True:
            try:
                stat = await modem.registration()
                lte = self._lte  # updated in place: the heap is short and fragments
                reg = None if stat is None else _REGISTRATION[stat]
                if stat not in (1, 5) and await modem.sim_ready() == lte_mod.E_NO_SIM:
                    reg = lte_mod.E_NO_SIM  # no SIM ready: why it is not registered
                lte["registered"] = reg
                lte["rssi"], _ = await modem.signal()
            except Exception as e:  # a bad moment (a MemoryError) must not end the reports
                log.warn("lte status: %r" % e)
            await asyncio.sleep_ms(self.settings["health_ms"])

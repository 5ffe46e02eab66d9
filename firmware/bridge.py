"""The bridge application: runs hubd's lock operations through the lock drivers.

The path of a command through the firmware: hostlink delivers an `op` message -> Bridge.on_message
-> refused if the lock's kind cannot do the action or the journal knows the command -> one
operation at a time per lock -> the journal records the command -> `written` -> the lock's driver
(locks/) over BLE -> one `result` (with the time it took) -> hostlink -> hubd.

What a lock reports on its own (drivers' ``on_report``) goes to hubd as `state` and `event`;
every authentic battery reading also goes to the device reports (devices.py).

hubd's ble_* requests go to the Bluetooth proxy (ble_proxy.py), which answers them itself. It is
made on the first of them, not at boot: the boot is the heap's tightest moment, and a bridge
whose hubd never asks pays nothing for it.
"""

import sys
import time

import asyncio

import log
import vital
from wire import link, lockkinds, messages
from wire import outcomes as oc
from wire.lockproto import command_tag

_ALARM_KINDS = (messages.ALARM_STORED, messages.ALARM_HANDLED, messages.CLOCK, messages.TEST_ALARM)
_COMMISSIONING = (messages.SCAN, messages.PAIR, messages.UNPAIR, messages.WIPE)


class Bridge:
    """Owns the lock drivers and answers hubd's operations.

    ``drivers``: lock id -> driver with ``kind`` and ``async operate(action, tag, on_written)``;
    ``journal``: a ``journal.Journal``; ``send(payload)``: queue a message for hubd;
    ``alarms``: an ``alarms.AlarmFlow`` when an alarm unit is configured, else None;
    ``devices``: the device reports (devices.Devices) or None; ``health``: answers
    `health_request` (health.Health), set once it exists. For a technician's requests
    (commissioning.py) startup sets ``central`` (the BLE central), ``settings`` (the policy
    timings a new lock's driver gets) and ``link_idle()`` (nothing waits on the host link).
    ``proxy_slots``: bridge.json's proxy.slots; ``proxy``: the Bluetooth proxy
    (ble_proxy.Proxy) once hubd asked for it.
    """

    def __init__(self, drivers, send, journal, alarms=None, devices=None):
        self.drivers = drivers
        self.alarms = alarms
        self.devices = devices
        self.health = None
        self.journal = journal
        self._send = send
        self.mutex = {}
        self.central = None
        self.settings = None
        self.link_idle = None
        self.proxy = None
        self.proxy_slots = None
        self._commissioning = False
        for lock_id, drv in drivers.items():
            self.mutex[lock_id] = asyncio.Lock()
            drv.on_report = self.on_report

    def send(self, payload):
        """Queue a message for hubd; a full link drops it with a log line instead of crashing."""
        try:
            self._send(payload)
        except link.LinkFull:
            log.error("host link backlog full: dropped %s" % payload)

    def on_message(self, msg):
        """Called by the host link for each decoded message from hubd."""
        if msg["m"] == messages.OP:
            asyncio.create_task(self._run_op(msg, time.ticks_ms()))
        elif msg["m"][:4] == "ble_" and self.proxy_slots is not None:
            if self.proxy is None:
                self._start_proxy()
            self.proxy.on_message(msg)
        elif self.alarms is not None and msg["m"] in _ALARM_KINDS:
            self.alarms.on_message(msg)
        elif msg["m"] == messages.HEALTH_REQUEST and self.health is not None:
            self.health.send_now()
        elif msg["m"] in _COMMISSIONING and self.central is not None:
            if self._commissioning:
                log.warn("%s refused: a technician's request is still running" % msg["m"])
            else:
                self._commissioning = True
                asyncio.create_task(self._commission(msg))
        else:
            log.warn("ignored a %s message: the bridge does not take it" % msg["m"])

    def _start_proxy(self):
        from ble_proxy import Proxy

        proxy = Proxy(self.central, self._send, self.link_idle, self.proxy_slots)
        vital.start(proxy.run(), "the proxy's adverts")
        self.proxy = proxy
        log.info("Bluetooth proxy up: %d connection slot(s)" % self.proxy_slots)

    def on_link_state(self, kind, value):
        """The host link's events (HostLink's on_state): health (and through it the alarm flow
        and the device reports) and the proxy hear them."""
        if self.health is not None:
            self.health.on_link_state(kind, value)
        if self.proxy is not None:
            self.proxy.on_link(kind)

    async def _commission(self, msg):
        import commissioning

        try:
            await commissioning.run(self, msg)
        except Exception as e:  # a failed request must not stop the bridge
            log.error("%s failed: %r" % (msg["m"], e))
        finally:
            # The technician's code gives its heap back (locks.pairing too).
            for name in ("commissioning", "locks.pairing"):
                if name in sys.modules:
                    del sys.modules[name]
            pkg = sys.modules.get("locks")
            if pkg is not None and hasattr(pkg, "pairing"):
                delattr(pkg, "pairing")
            self._commissioning = False

    def on_report(self, lock_id, what, name, state, battery, source):
        """A driver heard a lock report something on its own: tell hubd."""
        if self.devices is not None:
            self.devices.lock_heard(lock_id, battery)
        if what == "event":
            log.info("%s: %s (%s)" % (lock_id, name, source))
            self.send(messages.make(messages.EVENT, lock_id, name, source, state, battery))
        else:
            log.info("%s: %s (%s)" % (lock_id, state, source))
            self.send(messages.make(messages.STATE, lock_id, state, battery, source))

    def _answer(self, rid, received, res, ble_ms=None):
        self.send(messages.make(messages.RESULT, rid, res["outcome"], res["reason"], res["state"],
                                res["battery"], time.ticks_diff(time.ticks_ms(), received),
                                ble_ms))

    def _refuse(self, rid, received, outcome, reason):
        self._answer(rid, received, {"outcome": outcome, "reason": reason, "state": None,
                                     "battery": None})

    async def _run_op(self, msg, received):
        rid = msg["rid"]
        lock_id = msg["lock"]
        action = msg["action"]
        driver = self.drivers.get(lock_id)
        if driver is None:
            log.warn("op %d: unknown lock %s" % (rid, lock_id))
            self._refuse(rid, received, oc.FAILED, oc.UNKNOWN_LOCK)
            return
        if not lockkinds.supports(driver.kind, action):
            log.warn("op %d: a %s cannot %s" % (rid, driver.kind, action))
            self._refuse(rid, received, oc.FAILED, oc.UNSUPPORTED_ACTION)
            return
        tag = command_tag(msg["cmd"])
        async with self.mutex[lock_id]:
            # Checked here, behind the lock's queue, so a twin that waited with it is caught too.
            if self.journal.seen(tag):
                log.warn("op %d: command %s already ran; not moving the lock again"
                         % (rid, msg["cmd"]))
                self._refuse(rid, received, oc.FAILED, oc.DUPLICATE_COMMAND)
                return
            if time.ticks_diff(time.ticks_ms(), received) > msg["ttl"]:
                log.warn("op %d: waited past its ttl behind other operations; not started" % rid)
                self._refuse(rid, received, oc.TIMED_OUT, oc.QUEUED_TOO_LONG)
                return
            log.info("op %d: %s %s" % (rid, action, lock_id))

            written = []

            def on_written():
                # Durable before the lock can move: a reboot must not forget this command.
                if action != "status":
                    self.journal.record(tag)
                written.append(True)
                self.send(messages.make(messages.WRITTEN, rid))

            started = time.ticks_ms()
            try:
                res = await driver.operate(action, tag, on_written)
            except OSError as e:
                # Raised by the journal before the write (flash full or failing) or by a driver.
                log.error("op %d: %r" % (rid, e))
                outcome, state = oc.unfinished(written)
                res = {"outcome": outcome, "reason": oc.BRIDGE_ERROR, "state": state,
                       "battery": None}
            except Exception as e:  # a driver bug must still produce an answer
                log.error("op %d: driver raised %r" % (rid, e))
                outcome, state = oc.unfinished(written)
                res = {"outcome": outcome, "reason": oc.DRIVER_ERROR, "state": state,
                       "battery": None}
            if self.devices is not None and res["battery"] is not None:
                self.devices.lock_heard(lock_id, res["battery"])
            log.info("op %d: %s%s, lock %s" % (rid, res["outcome"],
                                              " (%s)" % res["reason"] if res["reason"] else "",
                                              res["state"]))
            self._answer(rid, received, res, time.ticks_diff(time.ticks_ms(), started))

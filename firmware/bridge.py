"""The bridge application: hands each message from hubd to the part of the bridge it is for.

    ble_*                              -> the Bluetooth proxy (ble_proxy.py), which answers itself
    uplink_*, and the uplink's bytes   -> hubd's uplink on the LTE modem (uplink.py)
    alarm_stored, alarm_handled, clock, test_alarm -> the alarm flow (alarms.py)
    health_request                     -> health.py, a report at once
    wipe                               -> commissioning.py, a technician's request

Lock protocols run in hubd, through the proxy (docs/ble-proxy.md): the bridge drives no lock of
its own. What it keeps is what must work without hubd: the alarm unit, its journal, the LTE second
path, the watchdogs.

The proxy is made on hubd's first ble_* request, and the uplink on its first uplink_* message,
not at boot: the boot is the heap's tightest moment, and a bridge whose hubd never asks pays
nothing for them.
"""

import sys

import asyncio

import log
import vital
from wire import link, messages

_ALARM_KINDS = (messages.ALARM_STORED, messages.ALARM_HANDLED, messages.CLOCK, messages.TEST_ALARM)


class Bridge:
    """Routes hubd's messages (see the module docstring).

    ``send(payload)``: queue a message for hubd; ``alarms``: an ``alarms.AlarmFlow`` when an
    alarm unit is configured, else None; ``health``: answers `health_request`
    (health.Health), set once it exists. Startup also sets ``central`` (the BLE central the
    proxy drives), ``link_idle()`` (nothing waits on the host link) and ``proxy_settings``
    (bridge.json's proxy section); ``proxy``: the Bluetooth proxy (ble_proxy.Proxy) once hubd
    asked for it.
    """

    def __init__(self, send, alarms=None):
        self.alarms = alarms
        self.health = None
        self._send = send
        self.central = None
        self.link_idle = None
        self.proxy = None
        self.proxy_settings = None
        self.modem = None
        self.host = None
        self.uplink = None
        self._commissioning = False

    def send(self, payload):
        """Queue a message for hubd; a full link drops it with a log line instead of crashing."""
        try:
            self._send(payload)
        except link.LinkFull:
            log.error("host link backlog full: dropped %s" % payload)

    def on_message(self, msg):
        """Called by the host link for each decoded message from hubd."""
        kind = msg["m"]
        if kind[:4] == "ble_" and self.proxy_settings is not None:
            if self.proxy is None:
                self._start_proxy()
            self.proxy.on_message(msg)
        elif kind == messages.UPLINK_OPEN or kind == messages.UPLINK_CLOSE:
            if self.modem is None:
                self.send(messages.make(messages.UPLINK_STATE, "closed", "no_modem"))
                return
            if self.uplink is None:
                self._start_uplink()
            self.uplink.on_message(msg)
        elif self.alarms is not None and kind in _ALARM_KINDS:
            self.alarms.on_message(msg)
        elif kind == messages.HEALTH_REQUEST and self.health is not None:
            self.health.send_now()
        elif kind == messages.WIPE:
            if self._commissioning:
                log.warn("wipe refused: a wipe is still running")
            else:
                self._commissioning = True
                asyncio.create_task(self._wipe())
        else:
            log.warn("ignored a %s message: the bridge does not take it" % kind)

    def _start_proxy(self):
        from ble_proxy import Proxy

        s = self.proxy_settings
        proxy = Proxy(self.central, self._send, self.link_idle, s["slots"],
                      scan_every_ms=s["scan_every_ms"], scan_ms=s["scan_ms"],
                      presence_ms=s["presence_ms"],
                      busy=None if self.host is None else self.host.busy)
        vital.start(proxy.run(), "the proxy's adverts")
        self.proxy = proxy
        log.info("Bluetooth proxy up: %d connection slot(s)" % s["slots"])

    def _start_uplink(self):
        from uplink import Uplink

        self.uplink = Uplink(self.modem, self.host)
        self.uplink.start()
        # The uplink's bytes from hubd go to it from now on (before, there is no socket they
        # could be for: the host link drops them).
        self.host.on_bulk = self.uplink.on_data

    def on_link_state(self, kind, value):
        """The host link's events (HostLink's on_state): health (and through it the alarm flow
        and the device reports) and the proxy hear them."""
        if self.health is not None:
            self.health.on_link_state(kind, value)
        if self.proxy is not None:
            self.proxy.on_link(kind)
        if self.uplink is not None:
            self.uplink.on_link(kind)

    async def _wipe(self):
        import commissioning

        try:
            await commissioning.wipe(self)
        except Exception as e:  # a failed request must not stop the bridge
            log.error("wipe failed: %r" % (e,))
        finally:
            # The technician's code gives its heap back.
            if "commissioning" in sys.modules:
                del sys.modules["commissioning"]
            self._commissioning = False

"""Builds the bridge from bridge.json: every part, wired together, and the tasks that run it.

Reads bridge.json, starts the BLE central (the Bluetooth proxy's radio), the safety alarm unit
link and the LTE second path when configured, the device reports, and the health report with its
watchdogs; the Bluetooth proxy's settings (the bridge makes the proxy on hubd's first ble_*
request). The bridge drives no lock of its own: hubd does, through the proxy.

Boot-only code: main.py drops this module (and it drops config) once the bridge is built, so
their code gives its heap back; the heap is the bridge's scarcest resource. Nothing built here
may keep a reference to this module: no closures, no classes of its own.
"""

import sys
import time

import machine

import log
import version
from bridge import Bridge
from devices import BRIDGE, Devices
from health import Health
from hostlink import HostLink
from wire import messages


def _config():
    import config

    try:
        return config.load()
    except config.ConfigError as e:
        # A reset cannot fix bridge.json, a person must: say what is wrong once a minute, for
        # whoever opens the console, and wait (Ctrl-C reaches the REPL; hubctl flash rewrites it).
        while True:
            log.error("bridge.json: %s; not starting until it is fixed (hubctl flash --config)"
                      % e)
            time.sleep(60)
    finally:
        del sys.modules["config"]


def _uart(link_cfg):
    kw = {"baudrate": link_cfg["baudrate"]}
    if link_cfg["tx"] is not None:
        kw["tx"] = link_cfg["tx"]
    if link_cfg["rx"] is not None:
        kw["rx"] = link_cfg["rx"]
    return machine.UART(link_cfg["uart"], **kw)


def _alarm_flow(unit_cfg, send, devices):
    """The alarm flow, the unit link and their tasks ((name, coroutine) pairs), or
    (None, None, ()) on a bridge without an alarm unit."""
    if unit_cfg is None:
        return None, None, ()
    import binascii

    from alarm_journal import AlarmJournal
    from alarm_unit import UnitLink
    from alarms import AlarmFlow

    journal = AlarmJournal(bridge="br" + binascii.hexlify(machine.unique_id()).decode())
    flow = AlarmFlow(journal, send, unit_cfg)
    unit = UnitLink(_uart(unit_cfg), flow.on_unit_event, flow.on_unit_link,
                    unit_cfg["heartbeat_ms"], unit_cfg["missed"], devices.unit_status,
                    flow.on_prompt_heard, unit_cfg["serial"])
    flow.attach_unit(unit)
    devices.unit = unit
    log.info("alarm unit on UART %d; %d alarm(s) pending in the journal"
             % (unit_cfg["uart"], len(journal)))
    return flow, unit, (("alarm unit link", unit.run()), ("alarm flow", flow.run()))


def _second_path(lte_cfg, flow):
    """The LTE modem (reading it from now on) and the task of the DC-09 sender, carrying what
    the alarm flow hands it ((name, coroutine)); without an alarm flow no sender (None): the
    modem serves hubd's uplink only."""
    from lte import Lte

    modem = Lte(_uart(lte_cfg), lte_cfg["apn"], lte_cfg["user"], lte_cfg["password"])
    if flow is None:
        log.info("LTE on UART %d, for hubd's uplink (no alarm unit: no second path)"
                 % lte_cfg["uart"])
        modem.start()
        return modem, None
    from second_path import SecondPath, carry

    key = lte_cfg["key"].encode() if lte_cfg["key"] is not None else None
    path = SecondPath(modem, lte_cfg["host"], lte_cfg["port"], lte_cfg["account"], key,
                      lte_cfg["receiver"], lte_cfg["line"], deadline_ms=lte_cfg["deadline_ms"])
    log.info("second path: LTE on UART %d to %s:%d, account %s%s"
             % (lte_cfg["uart"], lte_cfg["host"], lte_cfg["port"], lte_cfg["account"],
                ", encrypted" if key else ""))
    modem.start()
    return modem, ("second path", carry(flow, path, lte_cfg["retry_ms"]))


def build():
    """Build the bridge; return the coroutines that run it (all of them, until power is cut), as
    (name, coroutine) pairs, the host link's first."""
    cfg = _config()
    log.set_level(cfg["log"])
    if cfg["stale"]:
        # An older provisioning's: the bridge drives no lock since hubd does (docs/ble-proxy.md).
        log.warn("bridge.json: ignored %s, from an older provisioning (hubd drives the locks "
                 "now); to drop them: hubctl provision, then hubctl flash --config"
                 % ", ".join(cfg["stale"]))
    from ble_central import Central

    # An ATT MTU of MAX_DATA + 1: no read (MTU - 1) or notification (MTU - 3) the proxy
    # forwards is longer than a link message carries.
    central = Central(mtu=messages.MAX_DATA + 1)
    host = HostLink(_uart(cfg["link"]), version.VERSION, cfg["link"]["key"])
    devices = Devices(host.send, host.idle)
    devices.add(BRIDGE, "bridge", "bridge-liion-1s", "mV", None, version.VERSION, True)
    flow, unit, tasks = _alarm_flow(cfg["alarm_unit"], host.send, devices)
    modem = None
    if cfg["lte"] is not None:
        modem, carrying = _second_path(cfg["lte"], flow)
        if carrying is not None:
            tasks = tasks + (carrying,)
    app = Bridge(host.send, flow)
    health = Health(host, central, devices, cfg["health"], flow, unit, modem, cfg["supply"])
    app.health = health
    app.central = central
    app.link_idle = host.idle
    app.proxy_settings = cfg["proxy"]
    app.modem = modem  # hubd's uplink, when it asks (bridge.py makes it then)
    app.host = host
    host.on_message = app.on_message
    host.on_state = app.on_link_state
    log.info("bridge firmware %s up: %salarm unit, %sLTE, proxy of %d slot(s); reset: %s"
             % (version.VERSION, "" if flow is not None else "no ",
                "" if modem is not None else "no ",
                cfg["proxy"]["slots"], health.reset))
    return (("host link", host.run()), ("health", health.run())) + tasks

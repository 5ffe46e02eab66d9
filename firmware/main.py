"""Bridge firmware entry point: MicroPython runs main.py at boot.

Reads bridge.json, opens the command journal, starts the BLE central, the lock drivers and their
connection policy, the safety alarm unit link when one is configured, and serves hubd over the
host link until power is cut.
"""

import gc
import sys

import asyncio

import machine

import config
import log
import version
from bridge import Bridge
from hostlink import HostLink
from journal import Journal
from policy import Policy


def _drivers(cfg, central):
    from locks.reference import ReferenceLock

    p = cfg["policy"]
    drivers = {}
    for lk in cfg["locks"]:
        # config.PROTOCOLS has one entry today; a vendor protocol adds its driver here.
        drivers[lk["id"]] = ReferenceLock(
            central, lk["id"], lk["kind"], lk["addr_type"], lk["addr"], lk["secret"],
            connect_timeout_ms=p["connect_timeout_ms"], deadline_ms=p["deadline_ms"],
            result_timeout_ms=p["result_timeout_ms"], settle_ms=p["settle_ms"])
    return drivers


def _uart(link_cfg):
    kw = {"baudrate": link_cfg["baudrate"]}
    if link_cfg["tx"] is not None:
        kw["tx"] = link_cfg["tx"]
    if link_cfg["rx"] is not None:
        kw["rx"] = link_cfg["rx"]
    return machine.UART(link_cfg["uart"], **kw)


def _alarm_flow(unit_cfg, send):
    """The alarm journal, flow and unit link, or (None, ()) on a bridge without an alarm unit."""
    if unit_cfg is None:
        return None, ()
    import binascii

    from alarm_journal import AlarmJournal
    from alarm_unit import UnitLink
    from alarms import AlarmFlow

    journal = AlarmJournal(bridge="br" + binascii.hexlify(machine.unique_id()).decode())
    flow = AlarmFlow(journal, send, unit_cfg)
    unit = UnitLink(_uart(unit_cfg), flow.on_unit_event, flow.on_unit_link,
                    unit_cfg["heartbeat_ms"], unit_cfg["missed"])
    flow.attach_unit(unit)
    log.info("alarm unit on UART %d; %d alarm(s) pending in the journal"
             % (unit_cfg["uart"], len(journal)))
    return flow, (unit.run(), flow.run())


def _second_path(lte_cfg, flow):
    """The LTE modem and the DC-09 sender, carrying what the alarm flow hands them."""
    from lte import Lte
    from second_path import SecondPath, carry

    modem = Lte(_uart(lte_cfg), lte_cfg["apn"], lte_cfg["user"], lte_cfg["password"])
    key = lte_cfg["key"].encode() if lte_cfg["key"] is not None else None
    path = SecondPath(modem, lte_cfg["host"], lte_cfg["port"], lte_cfg["account"], key,
                      lte_cfg["receiver"], lte_cfg["line"], deadline_ms=lte_cfg["deadline_ms"])
    log.info("second path: LTE on UART %d to %s:%d, account %s%s"
             % (lte_cfg["uart"], lte_cfg["host"], lte_cfg["port"], lte_cfg["account"],
                ", encrypted" if key else ""))

    async def run():
        modem.start()
        await carry(flow, path, lte_cfg["retry_ms"])

    return run()


async def main():
    cfg = config.load()
    log.set_level(cfg["log"])
    from ble_central import Central

    central = Central()
    drivers = _drivers(cfg, central)
    journal = Journal()
    app = None
    flow = None

    def on_state(kind, value):
        if flow is not None:
            flow.on_link_state(kind, value)

    host = HostLink(_uart(cfg["link"]), version.VERSION, lambda msg: app.on_message(msg),
                    on_state)
    flow, alarm_tasks = _alarm_flow(cfg["alarm_unit"], host.send)
    if flow is not None and cfg["lte"] is not None:
        alarm_tasks = alarm_tasks + (_second_path(cfg["lte"], flow),)
    app = Bridge(drivers, host.send, journal, flow)
    policy = Policy(central, drivers, app.mutex, app.send, cfg["policy"])
    log.info("bridge firmware %s up with %d lock(s): %s; %d command(s) in the journal"
             % (version.VERSION, len(drivers),
                ", ".join("%s (%s)" % (k, d.kind) for k, d in drivers.items()), len(journal)))
    await asyncio.gather(host.run(), policy.run(), *alarm_tasks)


def boot():
    """Run the bridge; whatever stops it (a MemoryError, a bug) resets the chip, because a bridge
    sitting at the REPL carries no alarm. The journals on flash make the reset lose nothing."""
    # Collect before the heap is nearly full, not when an allocation already failed: fewer, larger
    # free blocks (MicroPython's heap is never compacted) for the link's frames.
    gc.collect()
    gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        raise  # a technician at the REPL
    except BaseException as e:  # noqa: BLE001 - everything else is a reset
        gc.collect()
        log.error("bridge firmware stopped: %r; resetting" % (e,))
        sys.print_exception(e)
        machine.reset()


boot()

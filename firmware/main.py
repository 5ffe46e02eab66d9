"""Bridge firmware entry point: MicroPython runs main.py at boot.

Reads bridge.json, starts the BLE central and the lock drivers, and serves hubd over the host
link until power is cut.
"""

import asyncio

import machine

import config
import log
import version
from bridge import Bridge
from hostlink import HostLink


def _drivers(cfg, central):
    from locks.reference import ReferenceLock

    drivers = {}
    for lk in cfg["locks"]:
        drivers[lk["id"]] = ReferenceLock(central, lk["id"], lk["addr_type"], lk["addr"],
                                          lk["secret"])
    return drivers


def _uart(link_cfg):
    kw = {"baudrate": link_cfg["baudrate"]}
    if link_cfg["tx"] is not None:
        kw["tx"] = link_cfg["tx"]
    if link_cfg["rx"] is not None:
        kw["rx"] = link_cfg["rx"]
    return machine.UART(link_cfg["uart"], **kw)


async def main():
    cfg = config.load()
    log.set_level(cfg["log"])
    from ble_central import Central

    drivers = _drivers(cfg, Central())
    app = None
    host = HostLink(_uart(cfg["link"]), version.VERSION, lambda msg: app.on_message(msg))
    app = Bridge(drivers, host.send)
    log.info("bridge firmware %s up with %d lock(s): %s"
             % (version.VERSION, len(drivers), ", ".join(drivers)))
    await host.run()


asyncio.run(main())

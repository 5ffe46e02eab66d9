"""A technician's request to the bridge: wipe its secrets (hubctl decommission).

Imported only when hubd forwards a `wipe` and dropped again afterwards by the bridge (bridge.py),
so its code costs no heap in the bridge's everyday work.

    wipe    -> bridge.json keeps no LTE section (the DC-09 key) and no lock list an older
               provisioning left, the Bluetooth proxy's bond keys are deleted (ble_bonds)
               -> `wiped` -> restart

Locks are paired and unpaired by hubd, through the proxy (docs/ble-proxy.md); their secrets are
hubd's, never the bridge's. `wiped`'s count is the locks an older bridge.json still listed.

bridge.json is rewritten to a temporary file and renamed over the old one (atomic on LittleFS),
so a power cut leaves the old or the new file, never half of one.
"""

import json
import os
import time

import asyncio
import machine

import log
from wire import messages

PATH = "bridge.json"  # config.PATH (config.py is not kept after boot)
_FLUSH_MS = 3000  # at most this long for the answer to leave before a restart


def _read():
    with open(PATH) as f:
        return json.load(f)


def _write(obj):
    tmp = PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    if hasattr(os, "sync"):
        os.sync()
    os.rename(tmp, PATH)


async def _restart(app):
    """Let the answer leave, then restart: startup.py builds the bridge from the new file."""
    deadline = time.ticks_add(time.ticks_ms(), _FLUSH_MS)
    while not app.link_idle() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(50)
    log.info("restarting to take the new configuration into use")
    machine.reset()


async def wipe(app):
    """Forget the LTE credentials and the bonds, answer `wiped`, restart."""
    try:
        obj = _read()
        locks = obj.pop("locks", None)
        n = len(locks) if isinstance(locks, list) else 0
        obj.pop("lte", None)
        _write(obj)
        import ble_bonds

        ble_bonds.remove()  # the Bluetooth proxy's bond keys (docs/ble-proxy.md, "Bonding")
    except (OSError, ValueError, AttributeError) as e:
        # No answer: hubd says the wipe was not confirmed (hubctl flash writes a clean file).
        # AttributeError: a bridge.json that is JSON but no object.
        log.error("wipe: cannot rewrite %s: %r" % (PATH, e))
        return
    log.info("wiped: the LTE credentials and the bonds forgotten")
    app.send(messages.make(messages.WIPED, n))
    await _restart(app)

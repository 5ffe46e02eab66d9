"""Pair, unpair and operate a reference lock through the real firmware; used by
tests/firmware/test_lock_pairing.py.

Usage: micropython lock_pairing_scenario.py SPEC.json (a file: this MicroPython build dies on a
command-line argument of 256 bytes or more) where the JSON is
{"addr": "hex12", "kind": str, "steps": [...], opts...}; a step is
["pair", secret hex, setup key hex], ["unpair", secret hex] or ["op", secret hex, action, id].
One driver per secret, kept across steps (so a step after a pairing reuses its driver). Like the
bridge, locks.pairing is imported for a step and dropped from sys.modules after it. Prints one
JSON line per step: what the firmware returned, plus for pair/unpair whether the driver is still
connected or busy and whether wire.lockpair stayed loaded ("codec_kept").
"""

import asyncio
import binascii
import json
import sys

from ble_central import Central
from locks.reference import ReferenceLock
from wire import lockproto


async def main(spec):
    central = Central()
    opts = {}
    for key in ("connect_timeout_ms", "deadline_ms", "result_timeout_ms", "settle_ms"):
        if key in spec:
            opts[key] = spec[key]
    drivers = {}

    def driver(secret):
        if secret not in drivers:
            drivers[secret] = ReferenceLock(
                central, "lock-1", spec.get("kind", "inside_turner"), 0,
                binascii.unhexlify(spec["addr"]), binascii.unhexlify(secret), **opts)
        return drivers[secret]

    for step in spec["steps"]:
        drv = driver(step[1])
        if step[0] == "op":
            out = await drv.operate(step[2], lockproto.command_tag(step[3]), lambda: None)
        else:
            import locks.pairing

            if step[0] == "pair":
                out = await locks.pairing.pair(drv, binascii.unhexlify(step[2]))
            else:
                out = await locks.pairing.unpair(drv)
            del sys.modules["locks.pairing"]
            out["connected"] = drv.connected
            out["busy"] = drv.busy
            out["codec_kept"] = "wire.lockpair" in sys.modules
        print(json.dumps(out))
    for drv in drivers.values():
        await drv.close()


with open(sys.argv[1]) as f:
    asyncio.run(main(json.load(f)))

"""Run reference-lock commands through the real firmware driver; used by tests/firmware/test_ble_lock.py.

Usage: micropython ble_lock_scenario.py '<json>' where json is
{"addr": "hex12", "secret": "hex64", "commands": [["unlock", "command-id"], ...], opts...}
and opts are ReferenceLock keyword arguments (plus "kind", default inside_turner). Prints one JSON line per command:
the outcome dict plus "written" (how many times on_written was called).
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
    lock = ReferenceLock(
        central,
        spec.get("lock_id", "lock-1"),
        spec.get("kind", "inside_turner"),
        0,
        binascii.unhexlify(spec["addr"]),
        binascii.unhexlify(spec["secret"]),
        **opts
    )
    for action, command_id in spec["commands"]:
        written = [0]

        def on_written():
            written[0] += 1

        out = await lock.operate(action, lockproto.command_tag(command_id), on_written)
        out["written"] = written[0]
        print(json.dumps(out))
    await lock.close()


asyncio.run(main(json.loads(sys.argv[1])))

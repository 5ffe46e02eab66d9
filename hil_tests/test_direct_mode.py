"""Direct mode: hubd drives the locks through the hub's own Bluetooth adapter, not the bridge's
proxy (hubd.toml ``[bluetooth] via = "adapter"``, docs/direct-mode.md). On the simulator the
adapter is a bleak backend on the same simulated air the bridge's firmware uses
(simulator/bleak_backend.py), so the locks, their motors and their radio rules are the same; the
bridge still runs (the alarm unit, LTE) but carries no lock traffic. The fixed rules hold as
through the proxy: signed, at most once, the state read back, manual turns reported. (The
scenarios marked harness.BOTH_WAYS run in direct mode too in every run: a lost unlatch's answer,
test_at_most_once; a manual turn, test_lock_reports; a dKey's pairing, test_dkey.)

The nurse's unlock here runs on the realistic air in every run (docs/ble-timing.md, "The suite"):
hubd's bleak path waits for the lock's advert and pays each GATT round trip as the bridge does.
"""

from __future__ import annotations

import pytest

from hil_tests.harness import HubUnderTest
from hubapi.client import BackendClient

DIRECT = pytest.mark.home(direct=True, air="realistic")


@DIRECT
async def test_the_nurses_unlock_goes_through_the_hubs_own_adapter_and_moves_the_lock_once(
        hub: HubUnderTest, backend: BackendClient) -> None:
    answers = await hub.command(backend, "unlock")
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    lock = hub.sim.home.locks[hub.locks[0]]
    assert hub.sim.call(lambda: (lock.state, lock.motor_moves)) == ("unlocked", 1)
    log = hub.log_text()
    assert "hubd drives the locks through SimClient adapter" in log, "not in direct mode"
    # Two centrals on the air: the bridge's stack and hubd's own adapter, which reached the lock;
    # no connect asked of the bridge's proxy crossed the serial line.
    assert hub.sim.call(lambda: hub.sim.home.radio.centrals) == 2
    assert hub.proxy_connects() == 0, "the lock went through the bridge's proxy"

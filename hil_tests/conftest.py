"""The hub under test: a real Mosquitto, hubd as its own process, and a bridge.

The bridge is the simulator by default (`--target=sim`: the real firmware in MicroPython, locks in
software) or a real ESP32 on a bench (`--target=/dev/ttyUSB0`, provisioned with the locks named by
`--bench-locks`). Scenarios talk only MQTT, as the cloud backend does, so the same assertions hold
for both; assertions about what a lock physically did need the simulator and skip loudly
without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from hil_tests.harness import (HUB_ID, HubUnderTest, start_hubd, stop_hubd, wait_online,
                               write_hubd_config)
from hubapi.client import BackendClient
from simulator.home import HomeThread, SimulatedHome
from tests.fixtures import BackendKey
from tests.mosquitto import Mosquitto


@pytest.fixture
def hub(request: pytest.FixtureRequest, mosquitto: Mosquitto, backend_key: BackendKey,
        tmp_path: Path) -> Iterator[HubUnderTest]:
    """A running hub: the target bridge, hubd on its port, online on a private Mosquitto."""
    target = request.config.getoption("--target")
    home: HomeThread | None = None
    if target == "sim":
        home = HomeThread(SimulatedHome(tmp_path / "home"))
        home.start()
        port, locks = home.home.port, list(home.home.locks)
    else:
        if not os.path.exists(target):
            pytest.fail(f"--target {target}: no such serial port; plug in the bench bridge "
                        f"or use --target=sim", pytrace=False)
        port = target
        locks = [x.strip() for x in request.config.getoption("--bench-locks").split(",")]
    config = tmp_path / "hubd.toml"
    write_hubd_config(config, mosquitto, port, backend_key, locks)
    log = tmp_path / "hubd.log"
    proc = start_hubd(config, log)
    try:
        wait_online(mosquitto, HUB_ID, proc, log)
        yield HubUnderTest(HUB_ID, locks, mosquitto, backend_key, proc, log, home, config)
    finally:
        stop_hubd(proc)
        if home is not None:
            home.stop()


@pytest_asyncio.fixture
async def backend(mosquitto: Mosquitto) -> AsyncIterator[BackendClient]:
    """The cloud backend's MQTT client."""
    async with BackendClient(mosquitto.host, mosquitto.port, client_id="hil-backend") as client:
        yield client



"""hubd's uplink policy (hubd/uplink.py), mode auto: broadband cut -> LTE after fallback_s,
broadband back -> a probe finds it and the connection returns; nothing is lost across either move.

Real parts: hubd's Bridge on a pty, HubMqtt (paho), a real SQLite store with the durable outbox
and its sender, a real Mosquitto; the home's broadband is the simulator's router
(simulator/router.py), cut with a reset and the bridge's end is tests/hubd/uplink_end.py, whose
modem reaches the broker whatever the broadband does.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hubapi import topics
from hubd.config import MqttConfig, UplinkConfig
from hubd.inputs import Inputs
from hubd.link.bridge import Bridge
from hubd.link.uplink import Channel, LteBytes
from hubd.mqtt import HubMqtt, Inbound, Route
from hubd.store.database import Store
from hubd.store.outbox import Outbox, OutboxSender
from hubd.uplink import Uplink
from simulator.router import RESET, Router
from tests.fixtures import LINK_KEY
from tests.hubd.uplink_end import UplinkEnd
from tests.waiting import until

HUB = "hub-auto"
AUDIT = topics.audit(HUB)
ANSWERS = topics.answers(HUB)
ALARMS = topics.alarms_raised(HUB)
COMMANDS = topics.commands(HUB)


class Backend:
    """A backend on the broker itself: reads the hub's audit entries and online, sends commands."""

    def __init__(self, host: str, port: int, passwords: dict[str, str] | None = None) -> None:
        self.audit: list[bytes] = []
        self.answers: list[bytes] = []
        self.alarms: list[dict[str, Any]] = []
        self.online: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="backend-auto")
        client.on_connect = lambda c, *a: c.subscribe([(AUDIT, 1), (ANSWERS, 1), (ALARMS, 1),
                                                            (topics.online(HUB), 1)])
        client.on_message = self._on_message
        if passwords and "backend-auto" in passwords:
            client.username_pw_set("backend-auto", passwords["backend-auto"])
        client.connect(host, port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            if msg.topic == AUDIT:
                self.audit.append(bytes(msg.payload))
            elif msg.topic == ANSWERS:
                self.answers.append(bytes(msg.payload))
            elif msg.topic == ALARMS:
                self.alarms.append(json.loads(msg.payload))
            else:
                self.online.append(json.loads(msg.payload))

    def path(self) -> str | None:
        with self._lock:
            last = self.online[-1] if self.online else None
        return last["uplink"] if last and last["status"] == "online" else None

    def command(self, payload: bytes) -> None:
        self.client.publish(COMMANDS, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
async def home(tmp_path, mosquitto):
    broadband = Router((mosquitto.host, mosquitto.port))  # the home's router: cut with a reset
    await broadband.start()
    end = UplinkEnd(routes={broadband.address: (mosquitto.host, mosquitto.port)})
    await end.start()
    backend = await asyncio.to_thread(Backend, mosquitto.host, mosquitto.port)
    store = Store.open(tmp_path / "state")
    bridge = await Bridge.open(end.port, LINK_KEY)
    assert await bridge.wait_up(10)
    mqtt_config = MqttConfig(host=broadband.address[0], port=broadband.address[1])
    channel = Channel(bridge, LteBytes(tmp_path / "state" / LteBytes.FILE))
    uplink = Uplink(UplinkConfig(mode="auto", fallback_s=2, probe_s=1), mqtt_config, channel, hub_id=HUB)
    mqtt = HubMqtt(mqtt_config, hub_id=HUB, client_id=f"hubd-{HUB}", uplink=uplink)
    commands: list[bytes] = []

    def command(message: Inbound) -> None:
        commands.append(message.payload)

    mqtt.route(Route(COMMANDS, "commands", command))
    outbox = Outbox(store)
    await mqtt.start()
    tasks = [asyncio.create_task(t) for t in (uplink.run(), mqtt.dispatch(Inputs()), OutboxSender(outbox, mqtt).run())]
    parts = dict(broadband=broadband, end=end, backend=backend, store=store, mqtt=mqtt, uplink=uplink,
                 outbox=outbox, commands=commands)
    try:
        yield type("Home", (), parts)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await mqtt.stop()
        await bridge.close()
        await end.close()
        await broadband.stop()
        await asyncio.to_thread(backend.close)
        store.close()


def answer(home: Any, n: int) -> None:
    """A command's answer, as hubd's pipeline publishes one (QoS 1, held by paho until PUBACK)."""
    home.mqtt.publish(ANSWERS, b"answer-%d" % n)


def audit_entry(home: Any, n: int) -> None:
    with home.store.transaction() as conn:
        home.outbox.add(conn, AUDIT, b'{"entry": %d}' % n)


async def test_auto_moves_to_lte_and_back_losing_nothing(home) -> None:
    await home.mqtt.wait_connected(20)
    await until(lambda: home.backend.path() == "broadband", "online to say broadband")
    assert home.end.opens == [], "no LTE while broadband works"

    # Broadband is cut: what hubd and the backend send meanwhile waits for the move to LTE.
    home.broadband.cut(RESET)
    await until(lambda: not home.mqtt.connected, "hubd to see the broadband connection end")
    for n in range(5):
        audit_entry(home, n)
        answer(home, n)
        await asyncio.to_thread(home.backend.command, b"cmd-%d" % n)
    await until(lambda: home.uplink.path == "lte", "the move to LTE after fallback_s", timeout=30)
    await until(lambda: home.mqtt.connected and home.backend.path() == "lte", "online over LTE", timeout=30)
    await until(lambda: len(home.outbox) == 0 and len(home.commands) == 5 and len(set(home.backend.answers)) == 5
                and len(set(home.backend.audit)) == 5, "what waited to go through", timeout=30)
    assert sorted(set(home.backend.audit)) == sorted(b'{"entry": %d}' % n for n in range(5))
    assert sorted(set(home.backend.answers)) == sorted(b"answer-%d" % n for n in range(5))
    assert home.commands == [b"cmd-%d" % n for n in range(5)]
    assert home.uplink.status().last_lte_login is not None

    # Broadband is back: a probe finds it, the LTE stream is closed and paho connects over
    # broadband; what is sent across the move arrives (at least once: QoS 1; a command's id and
    # an audit entry's seq make a second copy harmless).
    home.broadband.restore()
    for n in range(5, 10):
        audit_entry(home, n)
        answer(home, n)
        await asyncio.to_thread(home.backend.command, b"cmd-%d" % n)
    await until(lambda: home.uplink.path == "broadband", "the probe to find broadband", timeout=30)
    await until(lambda: home.mqtt.connected and home.backend.path() == "broadband", "online over broadband",
                timeout=30)
    for n in range(10, 13):
        audit_entry(home, n)
        answer(home, n)
        await asyncio.to_thread(home.backend.command, b"cmd-%d" % n)
    # The outbox empties at the broker's PUBACK; the backend hears the entry a moment later.
    await until(lambda: len(home.outbox) == 0 and len(set(home.commands)) == 13
                and len(set(home.backend.answers)) == 13 and len(set(home.backend.audit)) == 13,
                "everything through", timeout=30)
    assert sorted(set(home.backend.answers)) == sorted(b"answer-%d" % n for n in range(13))
    assert sorted(set(home.backend.audit)) == sorted(b'{"entry": %d}' % n for n in range(13))
    assert sorted(set(home.commands)) == sorted(b"cmd-%d" % n for n in range(13))
    assert not home.end.is_open, "the LTE stream was closed on the move back"
    assert home.end.closes >= 1

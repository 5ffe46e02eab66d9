"""hubd's LTE uplink channel (hubd/link/uplink.py) and its MQTT path (hubd/mqtt.py): a real Bridge
on a real pty, hubd's real HubMqtt (paho) with its real TLS, a real Mosquitto, and the bridge's
end played by tests/hubd/uplink_end.py (the wire's real pieces and a real TCP socket).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hubapi import topics
from hubapi.models import Online
from hubd.config import MqttConfig, UplinkConfig
from hubd.link.bridge import Bridge
from hubd.link.uplink import Channel, LteBytes, UplinkError
from hubd.mqtt import HubMqtt
from hubd.uplink import Uplink
from tests.fixtures import LINK_KEY
from tests.hubd.uplink_end import UplinkEnd
from tests.mosquitto import Mosquitto, TlsListener
from tests.tls import TestCA
from tests.waiting import until
from wire import messages
from wire import uplink as wire_uplink

HUB = "hub-lte"


class Hubd:
    """hubd's broker side over the uplink: Bridge, Channel, Uplink, HubMqtt."""

    def __init__(self, state_dir: Path, mqtt: MqttConfig, port: str, **uplink: Any) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.mqtt_config = mqtt
        self.port = port
        self.uplink_config = UplinkConfig(**{"mode": "lte", **uplink})

    async def start(self, connect: bool = True) -> None:
        self.bridge = await Bridge.open(self.port, LINK_KEY)
        assert await self.bridge.wait_up(10), "the link to the stand-in bridge end did not come up"
        self.channel = Channel(self.bridge, LteBytes(self.state_dir / LteBytes.FILE))
        self.uplink = Uplink(self.uplink_config, self.mqtt_config, self.channel, hub_id=HUB)
        self.mqtt = HubMqtt(self.mqtt_config, hub_id=HUB, client_id=f"hubd-{HUB}", uplink=self.uplink)
        await self.mqtt.start()
        if connect:
            await self.mqtt.wait_connected(30)

    async def stop(self) -> None:
        await self.mqtt.stop()
        self.channel.counter.save()
        await self.bridge.close()


def retained_online(host: str, port: int) -> Online:
    """The hub's retained ``online`` as a backend reads it (a plain client on the broker)."""
    got: list[bytes] = []
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="backend-reader")
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topics.online(HUB), qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        assert done.wait(10), "no retained online"
    finally:
        client.loop_stop()
        client.disconnect()
    return Online.model_validate_json(got[-1])


@pytest.fixture
async def end():
    end = UplinkEnd()
    await end.start()
    yield end
    await end.close()


async def test_mqtt_runs_through_the_lte_channel_and_online_says_so(tmp_path, mosquitto, end) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start()
    try:
        assert end.opens == [(mosquitto.host, mosquitto.port)], "paho's connection went through the bridge"
        assert hubd.mqtt.path == "lte"
        await hubd.mqtt.publish_acked("hubs/hub-lte/v1/probe", b"x" * 5000, timeout=20)
        online = await asyncio.to_thread(retained_online, mosquitto.host, mosquitto.port)
        assert online.status == "online" and online.uplink == "lte"
        status = hubd.uplink.status()
        assert status.path == "lte" and status.last_lte_login is not None and status.last_error is None
        # Every byte paho sent reached the broker and was counted; what came back was counted.
        assert status.lte_today.up == end.bytes_to_broker >= 5000
        assert status.lte_today.down == end.bytes_from_broker > 0
        # The keepalive over LTE is the uplink's, not mqtt.keepalive.
        assert hubd.mqtt._client._keepalive == hubd.uplink_config.lte_keepalive_s
    finally:
        await hubd.stop()
    # The day's count is kept across a restart.
    counted = hubd.channel.counter.today()
    assert counted[1] >= status.lte_today.up
    assert LteBytes(tmp_path / "state" / LteBytes.FILE).today() == counted


async def test_hubd_never_has_more_than_the_window_outstanding(tmp_path, mosquitto, end) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start()
    try:
        end.hold_acks = True  # the modem takes nothing more
        hubd.mqtt.publish("hubs/hub-lte/v1/bulk", b"y" * 20000)
        await until(lambda: end.max_outstanding >= wire_uplink.WINDOW - wire_uplink.MAX_CHUNK,
                    "hubd to fill its window")
        await asyncio.sleep(0.5)  # what hubd would send beyond it, if it did
        assert end.max_outstanding <= wire_uplink.WINDOW and end.violations == 0
        assert hubd.channel.max_unacked <= wire_uplink.WINDOW
        # The modem takes what it held: acknowledged, the rest goes.
        end.hold_acks = False
        held, end._outstanding = end._outstanding, 0
        end.engine.send(messages.make(messages.UPLINK_ACK, held))
        await hubd.mqtt.publish_acked("hubs/hub-lte/v1/after", b"z", timeout=20)
        assert end.violations == 0
    finally:
        await hubd.stop()


async def test_a_refused_open_is_a_typed_error_and_paho_tries_again(tmp_path, mosquitto, end) -> None:
    end.refuse = "not_registered"
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start(connect=False)
    try:
        await until(lambda: len(end.opens) >= 2, "paho to try the uplink again after a refusal")
        assert not hubd.mqtt.connected
        assert hubd.uplink.status().last_error == "not_registered"
        with pytest.raises(UplinkError) as refused:
            await hubd.channel.open(mosquitto.host, mosquitto.port, 10)
        assert refused.value.why == "not_registered"
        end.refuse = None  # coverage is back
        await hubd.mqtt.wait_connected(30)
    finally:
        await hubd.stop()


async def test_the_network_dropping_the_socket_makes_paho_reconnect(tmp_path, mosquitto, end) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start()
    try:
        end.drop("network")
        await until(lambda: not hubd.mqtt.connected, "paho to see the end of its connection")
        await until(lambda: len(end.opens) >= 2 and hubd.mqtt.connected, "a new connection over LTE")
        assert hubd.uplink.status().last_error == "network"
        await hubd.mqtt.publish_acked("hubs/hub-lte/v1/after", b"z", timeout=20)
    finally:
        await hubd.stop()


async def test_tls_through_lte_checks_the_brokers_certificate_against_its_name(tmp_path, mosquitto_factory,
                                                                              end) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue_server("broker", hosts=("localhost",))
    broker = mosquitto_factory(tls=TlsListener(ca.ca_file, server.cert, server.key, require_certificate=False,
                                               use_identity_as_username=False))
    config = MqttConfig(host="localhost", port=broker.tls_port, tls=True, ca_file=ca.ca_file)
    hubd = Hubd(tmp_path / "state", config, end.port)
    await hubd.start()
    try:
        assert end.opens[0] == ("localhost", broker.tls_port)
        await hubd.mqtt.publish_acked("hubs/hub-lte/v1/tls", b"t", timeout=20)
        assert hubd.mqtt.path == "lte"
    finally:
        await hubd.stop()


async def test_tls_through_lte_refuses_a_certificate_for_another_name(tmp_path, mosquitto_factory, end) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue_server("elsewhere", hosts=("broker.elsewhere.example",))  # signed by the right CA
    broker = mosquitto_factory(tls=TlsListener(ca.ca_file, server.cert, server.key, require_certificate=False,
                                               use_identity_as_username=False))
    end.routes = {("broker.example", broker.tls_port): ("127.0.0.1", broker.tls_port)}
    config = MqttConfig(host="broker.example", port=broker.tls_port, tls=True, ca_file=ca.ca_file)
    hubd = Hubd(tmp_path / "state", config, end.port)
    await hubd.start(connect=False)
    try:
        # The TLS handshake ran through the bridge (bytes went both ways) and failed on the name.
        await until(lambda: len(end.opens) >= 2 and end.bytes_from_broker > 0,
                    "two handshakes through the bridge")
        assert not hubd.mqtt.connected
    finally:
        await hubd.stop()


async def test_probe_lte_on_broadband_logs_in_through_a_channel_of_its_own(tmp_path, mosquitto, end) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port,
                mode="broadband")
    await hubd.start()
    try:
        assert hubd.mqtt.path == "broadband" and end.opens == []
        probe = await hubd.uplink.probe_lte(timeout=30)
        assert probe.ok and probe.how == "probe" and probe.error is None, probe
        assert end.opens == [(mosquitto.host, mosquitto.port)]
        await until(lambda: not end.is_open, "the probe's channel to be closed")
        assert hubd.mqtt.connected and hubd.mqtt.path == "broadband", "the hub's own session stayed"
        assert hubd.uplink.status().last_lte_login is not None
        # No modem: a failed probe says why.
        end.refuse = "no_modem"
        refused = await hubd.uplink.probe_lte(timeout=30)
        assert not refused.ok and "no_modem" in (refused.error or ""), refused
    finally:
        await hubd.stop()


async def test_probe_lte_on_lte_is_the_live_session(tmp_path, mosquitto, end) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start()
    try:
        probe = await hubd.uplink.probe_lte()
        assert probe.ok and probe.how == "live"
        assert end.opens == [(mosquitto.host, mosquitto.port)], "no second stream that would end the session"
    finally:
        await hubd.stop()


async def test_the_health_snapshot_has_the_uplink_section(tmp_path, mosquitto, end) -> None:
    from hubd.devices.health import Health
    from tests.hubd.test_fuzz_hubd import _Published, _Stub

    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start()
    try:
        stub = _Stub()
        health = Health(HUB, stub, stub, stub, stub, _Published(), uplink=hubd.uplink)
        await hubd.mqtt.publish_acked("hubs/hub-lte/v1/probe", b"p", timeout=20)
        section = health.snapshot().uplink
        assert section is not None
        assert (section.mode, section.path, section.last_error) == ("lte", "lte", None)
        assert section.lte_today.up > 0 and section.lte_today.down > 0
        assert section.last_lte_login is not None
    finally:
        await hubd.stop()


async def test_hubd_stops_at_once_while_an_open_waits_for_a_modem_that_hangs(tmp_path, mosquitto, end,
                                                                            monkeypatch) -> None:
    import hubd.uplink

    monkeypatch.setattr(hubd.uplink, "OPEN_TIMEOUT_S", 3600.0)  # only the stop can end the wait
    end.mute = True
    hubd_ = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd_.start(connect=False)
    await until(lambda: len(end.opens) == 1, "paho's connect to wait in an open")
    async with asyncio.timeout(60):  # without stop_opening it waits the hour
        await hubd_.stop()
    assert hubd_.channel.last_error == "hubd"

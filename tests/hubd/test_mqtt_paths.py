"""hubd's MQTT connection takes the path the uplink policy gives it (hubd/mqtt.py): paho's own
TCP connection over broadband, the LTE channel's socket over LTE, and never the other one."""

from __future__ import annotations

import asyncio
import inspect

import paho.mqtt.client as paho

from hubd.config import MqttConfig
from hubd.mqtt import HubMqtt, _Client
from tests.hubd.test_uplink_channel import HUB, Hubd, end, retained_online  # noqa: F401 (fixture)
from tests.waiting import until


def test_paho_still_makes_its_connection_where_hubd_hands_it_the_lte_socket() -> None:
    # hubd's LTE path overrides paho's Client._create_socket_connection (paho 2.x, pinned <3)
    # and sets _keepalive before paho writes its CONNECT. A paho release that moves either
    # fails here, before a home on LTE finds out.
    assert "_create_socket_connection" in vars(paho.Client)
    assert "_create_socket_connection" in vars(_Client)
    create = inspect.getsource(paho.Client._create_socket)
    assert "self._create_socket_connection()" in create and "_ssl_wrap_socket(sock)" in create, \
        "paho no longer wraps what _create_socket_connection returns in its TLS"
    reconnect = inspect.getsource(paho.Client.reconnect)
    assert reconnect.index("self._create_socket()") < reconnect.index("self._send_connect(self._keepalive)")


async def test_without_an_uplink_online_says_broadband(mosquitto) -> None:
    mqtt = HubMqtt(MqttConfig(host=mosquitto.host, port=mosquitto.port), hub_id=HUB, client_id=f"hubd-{HUB}")
    await mqtt.start()
    try:
        await mqtt.wait_connected(20)
        assert mqtt.path == "broadband"
        online = await asyncio.to_thread(retained_online, mosquitto.host, mosquitto.port)
        assert online.status == "online" and online.uplink == "broadband"
    finally:
        await mqtt.stop()


async def test_mode_lte_never_falls_back_to_broadband(tmp_path, mosquitto, end) -> None:  # noqa: F811
    end.refuse = "pdp_failed"  # the broker is reachable over the home's network all along
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    await hubd.start(connect=False)
    try:
        await until(lambda: len(end.opens) >= 3, "three tries over LTE")
        assert not hubd.mqtt.connected, "mode lte connected some other way"
        assert hubd.uplink.status().last_error == "pdp_failed"
    finally:
        await hubd.stop()


async def test_a_bug_in_opening_the_uplink_does_not_end_pahos_thread(tmp_path, mosquitto, end,  # noqa: F811
                                                                     monkeypatch) -> None:
    hubd = Hubd(tmp_path / "state", MqttConfig(host=mosquitto.host, port=mosquitto.port), end.port)
    calls: list[int] = []
    from hubd.link.uplink import Channel

    real_open = Channel.open

    async def buggy_once(self, host, port, timeout):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return await real_open(self, host, port, timeout)

    monkeypatch.setattr(Channel, "open", buggy_once)
    await hubd.start(connect=False)
    try:
        await hubd.mqtt.wait_connected(30)  # paho tried again after the bug and got through
        assert len(calls) >= 2 and hubd.uplink.status().last_lte_login is not None
    finally:
        await hubd.stop()

"""hubd's MQTT connection takes the path the uplink policy gives it (hubd/mqtt.py): paho's own
TCP connection over broadband, the LTE channel's socket over LTE, and never the other one."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading

import paho.mqtt.client as paho
import pytest

from hubd.config import MqttConfig, UplinkConfig
from hubd.uplink import Uplink
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


async def test_auto_waits_for_doctors_probe_before_moving_to_lte(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe holds the channel and closes it when done: a move to LTE meanwhile would have its
    # fresh session ended by that close (paho connecting once more). The move waits.
    class Channel:  # what the policy asks of hubd.link.uplink.Channel here
        def __init__(self) -> None:
            self.closed_on: list[str] = []

        def close(self) -> None:
            self.closed_on.append(uplink.path)

    class Offline:
        connected = False

    login_may_end = threading.Event()
    monkeypatch.setattr(Uplink, "_login", lambda self, timeout: login_may_end.wait(10) and None)
    channel = Channel()
    uplink = Uplink(UplinkConfig(mode="auto", fallback_s=0.2, probe_s=60),
                    MqttConfig(host="127.0.0.1", port=1), channel, hub_id="hub")  # type: ignore[arg-type]
    uplink.bind(Offline())
    policy = asyncio.create_task(uplink.run())
    probe = asyncio.create_task(uplink.probe_lte(5))
    try:
        await asyncio.sleep(0.6)  # three fallback times without a broker, the probe under way
        assert uplink.path == "broadband", "moved to LTE while the probe held the channel"
        login_may_end.set()
        assert (await probe).ok
        assert channel.closed_on == ["broadband"]
        await until(lambda: uplink.path == "lte", "the move once the probe ended", timeout=10)
    finally:
        login_may_end.set()
        policy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await policy

"""hubd's uplink through the simulated home: the real firmware in MicroPython (firmware/uplink.py)
on the simulated bridge, its BG95 model (simulator/modem.py) on the LTE network model, the home's
broadband router (simulator/router.py), a real Mosquitto, and hubd's real Bridge, Channel, Uplink
and HubMqtt (paho with its TLS-less MQTT 5 here: the TLS path is tests/hubd/test_uplink_channel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hubd.alarms.delivery import Alarms
from hubd.config import AlarmsConfig, MqttConfig, UplinkConfig
from hubd.inputs import Inputs
from hubd.link.bridge import Bridge
from hubd.link.uplink import Channel, LteBytes
from hubd.mqtt import HubMqtt, Inbound, Route
from hubd.store.database import Store
from hubd.store.outbox import Outbox, OutboxSender
from hubd.uplink import Uplink
from simulator import lte_network
from simulator.alarm_unit import AlarmUnit
from simulator.home import SimulatedHome
from simulator.router import RESET
from tests.mosquitto import TlsListener
from tests.tls import TestCA
from tests.hubd.test_uplink_policy import AUDIT, COMMANDS, HUB, Backend
from tests.sia_receiver import ACCOUNT, Receiver
from tests.waiting import until
from wire import messages


@contextlib.asynccontextmanager
async def hubd_in_a_home(tmp_path: Path, mosquitto: Any, mode: str, broadband: bool,
                         tls: tuple[int, Path] | None = None, **mqtt: Any) -> AsyncIterator[Any]:
    """hubd's broker side in a simulated home; ``tls``: (the broker's TLS port, the CA file),
    hubd then speaks MQTT over TLS to "localhost" (the certificate's name); ``mqtt``: more of
    hubd's MqttConfig (username, password)."""
    receiver = Receiver()
    await receiver.start()
    lte = {"apn": "internet.m2m", "host": "127.0.0.1", "port": receiver.port, "account": ACCOUNT,
           "receiver": "1", "retry_ms": 500}
    # The bridge makes its modem for the second path of an alarm unit's alarms: a home with one.
    broker = (mosquitto.host, mosquitto.port) if tls is None else ("localhost", tls[0])
    home = SimulatedHome(tmp_path / "home", lte=lte, broker=broker,
                         broadband=broadband, alarm_unit=AlarmUnit(heartbeat_s=0.5),
                         alarm_timings={"heartbeat_ms": 500})
    assert home.modem is not None
    home.modem.network.conditions = lte_network.fast()
    await home.start()
    store = Store.open(tmp_path / "state")
    backend = await asyncio.to_thread(Backend, mosquitto.host, mosquitto.port, mosquitto.passwords)
    bridge = await Bridge.open(home.port, home.link_key)
    host, port = home.broker_address
    mqtt_config = MqttConfig(host=host, port=port, **mqtt) if tls is None else \
        MqttConfig(host=host, port=port, tls=True, ca_file=tls[1], **mqtt)
    channel = Channel(bridge, LteBytes(tmp_path / "state" / LteBytes.FILE))
    uplink = Uplink(UplinkConfig(mode=mode, fallback_s=2, probe_s=1), mqtt_config, channel, hub_id=HUB)
    mqtt = HubMqtt(mqtt_config, hub_id=HUB, client_id=f"hubd-{HUB}", uplink=uplink)
    commands: list[bytes] = []

    def command(message: Inbound) -> None:
        commands.append(message.payload)

    mqtt.route(Route(COMMANDS, "commands", command))
    # The alarm path as hubd/__main__.py wires it: alarms from the bridge, stored, delivered.
    alarms = Alarms(store, HUB, AlarmsConfig(resend_s=1), bridge, mqtt)
    mqtt.route(alarms.route())
    bridge.on_message(messages.ALARM, alarms.received)
    bridge.on_link_change(alarms.link_changed)
    outbox = Outbox(store)
    tasks: list[asyncio.Task[Any]] = []
    try:
        assert await bridge.wait_up(60), home.bridge.log[-20:]
        await mqtt.start()
        tasks = [asyncio.create_task(t) for t in (uplink.run(), mqtt.dispatch(Inputs()),
                                                  OutboxSender(outbox, mqtt).run(), alarms.deliver())]
        yield type("Rig", (), dict(home=home, backend=backend, store=store, mqtt=mqtt, uplink=uplink,
                                   outbox=outbox, commands=commands, channel=channel))
    finally:
        alarms.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await mqtt.stop()
        await asyncio.sleep(0.2)  # hubd.link.serial_port's close must not race a message (3.11)
        await bridge.close()
        await home.stop()
        await receiver.stop()
        await asyncio.to_thread(backend.close)
        store.close()


def audit_entry(rig: Any, n: int) -> None:
    with rig.store.transaction() as conn:
        rig.outbox.add(conn, AUDIT, b'{"entry": %d}' % n)


async def test_a_home_without_broadband_reaches_the_broker_through_the_bridges_modem(tmp_path, mosquitto) -> None:
    async with hubd_in_a_home(tmp_path, mosquitto, "lte", broadband=False) as rig:
        await rig.mqtt.wait_connected(60)
        await until(lambda: rig.backend.path() == "lte", "online to say lte", timeout=30)
        assert any(c.startswith('AT+QIOPEN=1,1,"TCP"') for c in rig.home.modem.commands)
        for n in range(3):
            audit_entry(rig, n)
            await asyncio.to_thread(rig.backend.command, b"cmd-%d" % n)
        await until(lambda: len(rig.outbox) == 0 and len(rig.commands) == 3, "both ways over LTE", timeout=60)
        assert sorted(rig.backend.audit) == sorted(b'{"entry": %d}' % n for n in range(3))
        assert rig.commands == [b"cmd-%d" % n for n in range(3)]
        day, up, down = rig.channel.counter.today()
        assert up > 0 and down > 0
        assert rig.home.bridge.resets == 0


async def test_auto_fails_over_to_the_modem_and_back_in_the_home(tmp_path, mosquitto) -> None:
    async with hubd_in_a_home(tmp_path, mosquitto, "auto", broadband=True) as rig:
        await rig.mqtt.wait_connected(60)
        await until(lambda: rig.backend.path() == "broadband", "online to say broadband", timeout=30)
        rig.home.router.cut(RESET)
        await until(lambda: not rig.mqtt.connected, "hubd to lose its broadband session")
        for n in range(3):
            audit_entry(rig, n)
            await asyncio.to_thread(rig.backend.command, b"cmd-%d" % n)
        pressed = rig.home.alarm_unit.press()  # an alarm while hubd has no broker
        alarm_id = rig.home.alarm_unit.alarm_id(pressed)
        await until(lambda: rig.backend.path() == "lte", "the move to LTE", timeout=60)
        await until(lambda: len(rig.outbox) == 0 and len(rig.commands) >= 3, "what waited, over LTE", timeout=60)
        await until(lambda: any(a["id"] == alarm_id for a in rig.backend.alarms), "the alarm, over LTE",
                    timeout=60)
        rig.home.router.restore()
        await until(lambda: rig.uplink.path == "broadband" and rig.backend.path() == "broadband",
                    "the move back", timeout=60)
        for n in range(3, 6):
            audit_entry(rig, n)
            await asyncio.to_thread(rig.backend.command, b"cmd-%d" % n)
        await until(lambda: len(rig.outbox) == 0 and len(set(rig.commands)) == 6, "everything", timeout=60)
        assert sorted(set(rig.backend.audit)) == sorted(b'{"entry": %d}' % n for n in range(6))
        assert any(c == "AT+QICLOSE=1" for c in rig.home.modem.commands), "the LTE socket closed on the move back"
        assert rig.home.bridge.resets == 0


async def test_over_lte_the_modem_carries_only_ciphertext(tmp_path, mosquitto_factory) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue_server("broker", hosts=("localhost",))
    broker = mosquitto_factory(tls=TlsListener(ca.ca_file, server.cert, server.key, require_certificate=False,
                                               use_identity_as_username=False))
    async with hubd_in_a_home(tmp_path, broker, "lte", broadband=False, tls=(broker.tls_port, ca.ca_file)) as rig:
        await rig.mqtt.wait_connected(60)
        assert rig.home.broker_address[0] == "localhost"  # the name the certificate was checked against
        for n in range(3):
            audit_entry(rig, n)
        await until(lambda: len(rig.outbox) == 0 and len(rig.backend.audit) == 3, "audit over TLS over LTE",
                    timeout=60)
        carried = b"".join(rig.home.modem.sent)
        assert len(carried) > 1000, "the session's bytes went through the modem"
        for plaintext in (AUDIT.encode(), b'{"entry": 1}', f"hubd-{HUB}".encode(), COMMANDS.encode()):
            assert plaintext not in carried, f"the modem saw {plaintext!r} in clear"


async def test_a_login_the_broker_refuses_over_lte_is_said_as_the_brokers(tmp_path, mosquitto_factory) -> None:
    broker = mosquitto_factory(passwords={"backend-auto": "b", HUB: "right"})
    async with hubd_in_a_home(tmp_path, broker, "lte", broadband=False, username=HUB, password="wrong") as rig:
        # The broker's CONNACK (refused) reaches paho before the bridge says the peer closed.
        await until(lambda: rig.uplink.status().last_error == "broker", "the broker's refusal", timeout=60)
        assert not rig.mqtt.connected and rig.uplink.status().last_lte_login is None

"""Broker security with a real Mosquitto: per-hub users, the generated topic ACL, TLS client certificates.

The broker runs the ACL that ``hubapi.schema.acl()`` generates (the one docs/broker-setup.md shows)
with two listeners: passwords on the plain one, client certificates from a test CA on the TLS one
(``use_identity_as_username``: the certificate's CN is the username the ACL sees).

"Never delivered" is shown without waiting for a quiet period: Mosquitto handles packets one at a
time and delivers to a subscriber in the order it handled them, so when a permitted marker
published *after* the forbidden message (whose PUBACK came back first) arrives as the first
message, the forbidden one was not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hubapi import schema, topics
from hubapi.client import BackendClient, Message
from hubapi.models import Answer, LockState, Online, Status
from hubd.config import MqttConfig
from hubd import inputs
from hubd.mqtt import HubMqtt, Inbound, Route
from tests.mosquitto import Mosquitto, TlsListener
from tests.tls import TestCA

TIMEOUT = 10.0
HUB_A, HUB_B = "hub-a", "hub-b"
PASSWORDS = {HUB_A: "pw-a", HUB_B: "pw-b", schema.BACKEND: "pw-backend", schema.ALARM_CENTRE: "pw-alarm"}


@dataclass
class SecuredBroker:
    """The broker plus what a client needs to log in as someone, by password or by certificate."""

    broker: Mosquitto
    ca: TestCA
    transport: str  # "password" or "certificate"

    def client(self, user: str, protocol: str = "5") -> BackendClient:
        if self.transport == "password":
            return BackendClient(self.broker.host, self.broker.port, username=user, password=PASSWORDS[user],
                                 protocol=protocol)  # type: ignore[arg-type]
        assert self.broker.tls_port is not None
        return BackendClient(self.broker.host, self.broker.tls_port, protocol=protocol,  # type: ignore[arg-type]
                             tls=self.ca.client_context(self.ca.issue_client(user)))

    @contextlib.asynccontextmanager
    async def connected(self, user: str, protocol: str = "5") -> AsyncIterator[BackendClient]:
        async with self.client(user, protocol) as client:
            yield client


def start_secured_broker(mosquitto_factory, ca: TestCA) -> Mosquitto:
    server = ca.issue_server()
    return mosquitto_factory(passwords=PASSWORDS, acl=schema.acl(),
                             tls=TlsListener(ca.ca_file, server.cert, server.key))


@pytest.fixture(params=["password", "certificate"])
def secured(request, mosquitto_factory, test_ca) -> SecuredBroker:
    return SecuredBroker(start_secured_broker(mosquitto_factory, test_ca), test_ca, request.param)


async def next_message(queue: asyncio.Queue[Message]) -> Message:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


def state(lock: str, value: str) -> bytes:
    return LockState(lock=lock, state=value, source="poll", at=1.0).model_dump_json().encode()


# --- another hub's credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_another_hubs_publish_to_this_hubs_state_is_refused_and_never_delivered(secured, protocol):
    async with (secured.connected(HUB_A) as hub_a, secured.connected(HUB_B, protocol) as intruder,
                secured.connected(schema.BACKEND) as backend,
                backend.watch(topics.lock_states(HUB_A)) as seen):
        forged = topics.lock_state(HUB_A, "front")
        if protocol == "5":
            with pytest.raises(PermissionError, match="Not authorized"):
                await intruder.publish(forged, state("front", "unlocked"))
        else:  # MQTT 3.1.1 has no way to say no: the PUBACK looks like success, the message is dropped
            await intruder.publish(forged, state("front", "unlocked"))
        await hub_a.publish(topics.lock_state(HUB_A, "marker"), state("marker", "locked"))
        first = await next_message(seen)
    assert first.topic == topics.lock_state(HUB_A, "marker")


async def test_another_hub_cannot_overwrite_this_hubs_retained_state(secured):
    topic = topics.lock_state(HUB_A, "front")
    async with secured.connected(HUB_A) as hub_a, secured.connected(HUB_B) as intruder:
        await hub_a.publish(topic, state("front", "locked"), retain=True)
        with pytest.raises(PermissionError):
            await intruder.publish(topic, state("front", "unlocked"), retain=True)
        with pytest.raises(PermissionError):
            await intruder.publish(topic, b"", retain=True)  # nor delete it
    async with secured.connected(schema.BACKEND) as late, late.watch(topic) as seen:
        retained = await next_message(seen)
    assert retained.retain and LockState.model_validate_json(retained.payload).state == "locked"


async def test_nobody_but_the_hub_writes_its_audit_trail_and_only_the_backend_asks_for_it(secured):
    async with (secured.connected(HUB_A) as hub_a, hub_a.watch(topics.audit_request(HUB_A)) as requests,
                secured.connected(HUB_B) as intruder, secured.connected(schema.BACKEND) as backend,
                backend.watch(topics.audit(HUB_A)) as trail):
        for forger in (intruder, backend):
            with pytest.raises(PermissionError):
                await forger.publish(topics.audit(HUB_A), b'{"seq": 1}')
        with pytest.raises(PermissionError):
            await intruder.publish(topics.audit_request(HUB_A), b'{"from_seq": 1, "to_seq": 100}')
        await hub_a.publish(topics.audit(HUB_A), b'{"seq": 7}')
        assert (await next_message(trail)).payload == b'{"seq": 7}'
        await backend.publish(topics.audit_request(HUB_A), b'{"from_seq": 1, "to_seq": 2}')
        assert (await next_message(requests)).payload == b'{"from_seq": 1, "to_seq": 2}'


async def test_a_hub_cannot_command_another_hub_or_itself(secured):
    async with (secured.connected(HUB_A) as hub_a, secured.connected(HUB_B) as hub_b,
                hub_a.watch(topics.commands(HUB_A)) as commands_a,
                hub_b.watch(topics.commands(HUB_B)) as commands_b,
                secured.connected(schema.BACKEND) as backend):
        with pytest.raises(PermissionError):
            await hub_b.publish(topics.commands(HUB_A), b"forged.command.token")
        with pytest.raises(PermissionError):
            await hub_a.publish(topics.commands(HUB_A), b"self.issued.token")
        with pytest.raises(PermissionError):
            await hub_b.publish(topics.commands(HUB_B), b"self.issued.token")
        await backend.publish(topics.commands(HUB_A), b"marker.for.a")
        await backend.publish(topics.commands(HUB_B), b"marker.for.b")
        assert (await next_message(commands_a)).payload == b"marker.for.a"
        assert (await next_message(commands_b)).payload == b"marker.for.b"


async def test_another_hubs_subscription_is_granted_but_receives_nothing(secured):
    # Mosquitto answers SUBACK "granted" even for a filter the ACL forbids; it filters on delivery.
    async with (secured.connected(HUB_A) as hub_a, secured.connected(HUB_B) as intruder,
                secured.connected(schema.BACKEND) as backend,
                intruder.watch("hubs/#") as everything_b_can_see):
        await hub_a.publish(topics.online(HUB_A), Online(hub=HUB_A, status="online", at=1.0).model_dump_json(),
                            retain=True)
        await hub_a.publish(topics.answers(HUB_A), Answer(id="c1", status=Status.ACCEPTED, at=1.0).model_dump_json())
        await hub_a.publish(topics.lock_state(HUB_A, "front"), state("front", "locked"))
        await backend.publish(topics.commands(HUB_A), b"for.hub.a")
        await backend.publish(topics.commands(HUB_B), b"marker.for.b")
        first = await next_message(everything_b_can_see)
    assert (first.topic, first.payload) == (topics.commands(HUB_B), b"marker.for.b")


async def test_a_hub_cannot_read_its_own_answers_or_state_back(secured):
    # Hubs only write what they publish: a compromised hub learns nothing from the other direction.
    async with (secured.connected(HUB_A) as hub_a, hub_a.watch(f"{topics.root(HUB_A)}/#") as own_tree,
                secured.connected(schema.BACKEND) as backend):
        await hub_a.publish(topics.answers(HUB_A), Answer(id="c1", status=Status.ACCEPTED, at=1.0).model_dump_json())
        await backend.publish(topics.commands(HUB_A), b"marker")
        first = await next_message(own_tree)
    assert (first.topic, first.payload) == (topics.commands(HUB_A), b"marker")


# --- the service users -----------------------------------------------------------------------------


async def test_backend_commands_any_hub_and_reads_every_hubs_answers_state_and_presence(secured):
    async with (secured.connected(HUB_A) as hub_a, secured.connected(HUB_B) as hub_b,
                hub_a.watch(topics.commands(HUB_A)) as commands_a, hub_b.watch(topics.commands(HUB_B)) as commands_b,
                secured.connected(schema.BACKEND) as backend,
                backend.watch("hubs/+/v1/answers/#") as answers, backend.watch("hubs/+/v1/locks/+/state") as states,
                backend.watch("hubs/+/v1/online") as presence):
        await backend.publish(topics.commands(HUB_A), b"a")
        await backend.publish(topics.commands(HUB_B), b"b")
        assert (await next_message(commands_a)).payload == b"a" and (await next_message(commands_b)).payload == b"b"
        await hub_b.publish(topics.answers(HUB_B) + "/backend-7", Answer(id="c", status=Status.ACCEPTED, at=1.0).model_dump_json())
        await hub_a.publish(topics.lock_state(HUB_A, "front"), state("front", "locked"))
        await hub_b.publish(topics.online(HUB_B), Online(hub=HUB_B, status="online", at=1.0).model_dump_json())
        assert (await next_message(answers)).topic == topics.answers(HUB_B) + "/backend-7"
        assert (await next_message(states)).topic == topics.lock_state(HUB_A, "front")
        assert (await next_message(presence)).topic == topics.online(HUB_B)


async def test_backend_cannot_forge_a_hubs_answers_state_or_presence(secured):
    async with secured.connected(schema.BACKEND) as backend:
        for topic in (topics.answers(HUB_A), topics.lock_state(HUB_A, "front"), topics.online(HUB_A)):
            with pytest.raises(PermissionError):
                await backend.publish(topic, b"{}")


async def test_alarm_centre_reads_alarms_and_confirms_them_but_cannot_command(secured):
    raised = f"{topics.root(HUB_A)}/alarms/raised"
    confirmed = f"{topics.root(HUB_A)}/alarms/confirmed"
    async with (secured.connected(HUB_A) as hub_a, hub_a.watch(confirmed) as confirmations,
                secured.connected(schema.ALARM_CENTRE) as centre, centre.watch("hubs/+/v1/alarms/#") as alarms):
        await hub_a.publish(raised, b'{"alarm": "a-1"}')
        assert (await next_message(alarms)).topic == raised
        await centre.publish(confirmed, b'{"alarm": "a-1"}')
        assert (await next_message(confirmations)).payload == b'{"alarm": "a-1"}'
        with pytest.raises(PermissionError):
            await centre.publish(topics.commands(HUB_A), b"not.from.the.backend")
        with pytest.raises(PermissionError):
            await hub_a.publish(confirmed, b'{"alarm": "a-1"}')  # a hub cannot confirm its own alarm
        with pytest.raises(PermissionError):
            await centre.publish(raised, b'{"alarm": "forged"}')


async def test_unknown_users_and_wrong_passwords_are_refused(mosquitto_factory, test_ca):
    broker = start_secured_broker(mosquitto_factory, test_ca)
    for username, password in ((HUB_A, "wrong"), ("hub-unknown", "pw-a"), (None, None)):
        client = BackendClient(broker.host, broker.port, username=username, password=password)
        try:
            with pytest.raises(TimeoutError):
                await client.connect(timeout=2)
        finally:
            await client.close()
    assert "not authorised" in broker.logs()


# --- TLS with client certificates ------------------------------------------------------------------


def raw_mqtt_connect(port: int, context: ssl.SSLContext) -> bytes:
    """TLS handshake, an MQTT 3.1.1 CONNECT, and whatever comes back ('' if the broker hung up)."""
    client_id = b"raw-probe"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(bytes([0x10, len(variable)]) + variable)
            return tls.recv(4)


def test_tls_listener_accepts_only_certificates_from_its_ca(mosquitto_factory, test_ca, tmp_path):
    broker = start_secured_broker(mosquitto_factory, test_ca)
    good = test_ca.client_context(test_ca.issue_client(HUB_A))
    assert raw_mqtt_connect(broker.tls_port, good) == b"\x20\x02\x00\x00"  # CONNACK, accepted

    foreign_ca = TestCA(tmp_path / "foreign", "foreign CA")
    foreign = ssl.create_default_context(cafile=str(test_ca.ca_file))  # trusts the broker...
    cert = foreign_ca.issue_client(HUB_A)  # ...but presents a certificate another CA signed
    foreign.load_cert_chain(str(cert.cert), str(cert.key))
    for context in (test_ca.client_context(None), foreign):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            if raw_mqtt_connect(broker.tls_port, context) == b"":
                raise ConnectionResetError("broker closed the connection")
    # The broker logs each refusal when it has dropped the connection, a moment after the client
    # saw it go: wait for the second refusal's line.
    deadline = time.monotonic() + TIMEOUT
    while "certificate verify failed" not in broker.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = broker.logs()
    assert "peer did not return a certificate" in logs or "certificate required" in logs, logs
    assert "certificate verify failed" in logs, logs


def test_client_refuses_a_broker_certificate_from_another_ca(mosquitto_factory, test_ca, tmp_path):
    broker = start_secured_broker(mosquitto_factory, test_ca)
    other = TestCA(tmp_path / "other", "other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_mqtt_connect(broker.tls_port, other.client_context(other.issue_client(HUB_A)))


async def test_hubd_connects_with_its_client_certificate_and_its_identity_maps_to_the_acl(
        mosquitto_factory, test_ca):
    broker = start_secured_broker(mosquitto_factory, test_ca)
    hub_cert = test_ca.issue_client(HUB_A)
    config = MqttConfig(host=broker.host, port=broker.tls_port, tls=True, ca_file=test_ca.ca_file,
                        cert_file=hub_cert.cert, key_file=hub_cert.key)
    backend_tls = test_ca.client_context(test_ca.issue_client(schema.BACKEND))
    async with (BackendClient(broker.host, broker.tls_port, tls=backend_tls) as backend,
                backend.watch(topics.online(HUB_A)) as presence, backend.watch(topics.answers(HUB_A)) as answers):
        hub = HubMqtt(config, hub_id=HUB_A, client_id="hubd-" + HUB_A)
        inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        hub.route(Route(topics.commands(HUB_A), inputs.COMMANDS, lambda m: inbox.put_nowait(m)))
        await hub.start()
        dispatch = asyncio.create_task(hub.dispatch(inputs.Inputs()))
        try:
            await hub.wait_connected(TIMEOUT)
            online = Online.model_validate_json((await next_message(presence)).payload)
            assert online.status == "online"  # the hub's own publish passed the ACL as user hub-a
            await backend.publish(topics.commands(HUB_A), b"signed.command.token")
            command = await asyncio.wait_for(inbox.get(), TIMEOUT)
            assert (command.topic, command.payload) == (topics.commands(HUB_A), b"signed.command.token")
            hub.publish(topics.answers(HUB_A), Answer(id="c1", status=Status.ACCEPTED, at=1.0).model_dump_json().encode())
            assert Answer.model_validate_json((await next_message(answers)).payload).id == "c1"
        finally:
            dispatch.cancel()
            await hub.stop()
        assert Online.model_validate_json((await next_message(presence)).payload).status == "offline"
    assert f"u'{HUB_A}'" in broker.logs()  # Mosquitto logs the username taken from the certificate


async def wait_for_log(broker: Mosquitto, text: str) -> str:
    """The broker's log once it contains ``text`` (Mosquitto writes each line as it happens)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while text not in (logs := broker.logs()):
        assert asyncio.get_running_loop().time() < deadline, f"{text!r} never logged:\n{logs}"
        await asyncio.sleep(0.05)
    return logs


@pytest.mark.parametrize("username_as_clientid", [True, False], ids=["username-as-clientid", "free-clientid"])
async def test_another_hub_cannot_take_over_a_hubs_session_only_with_username_as_clientid(
        mosquitto_factory, test_ca, username_as_clientid):
    # Mosquitto closes the older of two connections with the same client id: without
    # use_username_as_clientid any hub's credentials could keep kicking another hub off.
    server = test_ca.issue_server()
    broker = mosquitto_factory(passwords=PASSWORDS, acl=schema.acl(), tls=TlsListener(
        test_ca.ca_file, server.cert, server.key, use_username_as_clientid=username_as_clientid))
    hub_tls = test_ca.client_context(test_ca.issue_client(HUB_A))
    intruder_tls = test_ca.client_context(test_ca.issue_client(HUB_B))
    async with (BackendClient(broker.host, broker.tls_port, client_id="hubd-hub-a", tls=hub_tls),
                BackendClient(broker.host, broker.tls_port, client_id="hubd-hub-a", tls=intruder_tls)):
        logs = await wait_for_log(broker, f"(p5, c1, k30, u'{HUB_B}')")
    taken_over = "already connected, closing old connection" in logs
    assert taken_over is not username_as_clientid, logs

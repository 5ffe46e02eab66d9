"""hubd over a real Mosquitto: rejections, presence, and a command with the bridge link down.

hubd runs in-process (``hubd.__main__.run``: the daemon's own wiring) or as a subprocess, with
the real ``hubd.link.bridge.Bridge`` pointed at a serial port that does not exist, i.e. a bridge whose
cable is unplugged. The backend side is the ``hubapi`` client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import Answer, FailReason, Online, RejectReason, Status
from hubd.__main__ import run
from hubd.config import HubConfig
from tests.conftest import HUB, LOCKS
from tests.fixtures import LINK_KEY

TIMEOUT = 10.0
#: The conftest's locks with kinds: "front" can unlatch (the default command), "keybox" cannot.
LOCK_KINDS = {LOCKS[0]: "in_cylinder", LOCKS[1]: "key_box"}


def hub_config(mosquitto, backend_key, tmp_path: Path, protocol: str, **mqtt) -> HubConfig:
    return HubConfig(
        hub_id=HUB,
        state_dir=tmp_path / "hubd-state",
        locks=LOCK_KINDS,
        keys={backend_key.kid: backend_key.public_text},
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "protocol": protocol, **mqtt},
        serial={"port": str(tmp_path / "ttyUSB-unplugged"), "link_key": LINK_KEY.hex()},
        bridge_wait_s=0.5,  # no bridge will come: the wait for it is short, not skipped
    )


class RunningHub:
    """hubd.__main__.run as a task, stopped like SIGTERM stops it."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.first_online_at: float | None = None

    async def start(self, client: BackendClient) -> None:
        async with client.watch(topics.online(HUB)) as presence:
            self.task = asyncio.create_task(run(self.config, self.stop_event))
            while True:  # retained "offline" from an earlier run may come first
                message = await asyncio.wait_for(presence.get(), TIMEOUT)
                online = Online.model_validate_json(message.payload)
                if online.status == "online":
                    self.first_online_at = online.at
                    return

    async def stop(self) -> None:
        self.stop_event.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, TIMEOUT)


@pytest.fixture(params=["5", "3.1.1"], ids=["mqtt5", "mqtt311"])
def protocol(request) -> str:
    return request.param


@pytest.fixture
async def client(mosquitto, protocol):
    async with BackendClient(mosquitto.host, mosquitto.port, protocol=protocol) as backend:
        yield backend


@pytest.fixture
async def hub(mosquitto, backend_key, tmp_path, protocol, client):
    running = RunningHub(hub_config(mosquitto, backend_key, tmp_path, protocol))
    await running.start(client)
    yield running
    await running.stop()


async def next_answer(queue: asyncio.Queue) -> Answer:
    message = await asyncio.wait_for(queue.get(), TIMEOUT)
    return Answer.model_validate_json(message.payload)


async def test_valid_command_with_bridge_down_is_accepted_then_fails_unsent(hub, client, backend_key, make_claims):
    claims = make_claims()
    answers = await client.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
    assert [(a.status, a.reason) for a in answers] == [
        (Status.ACCEPTED, None),
        (Status.FAILED, FailReason.BRIDGE_UNAVAILABLE),
    ]
    assert all(a.id == claims.id and a.lock == "front" for a in answers)


async def test_malformed_payload_is_rejected_and_hub_keeps_answering(hub, client, backend_key, make_claims):
    async with client.watch(topics.answers(HUB)) as answers:
        await client.publish(topics.commands(HUB), b"\x00this is not a command\xff")
        answer = await next_answer(answers)
    assert (answer.id, answer.status, answer.reason) == (None, Status.REJECTED, RejectReason.MALFORMED)

    claims = make_claims()
    replies = await client.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
    assert [a.status for a in replies] == [Status.ACCEPTED, Status.FAILED]


async def test_rejection_goes_to_the_commands_reply_topic(hub, client, backend_key, make_claims):
    claims = make_claims(lock="garage", reply_to=topics.answers(HUB) + "/backend-1")
    answers = await client.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
    assert [(a.id, a.status, a.reason) for a in answers] == [(claims.id, Status.REJECTED, RejectReason.UNKNOWN_LOCK)]


async def test_reply_topic_outside_the_answers_tree_is_not_used(hub, client, backend_key, make_claims):
    claims = make_claims(reply_to=f"hubs/{HUB}/v1/locks/front/state")
    seen: list[tuple[str, Answer | None]] = []
    async with client.watch(f"hubs/{HUB}/v1/#") as everything:
        await client.publish(topics.commands(HUB), backend_key.sign(claims))
        while not any(answer is not None and answer.is_final for _, answer in seen):
            message = await asyncio.wait_for(everything.get(), TIMEOUT)
            is_answer = message.topic.startswith(topics.answers(HUB))
            seen.append((message.topic, Answer.model_validate_json(message.payload) if is_answer else None))
    answers = [(topic, answer.status) for topic, answer in seen if answer is not None]
    assert answers == [(topics.answers(HUB), Status.ACCEPTED), (topics.answers(HUB), Status.FAILED)]
    assert topics.lock_state(HUB, "front") not in [topic for topic, _ in seen]


async def test_replayed_command_is_rejected(hub, client, backend_key, make_claims):
    claims = make_claims()
    token = backend_key.sign(claims)
    await client.command(claims, token, timeout=TIMEOUT)
    answers = await client.command(claims, token, timeout=TIMEOUT)
    assert [(a.status, a.reason) for a in answers] == [(Status.REJECTED, RejectReason.REPLAYED)]


async def test_retained_command_waiting_on_the_broker_is_rejected(mosquitto, client, backend_key, tmp_path, protocol, make_claims):
    # A broker restart or a hub reconnect re-delivers a retained command: it must never act.
    claims = make_claims()
    async with client.watch(topics.answers(HUB)) as answers:
        await client.publish(topics.commands(HUB), backend_key.sign(claims), retain=True)
        running = RunningHub(hub_config(mosquitto, backend_key, tmp_path, protocol))
        await running.start(client)
        try:
            answer = await next_answer(answers)
        finally:
            await running.stop()
            await client.publish(topics.commands(HUB), b"", retain=True)  # clear it from the broker
    assert (answer.id, answer.status, answer.reason) == (claims.id, Status.REJECTED, RejectReason.RETAINED)


@pytest.mark.parametrize("protocol", ["5"], ids=["mqtt5"])
async def test_command_published_retained_while_hub_listens_is_rejected(hub, client, backend_key, make_claims):
    # MQTT 5 keeps the retain flag on live delivery (retain-as-published); 3.1.1 cannot.
    claims = make_claims()
    async with client.watch(topics.answers(HUB)) as answers:
        await client.publish(topics.commands(HUB), backend_key.sign(claims), retain=True)
        answer = await next_answer(answers)
        await client.publish(topics.commands(HUB), b"", retain=True)
    assert (answer.id, answer.status, answer.reason) == (claims.id, Status.REJECTED, RejectReason.RETAINED)


async def test_online_is_retained_and_clean_stop_leaves_offline(mosquitto, client, backend_key, tmp_path, protocol):
    running = RunningHub(hub_config(mosquitto, backend_key, tmp_path, protocol))
    await running.start(client)
    async with BackendClient(mosquitto.host, mosquitto.port) as late, late.watch(topics.online(HUB)) as presence:
        message = await asyncio.wait_for(presence.get(), TIMEOUT)
        assert message.retain and Online.model_validate_json(message.payload).status == "online"
    await running.stop()
    async with BackendClient(mosquitto.host, mosquitto.port) as late, late.watch(topics.online(HUB)) as presence:
        message = await asyncio.wait_for(presence.get(), TIMEOUT)
        assert message.retain and Online.model_validate_json(message.payload).status == "offline"


def write_config_file(path: Path, mosquitto, backend_key, tmp_path: Path) -> Path:
    path.write_text(
        f'hub_id = "{HUB}"\n'
        f'state_dir = "{tmp_path / "hubd-state"}"\n'
        + f'[locks]\n' + "".join(f'"{lock}" = "{kind}"\n' for lock, kind in LOCK_KINDS.items())
        + f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        + f'[serial]\nport = "{tmp_path / "ttyUSB-unplugged"}"\nlink_key = "{LINK_KEY.hex()}"\n'
        + f'[keys]\n"{backend_key.kid}" = "{backend_key.public_text}"\n'
    )
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_daemon_process_goes_offline_when_stopped_or_killed(mosquitto, backend_key, tmp_path, sig, make_claims):
    config = write_config_file(tmp_path / "hubd.toml", mosquitto, backend_key, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBD_")}
    async with BackendClient(mosquitto.host, mosquitto.port) as client, client.watch(topics.online(HUB)) as presence:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubd", "--config", str(config)],
            stderr=subprocess.PIPE, env=env, cwd=Path(__file__).resolve().parents[2],
        )
        try:
            message = await asyncio.wait_for(presence.get(), TIMEOUT)
            assert Online.model_validate_json(message.payload).status == "online"
            claims = make_claims()
            answers = await client.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
            assert [a.status for a in answers] == [Status.ACCEPTED, Status.FAILED]
            process.send_signal(sig)
            message = await asyncio.wait_for(presence.get(), TIMEOUT + 45)  # the will waits for the broker to notice
            assert Online.model_validate_json(message.payload).status == "offline"
            returncode = await asyncio.to_thread(process.wait, TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
            stderr = process.communicate()[1].decode(errors="replace")
    assert returncode == (0 if sig is signal.SIGTERM else -signal.SIGKILL), stderr
    assert "Traceback" not in stderr, stderr


async def test_hub_answers_again_after_broker_restart(mosquitto, hub, client, backend_key, make_claims):
    mosquitto.restart()
    async with BackendClient(mosquitto.host, mosquitto.port) as fresh:
        async with fresh.watch(topics.online(HUB)) as presence:
            while True:  # first the old state ("offline" from the will, or the old "online"), then the new one
                message = await asyncio.wait_for(presence.get(), TIMEOUT + 30)
                online = Online.model_validate_json(message.payload)
                if online.status == "online" and online.at != hub.first_online_at:
                    break
        claims = make_claims()
        answers = await fresh.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
    assert [a.status for a in answers] == [Status.ACCEPTED, Status.FAILED]


async def test_hub_works_with_its_own_credentials_and_topic_acl(mosquitto_factory, backend_key, tmp_path, make_claims):
    broker = mosquitto_factory(
        passwords={HUB: "hub-pw", "backend": "backend-pw"},
        acl=f"user backend\ntopic readwrite hubs/#\n\npattern readwrite hubs/%u/#\n",
    )
    config = hub_config(broker, backend_key, tmp_path, "5", username=HUB, password="hub-pw")
    async with BackendClient(broker.host, broker.port, username="backend", password="backend-pw") as backend:
        running = RunningHub(config)
        await running.start(backend)
        try:
            claims = make_claims()
            answers = await backend.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
        finally:
            await running.stop()
    assert [a.status for a in answers] == [Status.ACCEPTED, Status.FAILED]
    anonymous = BackendClient(broker.host, broker.port)
    try:
        with pytest.raises(TimeoutError):  # anonymous clients are refused
            await anonymous.connect(timeout=1)
    finally:
        await anonymous.close()

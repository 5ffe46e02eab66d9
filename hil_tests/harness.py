"""The hub under test and the helpers scenarios share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import (MAX_AUDIT_BATCH, Actor, Answer, AuditBatch, AuditEntry, AuditRequest,
                           CommandClaims, HubStatus, Role, StatusRequest)
from simulator.home import HomeThread
from tests.fixtures import BackendKey
from tests.mosquitto import Mosquitto
from wire import lockkinds, messages

HUB_ID = "hub-under-test"
#: A scenario run both ways in every run: through the bridge's Bluetooth proxy and in direct mode
#: (the hub's own adapter; docs/direct-mode.md). The scenario takes the ``bluetooth`` argument
#: ("bridge" or "adapter") and the ``hub`` fixture follows it. (``--bluetooth=adapter`` runs every
#: scenario in direct mode; this is what CI's default run covers both ways.)
BOTH_WAYS = pytest.mark.parametrize("bluetooth", ["bridge", "adapter"])


@dataclass
class HubUnderTest:
    """What a scenario works with: the broker, hubd, the backend key and (on sim) the home."""

    hub_id: str
    locks: list[str]
    broker: Mosquitto
    key: BackendKey
    hubd: subprocess.Popen[bytes]
    hubd_log: Path
    home: HomeThread | None
    config_path: Path
    kinds: dict[str, str] = field(default_factory=dict)  # lock id -> wire.lockkinds kind
    dc09_port: int | None = None  # where the bridge's LTE path finds the DC-09 receiver (alarms=True)
    socket: Path | None = None  # hubd's local socket (hubctl status, pair, ...)

    @property
    def sim(self) -> HomeThread:
        """The simulated home; skips, loudly, on a real bench where there is none."""
        if self.home is None:
            pytest.skip("SKIPPED ON A REAL BRIDGE: this scenario needs the simulator to observe or "
                        "damage what the hardware does; run it with --target=sim")
        return self.home

    def claims(self, action: str, lock: str | None = None, **overrides: Any) -> CommandClaims:
        fields: dict[str, Any] = dict(
            hub=self.hub_id, lock=lock or self.locks[0], action=action,
            actor=Actor(id="nurse-0042", role=Role.STAFF), assignment="visit-0800", ttl_s=30)
        fields.update(overrides)
        return CommandClaims.new(**fields)

    async def command(self, backend: BackendClient, action: str, lock: str | None = None,
                      **overrides: Any) -> list[Answer]:
        """Sign and send one command; return every answer, the final one last."""
        claims = self.claims(action, lock, **overrides)
        return await backend.command(claims, self.key.sign(claims), timeout=60)

    def hubd_alive(self) -> bool:
        return self.hubd.poll() is None

    def kill_hubd(self) -> None:
        """kill -9: no shutdown, no last words but the broker's last will."""
        self.hubd.kill()
        self.hubd.wait()

    def restart_hubd(self) -> None:
        """Start hubd again on the same config and state, and wait until it is online."""
        if self.hubd_alive():
            stop_hubd(self.hubd)
        self.hubd = start_hubd(self.config_path, self.hubd_log)
        wait_online(self.broker, self.hub_id, self.hubd, self.hubd_log, fresh=True)

    def lock_of_kind(self, kind: str) -> str:
        return next(lock for lock, k in self.kinds.items() if k == kind)

    def proxy_connects(self) -> int:
        """How many connects were asked of the bridge's Bluetooth proxy over the serial line (the
        simulated line's transcript, as a logic analyser on the cable would see it)."""
        def count() -> int:
            bodies = [c.body for c in self.sim.home.line.frames() if c.body]
            return sum(1 for body in bodies if body.startswith(b"{")
                       and json.loads(body).get("m") == messages.BLE_CONNECT)
        return self.sim.call(count)

    def log_text(self) -> str:
        return self.hubd_log.read_text(errors="replace")


def write_hubd_config(path: Path, broker: Mosquitto, port: str, key: BackendKey,
                       locks: Mapping[str, str] | Sequence[str], state_dir: Path | None = None,
                       extra: str = "", status_socket: Path | None = None, top: str = "", *,
                       link_key: bytes) -> None:
    """hubd's config for the hub under test. ``locks`` maps lock ids to kinds (wire.lockkinds); a
    plain list of ids means inside turners (the default simulated home). The state database goes
    to ``state_dir`` (default: ``hubd-state`` next to the config), so a restarted hubd finds it.
    ``extra`` is more TOML, appended (a scenario's own [battery] or [devices] settings); ``top``
    is more top-level keys (e.g. ``bridge_wait_s = 60``).
    ``link_key``: the serial link's key, the bridge's (``SimulatedHome.link_key`` for the
    simulator, the provisioned bridge.json's ``link.key`` for a bench bridge).
    ``status_socket``: where hubd serves its health snapshot (hubctl status / doctor); without it
    the default /run/hubd/status.sock, which a test machine may lack (hubd logs it and goes on)."""
    kinds = dict(locks) if isinstance(locks, Mapping) else dict.fromkeys(locks, lockkinds.INSIDE_TURNER)
    lock_table = "\n".join(f'"{lk}" = "{kind}"' for lk, kind in kinds.items())
    state = state_dir if state_dir is not None else path.parent / "hubd-state"
    socket_line = f'status_socket = "{status_socket}"\n' if status_socket is not None else ""
    path.write_text(f"""hub_id = "{HUB_ID}"
state_dir = "{state}"
{socket_line}command_timeout_s = 40
log_level = "DEBUG"
{top}

[mqtt]
host = "{broker.host}"
port = {broker.port}

[serial]
port = "{port}"
link_key = "{link_key.hex()}"

[keys]
"{key.kid}" = "{key.public_text}"

[locks]
{lock_table}

{extra}
""")


def wait_online(broker: Mosquitto, hub_id: str, hubd: subprocess.Popen[bytes], log: Path,
                timeout: float = 30, fresh: bool = False) -> None:
    """Block until hubd's retained online state says online (with `fresh`: an online published
    after this call, not the retained one a previous hubd left)."""
    since = time.time()
    seen: list[bytes] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="hil-online-probe")
    client.on_message = lambda c, u, m: seen.append(m.payload)
    client.connect(broker.host, broker.port)
    client.subscribe(topics.online(hub_id), qos=1)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(b'"online"' in p and (not fresh or _published_at(p) >= since) for p in seen):
                return
            if hubd.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    raise AssertionError(f"hubd did not come online; its log:\n{log.read_text(errors='replace')}")


def _published_at(payload: bytes) -> float:
    try:
        return float(json.loads(payload).get("at") or 0)
    except (ValueError, AttributeError):
        return 0.0


def start_hubd(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """hubd as its own process on ``config``, its output appended to ``log``; ``env`` is its whole
    environment (default: this process's)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "hubd", "--config", str(config)], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_hubd(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, as systemd stops it (SIGKILL after ``timeout`` s); returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


async def retained(mosquitto: Mosquitto, topic: str, timeout: float = 10) -> bytes:
    """What a late subscriber gets at once on `topic` (the retained message)."""
    async with BackendClient(mosquitto.host, mosquitto.port) as late:
        async with late.watch(topic) as queue:
            msg = await asyncio.wait_for(queue.get(), timeout)
            return msg.payload


async def ask_status(backend: BackendClient, hub: HubUnderTest, timeout: float = 15) -> HubStatus:
    """Send a StatusRequest with a reply subtopic of our own and return the answer to it."""
    req = StatusRequest(id=uuid.uuid4().hex, reply_to=topics.status_replies(hub.hub_id) + "/hil")
    async with backend.watch(req.reply_to) as replies:
        await backend.publish(topics.status_request(hub.hub_id), req.model_dump_json())
        async with asyncio.timeout(timeout):
            while True:
                status = HubStatus.model_validate_json((await replies.get()).payload)
                if status.request_id == req.id:
                    return status


async def audit_log(hub: HubUnderTest, backend: BackendClient, timeout: float = 15) -> list[AuditEntry]:
    """The hub's whole audit trail as the backend gets it: asked for again over MQTT, in pages."""
    entries: list[AuditEntry] = []
    reply_to = f"{topics.audit_replies(hub.hub_id)}/hil"
    async with backend.watch(reply_to) as queue:
        start = 1
        while True:
            request = AuditRequest(from_seq=start, to_seq=start + MAX_AUDIT_BATCH - 1,
                                   reply_to=reply_to)
            await backend.publish(topics.audit_request(hub.hub_id), request.model_dump_json())
            batch = AuditBatch.model_validate_json((await asyncio.wait_for(queue.get(), timeout)).payload)
            assert batch.error is None, batch.error
            entries.extend(batch.entries)
            if batch.last_seq < start + MAX_AUDIT_BATCH:
                return entries
            start += MAX_AUDIT_BATCH


@contextlib.asynccontextmanager
async def answers_of(backend: BackendClient, hub: HubUnderTest,
                     command_id: str | None) -> AsyncIterator[asyncio.Queue[Answer]]:
    """While open, every answer naming `command_id` (on any of the hub's answer topics) is put
    into the queue, however the command was published (twice, retained, across a restart)."""
    queue: asyncio.Queue[Answer] = asyncio.Queue()
    # "answers/#" also matches "answers" itself: the default topic and every reply subtopic.
    async with backend.watch(topics.answers(hub.hub_id) + "/#") as raw:

        async def pump() -> None:
            while True:
                answer = Answer.model_validate_json((await raw.get()).payload)
                if answer.id == command_id:
                    queue.put_nowait(answer)

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def next_answer(queue: asyncio.Queue[Answer], timeout: float = 60) -> Answer:
    """The next answer from `answers_of`, or an AssertionError naming the wait."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        raise AssertionError(f"no answer within {timeout} s") from None


async def cable_pulled_after_write(hub: HubUnderTest, backend: BackendClient,
                                   claims: CommandClaims, written: Callable[[], bool]) -> Answer:
    """Publish ``claims`` signed; once it is accepted and ``written()`` says the lock took the
    command (checked in the simulated home's thread), pull the serial cable between hub and
    bridge for 4 s (the link goes silent for hubd and for the bridge) and put it back. Returns
    the command's final answer."""
    async with answers_of(backend, hub, claims.id) as queue:
        await backend.publish(topics.commands(hub.hub_id), hub.key.sign(claims))
        assert (await next_answer(queue)).status == "accepted"
        async with asyncio.timeout(60):
            while not hub.sim.call(written):
                await asyncio.sleep(0.02)
        hub.sim.call(lambda: setattr(hub.sim.home.line, "cut", True))
        await asyncio.sleep(4.0)
        hub.sim.call(lambda: setattr(hub.sim.home.line, "cut", False))
        return await next_answer(queue)

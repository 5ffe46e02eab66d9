"""The hub under test and the helpers scenarios share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import queue
import signal
import subprocess
import sys
import threading
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
                           CommandClaims, HubStatus, LockState, Role, StatusRequest)
from simulator import ble_timing
from simulator.dkey import DKeyLock
from simulator.home import HomeThread, SimulatedHome
from simulator.radio import Peripheral
from tests.fixtures import BackendKey
from tests.mosquitto import Mosquitto
from wire import lockkinds, messages

HUB_ID = "hub-under-test"
#: A scenario run both ways in every run: through the bridge's Bluetooth proxy and in direct mode
#: (the hub's own adapter; docs/direct-mode.md). The scenario takes the ``bluetooth`` argument
#: ("bridge" or "adapter") and the ``hub`` fixture follows it. (``--bluetooth=adapter`` runs every
#: scenario in direct mode; this is what CI's default run covers both ways.)
BOTH_WAYS = pytest.mark.parametrize("bluetooth", ["bridge", "adapter"])


#: The slowest advertiser among the simulated locks (a battery lock's and a dKey's interval; the
#: entrance door's is shorter), in seconds, before the air's own (the fast air's is the same for all).
SLOWEST_ADVERT_S = max(Peripheral.adv_interval_s, DKeyLock.adv_interval_s)


def watch_scans(scan_every_ms: int, scan_ms: int, air: str | None = None, **more: int) -> dict[str, int]:
    """The proxy's passive scan windows (``home(policy=...)``) for a scenario that waits on what
    the locks advertise: a window of ``scan_ms`` every ``scan_every_ms`` where every lock
    advertises more often than that (the fast air: every 50 ms), and where one advertises less
    often (the realistic air: every 1.0 s plus advDelay), a window as long as its advertising
    interval plus the most advDelay, with the same gap after it: it hears every lock in every
    window. A shorter one hears such a lock only in some windows, by chance (the bridge draws
    the gap between windows at random, ble_proxy._watch_gap; with a fixed cadence near a
    multiple of the advertising interval it missed a lock for minutes). ``air``: the scenario's own (``home(air=...)``), else
    the suite's (SIM_BLE_TIMING); ``more``: more keys (e.g. ``presence_ms``)."""
    timing = ble_timing.by_name(air) if air is not None else ble_timing.from_env()
    advert_ms = math.ceil((timing.adv_interval_of(SLOWEST_ADVERT_S) + timing.adv_delay_max_s) * 1000)
    window = max(scan_ms, advert_ms)
    return {"scan_every_ms": window + scan_every_ms - scan_ms, "scan_ms": window, **more}


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
    #: The first audit seq that is this test's (a shared hub's earlier tests wrote the ones before).
    audit_from: int = 1
    #: Where this test's part of hubd's log starts (bytes; a shared hub's earlier tests wrote the rest).
    log_from: int = 0

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
        """hubd's log: this test's part of it (``log_from`` on)."""
        with self.hubd_log.open("rb") as log:
            log.seek(self.log_from)
            return log.read().decode(errors="replace")


def write_hubd_config(path: Path, broker: Mosquitto, port: str, key: BackendKey,
                       locks: Mapping[str, str] | Sequence[str], state_dir: Path | None = None,
                       extra: str = "", status_socket: Path | None = None, top: str = "", *,
                       link_key: bytes, broker_address: tuple[str, int] | None = None,
                       mqtt: str = "") -> None:
    """hubd's config for the hub under test. ``locks`` maps lock ids to kinds (wire.lockkinds); a
    plain list of ids means inside turners (the default simulated home). The state database goes
    to ``state_dir`` (default: ``hubd-state`` next to the config), so a restarted hubd finds it.
    ``extra`` is more TOML, appended (a scenario's own [battery] or [devices] settings); ``top``
    is more top-level keys (e.g. ``bridge_wait_s = 60``).
    ``link_key``: the serial link's key, the bridge's (``SimulatedHome.link_key`` for the
    simulator, the provisioned bridge.json's ``link.key`` for a bench bridge).
    ``status_socket``: where hubd serves its health snapshot (hubctl status / doctor); without it
    the default /run/hubd/status.sock, which a test machine may lack (hubd logs it and goes on).
    ``broker_address``: where hubd finds the broker, when not at ``broker`` itself (a simulated
    home's router, ``SimulatedHome.broker_address``); ``mqtt``: more keys of ``[mqtt]`` (e.g.
    ``keepalive = 4``)."""
    kinds = dict(locks) if isinstance(locks, Mapping) else dict.fromkeys(locks, lockkinds.INSIDE_TURNER)
    lock_table = "\n".join(f'"{lk}" = "{kind}"' for lk, kind in kinds.items())
    state = state_dir if state_dir is not None else path.parent / "hubd-state"
    socket_line = f'status_socket = "{status_socket}"\n' if status_socket is not None else ""
    host, mqtt_port = broker_address if broker_address is not None else (broker.host, broker.port)
    path.write_text(f"""hub_id = "{HUB_ID}"
state_dir = "{state}"
{socket_line}command_timeout_s = 40
log_level = "DEBUG"
{top}

[mqtt]
host = "{host}"
port = {mqtt_port}
{mqtt}

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
        client.disconnect()  # first: it wakes paho's loop, which loop_stop then joins at once
        client.loop_stop()   # (the other way round it waits out the loop's 1 s select)
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


async def audit_log(hub: HubUnderTest, backend: BackendClient, timeout: float = 15,
                    from_seq: int = 1) -> list[AuditEntry]:
    """The hub's audit trail as the backend gets it, from ``from_seq`` on (the whole of it by
    default; ``hub.audit_from``: this test's part of a shared hub's): asked for again over MQTT,
    in pages."""
    entries: list[AuditEntry] = []
    reply_to = f"{topics.audit_replies(hub.hub_id)}/hil"
    async with backend.watch(reply_to) as queue:
        start = from_seq
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


# --- a hub shared by a module's tests (hil_tests/conftest.py SharedHub) -------------------------

#: What a simulated reference lock is built with and a scenario may change: its failure knobs
#: (simulator/locks.py), and what its mechanism is in (a door, a lid, a key).
KNOBS = ("in_range", "advertising", "response_delay_s", "held_by_other", "jammed",
         "lose_next_result", "drop_link_after_move", "stale_s", "battery_level", "secret")
MECHANISM = ("state", "door_open", "lid_open", "key_inside")


def as_built(home: SimulatedHome) -> dict[str, dict[str, Any]]:
    """Each reference lock's knobs and mechanism, by lock id (read on the home's loop)."""
    return {lock_id: {name: getattr(lock, name) for name in KNOBS + MECHANISM if hasattr(lock, name)}
            for lock_id, lock in home.locks.items()}


def reset_home(hub: HubUnderTest, built: dict[str, dict[str, Any]], timeout: float = 30) -> None:
    """Put a shared hub's simulated home back as it was ``built`` (:func:`as_built`) for the next
    test, and check it is: each lock's motor at rest (a latch held, a strike released, run out),
    its knobs put back, a lock left in another state turned back by hand (reported ``manual``, as
    a real one would be) and hubd's retained state of it saying so, hubd holding no connection,
    the counters of what the locks did (``motor_moves``, ``moves``, ``commands``) at zero and no
    move since (hubd's own status reads go on: ``commands`` may count them), and
    ``hub.audit_from`` and ``hub.log_from`` past every audit entry and log line written so far.
    Reference-protocol locks only."""
    sim = hub.sim
    if sim.home.dkeys:
        raise pytest.UsageError("a shared home puts back reference-protocol locks only, not a dKey")
    assert hub.hubd_alive(), f"hubd is gone; its log:\n{hub.log_text()}"
    _until(lambda: sim.call(lambda: all(_at_rest(lock) for lock in sim.home.locks.values())),
           timeout, "every lock's motor at rest")
    since = time.time()
    turned = sim.call(lambda: _put_back(sim.home, built))
    for lock_id, state in turned.items():
        _retained_until(hub.broker, topics.lock_state(hub.hub_id, lock_id), timeout,
                        f"hubd's retained state of {lock_id} saying {state} (turned by hand)",
                        lambda payload, lock_id=lock_id, state=state: _says(payload, state, since))
    _until(lambda: sim.call(lambda: not any(lock.links for lock in sim.home.locks.values())),
           timeout, "hubd holding no connection to a lock")
    now = sim.call(lambda: (as_built(sim.home), {lock_id: (lock.motor_moves, lock.moves)
                                                 for lock_id, lock in sim.home.locks.items()}))
    assert now[0] == built, f"the home is not as built after the reset: {now[0]} != {built}"
    assert all(moved == (0, []) for moved in now[1].values()), f"a lock moved during the reset: {now[1]}"
    hub.audit_from = newest_seq(hub, timeout) + 1
    hub.log_from = hub.hubd_log.stat().st_size


def first_reads(hub: HubUnderTest, timeout: float = 60) -> None:
    """Block until hubd has read every simulated lock once: each has a retained state.

    hubd's first read of a lock takes the lock's latest report number as its baseline and does
    not pass on what came before it (docs/lock-protocol.md, "At start"), so a lock turned by hand
    before that read is seen by the read's state (source ``poll``), not as a ``manual`` report.
    A scenario about what a lock reports by itself starts after it."""
    locks = set(hub.sim.call(lambda: list(hub.sim.home.locks)))
    prefix = topics.lock_state(hub.hub_id, "X")[:-len("X/state")]
    heard: set[str] = set()

    def found(topic: str) -> bool:
        heard.add(topic[len(prefix):].split("/", 1)[0])
        return locks <= heard

    _retained_until(hub.broker, topics.lock_states(hub.hub_id), timeout,
                    f"hubd's first read of every lock (a retained state for each of {sorted(locks)})",
                    found, with_topic=True)


def _at_rest(lock: Any) -> bool:
    # The motor's run includes what follows the RESULT (a latch held, a strike released): the
    # lock answers busy until it ends (simulator/locks.py _refusal reads the same task).
    return lock._motor is None or lock._motor.done()


def _put_back(home: SimulatedHome, built: dict[str, dict[str, Any]]) -> dict[str, str]:
    """On the home's loop: knobs as built, counters at zero, a lock in another state than built
    turned back by hand; returns those locks and their state."""
    turned = {}
    for lock_id, lock in home.locks.items():
        for name in KNOBS:
            if getattr(lock, name) != built[lock_id][name]:
                setattr(lock, name, built[lock_id][name])
        lock.motor_moves, lock.moves, lock.commands = 0, [], []
        if lock.state != built[lock_id]["state"]:
            lock.report_state(built[lock_id]["state"], lockkinds.SOURCE_MANUAL)
            turned[lock_id] = built[lock_id]["state"]
    return turned


def _says(payload: bytes, state: str, since: float) -> bool:
    try:
        reported = LockState.model_validate_json(payload)
    except ValueError:
        return False
    return reported.state == state and reported.source == lockkinds.SOURCE_MANUAL and reported.at >= since


def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def _retained_until(broker: Mosquitto, topic: str, timeout: float, what: str,
                    found: Callable[[Any], bool], request: tuple[str, str] | None = None,
                    with_topic: bool = False) -> Any:
    """Block until a message on ``topic`` (the retained one or a later one) is ``found``; with
    ``request`` (topic, payload), publish it once subscribed. Returns that message. ``found``
    gets the payload, or with ``with_topic`` the message's topic (``topic`` a filter)."""
    seen: queue.Queue[Any] = queue.Queue()
    subscribed = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"hil-reset-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda c, u, m: seen.put(m.topic if with_topic else m.payload)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        if not subscribed.wait(timeout):
            raise AssertionError(f"the broker did not take a subscription to {topic}")
        if request is not None:
            client.publish(*request, qos=1)
        while True:
            try:
                payload = seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"not within {timeout} s: {what}") from None
            if found(payload):
                return payload
    finally:
        client.disconnect()  # first: it wakes paho's loop, which loop_stop then joins at once
        client.loop_stop()   # (the other way round it waits out the loop's 1 s select)


def newest_seq(hub: HubUnderTest, timeout: float = 15) -> int:
    """The newest audit seq the hub has (0: none), asked over MQTT as the backend would."""
    reply_to = f"{topics.audit_replies(hub.hub_id)}/hil-reset"
    request = AuditRequest(from_seq=1, to_seq=1, reply_to=reply_to).model_dump_json()
    payload = _retained_until(hub.broker, reply_to, timeout, "the hub's answer to an audit request",
                              lambda p: True, request=(topics.audit_request(hub.hub_id), request))
    batch = AuditBatch.model_validate_json(payload)
    assert batch.error is None, batch.error
    return batch.last_seq

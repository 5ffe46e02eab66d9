"""The dormakaba dKey (docs/dkey.md) end to end: hubd (its own process) drives the simulated dKey
through py-dormakaba-dkey, unmodified, through the REAL bridge firmware as Bluetooth proxy, or
through the hub's own adapter (direct mode, docs/direct-mode.md); the backend talks MQTT only,
signed commands as it always does.

- a dKey fresh from the box is paired with the real ``hubctl pair --activation-code`` against
  hubd, then a nurse's unlock and lock go through at once: through the bridge and in direct mode;
- a wrong activation code is refused (``auth_failed``), audited, nothing recorded, and the lock
  has no new key holder;
- the resident turns the key while hubd holds the connection after the nurse's unlock: the lock
  state is published with source ``manual``; a turn while nobody is connected is seen at hubd's
  next poll (source ``poll``: a dKey keeps no record of who turned it);
- the lock ends an idle link itself (as it does at 30 s): the next commands authenticate on a
  new session and go through;
- the serial link to the bridge pulled after the command's write: ``incomplete``, the motor moved
  once, the state read back once the link is back; a BLE link lost before the write's answer:
  ``incomplete``, the library's resend refused, the lock took the command once;
- a home with a dKey front door and a reference entrance door: both commanded at once, both
  audited, both lock states retained; an unlatch of the dKey is rejected
  ``unsupported_action``, nothing written.

A paired dKey here was associated before (simulator.home.paired_dkey): its key holder and secret
on the lock and in hubd's state, its bond made at hubd's first connection (its poll at start).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tomllib

import pytest

from hil_tests.conftest import DKEY_CODE
from hil_tests.harness import BOTH_WAYS, HubUnderTest, audit_log, cable_pulled_after_write, retained
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import DeviceState, LockState
from hubd.locks.dkey import SESSION_ENDED
from simulator.dkey import DKeyLock
from simulator.home import DKEY_ADDRESS
from tests.hubctl_cli import hubctl, one_error_line
from wire import lockkinds

LOCK = "front-door"
WRONG_CODE = "BCDF2346"


def dkey(hub: HubUnderTest) -> DKeyLock:
    return hub.sim.home.dkeys[LOCK]


def seen(hub: HubUnderTest, what: str) -> object:
    """One of the simulated dKey's observables, read on the home's loop."""
    lock = dkey(hub)
    return hub.sim.call(lambda: getattr(lock, what))


def pairings(hub: HubUnderTest) -> list[tuple]:
    with sqlite3.connect(hub.config_path.parent / "hubd-state" / "hubd.sqlite3") as conn:
        return conn.execute("SELECT lock, kind, address, protocol, secret FROM pairings").fetchall()


async def pair(hub: HubUnderTest, code: str):  # noqa: ANN201 (subprocess.CompletedProcess)
    """The technician's ``hubctl pair`` with the dKey's activation code, against hubd's socket."""
    return await asyncio.to_thread(
        hubctl, "pair", "--etc-dir", hub.config_path.parent, "--socket", hub.socket,
        "--seconds", "2", "--addr", DKEY_ADDRESS, "--name", LOCK, "--activation-code", code)


async def state_until(backend: BackendClient, hub: HubUnderTest, lock: str, state: str,
                      source: str, timeout: float = 60) -> LockState:
    """The lock state hubd publishes once it says ``state`` from ``source``."""
    async with backend.watch(topics.lock_state(hub.hub_id, lock)) as queue:
        async with asyncio.timeout(timeout):
            while True:
                seen_state = LockState.model_validate_json((await queue.get()).payload)
                if (seen_state.state, seen_state.source) == (state, source):
                    return seen_state


async def polled_and_free(hub: HubUnderTest) -> None:
    """hubd's poll at start reached the retained state and its connection is gone."""
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, LOCK), timeout=60))
    assert state.source == "poll", state
    async with asyncio.timeout(60):
        while seen(hub, "links"):
            await asyncio.sleep(0.1)


async def pair_unlock_lock(hub: HubUnderTest, backend: BackendClient) -> None:
    lock = dkey(hub)
    paired = await pair(hub, DKEY_CODE)
    assert paired.returncode == 0, paired.stdout + paired.stderr + hub.log_text()[-4000:]
    assert f"{LOCK}: dKey at {DKEY_ADDRESS} paired" in paired.stdout, paired.stdout
    assert "proved: unlock unlocked, lock locked" in paired.stdout, paired.stdout
    associations = hub.sim.call(lambda: dict(lock.associations))
    assert len(associations) == 1, "hubd is the lock's one key holder"
    ((key_holder, secret),) = associations.items()
    assert pairings(hub) == [(LOCK, lockkinds.IN_CYLINDER, DKEY_ADDRESS, lockkinds.DKEY,
                              key_holder + secret)]
    assert tomllib.loads(hub.config_path.read_text())["locks"] == {LOCK: lockkinds.IN_CYLINDER}
    assert not seen(hub, "pairable"), "association closed the activation window"
    moves = seen(hub, "motor_moves")

    # A nurse's unlock and lock through MQTT right after, no hubd restart.
    answers = await hub.command(backend, "unlock", LOCK)
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "unlocked"
    assert (seen(hub, "state"), seen(hub, "motor_moves")) == ("unlocked", moves + 1)
    answers = await hub.command(backend, "lock", LOCK)
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert answers[-1].state == "locked"
    assert (seen(hub, "state"), seen(hub, "motor_moves")) == ("locked", moves + 2)
    state = LockState.model_validate_json(
        await retained(hub.broker, topics.lock_state(hub.hub_id, LOCK)))
    assert state.state == "locked"
    trail = [(e.action, e.outcome) for e in await audit_log(hub, backend)
             if e.lock == LOCK and e.source == "remote"]
    assert ("unlock", "succeeded") in trail and ("lock", "succeeded") in trail, trail
    log = hub.log_text()
    assert DKEY_CODE not in log + paired.stdout + paired.stderr, "the activation code was shown"
    assert secret.hex() not in log.lower(), "the association secret was logged"
    assert hub.sim.call(lambda: list(lock.faults)) == []


@BOTH_WAYS
@pytest.mark.home(locks="new_dkey")
async def test_a_new_dkey_paired_with_its_activation_code_unlocks_and_locks(
        hub: HubUnderTest, backend: BackendClient, bluetooth: str) -> None:
    await pair_unlock_lock(hub, backend)
    if "SimClient adapter" in hub.log_text():  # the adapter run (or --bluetooth=adapter)
        assert hub.proxy_connects() == 0, "the dKey went through the bridge's proxy"
    else:
        assert bluetooth == "bridge", "not in direct mode"
        assert hub.proxy_connects() >= 1, "hubd reached the dKey through the bridge's proxy"
        assert len(seen(hub, "bonds")) == 1, "the bridge keeps the one bond"


@pytest.mark.home(locks="new_dkey")
async def test_a_wrong_activation_code_is_refused_audited_and_leaves_nothing(
        hub: HubUnderTest, backend: BackendClient) -> None:
    wrong = await pair(hub, WRONG_CODE)
    assert "auth_failed" in one_error_line(wrong), wrong.stderr
    assert seen(hub, "associations") == {}, "the lock has no new key holder"
    assert seen(hub, "wrong_codes") == 1
    assert pairings(hub) == [], "nothing recorded in hubd's state"
    assert "front-door" not in tomllib.loads(hub.config_path.read_text()).get("locks", {})
    refusals = [e for e in await audit_log(hub, backend)
                if e.lock == LOCK and e.action == "pair"]
    assert [(e.outcome, e.reason) for e in refusals] == [("failed", "auth_failed")], refusals
    assert WRONG_CODE not in hub.log_text() + wrong.stdout, "the code typed was shown"
    assert hub.sim.call(lambda: list(dkey(hub).faults)) == []


# hubd holds a dKey's connection 20 s after a command (hubd.locks.dkey.DkeyTimings.idle_s; the
# lock's own idle drop is at 30 s): the resident's turn comes while it is up.
@pytest.mark.home(locks="dkey", travel_time_s=0.2)
async def test_a_key_turned_while_hubd_holds_the_connection_is_published_as_manual(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = dkey(hub)
    answers = await hub.command(backend, "unlock", LOCK)
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    assert seen(hub, "links"), "hubd holds the connection after the command"
    async with backend.watch(topics.lock_state(hub.hub_id, LOCK)) as queue:
        hub.sim.call(lambda: lock.turn_by_hand(locked=True))  # the resident's key, no motor
        async with asyncio.timeout(60):
            while True:
                state = LockState.model_validate_json((await queue.get()).payload)
                if (state.state, state.source) == ("locked", "manual"):
                    break
    assert (seen(hub, "motor_moves"), seen(hub, "manual_turns")) == (1, 1)
    trail = [(e.source, e.state) for e in await audit_log(hub, backend) if e.lock == LOCK]
    assert ("manual", "locked") in trail, trail


@pytest.mark.home(locks="dkey")
async def test_after_the_lock_ended_an_idle_link_itself_the_next_commands_go_through(
        hub: HubUnderTest, backend: BackendClient) -> None:
    # The lock ends a silent link itself (DISCONNECT_REQ, then the drop) before hubd's hold time
    # is up: 30 s against hubd's 20 on a real one, which a slow radio or a longer hold can turn
    # round; here after 3 s. The next command must authenticate on a new session: the
    # library's object of the ended one still believes itself authenticated until its own
    # disconnect task has run (py-dormakaba-dkey's _disconnected schedules _execute_disconnect,
    # which resets _authenticated only once it has the connect lock), so reusing it can write
    # the command on the new link with the ended session's keys, which the lock refuses.
    lock = dkey(hub)
    # 3 s of silence: short enough for the test, long against hubd's gap between the frames of
    # one exchange on a loaded machine (at 1 s the lock once ended a session between hubd's
    # handshake and its command: an honest incomplete, but not what this scenario is about).
    hub.sim.call(lambda: setattr(lock, "session_idle_s", 3.0))
    await polled_and_free(hub)
    heard = SESSION_ENDED % DKEY_ADDRESS
    for round_, action in enumerate(("unlock", "lock") * 2):
        ended = seen(hub, "idle_disconnects")
        told = hub.log_text().count(heard)
        answers = await hub.command(backend, action, LOCK)
        assert [a.status for a in answers] == ["accepted", "succeeded"], \
            (round_, answers, "what the lock refused:", seen(hub, "refusals"))
        # The lock ends the link after 3 s of silence; the next command waits until hubd has
        # heard it too (a command sent in between meets the end on its way: an honest
        # incomplete, but another scenario).
        async with asyncio.timeout(60):
            while seen(hub, "idle_disconnects") == ended or seen(hub, "links") \
                    or hub.log_text().count(heard) == told:
                await asyncio.sleep(0.05)
    assert (seen(hub, "move_commands"), seen(hub, "motor_moves")) == (4, 4)
    refusals = seen(hub, "refusals")
    assert not {"frame check", "refused frame"} & set(refusals), \
        f"hubd wrote to a new link with an ended session's keys: {refusals}"


@pytest.mark.home(locks="dkey", hubd="[lock_upkeep]\npoll_s = 2\n")
async def test_a_key_turned_while_nobody_is_connected_is_seen_at_the_next_poll(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = dkey(hub)
    await polled_and_free(hub)
    connections = seen(hub, "connections")
    async with backend.watch(topics.lock_state(hub.hub_id, LOCK)) as queue:
        hub.sim.call(lambda: lock.turn_by_hand(locked=False))  # nobody hears it now
        async with asyncio.timeout(60):
            while True:
                state = LockState.model_validate_json((await queue.get()).payload)
                if state.state == "unlocked":
                    break
    # A dKey keeps no record of a turn: the poll finds the bolt moved, and says so (source
    # poll, audited as a change a state read found), not who moved it.
    assert state.source == lockkinds.SOURCE_POLL, state
    assert seen(hub, "connections") > connections, "the poll's connection read it"
    assert seen(hub, "motor_moves") == 0
    trail = [(e.source, e.state) for e in await audit_log(hub, backend) if e.lock == LOCK]
    assert ("poll", "unlocked") in trail, trail


@pytest.mark.home(locks="dkey", travel_time_s=2.0, via="bridge")
async def test_the_serial_link_pulled_after_the_write_is_incomplete_read_back_and_moves_once(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = dkey(hub)
    claims = hub.claims("unlock", LOCK)
    # The dKey took the UNLOCK (its motor runs): the cable between hub and bridge is pulled.
    final = await cable_pulled_after_write(hub, backend, claims, lambda: lock.move_commands > 0)
    assert (final.status, final.reason) == ("incomplete", "link_lost"), final
    assert final.state == "unlocked", "the state is read back once the link is back, never guessed"
    async with asyncio.timeout(60):
        while seen(hub, "moving"):
            await asyncio.sleep(0.05)
    assert (seen(hub, "move_commands"), seen(hub, "motor_moves")) == (1, 1), \
        "the UNLOCK was sent once"
    trail = [e.outcome for e in await audit_log(hub, backend) if e.command == claims.id]
    assert trail == ["accepted", "written", "incomplete"]
    assert hub.sim.call(lambda: list(lock.faults)) == []


# On the realistic air in every run (docs/ble-timing.md, "The suite"): the dKey's handshake
# through the proxy (re-encryption with the bond, the library's eleven frames) at an event or two
# a round trip, and a BLE link lost in the middle of a command.
@pytest.mark.home(locks="dkey", travel_time_s=0.5, air="realistic")
async def test_a_ble_link_lost_before_the_writes_answer_is_incomplete_and_sent_once(
        hub: HubUnderTest, backend: BackendClient) -> None:
    lock = dkey(hub)
    await polled_and_free(hub)
    hub.sim.call(lambda: setattr(lock, "drop_link_before_write_answer", True))
    answers = await hub.command(backend, "unlock", LOCK)
    assert [a.status for a in answers] == ["accepted", "incomplete"], answers
    assert answers[-1].reason == "link_lost", answers[-1]
    async with asyncio.timeout(60):
        while seen(hub, "moving"):
            await asyncio.sleep(0.05)
    # py-dormakaba-dkey would reconnect and send the UNLOCK again; hubd refuses its second try.
    assert (seen(hub, "move_commands"), seen(hub, "motor_moves")) == (1, 1)
    assert seen(hub, "state") == "unlocked"
    assert hub.sim.call(lambda: list(lock.faults)) == []


@pytest.mark.home(locks="dkey_and_entrance", travel_time_s=0.2)
async def test_a_dkey_front_door_and_a_reference_entrance_door_both_open_audited(
        hub: HubUnderTest, backend: BackendClient) -> None:
    assert hub.kinds == {LOCK: lockkinds.IN_CYLINDER, "entrance": lockkinds.ENTRANCE_DOOR}
    entrance, front = await asyncio.gather(hub.command(backend, "unlatch", "entrance"),
                                           hub.command(backend, "unlock", LOCK))
    assert [a.status for a in entrance] == ["accepted", "succeeded"], entrance
    assert [a.status for a in front] == ["accepted", "succeeded"], front
    assert seen(hub, "state") == "unlocked" and seen(hub, "motor_moves") == 1
    assert hub.sim.call(lambda: list(hub.sim.home.locks["entrance"].moves)) == ["unlatch"]
    # A dKey has no unlatch of its own (an in-cylinder lock's kind has; its protocol has not):
    # rejected before it is accepted, as any action a lock cannot do; nothing written.
    refused = await hub.command(backend, "unlatch", LOCK)
    assert [(a.status, a.reason) for a in refused] == [("rejected", "unsupported_action")], refused
    assert seen(hub, "move_commands") == 1
    answers = await hub.command(backend, "lock", LOCK)
    assert [a.status for a in answers] == ["accepted", "succeeded"], answers
    trail = {(e.lock, e.action) for e in await audit_log(hub, backend)
             if e.source == "remote" and e.outcome == "succeeded"}
    assert {(LOCK, "unlock"), (LOCK, "lock"), ("entrance", "unlatch")} <= trail, trail
    for lock_id, expected in ((LOCK, {"locked"}), ("entrance", {"unlatched", "locked"})):
        state = LockState.model_validate_json(
            await retained(hub.broker, topics.lock_state(hub.hub_id, lock_id)))
        assert state.state in expected, (lock_id, state)
    assert seen(hub, "motor_moves") == 2
    # Each lock's device under its own battery model from hubd's start: the dKey's raw units,
    # the entrance door mains (hubd.locks.transport.battery_model, read from the pairings).
    for lock_id, model in ((LOCK, "dkey"), ("entrance", "mains")):
        device = DeviceState.model_validate_json(
            await retained(hub.broker, topics.device_state(hub.hub_id, lock_id)))
        assert device.model == model, device

"""hubd killed with SIGKILL mid-command, against the simulated home (real firmware as the
Bluetooth proxy hubd drives the lock through, real lock model), a real Mosquitto and hubd's real
state file.

- Killed between ``written`` and the result: after the restart the command is answered once,
  ``incomplete`` (``hubd_restarted``) with the state read back from the lock, and the lock moved
  exactly once.
- Killed while the broker is down: the audit entries written meanwhile wait in the outbox and
  reach the backend after both are back, each at least once and in seq order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil_tests.harness import HUB_ID, start_hubd, stop_hubd, wait_online, write_hubd_config
from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import Actor, Answer, AuditEntry, CommandClaims, Role
from hubd.store.audit import db_records, verify_chain
from hubd.store.database import DB_NAME
from simulator.home import HomeThread, SimulatedHome, default_locks
from tests.fixtures import BackendKey, record_pairings
from tests.mosquitto import Mosquitto

LOCK = "front-door"
TRAVEL_S = 4.0  # long enough to kill hubd while the motor runs
TIMEOUT = 60.0


@pytest.fixture
def home(tmp_path: Path) -> Iterator[HomeThread]:
    thread = HomeThread(SimulatedHome(tmp_path / "home", locks=default_locks(travel_time_s=TRAVEL_S)))
    thread.start()
    yield thread
    thread.stop()


class Hubd:
    """hubd as its own process on the home's serial port; restartable on the same state."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, home: HomeThread, key: BackendKey) -> None:
        self.config = tmp_path / "hubd.toml"
        self.log = tmp_path / "hubd.log"
        self.state = tmp_path / "hubd-state" / DB_NAME
        self.broker = broker
        write_hubd_config(self.config, broker, home.home.port, key, {LOCK: "inside_turner"},
                          link_key=home.home.link_key)
        record_pairings(self.state.parent, home.home.locks.values())  # as hubctl pair leaves them
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        self.proc = start_hubd(self.config, self.log)
        if wait:
            wait_online(self.broker, HUB_ID, self.proc, self.log)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_hubd(self.proc)

    def query(self, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{self.state}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()


@pytest.fixture
def hubd(tmp_path, mosquitto, home, backend_key) -> Iterator[Hubd]:
    daemon = Hubd(tmp_path, mosquitto, home, backend_key)
    yield daemon
    daemon.stop()


def unlock(key: BackendKey) -> tuple[CommandClaims, str]:
    claims = CommandClaims.new(hub=HUB_ID, lock=LOCK, action="unlock", actor=Actor(id="nurse-0042", role=Role.STAFF),
                               assignment="visit-0800", ttl_s=60)
    return claims, key.sign(claims)


async def next_entry(feed: asyncio.Queue, until: Callable[[AuditEntry], bool]) -> list[AuditEntry]:
    """Audit entries from the feed up to and including the first that satisfies ``until``."""
    seen = []
    while True:
        entry = AuditEntry.model_validate_json((await asyncio.wait_for(feed.get(), TIMEOUT)).payload)
        seen.append(entry)
        if until(entry):
            return seen


def motor_moves(home: HomeThread) -> int:
    return home.call(lambda: home.home.locks[LOCK].motor_moves)


async def test_kill_between_written_and_result_answers_incomplete_once_and_never_resends(
        mosquitto, home, hubd, backend_key, tmp_path):
    hubd.start()
    claims, token = unlock(backend_key)
    async with BackendClient(mosquitto.host, mosquitto.port) as backend, \
            backend.watch(topics.audit(HUB_ID)) as feed, backend.watch(topics.answers(HUB_ID)) as answers:
        await backend.publish(topics.commands(HUB_ID), token)
        await next_entry(feed, lambda e: e.command == claims.id and e.outcome == "written")
        assert motor_moves(home) == 0, "the motor should still be running"
        hubd.kill()
        assert hubd.query(f"SELECT final, written_at IS NOT NULL FROM commands WHERE id = '{claims.id}'") == [(None, 1)]

        hubd.start(wait=False)
        got: list[Answer] = []
        while not got or not got[-1].is_final:
            answer = Answer.model_validate_json((await asyncio.wait_for(answers.get(), TIMEOUT)).payload)
            if answer.id == claims.id:
                got.append(answer)
        # The backend may still re-send it (a retry after hearing nothing): it must not run.
        replay = await backend.command(claims, token, timeout=TIMEOUT)

    assert [a.status for a in got] == ["accepted", "incomplete"], got
    assert got[-1].reason == "hubd_restarted"
    assert got[-1].state == "unlocked", "the state is read back from the lock after the restart"
    assert [(a.status, a.reason) for a in replay] == [("rejected", "replayed")]
    assert motor_moves(home) == 1
    assert home.call(lambda: [c for c in home.home.locks[LOCK].commands if c[0] != "status"]) == [("unlock", "ok")]

    records = list(db_records(hubd.state))
    assert verify_chain(records).ok
    steps = [(e.outcome, e.reason, e.state) for e in (AuditEntry.model_validate_json(r[-1]) for r in records)
             if e.command == claims.id]
    assert steps == [("accepted", None, None), ("written", None, None), ("incomplete", "hubd_restarted", "unlocked"),
                     ("rejected", "replayed", None)]


async def test_audit_outbox_survives_a_broker_outage_and_a_kill_and_delivers_in_order(
        mosquitto, home, hubd, backend_key):
    claims, token = unlock(backend_key)
    async with BackendClient(mosquitto.host, mosquitto.port) as backend, backend.watch(topics.audit(HUB_ID)) as feed:
        hubd.start()  # after subscribing: every entry the hub delivers is seen
        await backend.publish(topics.commands(HUB_ID), token)
        before = await next_entry(feed, lambda e: e.command == claims.id and e.outcome == "written")
        mosquitto.stop()  # the command finishes while the broker is away
        deadline = time.monotonic() + TIMEOUT
        while hubd.query(f"SELECT final FROM commands WHERE id = '{claims.id}'") != [("succeeded",)]:
            assert time.monotonic() < deadline, "the command never finished"
            await asyncio.sleep(0.1)
        waiting = hubd.query("SELECT count(*) FROM outbox")[0][0]
        assert waiting >= 1
        hubd.kill()

    mosquitto.start()
    async with BackendClient(mosquitto.host, mosquitto.port) as backend, backend.watch(topics.audit(HUB_ID)) as feed:
        hubd.start(wait=False)
        after = await next_entry(feed, lambda e: e.command == claims.id and e.outcome == "succeeded")
        deadline = time.monotonic() + TIMEOUT
        while hubd.query("SELECT count(*) FROM outbox")[0][0]:
            assert time.monotonic() < deadline, "the outbox never emptied"
            await asyncio.sleep(0.1)

    seqs = [e.seq for e in before + after]
    assert seqs == sorted(seqs), f"delivered out of order: {seqs}"
    stored = [AuditEntry.model_validate_json(r[-1]) for r in db_records(hubd.state)]
    last_delivered = after[-1].seq
    assert {e.seq for e in before + after} == {e.seq for e in stored if e.seq <= last_delivered}, "an entry was lost"
    assert after[-1].state == "unlocked" and motor_moves(home) == 1

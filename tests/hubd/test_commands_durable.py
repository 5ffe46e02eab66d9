"""hubd in-process over a real Mosquitto with its real state file: the replay guard survives a
restart, lock kinds refuse what they cannot do, and every step lands in the audit trail, which
reaches the backend in order and can be asked for again.

The bridge's cable is unplugged (as in test_mqtt_rejections), so verified commands fail
``bridge_unavailable``: nothing here needs a lock to move.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from hubapi import topics
from hubapi.client import BackendClient
from hubapi.models import AuditBatch, AuditEntry, FailReason, RejectReason, Status
from hubd.store.audit import db_records, verify_chain
from hubd.store.database import DB_NAME
from tests.conftest import HUB
from tests.hubd.test_mqtt_rejections import TIMEOUT, RunningHub, hub_config


def state_file(tmp_path: Path) -> Path:
    return tmp_path / "hubd-state" / DB_NAME


def chain(tmp_path: Path) -> list[AuditEntry]:
    """The hub's audit entries as stored, after checking the chain is intact."""
    records = list(db_records(state_file(tmp_path)))
    report = verify_chain(records)
    assert report.ok, report.problems
    return [AuditEntry.model_validate_json(text) for *_, text in records]


async def test_a_command_id_stays_used_across_a_restart(mosquitto, backend_key, tmp_path, make_claims):
    config = hub_config(mosquitto, backend_key, tmp_path, "5")
    claims = make_claims(ttl_s=60)
    token = backend_key.sign(claims)
    async with BackendClient(mosquitto.host, mosquitto.port) as client:
        first = RunningHub(config)
        await first.start(client)
        try:
            answers = await client.command(claims, token, timeout=TIMEOUT)
        finally:
            await first.stop()
        assert [(a.status, a.reason) for a in answers] == [(Status.ACCEPTED, None),
                                                           (Status.FAILED, FailReason.BRIDGE_UNAVAILABLE)]
        second = RunningHub(config)
        await second.start(client)
        try:
            replay = await client.command(claims, token, timeout=TIMEOUT)
        finally:
            await second.stop()
    assert [(a.status, a.reason) for a in replay] == [(Status.REJECTED, RejectReason.REPLAYED)]
    steps = [(e.command, e.outcome, e.reason, e.verified) for e in chain(tmp_path)]
    assert steps == [(claims.id, "accepted", None, True), (claims.id, "failed", "bridge_unavailable", True),
                     (claims.id, "rejected", "replayed", True)]


async def test_an_action_the_lock_kind_cannot_do_is_rejected_audited_and_spends_the_id(
        mosquitto, backend_key, tmp_path, make_claims):
    # A command the backend signed spends its id whatever its outcome: the same token again is a
    # replay, not a second chance (at most once, docs/mqtt-api.md).
    config = hub_config(mosquitto, backend_key, tmp_path, "5")
    async with BackendClient(mosquitto.host, mosquitto.port) as client:
        hub = RunningHub(config)
        await hub.start(client)
        try:
            refused = make_claims(lock="keybox", action="unlatch")  # a key box has no latch
            token = backend_key.sign(refused)
            answers = await client.command(refused, token, timeout=TIMEOUT)
            again = await client.command(refused, token, timeout=TIMEOUT)
            fine = make_claims(lock="keybox", action="unlock")
            accepted = await client.command(fine, backend_key.sign(fine), timeout=TIMEOUT)
        finally:
            await hub.stop()
    assert [(a.status, a.reason, a.lock) for a in answers] == [(Status.REJECTED, RejectReason.UNSUPPORTED_ACTION, "keybox")]
    assert [(a.status, a.reason) for a in again] == [(Status.REJECTED, RejectReason.REPLAYED)]
    assert [a.status for a in accepted] == [Status.ACCEPTED, Status.FAILED]
    rejected = chain(tmp_path)[0]
    assert (rejected.outcome, rejected.reason, rejected.lock, rejected.action, rejected.actor, rejected.role,
            rejected.assignment, rejected.verified) == ("rejected", "unsupported_action", "keybox", "unlatch",
                                                        "staff-7", "staff", "visit-42", True)
    with sqlite3.connect(state_file(tmp_path)) as db:
        assert sorted(db.execute("SELECT id, final, reason FROM commands").fetchall()) == sorted(
            [(refused.id, "rejected", "unsupported_action"), (fine.id, "failed", "bridge_unavailable")])


async def test_audit_entries_reach_the_backend_in_order_and_a_range_can_be_asked_for_again(
        mosquitto, backend_key, tmp_path, make_claims):
    config = hub_config(mosquitto, backend_key, tmp_path, "5")
    async with BackendClient(mosquitto.host, mosquitto.port) as client, client.watch(topics.audit(HUB)) as feed:
        hub = RunningHub(config)
        await hub.start(client)
        try:
            claims = make_claims()
            await client.command(claims, backend_key.sign(claims), timeout=TIMEOUT)
            async with client.watch(topics.answers(HUB)) as answers:
                await client.publish(topics.commands(HUB), b"\x00garbage")
                await asyncio.wait_for(answers.get(), TIMEOUT)
            received = [AuditEntry.model_validate_json((await asyncio.wait_for(feed.get(), TIMEOUT)).payload)
                        for _ in range(3)]

            async with client.watch(topics.audit_replies(HUB) + "/#") as replies:
                request = {"from_seq": 2, "to_seq": 3, "reply_to": topics.audit_replies(HUB) + "/me"}
                await client.publish(topics.audit_request(HUB), json.dumps(request))
                reply = await asyncio.wait_for(replies.get(), TIMEOUT)
                await client.publish(topics.audit_request(HUB), b'{"from_seq": 3, "to_seq": 1}')
                refused = await asyncio.wait_for(replies.get(), TIMEOUT)
            whole = await client.audit_range(HUB, 1, 100)  # the backend client's way to ask
        finally:
            await hub.stop()
    assert [(e.seq, e.outcome, e.verified) for e in received] == [(1, "accepted", True), (2, "failed", True),
                                                                  (3, "rejected", False)]
    assert received == chain(tmp_path)
    assert reply.topic == topics.audit_replies(HUB) + "/me"
    batch = AuditBatch.model_validate_json(reply.payload)
    assert batch.entries == received[1:3] and batch.last_seq == 3 and batch.missing == []
    assert whole.entries == received and whole.last_seq == 3
    error = AuditBatch.model_validate_json(refused.payload)
    assert refused.topic == topics.audit_replies(HUB) and error.entries == [] and "to_seq" in (error.error or "")

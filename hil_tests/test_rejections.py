"""Every way a command can be refused: answered `rejected` with its reason, and no lock moves.

The scenarios share one hub (``shared_home``, hil_tests/conftest.py SharedHub), reset before each
(the lock at rest, locked, hubd holding no connection); each reads its own part of the audit trail
(``hub.audit_from`` on)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hil_tests.harness import HubUnderTest, answers_of, audit_log, next_answer
from hubapi import signing, topics
from hubapi.client import BackendClient
from hubapi.models import Answer

NOW_SKEW_PAST = 120  # seconds: well beyond the hub's clock-skew allowance

pytestmark = pytest.mark.shared_home


@dataclass(frozen=True)
class Bad:
    """A refused command: how to publish it and the reason the hub must give."""

    reason: str
    build: Callable[[HubUnderTest], tuple[str | None, bytes | str, bool]]  # (id, payload, retain)


def _signed(target: HubUnderTest, action: str = "unlock",
            **overrides: object) -> tuple[str, str, bool]:
    claims = target.claims(action, **overrides)  # type: ignore[arg-type]
    return claims.id, target.key.sign(claims), False


def bad_signature(hub: HubUnderTest) -> tuple[str, str, bool]:
    claims = hub.claims("unlock")
    impostor = signing.generate_private_key()  # right kid, wrong key
    return claims.id, signing.sign(claims, impostor, hub.key.kid), False


def unknown_key(hub: HubUnderTest) -> tuple[str, str, bool]:
    claims = hub.claims("unlock")
    return claims.id, signing.sign(claims, signing.generate_private_key(), "retired-2019"), False


def expired(hub: HubUnderTest) -> tuple[str, str, bool]:
    return _signed(hub, now=time.time() - NOW_SKEW_PAST, ttl_s=30)


def not_yet_valid(hub: HubUnderTest) -> tuple[str, str, bool]:
    claims = hub.claims("unlock")
    later = int(time.time()) + NOW_SKEW_PAST
    claims = claims.model_copy(update={"nbf": later, "exp": later + 30})
    return claims.id, hub.key.sign(claims), False


def wrong_hub(hub: HubUnderTest) -> tuple[str, str, bool]:
    return _signed(hub, hub="the-neighbours-hub")


def unknown_lock(hub: HubUnderTest) -> tuple[str, str, bool]:
    return _signed(hub, lock="back-door")


def unsupported_action(hub: HubUnderTest) -> tuple[str, str, bool]:
    # The front door's inside turner has no latch to pull.
    return _signed(hub, action="unlatch")


def retained(hub: HubUnderTest) -> tuple[str, str, bool]:
    claims = hub.claims("unlock")
    return claims.id, hub.key.sign(claims), True


def malformed(hub: HubUnderTest) -> tuple[None, bytes, bool]:
    return None, b"\xff{not a signed command", False


CASES = [Bad("bad_signature", bad_signature), Bad("unknown_key", unknown_key),
         Bad("expired", expired), Bad("not_yet_valid", not_yet_valid),
         Bad("wrong_hub", wrong_hub), Bad("unknown_lock", unknown_lock),
         Bad("unsupported_action", unsupported_action), Bad("retained", retained),
         Bad("malformed", malformed)]


async def _answers_for(backend: BackendClient, hub: HubUnderTest, command_id: str | None,
                       payload: bytes | str, retain: bool) -> list[Answer]:
    """Publish as-is and collect the answers naming `command_id` until a final one."""
    got: list[Answer] = []
    async with answers_of(backend, hub, command_id) as queue:
        await backend.publish(topics.commands(hub.hub_id), payload, retain=retain)
        while not got or not got[-1].is_final:
            got.append(await next_answer(queue, 30))
    if retain:  # clear the retained command so it cannot linger on the broker
        await backend.publish(topics.commands(hub.hub_id), b"", retain=True)
    return got


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.reason)
async def test_refused_command_is_rejected_with_its_reason_and_nothing_moves(
        case: Bad, hub: HubUnderTest, backend: BackendClient) -> None:
    command_id, payload, retain = case.build(hub)
    answers = await _answers_for(backend, hub, command_id, payload, retain)
    assert [a.status for a in answers] == ["rejected"], answers
    assert answers[0].reason == case.reason
    moves = hub.sim.call(lambda: {k: lk.motor_moves for k, lk in hub.sim.home.locks.items()})
    assert set(moves.values()) == {0}, f"a refused command moved a lock: {moves}"
    assert hub.hubd_alive()
    on_record = [e for e in await audit_log(hub, backend, from_seq=hub.audit_from)
                 if e.outcome == "rejected" and e.reason == case.reason
                 and e.command == command_id]
    assert len(on_record) == 1, "the refusal must be in the audit trail exactly once"
    entry = on_record[0]
    assert entry.command == command_id
    assert entry.source == "remote"
    # Only a command whose signature checked out names a verified actor (a retained one is
    # signed too: its signature is checked first, so its id is spent).
    signed = case.reason in ("expired", "not_yet_valid", "wrong_hub", "unknown_lock",
                             "unsupported_action", "retained")
    assert entry.verified is signed
    assert answers[0].verified is signed, "the answer says whether the refused message verified"


async def test_a_replayed_command_runs_once_and_the_replay_is_rejected(
        hub: HubUnderTest, backend: BackendClient) -> None:
    command_id, token, _ = _signed(hub)
    first = await _answers_for(backend, hub, command_id, token, False)
    assert [a.status for a in first] == ["accepted", "succeeded"]
    again = await _answers_for(backend, hub, command_id, token, False)
    assert [(a.status, a.reason) for a in again] == [("rejected", "replayed")]
    assert hub.sim.call(lambda: hub.sim.home.locks[hub.locks[0]].motor_moves) == 1
    trail = [(e.outcome, e.reason) for e in await audit_log(hub, backend, from_seq=hub.audit_from)
             if e.command == command_id]
    assert trail == [("accepted", None), ("written", None), ("succeeded", None),
                     ("rejected", "replayed")]

"""hubapi: topic tree, wire models and keys, as a backend developer uses them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hubapi import signing, topics
from hubapi.models import Action, Actor, Answer, CommandClaims, LockState, Online, Role, Status


def test_topic_tree_is_versioned_under_the_hub():
    assert topics.commands("hub-1") == "hubs/hub-1/v1/commands"
    assert topics.answers("hub-1") == "hubs/hub-1/v1/answers"
    assert topics.lock_state("hub-1", "front") == "hubs/hub-1/v1/locks/front/state"
    assert topics.lock_states("hub-1") == "hubs/hub-1/v1/locks/+/state"
    assert topics.online("hub-1") == "hubs/hub-1/v1/online"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "hub 1", "-x", "x" * 65])
def test_ids_that_would_break_the_topic_tree_are_refused(bad):
    with pytest.raises(ValueError):
        topics.commands(bad)
    with pytest.raises(ValueError):
        topics.lock_state("hub-1", bad)


@pytest.mark.parametrize(
    ("requested", "used"),
    [
        ("hubs/hub-1/v1/answers", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/answers/backend-7", "hubs/hub-1/v1/answers/backend-7"),
        (None, "hubs/hub-1/v1/answers"),
        ("hubs/hub-2/v1/answers", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/commands", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/online", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/answers/#", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/answers//x", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/answersX", "hubs/hub-1/v1/answers"),
        ("hubs/hub-1/v1/answers/" + "x" * 300, "hubs/hub-1/v1/answers"),
    ],
)
def test_answers_only_go_to_the_hubs_answer_topics(requested, used):
    assert topics.reply_topic("hub-1", requested) == used


def staff() -> Actor:
    return Actor(id="staff-7", role=Role.STAFF)


def test_new_command_has_fresh_id_short_window_and_default_reply_topic():
    a = CommandClaims.new(hub="hub-1", lock="front", action="unlock", actor=staff(), assignment="v-1", now=1000)
    b = CommandClaims.new(hub="hub-1", lock="front", action="unlock", actor=staff(), assignment="v-1", now=1000)
    assert a.id != b.id
    assert (a.iat, a.nbf, a.exp) == (1000, 1000, 1030)
    assert a.reply_to == "hubs/hub-1/v1/answers"
    assert a.action is Action.UNLOCK


def test_staff_command_needs_an_assignment():
    with pytest.raises(ValidationError, match="assignment is required"):
        CommandClaims.new(hub="hub-1", lock="front", action="unlock", actor=staff())
    resident = Actor(id="r-1", role=Role.RESIDENT)
    assert CommandClaims.new(hub="hub-1", lock="front", action="unlock", actor=resident).assignment is None


@pytest.mark.parametrize(
    "change",
    [{"action": "explode"}, {"exp": "1030"}, {"exp": 900}, {"extra": 1}, {"actor": {"id": "x", "role": "boss"}}, {"id": "a b"}],
    ids=["action", "exp-as-string", "exp-before-nbf", "unknown-field", "role", "id-charset"],
)
def test_claims_from_the_wire_are_strict(change):
    wire = CommandClaims.new(hub="hub-1", lock="front", action="lock", actor=staff(), assignment="v", now=1000)
    data = wire.model_dump(mode="json") | change
    with pytest.raises(ValidationError):
        CommandClaims.model_validate_json(json.dumps(data))


def test_answer_round_trips_and_knows_final_statuses():
    answer = Answer(id="c1", status=Status.SUCCEEDED, lock="front", state="unlocked", battery=80, at=1.5)
    assert Answer.model_validate_json(answer.model_dump_json()) == answer
    assert answer.is_final
    assert not Answer(id="c1", status=Status.ACCEPTED, at=1).is_final
    assert json.loads(answer.model_dump_json())["v"] == 1


def test_lock_state_and_online_payloads():
    state = LockState(lock="front", state="locked", battery=55, source="manual", at=2.0)
    assert LockState.model_validate_json(state.model_dump_json()) == state
    with pytest.raises(ValidationError):
        LockState(lock="front", state="locked", battery=101, source="poll", at=1.0)
    assert Online.model_validate_json(b'{"v":1,"hub":"hub-1","status":"offline"}').at is None


def test_public_key_text_and_pem_both_load_to_the_same_key():
    key = signing.generate_private_key()
    raw = signing.public_key_text(key)
    assert len(raw) == 43
    from_raw = signing.load_public_key(raw)
    from_pem = signing.load_public_key(signing.public_key_pem(key))
    assert signing.public_key_text(from_raw) == signing.public_key_text(from_pem) == raw
    assert signing.public_key_text(signing.load_private_key(signing.private_key_pem(key))) == raw


@pytest.mark.parametrize("text", ["", "not base64 !", "AAAA", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"])
def test_unreadable_public_keys_raise_key_format_error(text):
    with pytest.raises(signing.KeyFormatError):
        signing.load_public_key(text)

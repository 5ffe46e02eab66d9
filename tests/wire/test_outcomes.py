"""One vocabulary of outcomes and reasons (wire/outcomes.py): the lock protocol, the link's
decoder, hubapi's models, the docs and the code that sends them all agree with it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hubapi.models import Answer, FailReason, RejectReason, Status
from wire import lockproto, messages, outcomes

ROOT = Path(__file__).resolve().parents[2]
# The modules that build operation results and answers: they name outcomes and reasons only
# through wire.outcomes (or hubapi's enums of it), never as a string of their own.
SENDERS = ("hubd/locks/reference.py", "hubd/link/bridge.py", "hubd/access/commands.py")


def test_every_reason_is_named_once_and_the_locks_refusals_are_its_protocol_statuses() -> None:
    assert len(set(outcomes.REASONS)) == len(outcomes.REASONS)
    assert len(set(outcomes.REJECT_REASONS)) == len(outcomes.REJECT_REASONS)
    assert set(lockproto.STATUSES) - {"ok"} == set(outcomes.LOCK_REASONS)
    assert not set(outcomes.OUTCOMES) & set(outcomes.REASONS)


def test_hubapi_enums_are_the_vocabulary() -> None:
    assert sorted(r.value for r in FailReason) == sorted(outcomes.REASONS)
    assert sorted(r.value for r in RejectReason) == sorted(outcomes.REJECT_REASONS)
    assert {s.value for s in Status} - {"accepted", "rejected"} == set(outcomes.OUTCOMES)


@pytest.mark.parametrize("reason", [None, *outcomes.RESULT_REASONS])
def test_a_drivers_result_takes_any_reason_the_lock_or_the_driver_gives(
        reason: str | None) -> None:
    from hubd.access.transport import OpResult

    assert OpResult(outcomes.FAILED, reason, None, None).reason == reason


@pytest.mark.parametrize("reason", ["", "JAMMED", "expired", "done", "bridge_no_answer"])
def test_a_drivers_result_refuses_a_reason_outside_the_vocabulary(reason: str) -> None:
    from hubd.access.transport import OpResult

    with pytest.raises(ValueError, match="reason"):
        OpResult(outcomes.FAILED, reason, None, None)


def test_the_link_carries_no_lock_result_any_more() -> None:
    # hubd drives the locks through the bridge's Bluetooth proxy: the bridge's result message
    # (and the vocabulary check the link's decoder made on it) is gone.
    payload = json.dumps({"m": "result", "rid": 1, "outcome": "failed", "reason": None}).encode()
    with pytest.raises(messages.MessageError, match="unknown message kind"):
        messages.decode(payload)


@pytest.mark.parametrize(("status", "reason"), [
    (Status.FAILED, "bridge_no_answer"),  # once sent, never named by the API
    (Status.FAILED, "expired"),  # a rejection reason on an operation
    (Status.REJECTED, "jammed"),  # an operation reason on a rejection
    (Status.SUCCEEDED, "jammed"),
])
def test_an_answer_with_a_reason_outside_its_statuss_vocabulary_is_refused(
        status: Status, reason: str) -> None:
    with pytest.raises(ValidationError, match="wire.outcomes"):
        Answer(id="c1", status=status, reason=reason, at=1.0)


def test_answers_take_every_reason_of_their_status() -> None:
    for reason in outcomes.REASONS:
        for status in (Status.FAILED, Status.TIMED_OUT, Status.INCOMPLETE):
            assert Answer(id="c1", status=status, reason=reason, at=1.0).reason == reason
    for reason in outcomes.REJECT_REASONS:
        assert Answer(id="c1", status=Status.REJECTED, reason=reason, at=1.0).reason == reason


@pytest.mark.parametrize("path", SENDERS)
def test_senders_spell_no_outcome_or_reason_of_their_own(path: str) -> None:
    words = set(outcomes.OUTCOMES) | set(outcomes.REASONS)
    tree = ast.parse((ROOT / path).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    spelled = sorted({node.value for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and node.value in words and id(node) not in docstrings})
    assert spelled == [], f"{path} spells {spelled}: use wire.outcomes"


def test_the_api_docs_list_every_reason() -> None:
    doc = (ROOT / "docs" / "mqtt-api.md").read_text()
    for reason in (*outcomes.REASONS, *outcomes.REJECT_REASONS):
        assert f"| `{reason}` |" in doc, reason


def test_the_at_most_once_rule_is_one_function_both_ends_use() -> None:
    assert outcomes.unfinished(True) == (outcomes.INCOMPLETE, "unknown")
    assert outcomes.unfinished(True, outcomes.TIMED_OUT) == (outcomes.INCOMPLETE, "unknown")
    assert outcomes.unfinished(False) == (outcomes.FAILED, None)
    assert outcomes.unfinished(False, outcomes.TIMED_OUT) == (outcomes.TIMED_OUT, None)
    for path in ("hubd/locks/reference.py", "hubd/access/commands.py"):
        assert "unfinished(" in (ROOT / path).read_text(), path


def test_a_result_entering_hubd_is_typed_once_at_the_seam(tmp_path: Path) -> None:
    from hubd.access.transport import LockTransport, OpResult
    from hubd.ble.proxy import BleProxy
    from hubd.link.bridge import Bridge
    from hubd.locks.transport import BleLocks

    assert OpResult(outcomes.INCOMPLETE, outcomes.LINK_LOST, "unknown", None).reason == "link_lost"
    with pytest.raises(ValueError, match="outcome"):
        OpResult("done", None, None, None)
    with pytest.raises(ValueError, match="reason"):
        OpResult(outcomes.FAILED, "bridge_no_answer", None, None)
    # hubd's drivers over the bridge's proxy are the lock transport: the command path needs
    # nothing else from them.
    proxy = BleProxy(Bridge(str(tmp_path / "no-port"), bytes(32)))
    assert isinstance(BleLocks(proxy, {}), LockTransport)
